"""Image augmentations on the device: pure JAX ops on one float image, to run inside a jitted step.

Device-side augmentation splits the work: the host cuts the crops and sends them as uint8, the device
does the per-pixel work (colour, blur, resampling) where it is cheap. Every op takes ONE image, float32
`[H, W, C]` in [0, 1] with channels last (C = 1 or 3), and scalar parameters that may be traced, so a
batch with per-sample parameters is `jax.jit(jax.vmap(op))(images, params)`. Only what fixes a shape
(an output size, a kernel radius) is a static Python int; nothing branches in Python on a parameter.

Each op computes what torchvision's *tensor* functional op computes on a float `[C, H, W]` tensor
(`torchvision.transforms.functional`, v0.14), not what its PIL path computes on uint8 images: no
rounding to 256 levels, a true Gaussian kernel instead of PIL's three box blurs, reflect padding instead
of extended edges, float HSV instead of PIL's 8-bit HSV. `benchmarks/device_vs_pil_ops.py` measures how
far each op lands from the PIL path of `dscl_jax.input.augment`; tests/ops/test_image_ops.py checks each
against torchvision.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

# torchvision's luma weights (ITU-R 601, as in its rgb_to_grayscale).
_LUMA = (0.2989, 0.587, 0.114)


def _check_image(image: jax.Array, op: str, channels: Sequence[int] = (1, 3)) -> jax.Array:
  """`image` as a float array after checking it is one `[H, W, C]` image with C in `channels`."""
  image = jnp.asarray(image)
  if image.ndim != 3 or image.shape[-1] not in channels:
    wanted = " or ".join(str(c) for c in channels)
    raise ValueError(
      f"{op} takes one [H, W, C] image with C = {wanted}, got shape {image.shape}"
      + ("; vmap it over a batch" if image.ndim == 4 else "")
    )
  if not jnp.issubdtype(image.dtype, jnp.floating):
    raise ValueError(f"{op} takes a float image in [0, 1], got {image.dtype}; convert uint8 with x / 255 first")
  return image


def _blend(image: jax.Array, other: jax.Array, factor) -> jax.Array:
  """torchvision's `_blend`: clamp(factor * image + (1 - factor) * other, 0, 1).

  Written as torchvision writes it so that factor 1 gives `image` bitwise (1 * x + 0 * other = x).
  """
  factor = jnp.asarray(factor, image.dtype)
  return jnp.clip(factor * image + (1 - factor) * other, 0, 1)


# ------------------------------------------------------------------------------------------ geometry


def horizontal_flip(image: jax.Array, flip) -> jax.Array:
  """`image [H, W, C]` mirrored left-right where `flip` (a bool or 0 / 1 scalar) is true."""
  image = jnp.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"horizontal_flip takes one [H, W, C] image, got shape {image.shape}")
  return jnp.where(jnp.asarray(flip).astype(bool), image[:, ::-1], image)


def _resize_scales(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """torchvision's float32 `scale = L / out_size` and `invscale` for every crop length L in
  [0, in_size]: `[in_size + 1]` each, computed on the host.

  A lookup rather than a division in the graph: XLA rewrites x / constant (and x / broadcast scalar,
  as vmap makes it) as x * (1 / constant), one ulp off torchvision's correctly rounded quotient, and
  the centres (i + 0.5) * scale inherit that error times i (~4e-6 px for 56 outputs).
  """
  lengths = np.arange(in_size + 1, dtype=np.float32)
  scale = lengths / np.float32(out_size)
  # As torchvision: invscale = 1 / scale when shrinking (in double, stored as float), 1 when enlarging.
  with np.errstate(divide="ignore"):
    invscale = np.where(scale >= 1.0, 1.0 / scale.astype(np.float64), 1.0).astype(np.float32)
  return scale, invscale


def _resize_weights(start, stop, out_size: int, in_size: int) -> jax.Array:
  """Antialiased bilinear weights `[out_size, in_size]` resampling pixels [start, stop) to `out_size`.

  torchvision's `_upsample_bilinear2d_aa` (PIL's algorithm) on the crop of length L = stop - start:
  output i has centre (i + 0.5) * scale with scale = L / out_size; it reads crop pixels j in
  [max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), L)), support = max(scale, 1),
  with weight triangle((j - centre + 0.5) / max(scale, 1)), normalised over that window. Columns
  outside [start, stop) get weight 0, so the filter never reaches past the crop.
  """
  start = jnp.asarray(start, jnp.float32)
  length = jnp.asarray(stop, jnp.float32) - start
  scales, invscales = _resize_scales(in_size, out_size)
  index = jnp.clip(length.astype(jnp.int32), 0, in_size)
  scale, invscale = jnp.asarray(scales)[index], jnp.asarray(invscales)[index]
  support = jnp.maximum(scale, 1.0)
  centre = scale * (jnp.arange(out_size, dtype=jnp.float32) + 0.5)[:, None]  # [out, 1]
  # C++'s int64 cast truncates towards zero; both bounds are then clipped to [0, L]. (A pixel at a
  # bound is past the tent's reach, so the bounds only ever drop zero weights.)
  low = jnp.maximum(jnp.trunc(centre - support + 0.5), 0.0)
  high = jnp.minimum(jnp.trunc(centre + support + 0.5), length)
  position = jnp.arange(in_size, dtype=jnp.float32)[None, :] - start  # [1, in], in crop pixels
  weights = jnp.maximum(0.0, 1.0 - jnp.abs((position - centre + 0.5) * invscale))
  weights = jnp.where((position >= low) & (position < high), weights, 0.0)
  # Every window of a non-empty crop holds a positive weight, so the sum is never 0.
  return weights / jnp.sum(weights, axis=1, keepdims=True)


def resized_crop(image: jax.Array, box, size: Tuple[int, int]) -> jax.Array:
  """The box of `image [H, W, C]` resized to `size` with antialiased bilinear: `[out_h, out_w, C]`.

  `box` `[4]` = (x1, y1, x2, y2), integral values (float or int, may be traced), a non-empty box inside
  the image; `size` a static `(out_h, out_w)`. Equals torchvision's `F.resized_crop(img, top=y1,
  left=x1, height=y2 - y1, width=x2 - x1, size=[out_h, out_w], antialias=True)` on a float tensor: crop
  first, then resize, so no pixel outside the box contributes. Box sizes are traced, so the crop is not
  sliced out: the resize is `Wy [out_h, H] @ image @ Wx^T [W, out_w]` per channel, with weights that are
  zero outside the box (`_resize_weights`). A box outside the image or empty is not checked (traced):
  it gives meaningless values (NaN for an empty box), not an error.
  """
  image = _check_image(image, "resized_crop")
  out_h, out_w = size
  if not all(isinstance(v, int) and v >= 1 for v in (out_h, out_w)):
    raise ValueError(f"resized_crop size must be static positive ints (out_h, out_w), got {size!r}")
  height, width, _ = image.shape
  x1, y1, x2, y2 = (jnp.asarray(box)[k] for k in range(4))
  weights_y = _resize_weights(y1, y2, out_h, height).astype(image.dtype)  # [out_h, H]
  weights_x = _resize_weights(x1, x2, out_w, width).astype(image.dtype)  # [out_w, W]
  # HIGHEST: on GPUs XLA would otherwise run float32 dots in TF32 (10-bit mantissa, errors ~1e-3).
  rows = jnp.einsum("oh,hwc->owc", weights_y, image, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("pw,owc->opc", weights_x, rows, precision=jax.lax.Precision.HIGHEST)


# -------------------------------------------------------------------------------------------- colour


def rgb_to_grayscale(image: jax.Array) -> jax.Array:
  """`[H, W, 3]` -> `[H, W, 1]`: 0.2989 R + 0.587 G + 0.114 B (torchvision's weights, no rounding)."""
  image = _check_image(image, "rgb_to_grayscale", channels=(3,))
  red, green, blue = image[..., 0], image[..., 1], image[..., 2]
  return (_LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue)[..., None]


def adjust_brightness(image: jax.Array, factor) -> jax.Array:
  """clamp(factor * image, 0, 1) on `[H, W, C]` (a blend with black); factor 1 is the identity."""
  image = _check_image(image, "adjust_brightness")
  return _blend(image, jnp.zeros_like(image), factor)


def adjust_contrast(image: jax.Array, factor) -> jax.Array:
  """Blend `[H, W, C]` with the mean of its grayscale (C = 3) or of itself (C = 1), clamped to [0, 1]."""
  image = _check_image(image, "adjust_contrast")
  gray = rgb_to_grayscale(image) if image.shape[-1] == 3 else image
  return _blend(image, jnp.mean(gray), factor)


def adjust_saturation(image: jax.Array, factor) -> jax.Array:
  """Blend `[H, W, 3]` with its own grayscale, clamped to [0, 1]: factor 0 is grayscale, 1 the identity."""
  image = _check_image(image, "adjust_saturation", channels=(3,))
  return _blend(image, rgb_to_grayscale(image), factor)


def _rgb_to_hsv(image: jax.Array) -> jax.Array:
  """`[H, W, 3]` RGB -> HSV, torchvision's `_rgb2hsv` step for step (h in [0, 1) turns)."""
  red, green, blue = image[..., 0], image[..., 1], image[..., 2]
  max_c = jnp.max(image, axis=-1)
  min_c = jnp.min(image, axis=-1)
  # Gray pixels (max = min) have no hue and no saturation; dividing by 1 there keeps NaNs out.
  gray = max_c == min_c
  chroma = max_c - min_c
  saturation = chroma / jnp.where(gray, 1.0, max_c)
  chroma_divisor = jnp.where(gray, 1.0, chroma)
  red_c = (max_c - red) / chroma_divisor
  green_c = (max_c - green) / chroma_divisor
  blue_c = (max_c - blue) / chroma_divisor
  hue_r = (max_c == red) * (blue_c - green_c)
  hue_g = ((max_c == green) & (max_c != red)) * (2.0 + red_c - blue_c)
  hue_b = ((max_c != green) & (max_c != red)) * (4.0 + green_c - red_c)
  hue = jnp.fmod((hue_r + hue_g + hue_b) / 6.0 + 1.0, 1.0)
  return jnp.stack([hue, saturation, max_c], axis=-1)


def _hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """`[H, W, 3]` HSV -> RGB, torchvision's `_hsv2rgb` (the sector picks v, p, q or t per channel)."""
  hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector_float = jnp.floor(hue * 6.0)
  fraction = hue * 6.0 - sector_float
  sector = sector_float.astype(jnp.int32) % 6
  p = jnp.clip(value * (1.0 - saturation), 0.0, 1.0)
  q = jnp.clip(value * (1.0 - saturation * fraction), 0.0, 1.0)
  t = jnp.clip(value * (1.0 - saturation * (1.0 - fraction)), 0.0, 1.0)
  choices = (
    (value, q, p, p, t, value),  # red in sectors 0..5
    (t, value, value, q, p, p),  # green
    (p, p, t, value, value, q),  # blue
  )
  conditions = [sector == k for k in range(6)]
  return jnp.stack([jnp.select(conditions, list(channel)) for channel in choices], axis=-1)


def adjust_hue(image: jax.Array, shift) -> jax.Array:
  """Rotate the hue of `[H, W, 3]` by `shift` turns (in [-0.5, 0.5], not checked: it may be traced).

  torchvision's float path: RGB -> HSV, h = (h + shift) mod 1, HSV -> RGB. Gray pixels keep their value.
  """
  image = _check_image(image, "adjust_hue", channels=(3,))
  hsv = _rgb_to_hsv(image)
  hue = jnp.mod(hsv[..., 0] + jnp.asarray(shift, image.dtype), 1.0)
  return _hsv_to_rgb(hsv.at[..., 0].set(hue))


# ---------------------------------------------------------------------------------------------- blur


def _gaussian_kernel(sigma, radius: int) -> jax.Array:
  """torchvision's 1-D Gaussian `[2 * radius + 1]`: exp(-x^2 / (2 sigma^2)) at x = -radius..radius,
  normalised to sum 1. A `sigma` <= 0 (torchvision rejects it) gives the limit, a unit impulse."""
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  # Floor sigma rather than branch on it (traced): below 1e-6 every off-centre weight is exactly 0.
  sigma = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6)
  pdf = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  return pdf / jnp.sum(pdf)


def _convolve_axis(image: jax.Array, kernel: jax.Array, radius: int, axis: int) -> jax.Array:
  """`image` convolved along `axis` (0 or 1) with `kernel [2 radius + 1]`, reflect padding (no edge
  repeat, torch's "reflect"). Shifted slices, not a conv: the kernel is per sample, and XLA fuses the
  2 radius + 1 multiply-adds into one pass."""
  padding = [(0, 0)] * image.ndim
  padding[axis] = (radius, radius)
  padded = jnp.pad(image, padding, mode="reflect")
  length = image.shape[axis]
  taps = [jax.lax.slice_in_dim(padded, k, k + length, axis=axis) for k in range(2 * radius + 1)]
  return sum(kernel[k] * tap for k, tap in enumerate(taps))


def gaussian_blur(image: jax.Array, sigma, radius: int) -> jax.Array:
  """`image [H, W, C]` blurred by a Gaussian of standard deviation `sigma` (may be traced) truncated to
  a `2 * radius + 1` kernel, with reflect padding: torchvision's `F.gaussian_blur(img, [k, k], [sigma,
  sigma])`, k = 2 * radius + 1. Separable (rows, then columns); needs radius < min(H, W)."""
  image = _check_image(image, "gaussian_blur")
  height, width, _ = image.shape
  if not isinstance(radius, int) or radius < 0:
    raise ValueError(f"gaussian_blur radius must be a static int >= 0, got {radius!r}")
  if radius >= min(height, width):
    raise ValueError(
      f"gaussian_blur radius {radius} must be < min(H, W) = {min(height, width)} (reflect padding) "
      f"for an image of shape {image.shape}; use a smaller radius"
    )
  kernel = _gaussian_kernel(sigma, radius).astype(image.dtype)
  return _convolve_axis(_convolve_axis(image, kernel, radius, 0), kernel, radius, 1)
