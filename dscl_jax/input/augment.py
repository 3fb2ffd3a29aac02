"""Image augmentations on uint8 PIL images, one function each, plus the pretrain / probe / eval recipes.

The geometric and colour operations take and return `PIL.Image.Image`s of mode "RGB" (3 channels) or
"L" (1 channel) and compute exactly what torchvision's PIL path computes, which is what the reference
DSCL / MoCo v2 code trains on: RandomResizedCrop is a crop followed by an antialiased bilinear resize,
ColorJitter uses PIL's ImageEnhance blends and a hue shift in PIL's 8-bit HSV, RandomGrayscale is
PIL's luma conversion, and the blur is MoCo v2's `ImageFilter.GaussianBlur(radius=sigma)`. Working on
uint8 images in PIL's C loops is what makes ImageNet-sized views cheap; only `normalize`, the last
step, produces float32. Random operations draw from a `np.random.Generator`, so a sample's views are a
function of the generator's seed alone.

Recipes (METHODS.md sections 3 and 4):
  query: RandomResizedCrop -> flip (p 0.5) -> jitter (0.4, 0.4, 0.4, 0.1) p 0.8 -> grayscale p 0.2
         -> blur p 0.5 -> normalize
  key:   an independent crop and flip -> jitter (0.4, 0.4, 0.4, 0) always -> normalize
  PBSD:  `num_crops` small crops cut from the query's (flipped, uncoloured) global crop, each resized to
         `crop_size`, flipped on its own (`pbsd.flip_prob`) and given the query colours independently
         (blur range `pbsd.blur_sigma`); their boxes `[x1, y1, x2, y2]` are in pixels of the global crop.
  Blur sigma ranges are in pixels of the view they blur (`scaled_blur_sigma`).
Grayscale images (C = 1) get the intensity parts only: brightness and contrast, no saturation, hue or
grayscale conversion.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from dscl_jax.input import normalization, randaugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CROP_ATTEMPTS = 10
_MODES = {1: "L", 3: "RGB"}


def to_pil(image_uint8: np.ndarray) -> Image.Image:
  """uint8 `[H, W, C]`, C = 1 or 3 -> a PIL image of mode "L" or "RGB"."""
  if image_uint8.dtype != np.uint8 or image_uint8.ndim != 3 or image_uint8.shape[-1] not in _MODES:
    raise ValueError(f"expected a uint8 [H, W, 1 or 3] image, got {image_uint8.dtype} {image_uint8.shape}")
  return Image.fromarray(image_uint8[..., 0] if image_uint8.shape[-1] == 1 else image_uint8)


def to_array(image: Image.Image) -> np.ndarray:
  """A PIL image of mode "L" or "RGB" -> uint8 `[H, W, C]` (C = 1 or 3), possibly read-only."""
  if image.mode not in _MODES.values():
    raise ValueError(f"expected a PIL image of mode 'L' or 'RGB', got mode {image.mode!r}")
  pixels = np.asarray(image)
  return pixels[..., None] if pixels.ndim == 2 else pixels


def to_float(image_uint8: np.ndarray) -> np.ndarray:
  """uint8 `[H, W, C]` -> float32 `[H, W, C]` in [0, 1]."""
  if image_uint8.dtype != np.uint8 or image_uint8.ndim != 3:
    raise ValueError(f"expected a uint8 [H, W, C] image, got {image_uint8.dtype} {image_uint8.shape}")
  return image_uint8.astype(np.float32) * np.float32(1.0 / 255.0)


# ----------------------------------------------------------------------------------------- geometry


def sample_crop_box(
  height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
  """A RandomResizedCrop box `[x1, y1, x2, y2]` int64 inside a `height x width` image.

  Up to 10 attempts draw an area fraction uniform in `scale` and an aspect ratio (w / h) log-uniform in
  `ratio`; the first box that fits is placed uniformly. If none fits, the largest centred box whose
  aspect ratio lies in `ratio` is returned (torchvision's fallback).
  """
  if not 0 < scale[0] <= scale[1]:
    raise ValueError(f"crop scale must satisfy 0 < min <= max, got {tuple(scale)}")
  if not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f"crop ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(_CROP_ATTEMPTS):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      y1 = int(rng.integers(0, height - h + 1))
      x1 = int(rng.integers(0, width - w + 1))
      return np.array([x1, y1, x1 + w, y1 + h], dtype=np.int64)
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  y1, x1 = (height - h) // 2, (width - w) // 2
  return np.array([x1, y1, x1 + w, y1 + h], dtype=np.int64)


def resize(image: Image.Image, size) -> Image.Image:
  """Bilinear resize, antialiased when shrinking (PIL's); `size` is `h = w` or `(h, w)`."""
  out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else size
  return image.resize((int(out_w), int(out_h)), Image.Resampling.BILINEAR)


def resized_crop(image: Image.Image, box, size) -> Image.Image:
  """The integer box `[x1, y1, x2, y2]` of `image`, resized to `size`.

  Cropping first, as torchvision does, means the resampling filter never reaches past the box: PIL's
  `resize(box=...)` would blend in pixels just outside it at the edges.
  """
  x1, y1, x2, y2 = (int(v) for v in box)
  width, height = image.size
  if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
    raise ValueError(f"crop box {[x1, y1, x2, y2]} is not a non-empty box inside the {height}x{width} image")
  return resize(image.crop((x1, y1, x2, y2)), size)


def random_resized_crop(
  image: Image.Image, rng: np.random.Generator, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[Image.Image, np.ndarray]:
  """RandomResizedCrop: `(size x size crop, box [x1, y1, x2, y2] in pixels of image)`."""
  box = sample_crop_box(image.height, image.width, rng, scale, ratio)
  return resized_crop(image, box, size), box


def horizontal_flip(image: Image.Image) -> Image.Image:
  """Mirror left-right."""
  return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def random_flip(image: Image.Image, rng: np.random.Generator, prob: float = 0.5) -> Image.Image:
  """Horizontal flip with probability `prob`."""
  return horizontal_flip(image) if rng.random() < prob else image


def center_crop(image: Image.Image, size: int) -> Image.Image:
  """The central `size x size` window (torchvision rounding: top = round((H - size) / 2))."""
  width, height = image.size
  if size > height or size > width:
    raise ValueError(f"center crop {size} is larger than the image {height}x{width}")
  top, left = int(round((height - size) / 2)), int(round((width - size) / 2))
  return image.crop((left, top, left + size, top + size))


# ------------------------------------------------------------------------------------------- colour


def to_grayscale(image: Image.Image) -> Image.Image:
  """PIL's luma (ITU-R 601, integer arithmetic) repeated over 3 channels: an "RGB" image."""
  return image.convert("L").convert("RGB")


def adjust_brightness(image: Image.Image, factor: float) -> Image.Image:
  """Scale intensities by `factor` (blend with black), truncated to uint8 as PIL's blend does."""
  return ImageEnhance.Brightness(image).enhance(factor)


def adjust_contrast(image: Image.Image, factor: float) -> Image.Image:
  """Blend with a uniform gray at the image's mean luma (rounded to an integer)."""
  return ImageEnhance.Contrast(image).enhance(factor)


def adjust_saturation(image: Image.Image, factor: float) -> Image.Image:
  """Blend with the image's own luma; the identity on "L" images."""
  return ImageEnhance.Color(image).enhance(factor)


def adjust_hue(image: Image.Image, shift: float) -> Image.Image:
  """Rotate the hue by `shift` turns (`shift` in [-0.5, 0.5]) in PIL's 8-bit HSV; "L" images pass through.

  The hue channel moves by `int(shift * 255)` levels (truncated towards zero) modulo 256, as
  torchvision's PIL path does with its uint8 addition.
  """
  if not -0.5 <= shift <= 0.5:
    raise ValueError(f"hue shift must be in [-0.5, 0.5], got {shift}")
  if image.mode == "L":
    return image
  levels = int(shift * 255)
  # One lookup table per HSV band: the hue rotates, saturation and value stay.
  table = [(level + levels) % 256 for level in range(256)] + list(range(256)) * 2
  return image.convert("HSV").point(table).convert(image.mode)


def _draw_jitter(rng: np.random.Generator, brightness, contrast, saturation, hue) -> tuple[list[int], dict]:
  """ColorJitter's random draws: (the order of the four parts, {part: factor} for the non-zero ones)."""
  order, factors = [int(part) for part in rng.permutation(4)], {}
  for part in order:
    if part == 0 and brightness:
      factors[0] = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
    elif part == 1 and contrast:
      factors[1] = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    elif part == 2 and saturation:
      factors[2] = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
    elif part == 3 and hue:
      factors[3] = rng.uniform(-hue, hue)
  return order, factors


_ADJUST = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _apply_jitter(image: Image.Image, order, factors: dict) -> Image.Image:
  for part in order:
    if part in factors:
      image = _ADJUST[part](image, factors[part])
  return image


def color_jitter(
  image: Image.Image,
  rng: np.random.Generator,
  brightness: float = 0.0,
  contrast: float = 0.0,
  saturation: float = 0.0,
  hue: float = 0.0,
) -> Image.Image:
  """ColorJitter: the non-zero parts, in a random order, each with a random strength.

  Brightness, contrast and saturation factors are uniform in `[max(0, 1 - x), 1 + x]`, the hue shift
  uniform in `[-hue, hue]`. A zero strength skips that part. Grayscale images ("L") must come with
  `saturation = hue = 0` (they only have intensity).
  """
  for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
    if value < 0:
      raise ValueError(f"{name} jitter must be >= 0, got {value}")
  if not 0 <= hue <= 0.5:
    raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
  if image.mode == "L" and (saturation or hue):
    raise ValueError(f"a 1-channel image has no saturation or hue; got saturation {saturation}, hue {hue}")
  return _apply_jitter(image, *_draw_jitter(rng, brightness, contrast, saturation, hue))


def random_grayscale(image: Image.Image, rng: np.random.Generator, prob: float) -> Image.Image:
  """RGB -> grayscale (3 equal channels) with probability `prob`; "L" images pass through."""
  if image.mode == "L":
    return image
  return to_grayscale(image) if rng.random() < prob else image


def gaussian_blur(image: Image.Image, sigma: float) -> Image.Image:
  """PIL's Gaussian blur with standard deviation `sigma` (MoCo v2's `GaussianBlur(radius=sigma)`).

  PIL approximates the Gaussian with three box blurs of matching variance and extends the edge pixels.
  """
  if not sigma > 0:
    raise ValueError(f"blur sigma must be > 0, got {sigma}")
  return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def normalize(image, mean, std) -> np.ndarray:
  """`normalization.normalize` for a PIL image or uint8 `[..., H, W, C]` pixels: float32 `(x / 255 - mean)
  / std` per channel."""
  pixels = to_array(image) if isinstance(image, Image.Image) else image
  return normalization.normalize(pixels, mean, std)


# ------------------------------------------------------------------------------------------ recipes


# The random parameters of one view as a float32 vector, for the device (`dscl_jax.input.device_augment`):
# the flip, the jitter's order (a permutation of brightness 0, contrast 1, saturation 2, hue 3), the four
# jitter values (identity 1, 1, 1, 0 for a part not applied), grayscale (0 or 1), blur sigma (0: none).
VIEW_PARAMS = (
  "flip",
  "order_0",
  "order_1",
  "order_2",
  "order_3",
  "brightness",
  "contrast",
  "saturation",
  "hue",
  "grayscale",
  "blur_sigma",
)


@dataclasses.dataclass
class ColourDraw:
  """One view's colour parameters, as `colour_recipe` draws them."""

  order: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3])
  factors: dict = dataclasses.field(default_factory=dict)  # {part: value} of the jitter parts applied
  grayscale: bool = False
  blur_sigma: float | None = None

  def vector(self, flip: bool) -> np.ndarray:
    """`VIEW_PARAMS` as float32 `[11]`."""
    jitter = [self.factors.get(part, 0.0 if part == 3 else 1.0) for part in range(4)]
    return np.array(
      [float(flip), *self.order, *jitter, float(self.grayscale), self.blur_sigma or 0.0], dtype=np.float32
    )


def draw_colour(rng: np.random.Generator, recipe: Any, channels: int, blur_sigma=(0.1, 2.0), flip_prob=None):
  """The random draws of `colour_recipe` before RandAugment, in its order, for a `channels`-channel view:
  a `ColourDraw`; with `flip_prob`, first a flip with that probability (`random_flip`'s draw) and the
  result is the view's `VIEW_PARAMS` vector `[11]`."""
  flip = None if flip_prob is None else bool(rng.random() < flip_prob)
  brightness, contrast, saturation, hue = recipe.jitter
  if channels == 1:
    saturation, hue = 0.0, 0.0
  draw = ColourDraw()
  if rng.random() < recipe.jitter_prob:
    draw.order, draw.factors = _draw_jitter(rng, brightness, contrast, saturation, hue)
  if channels == 3:  # random_grayscale draws nothing for a 1-channel image
    draw.grayscale = bool(rng.random() < recipe.grayscale_prob)
  if rng.random() < recipe.blur_prob:
    draw.blur_sigma = rng.uniform(blur_sigma[0], blur_sigma[1])
  return draw if flip is None else draw.vector(flip)


def apply_colour(image: Image.Image, draw: ColourDraw) -> Image.Image:
  """`draw` applied with the PIL ops: jitter, grayscale, blur."""
  image = _apply_jitter(image, draw.order, draw.factors)
  if draw.grayscale:
    image = to_grayscale(image)
  if draw.blur_sigma is not None:
    image = gaussian_blur(image, draw.blur_sigma)
  return image


def colour_recipe(image: Image.Image, rng: np.random.Generator, recipe: Any, blur_sigma=(0.1, 2.0)) -> Image.Image:
  """`recipe` (jitter=(b, c, s, h), jitter_prob, grayscale_prob, blur_prob, randaugment_ops,
  randaugment_magnitude) applied to `image`.

  Jitter with probability `jitter_prob`, then grayscale, then a Gaussian blur with sigma uniform in
  `blur_sigma`, then RandAugment(`randaugment_ops`, `randaugment_magnitude`) when `randaugment_ops` > 0
  (PaCo's order: RandAugment comes last). Grayscale ("L") inputs keep only brightness and contrast.
  """
  channels = 1 if image.mode == "L" else 3
  image = apply_colour(image, draw_colour(rng, recipe, channels, blur_sigma))
  if recipe.randaugment_ops:
    image = randaugment.rand_augment(image, rng, recipe.randaugment_ops, recipe.randaugment_magnitude)
  return image


def _global_crop(image: Image.Image, rng: np.random.Generator, cfg_augment: Any) -> tuple[Image.Image, bool]:
  """A RandomResizedCrop of the view size, not yet flipped, and whether the view is flipped."""
  crop, _ = random_resized_crop(image, rng, cfg_augment.image_size, cfg_augment.crop_scale, cfg_augment.crop_ratio)
  return crop, bool(rng.random() < 0.5)


def fit_to_canvas(image_uint8: np.ndarray, canvas: int) -> np.ndarray:
  """`[H, W, C]` uint8 unchanged when both sides are <= `canvas`; otherwise resized (antialiased
  bilinear, PIL, aspect ratio kept) so that its longer side is `canvas`: `[h, w, C]` uint8."""
  height, width = image_uint8.shape[:2]
  if max(height, width) <= canvas:
    return image_uint8
  factor = canvas / max(height, width)
  size = (min(canvas, max(1, round(height * factor))), min(canvas, max(1, round(width * factor))))
  return to_array(resize(to_pil(image_uint8), size))


def on_canvas(image_uint8: np.ndarray, canvas: int) -> np.ndarray:
  """`[h, w, C]` uint8 (h, w <= `canvas`) in the top-left corner of a zero `[canvas, canvas, C]` uint8."""
  height, width, channels = image_uint8.shape
  if max(height, width) > canvas:
    raise ValueError(f"a {height}x{width} image does not fit a {canvas} px canvas; fit_to_canvas it first")
  out = np.zeros((canvas, canvas, channels), np.uint8)
  out[:height, :width] = image_uint8
  return out


def _global_box(height: int, width: int, rng: np.random.Generator, cfg_augment: Any) -> tuple[np.ndarray, bool]:
  """`_global_crop`'s draws without the crop: its box `[4]` float32 in pixels of the image, and the flip."""
  box = sample_crop_box(height, width, rng, cfg_augment.crop_scale, cfg_augment.crop_ratio)
  return box.astype(np.float32), bool(rng.random() < 0.5)


def pbsd_views(cfg_pbsd: Any) -> tuple[str, ...]:
  """The views DSCL trains on: query and key, plus the small crops with PBSD or multi-crop."""
  return ("query", "key", "small_crops") if cfg_pbsd.enabled or cfg_pbsd.multicrop else ("query", "key")


# A view `v` augmented on the device comes with its `VIEW_PARAMS` vector as `v + AUGMENT_SUFFIX`.
AUGMENT_SUFFIX = "_augment"
# With `augment.device_canvas` a view `v` is cut on the device too: instead of its pixels comes its crop
# box `v + BOX_SUFFIX` [4] (x1, y1, x2, y2) in pixels of the canvas `CANVAS_OF[v]` [canvas, canvas, C]
# uint8 that holds its decoded image (the query and the key share their image's canvas).
BOX_SUFFIX = "_box"
CANVAS_OF = {"query": "canvas", "key": "canvas", "class_aware": "class_aware_canvas", "image": "image_canvas"}


def _finish(image, mean, std, normalized: bool) -> np.ndarray:
  """The last step of every recipe: float32 `normalize`, or the uint8 pixels the device normalises."""
  if normalized:
    return normalize(image, mean, std)
  pixels = to_array(image) if isinstance(image, Image.Image) else image
  normalization.check_channels(pixels, mean, std)  # here, not first on the device
  return pixels


def check_device_recipe(cfg_augment: Any) -> None:
  """Raises unless every view recipe can run on the device: RandAugment is a PIL-only op."""
  for view in ("query", "key"):
    if getattr(cfg_augment, view).randaugment_ops:
      raise ValueError(
        f"augment.on_device has no RandAugment (a PIL op); set augment.{view}.randaugment_ops = 0 or "
        "augment.on_device = False"
      )


def pretrain_views(
  image_uint8: np.ndarray,
  rng: np.random.Generator,
  cfg_augment: Any,
  cfg_pbsd: Any,
  views: tuple[str, ...] | None = None,
  normalized: bool = True,
  on_device: bool = False,
) -> dict[str, np.ndarray]:
  """The views of one image a method trains on (`dscl_jax.methods.base.VIEWS`).

  `image_uint8` is `[H, W, C]`; `views` defaults to `pbsd_views(cfg_pbsd)`. Returns float32 'query' and
  (if asked) 'key' `[S, S, C]` (S = image_size), and with 'small_crops': 'small_crops' `[n, s, s, C]`
  (s = pbsd.crop_size) and 'boxes' `[n, 4]`, the small crops' `[x1, y1, x2, y2]` in pixels of the
  query's `S x S` global crop (after its flip). A view not asked for draws no random numbers.
  `normalized=False` returns the image views as uint8 pixels instead (`dscl_jax.input.pixels` normalises them
  on the device; the input pipeline does this).

  `on_device=True` draws the same random numbers in the same order but does only the crops: 'query' and
  'key' are the uint8 `[S, S, C]` crops before their flip and colours, 'query_augment' / 'key_augment'
  their `VIEW_PARAMS` float32 `[11]`, and instead of 'small_crops' comes 'small_crops_augment' `[n, 11]`
  (each crop's flip and colours) beside 'boxes': `dscl_jax.input.device_augment` does the rest.
  With `cfg_augment.device_canvas` > 0 as well, the host does not even crop: 'canvas' is the image on a
  `[canvas, canvas, C]` uint8 canvas (`fit_to_canvas`: an image with a longer side is first resized to
  fit, so its boxes are drawn on the resized image), and 'query_box' / 'key_box' float32 `[4]` replace
  'query' / 'key'. An image that fits draws the same boxes as the PIL path.
  """
  views_asked = pbsd_views(cfg_pbsd) if views is None else tuple(views)
  unknown = set(views_asked) - {"query", "key", "small_crops"}
  if unknown or "query" not in views_asked:
    raise ValueError(f"views {views_asked} must include 'query' and be among 'query', 'key', 'small_crops'")
  if on_device:
    check_device_recipe(cfg_augment)
  channels = image_uint8.shape[-1]
  canvas = cfg_augment.device_canvas if on_device else 0
  views = {}
  if canvas:  # the boxes alone, drawn as _global_crop draws them; the device cuts and resizes
    fitted = fit_to_canvas(image_uint8, canvas)
    crops = {"query": _global_box(fitted.shape[0], fitted.shape[1], rng, cfg_augment)}
    if "key" in views_asked:
      crops["key"] = _global_box(fitted.shape[0], fitted.shape[1], rng, cfg_augment)
    views["canvas"] = on_canvas(fitted, canvas)
  else:
    image = to_pil(image_uint8)
    crops = {"query": _global_crop(image, rng, cfg_augment)}
    if "key" in views_asked:
      crops["key"] = _global_crop(image, rng, cfg_augment)
  if not on_device:
    crops = {name: (horizontal_flip(crop) if flip else crop, False) for name, (crop, flip) in crops.items()}
  mean, std, sigma = cfg_augment.mean, cfg_augment.std, cfg_augment.blur_sigma
  if "small_crops" in views_asked:
    if cfg_pbsd.num_crops < 1 or cfg_pbsd.crop_size < 1:
      raise ValueError(
        f"PBSD / multi-crop needs num_crops >= 1 and crop_size >= 1, got {cfg_pbsd.num_crops} "
        f"and {cfg_pbsd.crop_size}; or set pbsd.enabled = pbsd.multicrop = False"
      )
    ratio = getattr(cfg_pbsd, "crop_ratio", (3 / 4, 4 / 3))
    size = cfg_augment.image_size
    boxes = [sample_crop_box(size, size, rng, cfg_pbsd.crop_scale, ratio) for _ in range(cfg_pbsd.num_crops)]
    if on_device:
      views["small_crops_augment"] = np.stack(
        [
          draw_colour(rng, cfg_augment.query, channels, cfg_pbsd.blur_sigma, flip_prob=cfg_pbsd.flip_prob)
          for _ in boxes
        ]
      )
    else:
      # Each crop is flipped on its own (the reference's small-crop recipe starts with a flip); its box
      # still names the region of the query view it was cut from, which is what PBSD's teacher pools.
      small_crops = [
        to_array(
          colour_recipe(
            random_flip(resized_crop(crops["query"][0], box, cfg_pbsd.crop_size), rng, cfg_pbsd.flip_prob),
            rng,
            cfg_augment.query,
            cfg_pbsd.blur_sigma,
          )
        )
        for box in boxes
      ]
      views["small_crops"] = _finish(np.stack(small_crops), mean, std, normalized)
    views["boxes"] = np.stack(boxes).astype(np.float32)
  for name, (crop, flip) in crops.items():
    recipe = getattr(cfg_augment, name)
    if canvas:
      views[name + BOX_SUFFIX] = crop
      views[name + AUGMENT_SUFFIX] = draw_colour(rng, recipe, channels, sigma).vector(flip)
    elif on_device:
      views[name] = _finish(crop, mean, std, normalized=False)
      views[name + AUGMENT_SUFFIX] = draw_colour(rng, recipe, channels, sigma).vector(flip)
    else:
      views[name] = _finish(colour_recipe(crop, rng, recipe, sigma), mean, std, normalized)
  return views


def _probe_crop(image_uint8: np.ndarray, rng: np.random.Generator, cfg_augment: Any) -> tuple[Image.Image, bool]:
  crop, _ = random_resized_crop(
    to_pil(image_uint8), rng, cfg_augment.image_size, cfg_augment.probe_crop_scale, cfg_augment.crop_ratio
  )
  return crop, bool(rng.random() < 0.5)


def probe_view(
  image_uint8: np.ndarray, rng: np.random.Generator, cfg_augment: Any, normalized: bool = True
) -> np.ndarray:
  """Linear-probe training view `[S, S, C]`: RandomResizedCrop(probe_crop_scale) -> flip -> normalize
  (uint8 pixels without the normalize if not `normalized`); the evaluation view when
  `cfg_augment.probe_augment` is False (the image's features as kNN and logistic regression see them)."""
  if not cfg_augment.probe_augment:
    return eval_view(image_uint8, cfg_augment, normalized)
  crop, flip = _probe_crop(image_uint8, rng, cfg_augment)
  return _finish(horizontal_flip(crop) if flip else crop, cfg_augment.mean, cfg_augment.std, normalized)


def probe_view_for_device(image_uint8: np.ndarray, rng: np.random.Generator, cfg_augment: Any) -> dict[str, np.ndarray]:
  """`probe_view` with `augment.on_device`: {'image': the uint8 `[S, S, C]` crop before its flip,
  'image_augment': its `VIEW_PARAMS` `[11]`, which hold only the flip}; the evaluation view and no flip
  when `probe_augment` is False. With `augment.device_canvas` > 0 the crop is cut on the device:
  'image_canvas' and 'image_box' replace 'image' (as in `pretrain_views`)."""
  if not cfg_augment.probe_augment:
    image = eval_view(image_uint8, cfg_augment, normalized=False)
    return {"image": image, "image" + AUGMENT_SUFFIX: ColourDraw().vector(flip=False)}
  if cfg_augment.device_canvas:
    fitted = fit_to_canvas(image_uint8, cfg_augment.device_canvas)
    box = sample_crop_box(fitted.shape[0], fitted.shape[1], rng, cfg_augment.probe_crop_scale, cfg_augment.crop_ratio)
    flip = bool(rng.random() < 0.5)
    return {
      CANVAS_OF["image"]: on_canvas(fitted, cfg_augment.device_canvas),
      "image" + BOX_SUFFIX: box.astype(np.float32),
      "image" + AUGMENT_SUFFIX: ColourDraw().vector(flip),
    }
  crop, flip = _probe_crop(image_uint8, rng, cfg_augment)
  image = _finish(crop, cfg_augment.mean, cfg_augment.std, normalized=False)
  return {"image": image, "image" + AUGMENT_SUFFIX: ColourDraw().vector(flip)}


def eval_view(image_uint8: np.ndarray, cfg_augment: Any, normalized: bool = True) -> np.ndarray:
  """Evaluation view `[S, S, C]`: shorter side to round(S * eval_resize_ratio), centre crop S, normalize
  (uint8 pixels without the normalize if not `normalized`)."""
  ratio = cfg_augment.eval_resize_ratio
  if ratio < 1:
    raise ValueError(f"eval_resize_ratio must be >= 1 (resize, then crop image_size), got {ratio}")
  image = to_pil(image_uint8)
  size = cfg_augment.image_size
  short_target = int(round(size * ratio))
  width, height = image.size
  # torchvision Resize(int): the shorter side becomes the target, the longer one is truncated.
  if height <= width:
    new_shape = (short_target, int(short_target * width / height))
  else:
    new_shape = (int(short_target * height / width), short_target)
  if new_shape != (height, width):
    image = resize(image, new_shape)
  return _finish(center_crop(image, size), cfg_augment.mean, cfg_augment.std, normalized)


# ------------------------------------------------------------------------------------------ configs


def default_augment_config(image_size: int, channels: int) -> ml_collections.ConfigDict:
  """The DSCL recipe (METHODS.md section 4) for `image_size` inputs with `channels` channels.

  mean / std default to the ImageNet statistics (RGB) or 0.5 / 0.5 (grayscale); set the dataset's
  own. Inputs of 128 pixels or more are evaluated ImageNet-style (resize to 256/224 of the size, then
  centre crop); smaller ones at their own size.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  cfg = ml_collections.ConfigDict()
  cfg.image_size = image_size
  cfg.crop_scale = (0.08, 1.0)
  cfg.crop_ratio = (3 / 4, 4 / 3)
  cfg.mean = IMAGENET_MEAN if channels == 3 else (0.5,)
  cfg.std = IMAGENET_STD if channels == 3 else (0.5,)
  cfg.probe_crop_scale = (0.08, 1.0)
  # False: the probe trains on the evaluation view (no crop, no flip), as the logistic regression does.
  cfg.probe_augment = True
  # True: the host only crops (uint8 views at the view size) and draws the parameters; flips, colours,
  # blur, the small crops and the normalisation run in the jitted step (`dscl_jax.input.device_augment`),
  # with torchvision's float ops instead of PIL's uint8 ones. Same random draws as the PIL path.
  cfg.on_device = False
  # > 0 (with on_device): the global crops' cut and resize run on the device too. The host sends each
  # decoded image on a canvas of this many pixels a side (a larger image is first resized to fit) with
  # the crop boxes: the host's work is then little more than decoding. 0: the host crops.
  cfg.device_canvas = 0
  cfg.eval_resize_ratio = 256 / 224 if image_size >= 128 else 1.0
  # The reference blurs its 224 px views with sigma in (0.1, 2) px; a smaller view gets the same blur
  # relative to its size.
  cfg.blur_sigma = scaled_blur_sigma(image_size, 224)
  # randaugment_ops > 0 appends RandAugment(ops, magnitude) to a view's recipe (PaCo / GPaCo).
  cfg.query = dict(
    jitter=(0.4, 0.4, 0.4, 0.1),
    jitter_prob=0.8,
    grayscale_prob=0.2,
    blur_prob=0.5,
    randaugment_ops=0,
    randaugment_magnitude=10,
  )
  cfg.key = dict(
    jitter=(0.4, 0.4, 0.4, 0.0),
    jitter_prob=1.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    randaugment_ops=0,
    randaugment_magnitude=10,
  )
  return cfg


def default_pbsd_config() -> ml_collections.ConfigDict:
  """PBSD as in the DSCL paper: 5 small crops of 64 px, scale (0.05, 0.6), loss weight 1.5."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.multicrop = False  # small crops as extra queries instead of distillation targets (the ablation)
  cfg.num_crops = 5
  cfg.crop_size = 64
  cfg.crop_scale = (0.05, 0.6)
  cfg.crop_ratio = (3 / 4, 4 / 3)
  cfg.weight = 1.5
  cfg.flip_prob = 0.5  # each small crop is flipped on its own, as in the reference
  # BatchNorm over each crop's batch on its own (the reference calls the encoder once per crop); False
  # normalises all n x B crops together.
  cfg.crop_bn_groups = True
  # Blur of the small crops: (0.1, 2) px at the reference's 64 px; a config with other crops sets
  # scaled_blur_sigma(crop_size, 64).
  cfg.blur_sigma = scaled_blur_sigma(64, 64)
  return cfg


def scaled_blur_sigma(view_size: int, reference_size: int) -> tuple[float, float]:
  """The reference's Gaussian-blur sigma range (0.1, 2) px for a `reference_size` view, scaled to a view
  of `view_size` px so that the blur covers the same fraction of the view."""
  factor = view_size / reference_size
  return (0.1 * factor, 2.0 * factor)
