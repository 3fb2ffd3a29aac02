"""Validation of a whole config before any data is read or anything is compiled.

`validate(config, num_devices, num_processes)` raises a ValueError whose message names the field, the bad
value, and the valid range or modes. It runs first in `main.run` (and again, cheaply, at the top of each
job), so a typo costs seconds rather than a data load and a compilation. Unknown fields (a config file
setting a name that nothing reads) are reported with the closest known names.
"""

from __future__ import annotations

from dscl_jax import methods
from dscl_jax.config import schema
from dscl_jax.models.resnet import resnet_stage_sizes

MODES = ("pretrain", "linear_probe", "eval", "all")
EVAL_SPLITS = ("test", "val", "train")
DTYPES = ("float32", "bfloat16")
STYLES = ("cifar", "imagenet")


class ConfigError(ValueError):
  """A config value out of range, an unknown mode, or an unknown field."""


def unknown_fields(config) -> list[str]:
  """Readable complaints for fields of `config` that no code reads, with the closest known names."""
  known = schema.known_fields()
  problems = []
  for field in sorted(schema.flat_keys(config.to_dict()) - known):
    parent = field.rsplit(".", 1)[0] if "." in field else ""
    if parent and parent not in known:
      continue  # reported once, at its unknown parent
    close = schema.closest_fields(field)
    problems.append(f"{field}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
  return problems


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _positive(config, *fields: str) -> None:
  for field in fields:
    value = _get(config, field)
    _require(value > 0, f"{field} {value!r} must be > 0")


def _non_negative(config, *fields: str) -> None:
  for field in fields:
    value = _get(config, field)
    _require(value >= 0, f"{field} {value!r} must be >= 0")


def _unit_interval(config, field: str, *, closed_top: bool = False) -> None:
  value = _get(config, field)
  ok = 0.0 <= value <= 1.0 if closed_top else 0.0 <= value < 1.0
  _require(ok, f"{field} {value!r} must be in [0, 1{']' if closed_top else ')'}")


def _scale_range(config, field: str) -> None:
  low, high = _get(config, field)
  _require(
    0.0 < low <= high <= 1.0, f"{field} {(low, high)!r} must satisfy 0 < low <= high <= 1 (fractions of the image area)"
  )


def _get(config, field: str):
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def validate(config, num_devices: int, num_processes: int = 1) -> None:
  """Raise ConfigError naming the first bad field of `config` for a mesh of `num_devices` devices."""
  problems = unknown_fields(config)
  _require(not problems, "unknown config field(s): " + "; ".join(problems))
  _require(config.mode in MODES, f"mode {config.mode!r} must be one of {MODES}")
  _require(
    config.method in methods.available(),
    f"method {config.method!r} must be one of {methods.available()} (the modules of dscl_jax/methods/)",
  )
  _require(isinstance(config.seed, int) and config.seed >= 0, f"seed {config.seed!r} must be an integer >= 0")
  _non_negative(config, "dry_run_memory_gib")

  from data.registry import BUILDERS  # the dataset names, without reading any data

  _require(config.data.name in BUILDERS, f"data.name {config.data.name!r} must be one of {sorted(BUILDERS)}")
  _require(
    config.data.imbalance_factor >= 1,
    f"data.imbalance_factor {config.data.imbalance_factor!r} must be >= 1 (largest / smallest class)",
  )

  aug = config.augment
  _positive(config, "augment.image_size")
  _scale_range(config, "augment.crop_scale")
  _scale_range(config, "augment.probe_crop_scale")
  low, high = aug.blur_sigma
  _require(0 < low <= high, f"augment.blur_sigma {(low, high)!r} must satisfy 0 < low <= high (pixels)")
  canvas = aug.device_canvas
  _require(
    isinstance(canvas, int) and (canvas == 0 or canvas >= aug.image_size),
    f"augment.device_canvas {canvas!r} must be 0 (the host crops) or an int >= augment.image_size "
    f"{aug.image_size} (a smaller canvas would upsample every crop)",
  )
  _require(
    not canvas or aug.on_device,
    f"augment.device_canvas {canvas!r} cuts the crops on the device, which needs augment.on_device = True",
  )
  low, high = aug.crop_ratio
  _require(0 < low <= high, f"augment.crop_ratio {(low, high)!r} must satisfy 0 < low <= high")
  _require(
    len(aug.mean) == len(aug.std) and all(s > 0 for s in aug.std),
    f"augment.mean {aug.mean!r} and augment.std {aug.std!r} must have one entry per channel, std > 0",
  )
  for view in ("query", "key"):
    recipe = aug[view]
    for prob in ("jitter_prob", "grayscale_prob", "blur_prob"):
      _require(0.0 <= recipe[prob] <= 1.0, f"augment.{view}.{prob} {recipe[prob]!r} must be in [0, 1]")
    _require(
      recipe["randaugment_ops"] >= 0, f"augment.{view}.randaugment_ops {recipe['randaugment_ops']!r} must be >= 0"
    )
    _require(
      0 <= recipe["randaugment_magnitude"] <= 30,
      f"augment.{view}.randaugment_magnitude {recipe['randaugment_magnitude']!r} must be in [0, 30]",
    )
    _require(
      not (aug.on_device and recipe["randaugment_ops"]),
      f"augment.on_device has no RandAugment (a PIL op), but augment.{view}.randaugment_ops is "
      f"{recipe['randaugment_ops']!r}; set it to 0 or augment.on_device = False",
    )

  pbsd = config.pbsd
  if pbsd.enabled or pbsd.multicrop:
    _positive(config, "pbsd.num_crops", "pbsd.crop_size")
    # A crop as large as the image is no small crop, and larger ones are upsampled: a config slip that
    # would silently multiply the cost of every step.
    _require(
      pbsd.crop_size < aug.image_size,
      f"pbsd.crop_size {pbsd.crop_size} must be smaller than augment.image_size {aug.image_size} "
      f"(PBSD's crops are small views; the paper uses 64 at 224)",
    )
    _scale_range(config, "pbsd.crop_scale")
    _non_negative(config, "pbsd.weight")
    _require(0.0 <= pbsd.flip_prob <= 1.0, f"pbsd.flip_prob {pbsd.flip_prob!r} must be in [0, 1]")
    low, high = pbsd.blur_sigma
    _require(0 < low <= high, f"pbsd.blur_sigma {(low, high)!r} must satisfy 0 < low <= high (pixels)")

  model = config.model
  _require(model.style in STYLES, f"model.style {model.style!r} must be one of {STYLES}")
  try:
    resnet_stage_sizes(model.depth, model.style)
  except ValueError as error:
    raise ConfigError(f"model.depth {model.depth!r}: {error}") from None
  _require(model.dtype in DTYPES, f"model.dtype {model.dtype!r} must be one of {DTYPES}")
  _positive(config, "model.width", "model.embed_dim")
  _non_negative(config, "model.head_hidden_dim", "model.key_bn_group_size")

  _positive(config, "loss.temperature")
  _non_negative(config, "loss.beta")
  _positive(config, "paco.sup_temperature")
  _non_negative(config, "paco.alpha", "paco.beta", "paco.gamma")
  _unit_interval(config, "moco.momentum")
  _non_negative(config, "moco.queue_size")

  train = config.train
  _positive(
    config,
    "train.batch_size",
    "train.epochs",
    "train.base_lr",
    "train.log_every",
    "train.checkpoint_every",
    "train.max_skipped_steps",
  )
  _require(
    0 <= train.warmup_epochs < train.epochs,
    f"train.warmup_epochs {train.warmup_epochs!r} must be in [0, train.epochs={train.epochs})",
  )
  _unit_interval(config, "train.momentum")
  _non_negative(config, "train.weight_decay", "train.num_workers")
  _require(train.max_steps >= -1, f"train.max_steps {train.max_steps!r} must be -1 (every epoch) or >= 0")

  probe = config.probe
  _positive(config, "probe.batch_size", "probe.epochs", "probe.lr", "probe.log_every", "probe.checkpoint_every")
  _unit_interval(config, "probe.momentum")
  _non_negative(config, "probe.weight_decay", "probe.reestimate_bn_batches")
  milestones = tuple(probe.milestones)
  _require(
    all(0 < m < 1 for m in milestones) and list(milestones) == sorted(milestones),
    f"probe.milestones {milestones!r} must be increasing fractions of the epochs in (0, 1)",
  )
  _require(probe.max_steps >= -1, f"probe.max_steps {probe.max_steps!r} must be -1 (every epoch) or >= 0")

  _positive(config, "eval.batch_size", "eval.logistic_max_iter")
  _non_negative(config, "eval.knn_k")
  _require(config.eval.split in EVAL_SPLITS, f"eval.split {config.eval.split!r} must be one of {EVAL_SPLITS}")

  _require(
    num_processes == 1 or config.mesh.num_devices == -1,
    f"mesh.num_devices {config.mesh.num_devices!r} must be -1 in a multi-process job (every device)",
  )
  _require(
    config.mesh.num_devices == -1 or 0 < config.mesh.num_devices <= num_devices,
    f"mesh.num_devices {config.mesh.num_devices!r} must be -1 (every device) or in [1, {num_devices}]",
  )
  devices = num_devices if config.mesh.num_devices == -1 else config.mesh.num_devices
  for field in ("train.batch_size", "probe.batch_size", "eval.batch_size"):
    value = _get(config, field)
    # Every process holds the same number of devices, so a multiple of the devices splits over processes.
    _require(
      value % devices == 0,
      f"{field} {value} (global) must be a multiple of the {devices} devices; "
      f"e.g. {max(devices, value // devices * devices)}",
    )

  method = methods.get_method(config)
  needs = method.requirements
  batch = train.batch_size
  if needs.queue and config.moco.queue_size:
    queue = config.moco.queue_size
    _require(
      queue % batch == 0,
      f"moco.queue_size {queue} must be 0 or a multiple of train.batch_size {batch} "
      f"(the whole global batch is enqueued at once), e.g. "
      f"{max(batch, queue // batch * batch)}",
    )
  if needs.momentum_target:
    group = model.key_bn_group_size
    _require(
      not group or (group >= 2 and batch % group == 0),
      f"model.key_bn_group_size {group} must be 0 (whole batch) or >= 2 and divide train.batch_size {batch}",
    )
  method.validate(config)
