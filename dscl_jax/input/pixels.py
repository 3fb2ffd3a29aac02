"""Pixel normalisation on the device (pure array functions the jitted steps call; no PIL, no files): batches travel host -> device as uint8, a quarter of float32's bytes.

The input pipeline stops at uint8 views; every jitted consumer (the pretrain step, the probe step, the
feature extraction of eval, the BatchNorm re-estimation) calls `normalize_views` (or `to_float` on its
one image view) first.

A uint8 pixel has 256 values, so the device looks each one up in a [256, C] table that the host's
`normalization.normalize` computes. Computing `x * scale - offset` on the device instead is not the same
function: XLA fuses the two into one fused multiply-add (one rounding instead of two), which moves about
half of the 256 values by an ulp. With the table the device and the host agree bitwise
(tests/test_pixels.py), so moving the work changes no result.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dscl_jax.input import normalization
from dscl_jax.input.batch_spec import IMAGE_VIEWS


def normalize(pixels: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """uint8 `[..., H, W, C]` -> float32 `(x / 255 - mean) / std` per channel (C entries in mean and std)."""
  if pixels.dtype != jnp.uint8:
    raise ValueError(f"normalize expects uint8 pixels, got {pixels.dtype}")
  normalization.check_channels(pixels, mean, std)
  return jnp.asarray(lookup_table(mean, std))[pixels.astype(jnp.int32), jnp.arange(pixels.shape[-1])]


def lookup_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """[256, C] float32: row v is the normalised value of pixel value v in each channel, computed by the
  host's `normalization.normalize` itself."""
  every_value = np.repeat(np.arange(256, dtype=np.uint8)[:, None], len(mean), axis=-1)  # [256, C]
  return normalization.normalize(every_value, mean, std)


def to_float(images: jax.Array, cfg_augment, name: str = "image") -> jax.Array:
  """One image view [..., H, W, C] as the model takes it: uint8 pixels normalised with `cfg_augment.mean`
  / `std`; a floating-point view is taken as normalised already (the synthetic batches of benchmarks and
  tests are drawn that way) and passed through. Any other dtype is an error naming the view."""
  if images.dtype == jnp.uint8:
    return normalize(images, cfg_augment.mean, cfg_augment.std)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"batch[{name!r}] must be uint8 pixels or normalised floats, got {images.dtype}")
  return images


def normalize_views(batch: dict, cfg_augment) -> dict:
  """`batch` with every image view (`IMAGE_VIEWS`) through `to_float`; the other entries unchanged."""
  return {name: to_float(value, cfg_augment, name) if name in IMAGE_VIEWS else value for name, value in batch.items()}
