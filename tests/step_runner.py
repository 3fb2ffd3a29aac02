"""Runs a few pretrain steps on fixed random data and saves losses, params and queue (.npz).

Used by tests/test_multidevice.py in subprocesses with different simulated device counts:
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/step_runner.py OUT.npz [--pbsd]
"""

import argparse

import jax
import numpy as np

from dscl_jax import optim, sharding, synthetic
from dscl_jax.config_base import base_config
from dscl_jax.step import make_pretrain_step
from dscl_jax.train import build_models, init_pretrain_state


def small_config(method="dscl", pbsd=False, multicrop=False):
  c = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar", method=method)
  c.moco.queue_size = 48
  c.moco.momentum = 0.9
  c.model.embed_dim = 16
  c.model.key_bn_group_size = 8
  c.train.batch_size = 16
  c.pbsd.enabled = pbsd
  c.pbsd.multicrop = multicrop
  c.pbsd.num_crops = 2
  c.pbsd.crop_size = 8
  return c


def random_batches(config, num_steps, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(num_steps):
    yield synthetic.pretrain_batch(config, 1, num_classes, rng)


def run(config, num_steps, num_classes=10):
  """Returns (list of metric dicts, final state) after `num_steps` steps on every visible device."""
  mesh = sharding.make_mesh(-1)
  schedule = optim.warmup_cosine_schedule(0.05, 100, 2)
  tx = optim.sgd(schedule, 0.9, 5e-4)
  online, target = build_models(config, num_classes)
  state = init_pretrain_state(config, online, tx, num_classes, 1, mesh)
  step = jax.jit(make_pretrain_step(config, online, target, tx, schedule),
                 in_shardings=(sharding.replicated(mesh), sharding.data_sharded(mesh)),
                 out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)), donate_argnums=0)
  history = []
  rows = config.train.batch_size // jax.process_count()
  mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  for batch in random_batches(config, num_steps):
    local = {k: v[mine] for k, v in batch.items()}  # this process's rows of the global batch
    state, metrics = step(state, sharding.to_global(local, mesh))
    history.append(jax.device_get(metrics))
  return history, state


def main():
  sharding.maybe_initialize_distributed()
  parser = argparse.ArgumentParser()
  parser.add_argument("out")
  parser.add_argument("--method", default="dscl")
  parser.add_argument("--pbsd", action="store_true")
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  history, state = run(small_config(args.method, args.pbsd), args.steps)
  flat = {"devices": np.array(jax.device_count()), "processes": np.array(jax.process_count()),
          "loss": np.array([h["loss"] for h in history]),
          "queue_ptr": np.asarray(state.queue_ptr)}
  if state.queue is not None:  # cross-entropy keeps no queue
    flat.update(queue=np.asarray(state.queue), queue_labels=np.asarray(state.queue_labels))
  for name, tree in (("params", state.params), ("target", state.target_params), ("stats", state.batch_stats)):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      flat[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
  if jax.process_index() == 0:
    np.savez(args.out, **flat)


if __name__ == "__main__":
  main()
