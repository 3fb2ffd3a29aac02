"""Pixels cross to the device as uint8 and are normalised there (dscl_jax/input/pixels.py): bitwise the host's
`augment.normalize`, within float rounding of the textbook (x / 255 - mean) / std, and a pretrain step on
uint8 pixels is the step on the host-normalised floats."""

import jax
import numpy as np
import pytest

from dscl_jax.input import augment, normalization, pixels
from tests.step_runner import setup, small_config

FASHION = ((0.2860,), (0.3530,))
IMAGENET = (augment.IMAGENET_MEAN, augment.IMAGENET_STD)


def _cfg(mean, std):
  cfg = augment.default_augment_config(16, len(mean))
  cfg.mean, cfg.std = mean, std
  return cfg


@pytest.mark.parametrize("mean,std", [FASHION, IMAGENET])
def test_device_normalisation_is_bitwise_the_host_one(mean, std):
  channels = len(mean)
  every_value = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None, None], channels, axis=-1)  # [256, 1, 1, C]
  random = np.random.default_rng(0).integers(0, 256, size=(8, 12, 12, channels), dtype=np.uint8)
  for images in (every_value, random):
    on_device = np.asarray(jax.jit(lambda x: pixels.normalize(x, mean, std))(images))
    assert on_device.dtype == np.float32
    np.testing.assert_array_equal(on_device, augment.normalize(images, mean, std))
    # The definition, in float64: the table's two float32 roundings stay within 2 ulp of it.
    exact = (images / 255.0 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(on_device, exact, rtol=0, atol=5e-7 * np.abs(exact).max())


def test_a_fused_multiply_add_would_not_be_bitwise():
  """Why the lookup table: `x * scale - offset` compiled by XLA rounds once (FMA) and moves some pixels by
  an ulp against the host's two roundings. If this ever stops failing, the table could go."""
  scale, offset = normalization.normalization_constants(*IMAGENET)
  images = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=-1)
  # Compiled at an optimising level whatever the suite's XLA_FLAGS (tests/conftest.py): the fusion is the
  # optimised code's.
  scaled = jax.jit(lambda x: x.astype(np.float32) * scale - offset).lower(images)
  fused = np.asarray(scaled.compile(compiler_options={"xla_backend_optimization_level": 3})(images))
  host = augment.normalize(images, *IMAGENET)
  assert np.abs(fused - host).max() <= 2.4e-7  # an ulp at |x| ~ 2
  assert not np.array_equal(fused, host)


def test_normalize_views_converts_image_views_only():
  cfg = _cfg(*FASHION)
  rng = np.random.default_rng(1)
  batch = {
    "query": rng.integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8),
    "small_crops": rng.integers(0, 256, size=(4, 2, 4, 4, 1), dtype=np.uint8),
    "key": rng.normal(size=(4, 8, 8, 1)).astype(np.float32),  # taken as normalised already
    "boxes": rng.uniform(0, 8, size=(4, 2, 4)).astype(np.float32),
    "label": np.arange(4, dtype=np.int32),
  }
  out = pixels.normalize_views(batch, cfg)
  np.testing.assert_array_equal(out["query"], augment.normalize(batch["query"], *FASHION))
  np.testing.assert_array_equal(out["small_crops"], augment.normalize(batch["small_crops"], *FASHION))
  for name in ("key", "boxes", "label"):
    assert out[name] is batch[name]
  with pytest.raises(ValueError, match=r"batch\['query'\] must be uint8 pixels or normalised floats, got int32"):
    pixels.normalize_views({"query": batch["query"].astype(np.int32)}, cfg)
  with pytest.raises(ValueError, match="need 1 entries for a 1-channel image"):
    pixels.normalize(batch["query"], *IMAGENET)


def test_pretrain_step_on_uint8_pixels_is_the_step_on_normalised_floats():
  config = small_config("dscl", pbsd=True)
  config.augment.mean, config.augment.std = FASHION
  rng = np.random.default_rng(2)
  b, n, s, c = config.train.batch_size, config.pbsd.num_crops, config.pbsd.crop_size, 1
  size = config.augment.image_size
  as_uint8 = {
    "query": rng.integers(0, 256, size=(b, size, size, c), dtype=np.uint8),
    "key": rng.integers(0, 256, size=(b, size, size, c), dtype=np.uint8),
    "small_crops": rng.integers(0, 256, size=(b, n, s, s, c), dtype=np.uint8),
    "boxes": np.tile(np.array([[0, 0, 8, 8], [4, 4, 16, 16]], np.float32), (b, 1, 1)),
    "label": rng.integers(0, 10, size=b).astype(np.int32),
  }
  as_float = {k: augment.normalize(v, *FASHION) if v.dtype == np.uint8 else v for k, v in as_uint8.items()}
  results = []
  for batch in (as_uint8, as_float):
    state, step, _ = setup(config)
    for _ in range(2):
      state, metrics = step(state, batch)
    results.append((jax.tree.map(np.asarray, state.params), float(metrics["loss"])))
  assert results[0][1] == results[1][1]
  for a, b_ in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_array_equal(a, b_)
