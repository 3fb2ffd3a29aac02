"""Runs a few pretrain steps of one or more methods on fixed random data and saves losses, params, queue and
method state (.npz, one per case).

Used by tests/test_multidevice.py in subprocesses with different simulated device counts:
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/step_runner.py OUT_DIR --cases dscl,paco
"""

import argparse
import os

import jax
import numpy as np

from dscl_jax.config.schema import base_config
from dscl_jax.core import optim, sharding
from dscl_jax.core.build import build_models, init_pretrain_state, jit_pretrain_step
from dscl_jax.input import synthetic
from dscl_jax.methods import get_method

# Training images per class of the synthetic data set: long-tailed, so PaCo's prior is not uniform.
CLASS_COUNTS = np.array([40, 30, 20, 15, 10, 8, 6, 4, 3, 2])
# Every method of the registry, and DSCL's two small-crop variants.
CASES = ("dscl", "supcon", "ce", "dscl_pbsd", "dscl_multicrop", "paco", "gpaco", "iccl")


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
  if method in ("paco", "gpaco"):
    c.loss.temperature = 0.2
  return c


def case_config(case):
  """A case name of CASES -> its small config."""
  if case == "dscl_pbsd":
    return small_config("dscl", pbsd=True)
  if case == "dscl_multicrop":
    return small_config("dscl", multicrop=True)
  return small_config(case)


def random_batches(config, num_steps, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(num_steps):
    yield synthetic.pretrain_batch(config, get_method(config).requirements.views, 1, num_classes, rng)


def setup(config, num_classes=10, mesh=None, base_lr=0.01):
  """(state, jitted step, mesh) for `config` on every visible device (or `mesh`); lr warms up over 2
  steps to `base_lr`, so every step after the first learns.

  On these random batches a larger rate makes the dynamics chaotic: at 0.05 a 1e-7 difference in the
  order of a reduction (1 vs 8 devices) grows to 1e-3 in the loss within 5 steps, while at 0.01 the two
  trajectories stay within 1e-7 over 10 steps. The device-count test compares the latter.
  """
  mesh = mesh or sharding.make_mesh(-1)
  schedule = optim.warmup_cosine_schedule(base_lr, 100, 2)
  tx = optim.sgd(schedule, 0.9, 5e-4)
  online, target = build_models(config, get_method(config), num_classes)
  state = init_pretrain_state(config, get_method(config), online, tx, num_classes, 1, mesh, CLASS_COUNTS[:num_classes])
  step = jit_pretrain_step(config, get_method(config), online, target, tx, schedule, mesh)
  return state, step, mesh


def run(config, num_steps, num_classes=10):
  """Returns (list of metric dicts, final state) after `num_steps` steps on every visible device."""
  state, step, mesh = setup(config, num_classes)
  history = []
  rows = config.train.batch_size // jax.process_count()
  mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  for batch in random_batches(config, num_steps):
    local = {k: v[mine] for k, v in batch.items()}  # this process's rows of the global batch
    state, metrics = step(state, sharding.to_global(local, mesh))
    history.append(jax.device_get(metrics))
  return history, state


def flatten_state(history, state):
  flat = {
    "devices": np.array(jax.device_count()),
    "processes": np.array(jax.process_count()),
    "loss": np.array([h["loss"] for h in history]),
    "lr": np.array([h["lr"] for h in history]),
    "queue_ptr": np.asarray(state.queue_ptr),
  }
  if state.queue is not None:  # cross-entropy keeps no queue
    flat.update(queue=np.asarray(state.queue), queue_labels=np.asarray(state.queue_labels))
  trees = (
    ("params", state.params),
    ("target", state.target_params),
    ("stats", state.batch_stats),
    ("target_stats", state.target_batch_stats),
    ("method", state.method_state),
  )
  for name, tree in trees:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      flat[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return flat


def main():
  sharding.maybe_initialize_distributed()
  parser = argparse.ArgumentParser()
  parser.add_argument("out_dir")
  parser.add_argument("--cases", default="dscl", help=f"comma-separated, from {CASES}")
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  for case in args.cases.split(","):
    history, state = run(case_config(case), args.steps)
    if jax.process_index() == 0:
      np.savez(os.path.join(args.out_dir, f"{case}.npz"), **flatten_state(history, state))


if __name__ == "__main__":
  main()
