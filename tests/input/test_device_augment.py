"""Augmentation on the device (`augment.on_device`): the host's half draws exactly the PIL path's random
numbers, the parameters it sends describe exactly the PIL path's views, the device's half lands within
stated distances of the PIL path's pixels, and the pipeline and the step carry it end to end.

The device ops themselves are checked against torchvision's tensor ops in tests/ops/test_image_ops.py.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import base
from dscl_jax.config.validation import ConfigError, validate
from dscl_jax.core import sharding
from dscl_jax.input import augment, device_augment, pipeline, synthetic
from tests.step_runner import setup, small_config


def _smooth_image(height, width, channels, seed):
  """Photo-like content (smooth fields and a disc) with some noise: where PIL's and torchvision's rounding
  differ by a level, not where noise amplifies every difference."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  disc = (y - height * rng.uniform(0.3, 0.7)) ** 2 + (x - width * rng.uniform(0.3, 0.7)) ** 2 < (height / 4) ** 2
  fields = [
    128 + 60 * np.sin(x / width * rng.uniform(2, 6) + rng.uniform(0, 6)) + 40 * np.cos(y / height * 3) + 50 * disc
    for _ in range(channels)
  ]
  noisy = np.stack(fields, -1) + rng.normal(0, 3, (height, width, channels))
  return np.clip(noisy, 0, 255).astype(np.uint8)


def _configs(channels, size=48, crop_size=16):
  cfg_augment = augment.default_augment_config(size, channels)
  cfg_pbsd = augment.default_pbsd_config()
  cfg_pbsd.crop_size = crop_size
  cfg_pbsd.blur_sigma = augment.scaled_blur_sigma(crop_size, 64)
  return cfg_augment, cfg_pbsd


def _replay(crop_uint8: np.ndarray, params: np.ndarray):
  """The PIL ops the parameter vector names, applied to the uint8 crop: flip, the jitter parts in order
  (a part at its identity value was not drawn), grayscale, blur. Written from `augment.VIEW_PARAMS`."""
  p = dict(zip(augment.VIEW_PARAMS, params.tolist()))
  image = augment.to_pil(crop_uint8)
  if p["flip"]:
    image = augment.horizontal_flip(image)
  ops = {
    0: (augment.adjust_brightness, p["brightness"], 1.0),
    1: (augment.adjust_contrast, p["contrast"], 1.0),
    2: (augment.adjust_saturation, p["saturation"], 1.0),
    3: (augment.adjust_hue, p["hue"], 0.0),
  }
  for slot in range(4):
    op, value, identity = ops[int(p[f"order_{slot}"])]
    if value != identity:
      image = op(image, value)
  if p["grayscale"]:
    image = augment.to_grayscale(image)
  if p["blur_sigma"]:
    image = augment.gaussian_blur(image, p["blur_sigma"])
  return image


@pytest.mark.parametrize("channels", [3, 1])
def test_host_half_draws_the_pil_paths_numbers_and_describes_its_views(channels):
  cfg_augment, cfg_pbsd = _configs(channels)
  for seed in range(12):
    image = _smooth_image(60, 72, channels, seed)
    rng_pil, rng_device = np.random.default_rng(seed), np.random.default_rng(seed)
    pil = augment.pretrain_views(image, rng_pil, cfg_augment, cfg_pbsd, normalized=False)
    device = augment.pretrain_views(image, rng_device, cfg_augment, cfg_pbsd, on_device=True)
    # The same draws, in the same order: the generators end in the same state.
    assert rng_pil.bit_generator.state == rng_device.bit_generator.state
    assert set(device) == {"query", "key", "boxes", "query_augment", "key_augment", "small_crops_augment"}
    np.testing.assert_array_equal(device["boxes"], pil["boxes"])
    for view in ("query", "key"):
      assert device[view].dtype == np.uint8 and device[view].shape == (48, 48, channels)
      replayed = augment.to_array(_replay(device[view], device[view + "_augment"]))
      # float32 parameters replay the float64 draws: an enhance factor that moved by 1e-8 can move a
      # pixel by one level where the product sits on a rounding boundary.
      assert np.abs(replayed.astype(int) - pil[view].astype(int)).max() <= 1
      assert np.mean(replayed != pil[view]) < 0.01
    flip = device["query_augment"][0] > 0
    query_crop = augment.to_pil(device["query"][:, ::-1] if flip else device["query"])
    for crop, box, params in zip(pil["small_crops"], device["boxes"], device["small_crops_augment"]):
      cut = augment.to_array(augment.resized_crop(query_crop, box, cfg_pbsd.crop_size))
      replayed = augment.to_array(_replay(cut, params))
      assert np.abs(replayed.astype(int) - crop.astype(int)).max() <= 1


def _both_paths(samples, cfg_augment, cfg_pbsd):
  """(the PIL path's views of each sample, the device path's batch of them after `finish_views`), sample `s`
  drawn with seed `s` on both paths."""
  pil = [augment.pretrain_views(x, np.random.default_rng(s), cfg_augment, cfg_pbsd) for s, x in enumerate(samples)]
  host = [
    augment.pretrain_views(x, np.random.default_rng(s), cfg_augment, cfg_pbsd, on_device=True)
    for s, x in enumerate(samples)
  ]
  batch = {name: np.stack([h[name] for h in host]) for name in host[0]}
  return pil, jax.jit(lambda b: device_augment.finish_views(b, cfg_augment, cfg_pbsd))(batch)


def test_identity_parameters_give_the_pil_paths_geometry():
  """Colours off: the device's flip and small crops against the PIL path's, in uint8 levels."""
  cfg_augment, cfg_pbsd = _configs(3)
  for view in ("query", "key"):
    cfg_augment[view].update(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  samples = [_smooth_image(60, 72, 3, seed) for seed in range(6)]
  pil, out = _both_paths(samples, cfg_augment, cfg_pbsd)
  std = np.asarray(cfg_augment.std, np.float32)
  for view in ("query", "key"):
    # flips and the normalisation only: float rounding of (x / 255 - mean) / std
    np.testing.assert_allclose(np.asarray(out[view]), np.stack([p[view] for p in pil]), atol=2e-6)
  levels = np.abs(np.asarray(out["small_crops"]) - np.stack([p["small_crops"] for p in pil])) * std * 255
  # PIL resamples in two passes and rounds to uint8 after each (the device keeps floats): under a level.
  assert levels.max() < 1.0, levels.max()
  assert levels.mean() < 0.3, levels.mean()


@pytest.mark.parametrize("channels", [3, 1])
def test_device_views_are_close_to_the_pil_paths(channels):
  """The whole recipe. Bounds in uint8 levels, from measurements (docs/design.md): the views differ where
  PIL rounds to 8 bits between ops, turns the hue in 8-bit HSV, and blurs with three box filters."""
  cfg_augment, cfg_pbsd = _configs(channels)
  samples = [_smooth_image(60, 72, channels, seed) for seed in range(16)]
  pil, out = _both_paths(samples, cfg_augment, cfg_pbsd)
  std = np.asarray(cfg_augment.std, np.float32)
  for view in ("query", "key", "small_crops"):
    levels = np.abs(np.asarray(out[view]) - np.stack([p[view] for p in pil])) * std * 255
    assert np.isfinite(levels).all()
    # measured (16 images, 48 px views): mean 0.7-1.4 levels, 99th percentile 1.9-4.7; PIL truncates
    # after each of the jitter's blends (half a level each, on average)
    assert levels.mean() < 2.0, (view, levels.mean())
    assert np.percentile(levels, 99) < 8, (view, np.percentile(levels, 99))


def _split(channels=1, num_examples=24, seed=0):
  rng = np.random.default_rng(seed)
  images = np.stack([_smooth_image(20, 20, channels, int(s)) for s in rng.integers(0, 1000, num_examples)])
  labels = (np.arange(num_examples) % 4).astype(np.int32)
  return base.Split("train", base.ArraySource(images, labels), labels)


@pytest.mark.parametrize("sampler", ["instance", "instance_and_class_aware"])
def test_pipeline_sends_crops_and_parameters(sampler):
  cfg_augment, cfg_pbsd = _configs(1, size=16, crop_size=6)
  cfg_device = cfg_augment.copy_and_resolve_references()
  cfg_device.on_device = True
  views = ("query", "key", "small_crops") + (("class_aware",) if sampler != "instance" else ())
  kwargs = dict(views=views, sampler=sampler, global_batch_size=8, seed=3)
  pil = list(itertools.islice(pipeline.pretrain_iterator(_split(), cfg_augment, cfg_pbsd, **kwargs), 2))
  device = list(itertools.islice(pipeline.pretrain_iterator(_split(), cfg_device, cfg_pbsd, **kwargs), 2))
  expected = {"query", "key", "boxes", "label", "query_augment", "key_augment", "small_crops_augment"}
  if sampler != "instance":
    expected |= {"class_aware", "class_aware_label", "class_aware_augment"}
  for p, d in zip(pil, device):
    assert set(d) == expected
    assert d["query"].dtype == np.uint8 and d["query"].shape == (8, 16, 16, 1)
    assert d["query_augment"].shape == (8, len(augment.VIEW_PARAMS))
    assert d["small_crops_augment"].shape == (8, 5, len(augment.VIEW_PARAMS))
    for name in ("label", "boxes") + (("class_aware_label",) if sampler != "instance" else ()):
      np.testing.assert_array_equal(d[name], p[name])


def test_probe_pipeline_sends_the_unflipped_crop_and_its_flip():
  cfg_augment, _ = _configs(1, size=16)
  cfg_device = cfg_augment.copy_and_resolve_references()
  cfg_device.on_device = True
  kwargs = dict(global_batch_size=8, seed=5)
  pil = next(pipeline.probe_iterator(_split(), cfg_augment, **kwargs))
  device = next(pipeline.probe_iterator(_split(), cfg_device, **kwargs))
  assert set(device) == {"image", "image_augment", "label"}
  flips = device["image_augment"][:, 0] > 0
  assert 0 < flips.sum() < 8  # both kinds occur in this batch
  np.testing.assert_array_equal(
    np.where(flips[:, None, None, None], device["image"][:, :, ::-1], device["image"]), pil["image"]
  )
  out = jax.jit(lambda b: device_augment.finish_views(b, cfg_device, None))(device)
  np.testing.assert_allclose(
    np.asarray(out["image"]), augment.normalize(pil["image"], cfg_augment.mean, cfg_augment.std), atol=2e-6
  )


@pytest.mark.parametrize("canvas", [0, 40])
def test_pretrain_step_augments_on_the_device(canvas):
  """The step applies `finish_views` itself: its loss equals the step's on the views augmented outside."""
  config = small_config("dscl", pbsd=True)
  config.augment.on_device = True
  config.augment.device_canvas = canvas
  views = ("query", "key", "small_crops")
  batch = synthetic.pretrain_batch(config, views, 1, 10, np.random.default_rng(0), pixels=True)
  assert "small_crops_augment" in batch and "small_crops" not in batch
  assert ("canvas" in batch and "query_box" in batch and "query" not in batch) == bool(canvas)
  finished = jax.jit(lambda b: device_augment.finish_views(b, config.augment, config.pbsd))(batch)
  losses = []
  for inputs in (batch, {name: np.asarray(value) for name, value in finished.items()}):
    state, step, mesh = setup(config)
    _, metrics = step(state, sharding.to_global(inputs, mesh))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses[0])
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


# ------------------------------------------------------------------ the crops on the device (device_canvas)


_cut = jax.jit(device_augment.uncoloured_view, static_argnums=(1, 2))


def _canvas_config(cfg_augment, canvas):
  out = cfg_augment.copy_and_resolve_references()
  out.on_device, out.device_canvas = True, canvas
  return out


@pytest.mark.parametrize("channels", [3, 1])
def test_canvas_path_draws_the_same_boxes_and_cuts_the_pil_paths_crops(channels):
  """An image that fits the canvas: the same draws as the PIL path, the image unchanged in the canvas's
  top-left corner, and the device's cut of each box within one uint8 level of the PIL path's crop (PIL
  rounds to 8 bits after each resize pass; the device keeps floats)."""
  cfg_augment, cfg_pbsd = _configs(channels)
  cfg_canvas = _canvas_config(cfg_augment, 80)
  finish = jax.jit(lambda b: device_augment.finish_views(b, cfg_canvas, cfg_pbsd))
  for seed in range(8):
    image = _smooth_image(60, 72, channels, seed)
    rng_host, rng_canvas = np.random.default_rng(seed), np.random.default_rng(seed)
    host = augment.pretrain_views(image, rng_host, cfg_augment, cfg_pbsd, on_device=True)
    sent = augment.pretrain_views(image, rng_canvas, cfg_canvas, cfg_pbsd, on_device=True)
    assert rng_host.bit_generator.state == rng_canvas.bit_generator.state
    assert set(sent) == {
      "canvas",
      "query_box",
      "key_box",
      "boxes",
      "query_augment",
      "key_augment",
      "small_crops_augment",
    }
    assert sent["canvas"].shape == (80, 80, channels) and sent["canvas"].dtype == np.uint8
    np.testing.assert_array_equal(sent["canvas"][:60, :72], image)
    assert not sent["canvas"][60:].any() and not sent["canvas"][:, 72:].any()
    for name in ("boxes", "query_augment", "key_augment", "small_crops_augment"):
      np.testing.assert_array_equal(sent[name], host[name])
    batch = {name: value[None] for name, value in sent.items()}
    for view in ("query", "key"):
      box = sent[view + "_box"]
      assert box.dtype == np.float32 and np.all(box == np.round(box)) and box[2] <= 72 and box[3] <= 60
      cut = np.asarray(_cut(batch, view, 48))[0]
      assert np.abs(np.round(cut * 255) - host[view]).max() <= 1, (seed, view)
    finished = finish(batch)
    assert set(finished) == {"query", "key", "small_crops", "boxes"}
    assert finished["small_crops"].shape == (1, 5, 16, 16, channels)


def test_an_image_larger_than_the_canvas_is_resized_to_fit_first():
  """A 90 x 120 image on a 64 px canvas becomes 48 x 64 (PIL's antialiased bilinear, aspect kept); its
  boxes are drawn on that and the device's cuts are the PIL path's crops of it, within one level."""
  cfg_augment, cfg_pbsd = _configs(3, size=32, crop_size=12)
  cfg_canvas = _canvas_config(cfg_augment, 64)
  image = _smooth_image(90, 120, 3, 7)
  fitted = augment.fit_to_canvas(image, 64)
  expected = augment.to_array(augment.to_pil(image).resize((64, 48), augment.Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(fitted, expected)
  assert augment.fit_to_canvas(image[:, :70], 64).shape == (64, 50, 3)  # portrait: the height is fitted
  assert augment.fit_to_canvas(image[:40, :64], 64).shape == (40, 64, 3)  # fits: unchanged
  sent = augment.pretrain_views(image, np.random.default_rng(3), cfg_canvas, cfg_pbsd, on_device=True)
  host = augment.pretrain_views(fitted, np.random.default_rng(3), cfg_augment, cfg_pbsd, on_device=True)
  np.testing.assert_array_equal(sent["canvas"][:48], fitted)
  assert not sent["canvas"][48:].any()
  batch = {name: value[None] for name, value in sent.items()}
  for view in ("query", "key"):
    cut = np.asarray(_cut(batch, view, 32))[0]
    assert np.abs(np.round(cut * 255) - host[view]).max() <= 1
  with pytest.raises(ValueError, match="does not fit a 64 px canvas"):
    augment.on_canvas(image, 64)


def test_device_canvas_is_validated():
  config = small_config("dscl")
  config.augment.device_canvas = 64
  with pytest.raises(ConfigError, match="augment.device_canvas 64 .* needs augment.on_device = True"):
    validate(config, 1)
  config.augment.on_device = True
  validate(config, 1)
  config.augment.device_canvas = config.augment.image_size - 1
  with pytest.raises(ConfigError, match=f"augment.device_canvas {config.augment.image_size - 1} must be 0"):
    validate(config, 1)


@pytest.mark.parametrize("sampler", ["instance", "instance_and_class_aware"])
def test_pipeline_sends_canvases_and_boxes(sampler):
  """The canvas path through the pipeline: canvases and boxes instead of crops, the class-aware sample
  under its own names, and after `finish_views` views within a level of the host-crop path's."""
  cfg_augment, cfg_pbsd = _configs(1, size=16, crop_size=6)
  cfg_host = _canvas_config(cfg_augment, 0)
  cfg_canvas = _canvas_config(cfg_augment, 24)
  views = ("query", "key", "small_crops") + (("class_aware",) if sampler != "instance" else ())
  kwargs = dict(views=views, sampler=sampler, global_batch_size=8, seed=3)
  host = next(pipeline.pretrain_iterator(_split(), cfg_host, cfg_pbsd, **kwargs))
  sent = next(pipeline.pretrain_iterator(_split(), cfg_canvas, cfg_pbsd, **kwargs))
  expected = {"canvas", "query_box", "key_box", "boxes", "label", "query_augment", "key_augment", "small_crops_augment"}
  if sampler != "instance":
    expected |= {"class_aware_canvas", "class_aware_box", "class_aware_label", "class_aware_augment"}
  assert set(sent) == expected
  assert sent["canvas"].shape == (8, 24, 24, 1) and sent["query_box"].shape == (8, 4)
  for name in set(host) & set(sent):
    np.testing.assert_array_equal(sent[name], host[name], err_msg=name)
  for view in ("query", "key") + (("class_aware",) if sampler != "instance" else ()):
    cut = np.asarray(_cut(sent, view, 16))
    assert np.abs(np.round(cut * 255) - host[view]).max() <= 1, view


def test_probe_pipeline_sends_a_canvas_and_box():
  cfg_augment, _ = _configs(1, size=16)
  cfg_host, cfg_canvas = _canvas_config(cfg_augment, 0), _canvas_config(cfg_augment, 20)
  kwargs = dict(global_batch_size=8, seed=5)
  host = next(pipeline.probe_iterator(_split(), cfg_host, **kwargs))
  sent = next(pipeline.probe_iterator(_split(), cfg_canvas, **kwargs))
  assert set(sent) == {"image_canvas", "image_box", "image_augment", "label"}
  np.testing.assert_array_equal(sent["image_augment"], host["image_augment"])
  out = jax.jit(lambda b: device_augment.finish_views(b, cfg_canvas, None))(sent)
  assert set(out) == {"image", "label"}
  expected = jax.jit(lambda b: device_augment.finish_views(b, cfg_host, None))(host)["image"]
  # one uint8 level, normalised by the std 0.5
  assert np.abs(np.asarray(out["image"]) - np.asarray(expected)).max() <= 1.001 / 255 / 0.5


def test_on_device_refuses_randaugment():
  config = small_config("dscl")
  config.augment.on_device = True
  config.augment.query.randaugment_ops = 2
  with pytest.raises(ConfigError, match="augment.query.randaugment_ops"):
    validate(config, 1)
  cfg_augment, cfg_pbsd = _configs(3)
  cfg_augment.on_device = True
  cfg_augment.key.randaugment_ops = 1
  with pytest.raises(ValueError, match="augment.key.randaugment_ops"):
    augment.pretrain_views(_smooth_image(40, 40, 3, 0), np.random.default_rng(0), cfg_augment, cfg_pbsd, on_device=True)


def test_finish_views_names_a_view_that_is_not_pixels():
  cfg_augment, cfg_pbsd = _configs(1, size=8)
  batch = {"query": jnp.zeros((2, 8, 8, 1)), "query_augment": jnp.zeros((2, len(augment.VIEW_PARAMS)))}
  with pytest.raises(ValueError, match="'query'.*uint8"):
    device_augment.finish_views(batch, cfg_augment, cfg_pbsd)


_EIGHT_DEVICES = """
import jax, numpy as np
from dscl_jax.core import sharding
from dscl_jax.input import augment, device_augment
from tests.input.test_device_augment import _configs, _smooth_image
cfg_augment, cfg_pbsd = _configs(3, size=32, crop_size=12)
cfg_augment.on_device = True
assert len(jax.devices()) == 8
for canvas in (0, 56):  # the host crops; the device cuts the crops from canvases
  cfg_augment.device_canvas = canvas
  host = [
    augment.pretrain_views(_smooth_image(40, 48, 3, s), np.random.default_rng(s), cfg_augment, cfg_pbsd, on_device=True)
    for s in range(8)
  ]
  batch = {name: np.stack([h[name] for h in host]) for name in host[0]}
  assert ("canvas" in batch) == bool(canvas)
  finish = lambda b: device_augment.finish_views(b, cfg_augment, cfg_pbsd)
  outputs = []
  for devices in (8, 1):
    mesh = sharding.make_mesh(devices)
    data = sharding.data_sharded(mesh)
    out = jax.jit(finish, in_shardings=(data,), out_shardings=data)(sharding.to_global(batch, mesh))
    outputs.append({k: np.asarray(v) for k, v in out.items()})
  for name in ("query", "key", "small_crops"):
    # float noise only: XLA vectorises and fuses a batch of 1 and of 8 differently (measured 1.8e-6 at
    # most on normalised values, about 4e-7 of a [0, 1] pixel)
    np.testing.assert_allclose(outputs[0][name], outputs[1][name], rtol=0, atol=1e-5, err_msg=name)
print("equal")
"""


def test_eight_devices_augment_as_one():
  """Each sample's augmentation is its own computation: splitting the batch over 8 devices changes the
  views by float noise only."""
  import subprocess
  import sys

  from tests import REPO_ROOT, cpu_env

  done = subprocess.run(
    [sys.executable, "-c", _EIGHT_DEVICES], cwd=REPO_ROOT, env=cpu_env(8), capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0 and "equal" in done.stdout, done.stderr[-3000:]
