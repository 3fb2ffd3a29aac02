"""What the jobs share: the job preamble, the models, the schedules, the states and their restore
templates, the jitted pretrain step, and the trunk read back from a pretrain checkpoint.

A job calls `setup_job(config)` once: it builds the mesh, validates the config against it, resolves the
method and reads the dataset. Everything below receives those objects (the `Method`, the models, the
dataset), never the config to look them up again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from dscl_jax import methods
from dscl_jax.config import validation
from dscl_jax.convert.torchvision_resnet import load_torchvision_resnet, replace_trunk
from dscl_jax.core import optim, sharding
from dscl_jax.core.state import PretrainState, ProbeState, create_pretrain_state
from dscl_jax.core.step import make_pretrain_step
from dscl_jax.models import build_encoder
from dscl_jax.runtime import checkpoint
from dscl_jax.runtime.files import read_json
from dscl_jax.runtime.metrics import log

# The method's own initialisation stream, folded off the state's key so that adding a method state
# leaves every other draw unchanged.
_METHOD_INIT_STREAM = 7


class StaleProbe(ValueError):
  """A linear probe trained on another trunk than the one this run restores."""


@dataclasses.dataclass(frozen=True)
class JobSetup:
  """What every job starts from: the device mesh, the method `config.method` names, and the dataset."""

  mesh: Any
  method: methods.Method
  dataset: Any


def setup_job(config: ml_collections.ConfigDict, *, read_data: bool = True) -> JobSetup:
  """The job preamble: mesh, config validated against it (before any data is read), method, dataset
  (None without `read_data`)."""
  mesh = sharding.make_mesh(config.mesh.num_devices)
  validation.validate(config, mesh.devices.size, jax.process_count())
  method = methods.get_method(config)
  dataset = None
  if read_data:
    # Imported here, as the pipeline below: the data readers need tensorflow_datasets and grain, which a
    # host that only builds and times the step (benchmarks/accelerator_check.py) need not have.
    from data import registry

    dataset = registry.get_dataset(config.data)
    log("data", registry.summary(dataset))
  return JobSetup(mesh=mesh, method=method, dataset=dataset)


def build_models(config, method: methods.Method, num_classes: int):
  """(online encoder, momentum-target encoder or None) with the heads `method` requires: same
  parameters, the target's BatchNorm over groups of `model.key_bn_group_size`."""
  needs = method.requirements
  kwargs = dict(num_classes=num_classes if needs.classifier else 0, projection_head=needs.projection_head)
  online = build_encoder(config.model, **kwargs)
  if not needs.momentum_target:
    return online, None
  return online, build_encoder(config.model, bn_group_size=config.model.key_bn_group_size or None, **kwargs)


def pretrain_schedule(config, num_train: int):
  """(lr schedule, steps per epoch, total steps) of pretraining: linear warm-up, then cosine, with the
  learning rate `train.base_lr * batch / 256`."""
  from dscl_jax.input.pipeline import steps_per_epoch as epoch_steps  # grain: see `setup_job`

  steps_per_epoch = epoch_steps(num_train, config.train.batch_size)
  total_steps = config.train.epochs * steps_per_epoch
  lr = config.train.base_lr * config.train.batch_size / 256
  schedule = optim.warmup_cosine_schedule(lr, total_steps, config.train.warmup_epochs * steps_per_epoch)
  return schedule, steps_per_epoch, total_steps


def pretrain_optimizer(config, schedule):
  return optim.sgd(schedule, config.train.momentum, config.train.weight_decay)


def _state_factory(config, method: methods.Method, model, tx, num_classes: int, channels: int, class_counts):
  """`(rng, trunk_variables or None) -> PretrainState` for this config and method."""
  image_shape = (config.augment.image_size, config.augment.image_size, channels)
  queue_size = config.moco.queue_size if method.requirements.queue else 0

  def create(rng, trunk):
    method_rng = jax.random.fold_in(rng, _METHOD_INIT_STREAM)
    edit = None if trunk is None else lambda variables: replace_trunk(variables, trunk, config.model.depth)
    return create_pretrain_state(
      rng,
      model,
      tx,
      image_shape,
      queue_size,
      num_classes,
      edit_variables=edit,
      momentum_target=method.requirements.momentum_target,
      method_state=method.init_state(method_rng, class_counts),
    )

  return create


def init_pretrain_state(
  config, method: methods.Method, model, tx, num_classes: int, channels: int, mesh, class_counts=None
) -> PretrainState:
  """A freshly initialised state, created directly with replicated sharding on the mesh. `class_counts`
  [C] (training images per class) feed the methods that use the class prior (PaCo, GPaCo)."""
  trunk = None
  if config.model.get("init_from"):
    if config.model.style != "imagenet" or config.model.get("width", 1) != 1:
      raise ValueError(
        f"model.init_from loads torchvision ResNet weights; model.style "
        f"{config.model.style!r} width {config.model.get('width', 1)} has no torchvision twin"
      )
    trunk = load_torchvision_resnet(config.model.init_from, config.model.depth)
  create = _state_factory(config, method, model, tx, num_classes, channels, class_counts)
  return jax.jit(create, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed), trunk)


def abstract_pretrain_state(
  config, method: methods.Method, model, tx, num_classes: int, channels: int, class_counts=None
) -> PretrainState:
  """Shapes and dtypes of the state, without computing it or reading `model.init_from` (restore targets)."""
  create = _state_factory(config, method, model, tx, num_classes, channels, class_counts)
  return jax.eval_shape(create, jax.random.PRNGKey(config.seed), None)


def jit_pretrain_step(config, method: methods.Method, online, target, tx, schedule, mesh):
  """`make_pretrain_step` jitted for `mesh`: the state replicated and donated, the batch split along "data"
  (the step keeps the target's permuted batch split the same way, see `step.momentum_keys`)."""
  replicated, batch_sharding = sharding.replicated(mesh), sharding.data_sharded(mesh)
  step = make_pretrain_step(config, method, online, target, tx, schedule, batch_sharding)
  return jax.jit(
    step, in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated), donate_argnums=0
  )


def load_pretrained(config, setup: JobSetup, workdir, *, classifier: bool = False):
  """Restore what the probe and eval need from the pretrain checkpoint: the online trunk's parameters and
  BatchNorm statistics and, with `classifier`, the model's own classifier. Returns
  ({"trunk": {"params", "batch_stats"}, "classifier": params or absent}, "<checkpoints dir>/<step>").

  A leaf whose shape differs from what this config builds raises naming its path and the config fields
  that set it; a damaged newest step falls back to the previous intact one.
  """
  dataset = setup.dataset
  directory = checkpoint.find_checkpoint_dir(config.pretrained or workdir, "pretrain")
  schedule, _, _ = pretrain_schedule(config, len(dataset.train))
  online, _ = build_models(config, setup.method, dataset.num_classes)
  full = abstract_pretrain_state(
    config,
    setup.method,
    online,
    pretrain_optimizer(config, schedule),
    dataset.num_classes,
    dataset.channels,
    dataset.class_counts,
  )
  template = {"params": {"trunk": full.params["trunk"]}, "batch_stats": {"trunk": full.batch_stats["trunk"]}}
  if classifier:
    template["params"]["classifier"] = full.params["classifier"]
  state, source = checkpoint.restore_from(
    directory, template, sharding.replicated(setup.mesh), partial=True, job="pretrain checkpoint"
  )
  loaded = {"trunk": {"params": state["params"]["trunk"], "batch_stats": state["batch_stats"]["trunk"]}}
  if classifier:
    loaded["classifier"] = state["params"]["classifier"]
  return loaded, source


def trunk_record(trunk_variables, source: str) -> dict:
  """Which trunk this is: {"checkpoint": "<checkpoints dir>/<step>", "step", "digest"}. The digest is
  SHA-256 (16 hex digits) over the shape, dtype and CRC-32 of every trunk array (parameters and
  BatchNorm statistics), so two trunks with equal digests hold the same numbers wherever they are."""
  sums = checkpoint.checksums(trunk_variables)
  digest = hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]
  return {"checkpoint": str(source), "step": int(epath.Path(source).name), "digest": digest}


# `<workdir>/probe/trunk.json`: the trunk the probe was trained on (`trunk_record`).
PROBE_TRUNK_RECORD = "trunk.json"


def probe_trunk(workdir) -> dict | None:
  """The trunk record of the probe in `<workdir>/probe`, or None when it has none."""
  path = epath.Path(workdir) / "probe" / PROBE_TRUNK_RECORD
  return read_json(path) if path.exists() else None


def describe_trunk(record: dict | None) -> str:
  if not record:
    return "an unrecorded trunk (a probe written before probes recorded their trunk)"
  return f"the trunk of {record['checkpoint']} (step {record['step']}, digest {record['digest']})"


def probe_optimizer(config, num_train: int):
  """(steps_per_epoch, total_steps, lr schedule, optimiser) of the probe: lr x0.1 at the milestones."""
  from dscl_jax.input.pipeline import steps_per_epoch as epoch_steps  # grain: see `setup_job`

  steps_per_epoch = epoch_steps(num_train, config.probe.batch_size)
  total_steps = config.probe.epochs * steps_per_epoch
  schedule = optim.step_schedule(config.probe.lr, [round(f * total_steps) for f in config.probe.milestones])
  if config.probe.max_steps >= 0:
    total_steps = min(total_steps, config.probe.max_steps)
  tx = optim.sgd(schedule, config.probe.momentum, config.probe.weight_decay)
  return steps_per_epoch, total_steps, schedule, tx


def create_probe_state(tx, num_features: int, num_classes: int, trunk_batch_stats=None) -> ProbeState:
  """A zero-initialised linear classifier [F, C] + [C], its optimiser state, and the trunk's
  re-estimated BatchNorm statistics (None: the pretrained ones)."""
  params = {
    "kernel": jnp.zeros((num_features, num_classes), jnp.float32),
    "bias": jnp.zeros((num_classes,), jnp.float32),
  }
  zero = jnp.zeros((), jnp.int32)
  return ProbeState(
    step=zero,
    params=params,
    opt_state=tx.init(params),
    skipped_in_a_row=zero,
    skipped_total=zero,
    trunk_batch_stats=trunk_batch_stats,
  )


# BatchNorm's epsilon: a feature that never varies on the training split stays finite elsewhere.
FEATURE_STD_EPSILON = 1e-5


def feature_statistics(features) -> tuple:
  """(mean [F], std [F]) float32 of features [N, F], std = sqrt(var + 1e-5).

  Why the probe standardises (`probe.standardize_features`): features after a ReLU share a large common
  mean, so the classifier's loss is far more curved along that one direction than along the directions
  that tell classes apart (digits demo: 9.4 against 0.26, the top eigenvalues of the features' second
  moment and of their covariance). One learning rate cannot be both stable along the first and fast
  along the others: the demo's probe ended at 41% training accuracy (its random crops of 8x8 digits were
  the rest of the problem, configs/digits_lt_dscl.py). Standardised features have no such direction. It is still a linear classifier on the frozen features: `probe_classifier` folds the
  standardisation into its weights."""
  features = np.asarray(features, np.float64)
  mean, var = features.mean(0), features.var(0)
  return np.float32(mean), np.float32(np.sqrt(var + FEATURE_STD_EPSILON))


def probe_feature_stats(config, trunk, trunk_variables, train_split, mesh):
  """The (mean [F], std [F]) the probe standardises with: `feature_statistics` of the trunk's features of
  the training split's evaluation view (what the logistic regression sees), or None without
  `probe.standardize_features`. A pure function of the trunk and the split, so the probe, its resumed
  runs and `eval` compute the same statistics and no checkpoint has to hold them."""
  if not config.probe.standardize_features:
    return None
  from dscl_jax.evaluation.feature_eval import extract_features  # the pipeline, grain: see `setup_job`

  features, _ = extract_features(trunk, trunk_variables, train_split, config.augment, config.eval.batch_size, mesh)
  return tuple(jnp.asarray(x) for x in feature_statistics(features))


def probe_classifier(params, feature_stats) -> dict:
  """The probe as a linear classifier on raw features, {"kernel" [F, C], "bias" [C]}: with
  standardisation, W' (x - m) / s + b' = x @ (W' / s) + (b' - (m / s) @ W')."""
  if feature_stats is None:
    return params
  mean, std = feature_stats
  kernel = params["kernel"] / std[:, None]
  bias = params["bias"] - (mean / std) @ params["kernel"]
  return {"kernel": kernel, "bias": bias}


def probe_trunk_variables(trunk_variables, probe_state: ProbeState):
  """The trunk variables the probe was trained with: re-estimated statistics when it has them."""
  if probe_state.trunk_batch_stats is None:
    return trunk_variables
  return {"params": trunk_variables["params"], "batch_stats": probe_state.trunk_batch_stats}


def restore_probe(config, workdir, num_features: int, num_classes: int, num_train: int, mesh, trunk_batch_stats=None):
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
