"""Pixel normalisation constants and the host's reference normalisation, on numpy alone (no PIL), so
that both the host pipeline and the device-side `pixels` module can use them."""

from __future__ import annotations

import numpy as np


def check_channels(pixels, mean, std) -> None:
  """Raises unless `mean` and `std` have one entry per channel of `pixels` [..., C] (numpy or jax)."""
  channels = pixels.shape[-1]
  if len(mean) != channels or len(std) != channels:
    raise ValueError(
      f"mean {tuple(mean)} / std {tuple(std)} need {channels} entries for a {channels}-channel "
      f"image; set config.augment.mean / std"
    )


def normalization_constants(mean, std) -> tuple[np.ndarray, np.ndarray]:
  """(scale [C], offset [C]) float32 with `normalized = pixels * scale - offset`."""
  std64 = np.asarray(std, np.float64)
  return (1.0 / (255.0 * std64)).astype(np.float32), (np.asarray(mean, np.float64) / std64).astype(np.float32)


def normalize(pixels: np.ndarray, mean, std) -> np.ndarray:
  """uint8 `[..., H, W, C]` -> float32 `(x / 255 - mean) / std` per channel.

  `mean` and `std` have one entry per channel. Computed as `x * (1 / (255 std)) - mean / std` with the
  constants in float32; within 2e-6 of torchvision's ToTensor + Normalize.
  """
  if pixels.dtype != np.uint8:
    raise ValueError(f"normalize expects uint8 pixels or a PIL image, got {pixels.dtype}")
  check_channels(pixels, mean, std)
  scale, offset = normalization_constants(mean, std)
  out = pixels.astype(np.float32)
  out *= scale
  out -= offset
  return out
