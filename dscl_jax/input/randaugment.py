"""RandAugment(n, m) on uint8 PIL images: torchvision's `transforms.RandAugment`, seeded by numpy.

`rand_augment(image, rng, num_ops, magnitude)` computes what torchvision 0.14's PIL path computes for
`RandAugment(num_ops, magnitude, num_magnitude_bins=31, interpolation=NEAREST, fill=None)`: `num_ops`
operations drawn uniformly with replacement from the 14 below, each at the `magnitude`-th entry of its
magnitude table, negated with probability 1/2 for the signed ones. Only the random numbers differ: they
come from a `np.random.Generator`, so an image's augmentation is a function of the generator's seed.

Images are `PIL.Image.Image`s of mode "RGB" or "L"; every operation returns an image of the same mode
and size. Each operation is a public function `op(image, magnitude)` taking the signed magnitude drawn
from `augmentation_space` (some ignore it):

  identity        the image itself
  shear_x/_y      shear by factor `magnitude` (angle atan(magnitude)) about the top-left corner
  translate_x/_y  shift by `int(magnitude)` pixels (truncated towards zero); right / down if positive
  rotate          rotate `magnitude` degrees counter-clockwise about the image centre
  brightness      ImageEnhance.Brightness with factor `1 + magnitude`
  color           ImageEnhance.Color (saturation), factor `1 + magnitude`; the identity on "L" images
  contrast        ImageEnhance.Contrast (blend with the mean luma), factor `1 + magnitude`
  sharpness       ImageEnhance.Sharpness (blend with PIL's SMOOTH filter), factor `1 + magnitude`
  posterize       keep the top `int(magnitude)` bits of every channel
  solarize        invert the levels >= `magnitude`
  autocontrast    stretch each channel's [min, max] to [0, 255] (ImageOps.autocontrast)
  equalize        histogram-equalise each channel (ImageOps.equalize)

Geometric operations sample with nearest neighbour and fill uncovered pixels with 0 (black).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

_MODES = ("L", "RGB")


def _fill(image: Image.Image):
  """torchvision's `fill=None`: 0 in every band, as PIL's `fillcolor` wants it for the mode."""
  return 0 if image.mode == "L" else (0,) * len(image.getbands())


# --------------------------------------------------------------------------------------- geometry


def _affine(image: Image.Image, shear_deg=(0.0, 0.0), translate=(0, 0), center=None) -> Image.Image:
  """torchvision's `F.affine(image, angle=0, translate, scale=1, shear, NEAREST, fill=None, center)`.

  `center` defaults to `(W / 2, H / 2)` (torchvision's PIL path, no half-pixel offset). PIL's `transform`
  wants the inverse map, output (x, y) -> input (x, y), as a row-major 2x3 matrix. The shear matrix
  `[[a, b], [c, d]]` below has determinant 1, so its inverse is `[[d, -b], [-c, a]]`; the arithmetic
  follows torchvision's own order, operation for operation, so that the coefficients agree to the last
  bit and nearest-neighbour sampling picks the same pixels.
  """
  sx, sy = math.radians(shear_deg[0]), math.radians(shear_deg[1])
  if center is None:
    center = (image.width * 0.5, image.height * 0.5)
  cx, cy = center
  tx, ty = translate
  # Shear along y, then along x (rotation angle 0: cos 0 = 1 and sin 0 = 0 exactly).
  a = math.cos(-sy) / math.cos(sy)
  b = -math.cos(-sy) * math.tan(sx) / math.cos(sy)
  c = math.sin(-sy) / math.cos(sy)
  d = -math.sin(-sy) * math.tan(sx) / math.cos(sy) + 1.0
  matrix = [d, -b, 0.0, -c, a, 0.0]
  # Undo the translation and move the centre to the origin, apply the inverse shear, move it back.
  matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
  matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
  matrix[2] += cx
  matrix[5] += cy
  return image.transform(image.size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=_fill(image))


def _shear_degrees(magnitude: float) -> float:
  # torchvision hands the shear to F.affine in degrees, which converts it back to radians: the round trip
  # is kept because it is not always exact, and the matrix coefficients must agree bit for bit.
  return math.degrees(math.atan(magnitude))


def identity(image: Image.Image, magnitude: float = 0.0) -> Image.Image:
  """The image itself (the same object, as torchvision returns it)."""
  del magnitude
  return image


def shear_x(image: Image.Image, magnitude: float) -> Image.Image:
  """Shear parallel to x about the top-left corner, `x_in = x + magnitude y` in continuous coordinates.

  Nearest neighbour: the output pixel (x, y) takes the input pixel containing the point
  `(x + 1/2 + magnitude (y + 1/2), y + 1/2)`.
  """
  return _affine(image, shear_deg=(_shear_degrees(magnitude), 0.0), center=(0, 0))


def shear_y(image: Image.Image, magnitude: float) -> Image.Image:
  """Shear parallel to y about the top-left corner, `y_in = y + magnitude x` (see `shear_x`)."""
  return _affine(image, shear_deg=(0.0, _shear_degrees(magnitude)), center=(0, 0))


def translate_x(image: Image.Image, magnitude: float) -> Image.Image:
  """Shift right by `int(magnitude)` pixels (left if negative); the uncovered columns are black."""
  return _affine(image, translate=(int(magnitude), 0))


def translate_y(image: Image.Image, magnitude: float) -> Image.Image:
  """Shift down by `int(magnitude)` pixels (up if negative); the uncovered rows are black."""
  return _affine(image, translate=(0, int(magnitude)))


def rotate(image: Image.Image, magnitude: float) -> Image.Image:
  """Rotate `magnitude` degrees counter-clockwise about `(W / 2, H / 2)`, same size, black corners."""
  return image.rotate(magnitude, Image.Resampling.NEAREST, expand=False, fillcolor=_fill(image))


# ------------------------------------------------------------------------------------------ colour


def brightness(image: Image.Image, magnitude: float) -> Image.Image:
  """Blend with black by factor `1 + magnitude` (PIL's blend truncates to uint8)."""
  return ImageEnhance.Brightness(image).enhance(1.0 + magnitude)


def color(image: Image.Image, magnitude: float) -> Image.Image:
  """Blend with the image's luma by factor `1 + magnitude`; "L" images blend with themselves: unchanged."""
  return ImageEnhance.Color(image).enhance(1.0 + magnitude)


def contrast(image: Image.Image, magnitude: float) -> Image.Image:
  """Blend with a uniform gray at the mean luma (rounded to an integer) by factor `1 + magnitude`."""
  return ImageEnhance.Contrast(image).enhance(1.0 + magnitude)


def sharpness(image: Image.Image, magnitude: float) -> Image.Image:
  """Blend with PIL's SMOOTH-filtered image (border pixels kept) by factor `1 + magnitude`."""
  return ImageEnhance.Sharpness(image).enhance(1.0 + magnitude)


def posterize(image: Image.Image, magnitude: float) -> Image.Image:
  """Keep the top `int(magnitude)` bits of every level; `int(magnitude)` must be in [1, 8]."""
  bits = int(magnitude)
  if not 1 <= bits <= 8:
    raise ValueError(f"posterize keeps 1 to 8 bits, got {magnitude}")
  return ImageOps.posterize(image, bits)


def solarize(image: Image.Image, magnitude: float) -> Image.Image:
  """Invert (255 - level) every level >= `magnitude`; levels below the threshold stay."""
  return ImageOps.solarize(image, magnitude)


def autocontrast(image: Image.Image, magnitude: float = 0.0) -> Image.Image:
  """Map each channel's darkest level to 0 and brightest to 255 linearly (flat channels stay)."""
  del magnitude
  return ImageOps.autocontrast(image)


def equalize(image: Image.Image, magnitude: float = 0.0) -> Image.Image:
  """Equalise each channel's histogram (ImageOps.equalize)."""
  del magnitude
  return ImageOps.equalize(image)


# In torchvision's order: an op is drawn by its index in this table.
OPS = {
  "identity": identity,
  "shear_x": shear_x,
  "shear_y": shear_y,
  "translate_x": translate_x,
  "translate_y": translate_y,
  "rotate": rotate,
  "brightness": brightness,
  "color": color,
  "contrast": contrast,
  "sharpness": sharpness,
  "posterize": posterize,
  "solarize": solarize,
  "autocontrast": autocontrast,
  "equalize": equalize,
}


# ----------------------------------------------------------------------------------- magnitudes


def _round_float32(value: Fraction) -> np.float32:
  """The float32 nearest to the exact rational `value`, ties to even (one IEEE rounding)."""
  best = np.float32(float(value))  # within one float32 step of the answer
  for neighbour in (np.nextafter(best, np.float32(-np.inf)), np.nextafter(best, np.float32(np.inf))):
    gap, best_gap = abs(Fraction(float(neighbour)) - value), abs(Fraction(float(best)) - value)
    if gap < best_gap or (gap == best_gap and int(neighbour.view(np.int32)) % 2 == 0):
      best = neighbour
  return best


def _fused(base: np.float32, step: np.float32, count: int) -> np.float32:
  """float32 `base + step * count` with a single rounding (the fused multiply-add torch compiles to)."""
  return _round_float32(Fraction(float(base)) + Fraction(float(step)) * count)


def _torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
  """`torch.linspace(start, end, steps)` in float32, bit for bit, as torch 1.13's AVX2 CPU kernel does it.

  The magnitudes torchvision draws are float32 numbers, and a last-bit difference in, say, a shear
  coefficient or an enhance factor can move a pixel, so they are reproduced exactly rather than rounded
  from float64. torch's kernel steps from `start` for the first half and back from `end` for the second;
  it fills whole pairs of 8-lane vectors first, each lane `base + lane * step` in two float32 roundings
  with `base` fused, then the tail one fused multiply-add per element. (Debian's torch 1.13 runs its AVX2
  kernels, also on AVX-512 machines; tests/test_randaugment.py checks the tables against it.)
  """
  start32, end32 = np.float32(start), np.float32(end)
  if steps == 1:
    return np.array([start32], np.float32)
  step = np.float32((end32 - start32) / np.float32(steps - 1))
  halfway, lanes = steps // 2, 8

  def anchored(index):  # element `index` counted from the nearer end
    if index < halfway:
      return _fused(start32, step, index)
    return _fused(end32, -step, steps - index - 1)

  values, index = [], 0
  while index + 2 * lanes <= steps:
    for _ in range(2):
      base = anchored(index)
      values += [base + np.float32(lane) * step for lane in range(lanes)]
      index += lanes
  values += [anchored(i) for i in range(index, steps)]
  return np.array(values, np.float32)


@functools.lru_cache(maxsize=64)
def _space(num_bins: int, height: int, width: int) -> tuple[tuple[str, np.ndarray, bool], ...]:
  # Translations reach 150 / 331 of the image (AutoAugment's 150 pixels on 331-pixel images).
  translate = 150.0 / 331.0
  # 8 - round(4 i / (num_bins - 1)) bits, in float32 as torch divides, rounding half to even as torch does.
  bits = np.float32(8) - np.rint(np.arange(num_bins, dtype=np.float32) / np.float32((num_bins - 1) / 4))
  table = (
    ("identity", np.array(0.0, np.float32), False),
    ("shear_x", _torch_linspace(0.0, 0.3, num_bins), True),
    ("shear_y", _torch_linspace(0.0, 0.3, num_bins), True),
    ("translate_x", _torch_linspace(0.0, translate * width, num_bins), True),
    ("translate_y", _torch_linspace(0.0, translate * height, num_bins), True),
    ("rotate", _torch_linspace(0.0, 30.0, num_bins), True),
    ("brightness", _torch_linspace(0.0, 0.9, num_bins), True),
    ("color", _torch_linspace(0.0, 0.9, num_bins), True),
    ("contrast", _torch_linspace(0.0, 0.9, num_bins), True),
    ("sharpness", _torch_linspace(0.0, 0.9, num_bins), True),
    ("posterize", bits.astype(np.int32), False),
    ("solarize", _torch_linspace(255.0, 0.0, num_bins), False),
    ("autocontrast", np.array(0.0, np.float32), False),
    ("equalize", np.array(0.0, np.float32), False),
  )
  for _, magnitudes, _ in table:
    magnitudes.flags.writeable = False  # shared by every call through the cache
  return table


def _check_bins(num_bins: int) -> None:
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
    raise ValueError(f"num_magnitude_bins must be an integer >= 2, got {num_bins!r}")


def augmentation_space(num_bins: int, height: int, width: int) -> dict[str, tuple[np.ndarray, bool]]:
  """`{op name: (magnitudes, signed)}` in `OPS` order, torchvision's `_augmentation_space(num_bins, (H, W))`.

  `magnitudes` is float32 `[num_bins]` (int32 for posterize, the bits kept), or a float32 scalar 0 for
  the ops without a magnitude (identity, autocontrast, equalize); `signed` ops are negated with
  probability 1/2. Shear factors run over [0, 0.3], translations over [0, 150/331 of the width / height]
  pixels, rotations over [0, 30] degrees, enhance magnitudes over [0, 0.9], posterize bits from 8 down to
  4 and the solarize threshold from 255 down to 0.
  """
  _check_bins(num_bins)
  return {
    name: (np.array(magnitudes), signed) for name, magnitudes, signed in _space(int(num_bins), int(height), int(width))
  }


# --------------------------------------------------------------------------------------- policy


def _check_policy(num_ops: int, magnitude: int, num_bins: int) -> None:
  _check_bins(num_bins)
  if isinstance(num_ops, bool) or not isinstance(num_ops, (int, np.integer)) or num_ops < 0:
    raise ValueError(f"RandAugment num_ops must be an integer >= 0, got {num_ops!r}")
  if isinstance(magnitude, bool) or not isinstance(magnitude, (int, np.integer)) or not 0 <= magnitude < num_bins:
    raise ValueError(
      f"RandAugment magnitude must be an integer in [0, {num_bins}) "
      f"(num_magnitude_bins = {num_bins}), got {magnitude!r}"
    )


def sample_ops(
  rng: np.random.Generator, num_ops: int, magnitude: int, num_bins: int, height: int, width: int
) -> list[tuple[str, float]]:
  """The `num_ops` (op name, signed magnitude) pairs RandAugment applies to a `height x width` image.

  Each op is uniform over `OPS` (with replacement); its magnitude is entry `magnitude` of its table in
  `augmentation_space(num_bins, height, width)` as a Python float (0.0 for ops without one), negated
  with probability 1/2 if the op is signed. Like torchvision, the sign costs a draw only for signed ops.
  """
  _check_policy(num_ops, magnitude, num_bins)
  space = _space(int(num_bins), int(height), int(width))
  chosen = []
  for _ in range(num_ops):
    name, magnitudes, signed = space[int(rng.integers(len(space)))]
    value = float(magnitudes[magnitude]) if magnitudes.ndim else 0.0
    if signed and rng.integers(2):
      value = -value
    chosen.append((name, value))
  return chosen


def rand_augment(
  image: Image.Image, rng: np.random.Generator, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31
) -> Image.Image:
  """RandAugment(`num_ops`, `magnitude`) of an "L" or "RGB" image: `sample_ops`, applied in order.

  The image's size never changes, so drawing every op before applying any takes the same draws as
  torchvision's interleaved loop. `num_ops = 0` returns `image` itself.
  """
  if image.mode not in _MODES:
    raise ValueError(f"RandAugment takes PIL images of mode 'L' or 'RGB', got mode {image.mode!r}")
  for name, value in sample_ops(rng, num_ops, magnitude, num_magnitude_bins, image.height, image.width):
    image = OPS[name](image, value)
  return image
