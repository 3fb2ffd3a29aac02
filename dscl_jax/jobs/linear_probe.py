"""Linear probe: a linear classifier on the frozen pretrained trunk, trained with class-balanced sampling.

The trunk (online encoder, inference-mode BatchNorm) comes from the pretrain checkpoint in this workdir
or in `config.pretrained`; only its parameters and statistics are read, so fields the probe never uses
(the queue length, the loss) may differ from the pretrain config. The probe's own state is checkpointed
in `<workdir>/probe/checkpoints` and a rerun resumes it, like pretraining.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from data.registry import get_dataset
from dscl_jax.runtime import checkpoint
from dscl_jax.input import pipeline
from dscl_jax.core import loop
from dscl_jax.core import optim
from dscl_jax.core import sharding
from dscl_jax.runtime import workdir as workdirs
from dscl_jax.evaluation.accuracy import count_correct, jit_count_step
from dscl_jax.evaluation.bn_reestimation import reestimate_batch_stats
from dscl_jax.runtime.files import read_json, write_json
from dscl_jax.models import build_trunk
from dscl_jax.runtime.metrics import Progress
from dscl_jax.core.state import ProbeState
from dscl_jax.core.step import make_probe_step
from dscl_jax.jobs.pretrain import abstract_pretrain_state, build_models, pretrain_schedule, validate_config


def load_pretrained(config, dataset, mesh, workdir, *, classifier: bool = False):
  """Restore what probe and eval need from the pretrain checkpoint: the online trunk's parameters and
  BatchNorm statistics and, with `classifier`, the model's own classifier. Returns
  ({"trunk": {"params", "batch_stats"}, "classifier": params or absent}, "<checkpoints dir>/<step>").

  A leaf whose shape differs from what this config builds raises naming its path and the config fields
  that set it; a damaged newest step falls back to the previous intact one.
  """
  directory = checkpoint.find_checkpoint_dir(config.pretrained or workdir, "pretrain")
  schedule, _, _ = pretrain_schedule(config, len(dataset.train))
  tx = optim.sgd(schedule, config.train.momentum, config.train.weight_decay)
  online, _ = build_models(config, dataset.num_classes)
  full = abstract_pretrain_state(config, online, tx, dataset.num_classes, dataset.channels, dataset.class_counts)
  template = {"params": {"trunk": full.params["trunk"]}, "batch_stats": {"trunk": full.batch_stats["trunk"]}}
  if classifier:
    template["params"]["classifier"] = full.params["classifier"]
  state, source = checkpoint.restore_from(directory, template, sharding.replicated(mesh), partial=True,
                                          job="pretrain checkpoint")
  loaded = {"trunk": {"params": state["params"]["trunk"], "batch_stats": state["batch_stats"]["trunk"]}}
  if classifier:
    loaded["classifier"] = state["params"]["classifier"]
  return loaded, source


def probe_optimizer(config, num_train: int):
  """(steps_per_epoch, total_steps, lr schedule, optimiser) of the probe: lr x0.1 at the milestones."""
  steps_per_epoch = pipeline.steps_per_epoch(num_train, config.probe.batch_size)
  total_steps = config.probe.epochs * steps_per_epoch
  schedule = optim.step_schedule(config.probe.lr, [round(f * total_steps) for f in config.probe.milestones])
  if config.probe.max_steps >= 0:
    total_steps = min(total_steps, config.probe.max_steps)
  tx = optim.sgd(schedule, config.probe.momentum, config.probe.weight_decay)
  return steps_per_epoch, total_steps, schedule, tx


def create_probe_state(tx, num_features: int, num_classes: int, trunk_batch_stats=None) -> ProbeState:
  """A zero-initialised linear classifier [F, C] + [C], its optimiser state, and the trunk's
  re-estimated BatchNorm statistics (None: the pretrained ones)."""
  params = {"kernel": jnp.zeros((num_features, num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}
  zero = jnp.zeros((), jnp.int32)
  return ProbeState(step=zero, params=params, opt_state=tx.init(params), skipped_in_a_row=zero, skipped_total=zero,
                    trunk_batch_stats=trunk_batch_stats)


def probe_trunk_variables(trunk_variables, probe_state: ProbeState):
  """The trunk variables the probe was trained with: re-estimated statistics when it has them."""
  if probe_state.trunk_batch_stats is None:
    return trunk_variables
  return {"params": trunk_variables["params"], "batch_stats": probe_state.trunk_batch_stats}


def restore_probe(config, workdir: str, num_features: int, num_classes: int, num_train: int, mesh,
                  trunk_batch_stats=None):
  """The probe state to evaluate and where it came from: the one selected on the validation split
  (`<workdir>/probe/best`) when the dataset has one, else the last (`<workdir>/probe/checkpoints`).
  `trunk_batch_stats`: the trunk's statistics tree, whose shapes the probe's re-estimated ones have
  (used when `probe.reestimate_bn_batches` > 0)."""
  best = epath.Path(workdir) / "probe" / "best"
  directory = best if checkpoint.has_checkpoint(best) else checkpoint.find_checkpoint_dir(workdir, "probe")
  _, _, _, tx = probe_optimizer(config, num_train)
  stats = trunk_batch_stats if config.probe.reestimate_bn_batches else None
  template = jax.eval_shape(lambda: create_probe_state(tx, num_features, num_classes, stats))
  return checkpoint.restore_from(directory, template, sharding.replicated(mesh), job="probe checkpoint")


class ValSelector:
  """Keeps the probe state with the best validation accuracy, checked after every epoch, in
  `<job_dir>/best`, and its record in `<job_dir>/best.json`. The test split is never looked at.

  Datasets without a validation split (digits-LT, Fashion-MNIST-LT, CIFAR-LT, iNaturalist 2018) make no
  choice during training: eval uses the last state.
  """

  def __init__(self, config, dataset, trunk, trunk_variables, mesh, job_dir):
    self.enabled = dataset.val is not None
    if not self.enabled:
      return
    self.config, self.dataset, self.trunk_variables, self.mesh = config, dataset, trunk_variables, mesh
    self.count_step = jit_count_step(trunk, config.augment, dataset.num_classes, mesh)
    self.record_path = epath.Path(job_dir) / "best.json"
    self.best = read_json(self.record_path) if self.record_path.exists() else {"val_accuracy": -1.0}
    self.manager = checkpoint.manager(epath.Path(job_dir) / "best", keep=1, job="probe best")

  def update(self, step: int, epoch: float, state: ProbeState) -> None:
    if not self.enabled:
      return
    correct, seen = count_correct(self.count_step, self.trunk_variables, state.params, self.dataset.val,
                                  self.config.augment, self.config.eval.batch_size, self.mesh)
    accuracy = float(100.0 * correct.sum() / seen.sum())
    improved = accuracy > self.best["val_accuracy"]
    print(f"[probe] epoch {epoch:.2f}: val top-1 {accuracy:.2f}%" + (" (best so far)" if improved else ""),
          flush=True)
    if improved:
      self.manager.save(step, state)
      self.manager.wait_until_finished()
      self.best = {"step": step, "epoch": epoch, "val_accuracy": accuracy}
      if jax.process_index() == 0:
        write_json(self.record_path, self.best)


def linear_probe(config: ml_collections.ConfigDict, workdir) -> ProbeState:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  validate_config(config, mesh)
  job_dir = epath.Path(workdir) / "probe"
  workdirs.check_config(config, job_dir, "probe")
  dataset = get_dataset(config.data)
  loaded, source = load_pretrained(config, dataset, mesh, workdir)
  trunk_variables = loaded["trunk"]
  trunk = build_trunk(config.model)
  num_features = trunk.num_features
  print(f"[probe] frozen trunk from {source}; {num_features}-d features, {dataset.num_classes} classes, "
        f"class-balanced sampling", flush=True)

  steps_per_epoch, total_steps, schedule, tx = probe_optimizer(config, len(dataset.train))
  replicated = sharding.replicated(mesh)
  stats = None
  if config.probe.reestimate_bn_batches:
    # Deterministic (its own seed), so a resumed probe recomputes the statistics it saved.
    stream = pipeline.probe_iterator(
        dataset.train, config.augment, global_batch_size=config.probe.batch_size, seed=config.seed + 2,
        process_index=jax.process_index(), process_count=jax.process_count(), num_workers=config.train.num_workers,
        class_balanced=True)
    stats = reestimate_batch_stats(trunk, trunk_variables, stream, config.probe.reestimate_bn_batches, mesh,
                                   config.augment)
    trunk_variables = {"params": trunk_variables["params"], "batch_stats": stats}
    print(f"[probe] BatchNorm statistics re-estimated on {config.probe.reestimate_bn_batches} batches of "
          f"{config.probe.batch_size} probe training images", flush=True)
  create = lambda: create_probe_state(tx, num_features, dataset.num_classes, stats)
  state = jax.jit(create, out_shardings=replicated)()
  ckpt = checkpoint.manager(job_dir / "checkpoints", job="probe")
  state = loop.resume(ckpt, state, "probe")
  start_step = int(state.step)
  if start_step >= total_steps:
    print(f"[probe] already finished ({start_step} steps)", flush=True)
    return state

  probe_step = jax.jit(make_probe_step(trunk, config.augment, tx, schedule),
                       in_shardings=(replicated, replicated, sharding.data_sharded(mesh)),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  batches = pipeline.probe_iterator(
      dataset.train, config.augment, global_batch_size=config.probe.batch_size, seed=config.seed + 1,
      start_step=start_step, process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.train.num_workers, class_balanced=True)
  progress = Progress("probe", job_dir, total_steps, steps_per_epoch, config.probe.batch_size, start_step)
  selector = ValSelector(config, dataset, trunk, trunk_variables, mesh, job_dir)

  def after_step(done, state):
    if done % steps_per_epoch == 0 or done == total_steps:
      selector.update(done, done / steps_per_epoch, state)

  return loop.run("probe", state, lambda state, batch: probe_step(state, trunk_variables, batch), batches,
                  mesh=mesh, mgr=ckpt, progress=progress, start_step=start_step, total_steps=total_steps,
                  log_every=config.probe.log_every, checkpoint_every=config.probe.checkpoint_every,
                  max_skipped_steps=config.train.max_skipped_steps, after_step=after_step)
