"""Pretraining: `pretrain(config, workdir)` runs (or resumes) the representation stage of any method.

Resume rules:
1. `<workdir>/pretrain/checkpoints` has a checkpoint: restore the whole state from the newest intact step
   (damaged steps are reported and skipped) and continue from its step; the input pipeline is a pure
   function of (seed, step), so the run sees exactly the batches and augmentations an uninterrupted run
   would. The config must be the one the checkpoints were trained with (`dscl_jax/runtime/workdir.py`).
2. Otherwise start from step 0 with the config's seed.
3. SIGTERM / Ctrl-C: checkpoint at the end of the current step, then stop; rerunning the same command resumes.
"""

from __future__ import annotations

import jax
import ml_collections
from etils import epath

from data.registry import get_dataset
from dscl_jax import methods
from dscl_jax.runtime import checkpoint
from dscl_jax.config import validation
from dscl_jax.input import pipeline
from dscl_jax.core import loop
from dscl_jax.core import optim
from dscl_jax.core import sharding
from dscl_jax.runtime import workdir as workdirs
from dscl_jax.models import build_encoder
from dscl_jax.convert.torchvision_resnet import load_torchvision_resnet
from dscl_jax.runtime.metrics import Progress
from dscl_jax.core.state import PretrainState, create_pretrain_state, param_count
from dscl_jax.core.step import make_pretrain_step


_METHOD_INIT_STREAM = 7


def validate_config(config: ml_collections.ConfigDict, mesh) -> None:
  """Fail early, naming the bad value and the fix (`dscl_jax/validation.py`)."""
  validation.validate(config, mesh.devices.size, jax.process_count())


def build_models(config, num_classes: int):
  """(online encoder, momentum-target encoder or None) with the heads `config.method` requires: same
  parameters, the target's BatchNorm over groups of `model.key_bn_group_size`."""
  needs = methods.get_method(config).requirements
  kwargs = dict(num_classes=num_classes if needs.classifier else 0, projection_head=needs.projection_head)
  online = build_encoder(config.model, **kwargs)
  if not needs.momentum_target:
    return online, None
  return online, build_encoder(config.model, bn_group_size=config.model.key_bn_group_size or None, **kwargs)


def pretrain_schedule(config, num_train: int):
  steps_per_epoch = pipeline.steps_per_epoch(num_train, config.train.batch_size)
  total_steps = config.train.epochs * steps_per_epoch
  lr = config.train.base_lr * config.train.batch_size / 256
  schedule = optim.warmup_cosine_schedule(lr, total_steps, config.train.warmup_epochs * steps_per_epoch)
  return schedule, steps_per_epoch, total_steps


def _state_factory(config, model, tx, num_classes: int, channels: int, class_counts):
  """`(rng, trunk_variables or None) -> PretrainState` for this config."""
  method = methods.get_method(config)
  image_shape = (config.augment.image_size, config.augment.image_size, channels)
  queue_size = config.moco.queue_size if method.requirements.queue else 0

  def create(rng, trunk):
    # The method's stream is folded off `rng`, so adding a method state leaves every other draw unchanged.
    method_rng = jax.random.fold_in(rng, _METHOD_INIT_STREAM)
    return create_pretrain_state(rng, model, tx, image_shape, queue_size, num_classes, trunk,
                                 config.model.depth, momentum_target=method.requirements.momentum_target,
                                 method_state=method.init_state(method_rng, class_counts))
  return create


def init_pretrain_state(config, model, tx, num_classes: int, channels: int, mesh,
                        class_counts=None) -> PretrainState:
  """A freshly initialised state, created directly with replicated sharding on the mesh. `class_counts`
  [C] (training images per class) feed the methods that use the class prior (PaCo, GPaCo)."""
  trunk = None
  if config.model.get("init_from"):
    if config.model.style != "imagenet" or config.model.get("width", 1) != 1:
      raise ValueError(f"model.init_from loads torchvision ResNet-50/101/152 weights; model.style "
                       f"{config.model.style!r} width {config.model.get('width', 1)} has no torchvision twin")
    trunk = load_torchvision_resnet(config.model.init_from, config.model.depth)
  create = _state_factory(config, model, tx, num_classes, channels, class_counts)
  return jax.jit(create, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed), trunk)


def abstract_pretrain_state(config, model, tx, num_classes: int, channels: int,
                            class_counts=None) -> PretrainState:
  """Shapes and dtypes of the state, without computing it or reading `model.init_from` (restore targets)."""
  create = _state_factory(config, model, tx, num_classes, channels, class_counts)
  return jax.eval_shape(create, jax.random.PRNGKey(config.seed), None)


def jit_pretrain_step(config, online, target, tx, schedule, mesh):
  """`make_pretrain_step` jitted for `mesh`: the state replicated and donated, the batch split along "data"
  (the step keeps the target's permuted batch split the same way, see `step.momentum_keys`)."""
  replicated, batch_sharding = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(make_pretrain_step(config, online, target, tx, schedule, batch_sharding),
                 in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated),
                 donate_argnums=0)


def pretrain(config: ml_collections.ConfigDict, workdir) -> PretrainState:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  validate_config(config, mesh)
  job_dir = epath.Path(workdir) / "pretrain"
  workdirs.check_config(config, job_dir, "pretrain")
  dataset = get_dataset(config.data)

  schedule, steps_per_epoch, total_steps = pretrain_schedule(config, len(dataset.train))
  if config.train.max_steps >= 0:
    total_steps = min(total_steps, config.train.max_steps)
  tx = optim.sgd(schedule, config.train.momentum, config.train.weight_decay)
  online, target = build_models(config, dataset.num_classes)
  state = init_pretrain_state(config, online, tx, dataset.num_classes, dataset.channels, mesh,
                              dataset.class_counts)

  ckpt = checkpoint.manager(job_dir / "checkpoints", job="pretrain")
  state = loop.resume(ckpt, state, "pretrain")
  start_step = int(state.step)
  print(f"[pretrain] {config.method} on {dataset.name}: ResNet-{config.model.depth} "
        f"({param_count(state.params) / 1e6:.2f}M params), batch {config.train.batch_size} on "
        f"{mesh.devices.size} device(s) x {jax.process_count()} process(es), {steps_per_epoch} steps/epoch, "
        f"{total_steps} steps", flush=True)
  if start_step >= total_steps:
    print(f"[pretrain] already finished ({start_step} steps)", flush=True)
    return state

  needs = methods.get_method(config).requirements
  train_step = jit_pretrain_step(config, online, target, tx, schedule, mesh)
  batches = pipeline.pretrain_iterator(
      dataset.train, config.augment, config.pbsd, views=needs.views, sampler=needs.sampler,
      class_aware_power=needs.class_aware_power, global_batch_size=config.train.batch_size,
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count(), num_workers=config.train.num_workers)
  progress = Progress("pretrain", job_dir, total_steps, steps_per_epoch, config.train.batch_size, start_step)
  return loop.run("pretrain", state, train_step, batches, mesh=mesh, mgr=ckpt, progress=progress,
                  start_step=start_step, total_steps=total_steps, log_every=config.train.log_every,
                  checkpoint_every=config.train.checkpoint_every,
                  max_skipped_steps=config.train.max_skipped_steps)
