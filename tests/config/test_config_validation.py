"""The whole config is validated before any data is read or anything compiled, with messages naming the
field, the bad value and what would be valid."""

import os

import pytest

from dscl_jax import main
from dscl_jax.config import validation
from dscl_jax.config.schema import base_config
from tests.config.test_configs import CONFIGS, load_config


def digits_config():
  c = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")
  c.moco.queue_size = 512
  c.train.batch_size = 64
  c.pbsd.enabled = False
  return c


# (field, bad value, a piece of the expected message)
BAD_VALUES = [
  ("mode", "train", "mode 'train' must be one of ('pretrain', 'linear_probe', 'eval', 'all')"),
  ("method", "moco", "method 'moco' must be one of ("),
  ("data.name", "imagenet", "data.name 'imagenet' must be one of ["),
  ("data.imbalance_factor", 0.5, "data.imbalance_factor 0.5 must be >= 1"),
  ("loss.temperature", 0.0, "loss.temperature 0.0 must be > 0"),
  ("loss.temperature", -0.07, "loss.temperature -0.07 must be > 0"),
  ("paco.sup_temperature", 0.0, "paco.sup_temperature 0.0 must be > 0"),
  ("iccl.temperature", 0.0, None),  # only checked for method iccl, below
  ("train.base_lr", 0.0, "train.base_lr 0.0 must be > 0"),
  ("train.base_lr", -0.1, "train.base_lr -0.1 must be > 0"),
  ("train.epochs", 0, "train.epochs 0 must be > 0"),
  ("train.warmup_epochs", 200, "train.warmup_epochs 200 must be in [0, train.epochs=200)"),
  ("train.log_every", 0, "train.log_every 0 must be > 0"),
  ("train.checkpoint_every", 0, "train.checkpoint_every 0 must be > 0"),
  ("train.max_skipped_steps", 0, "train.max_skipped_steps 0 must be > 0"),
  ("train.momentum", 1.0, "train.momentum 1.0 must be in [0, 1)"),
  ("train.weight_decay", -1e-4, "train.weight_decay -0.0001 must be >= 0"),
  ("train.max_steps", -2, "train.max_steps -2 must be -1 (every epoch) or >= 0"),
  ("moco.momentum", 1.0, "moco.momentum 1.0 must be in [0, 1)"),
  ("moco.queue_size", 100, "moco.queue_size 100 must be 0 or a multiple of train.batch_size 64"),
  (
    "model.key_bn_group_size",
    48,
    "model.key_bn_group_size 48 must be 0 (whole batch) or >= 2 and divide train.batch_size 64",
  ),
  ("model.depth", 21, "model.depth 21:"),
  ("model.style", "vit", "model.style 'vit' must be one of ('cifar', 'imagenet')"),
  ("model.dtype", "float16", "model.dtype 'float16' must be one of ('float32', 'bfloat16')"),
  ("model.embed_dim", 0, "model.embed_dim 0 must be > 0"),
  ("augment.image_size", 0, "augment.image_size 0 must be > 0"),
  ("augment.crop_scale", (0.5, 0.2), "augment.crop_scale (0.5, 0.2) must satisfy 0 < low <= high <= 1"),
  ("augment.crop_scale", (0.0, 1.0), "augment.crop_scale (0.0, 1.0) must satisfy 0 < low <= high <= 1"),
  ("augment.query.blur_prob", 1.5, "augment.query.blur_prob 1.5 must be in [0, 1]"),
  ("probe.lr", 0.0, "probe.lr 0.0 must be > 0"),
  ("probe.epochs", 0, "probe.epochs 0 must be > 0"),
  ("probe.milestones", (0.75, 0.5), "probe.milestones (0.75, 0.5) must be increasing fractions"),
  ("probe.batch_size", 0, "probe.batch_size 0 must be > 0"),
  ("eval.split", "dev", "eval.split 'dev' must be one of ('test', 'val', 'train')"),
  ("mesh.num_devices", 2, "mesh.num_devices 2 must be -1 (every device) or in [1, 1]"),
]


def set_field(config, field, value):
  *parents, last = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[last] = value


@pytest.mark.parametrize(
  "field,value,message", [b for b in BAD_VALUES if b[2]], ids=[f"{b[0]}={b[1]}" for b in BAD_VALUES if b[2]]
)
def test_each_bad_value_is_named(field, value, message):
  config = digits_config()
  set_field(config, field, value)
  with pytest.raises(validation.ConfigError) as error:
    validation.validate(config, num_devices=1)
  assert message in str(error.value)


def test_pbsd_crop_larger_than_the_image_is_refused():
  config = digits_config()
  config.pbsd.enabled = True
  config.pbsd.crop_size = 16
  with pytest.raises(validation.ConfigError, match="pbsd.crop_size 16 must be smaller than augment.image_size 16"):
    validation.validate(config, num_devices=1)
  config.pbsd.crop_size = 8
  validation.validate(config, num_devices=1)


def test_batch_against_devices():
  config = digits_config()
  config.train.batch_size = 60
  config.moco.queue_size = 600
  with pytest.raises(
    validation.ConfigError,
    match=r"train.batch_size 60 \(global\) must be a multiple "
    r"of the 8 devices; e.g. 56",
  ):
    validation.validate(config, num_devices=8)
  config.train.batch_size = 64
  config.moco.queue_size = 512
  config.mesh.num_devices = 4
  with pytest.raises(validation.ConfigError, match=r"mesh.num_devices 4 must be -1 in a multi-process job"):
    validation.validate(config, num_devices=8, num_processes=2)


def test_method_specific_fields():
  config = digits_config()
  config.method = "iccl"
  config.iccl.temperature = 0.0
  with pytest.raises(ValueError, match="iccl.temperature 0.0 must be > 0"):
    validation.validate(config, num_devices=1)


def test_unknown_fields_get_the_closest_names():
  config = digits_config()
  config.train.base_lrr = 0.2
  config.lossy = {"beta": 1.0}
  with pytest.raises(validation.ConfigError) as error:
    validation.validate(config, num_devices=1)
  message = str(error.value)
  assert "train.base_lrr (did you mean train.base_lr" in message
  assert "lossy (did you mean loss?)" in message and "lossy.beta" not in message


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p)[:-3] for p in CONFIGS])
def test_every_shipped_config_validates(path):
  config = load_config(path)
  validation.validate(config, num_devices=1)


def test_validation_runs_before_any_data_or_compilation(tmp_path, monkeypatch):
  """main.run raises the config error while reading data or compiling would fail loudly."""
  import jax

  import data.registry

  def forbidden(*args, **kwargs):
    raise AssertionError("data was read or a function compiled before the config was validated")

  monkeypatch.setattr(data.registry, "get_dataset", forbidden)
  monkeypatch.setattr(jax, "jit", forbidden)
  config = digits_config()
  config.loss.temperature = 0.0
  with pytest.raises(validation.ConfigError, match="loss.temperature 0.0 must be > 0"):
    main.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # not even the workdir's lock was written
