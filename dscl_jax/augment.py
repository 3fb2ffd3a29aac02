"""Image augmentations in NumPy, one pure function each, plus the pretrain / probe / eval recipes.

Every function takes a float32 image `[H, W, C]` with values in [0, 1] (C = 1 or 3) and, when it is
random, a `np.random.Generator`; the same generator state gives the same output, so a sample's views
are a function of its seed alone. The semantics follow torchvision's transforms (RandomResizedCrop,
ColorJitter, RandomGrayscale, GaussianBlur) computed in float32 instead of on uint8 PIL images.

Recipes (METHODS.md sections 3 and 4):
  query: RandomResizedCrop -> flip (p 0.5) -> jitter (0.4, 0.4, 0.4, 0.1) p 0.8 -> grayscale p 0.2
         -> blur p 0.5 -> normalize
  key:   an independent crop and flip -> jitter (0.4, 0.4, 0.4, 0) always -> normalize
  PBSD:  `num_crops` small crops cut from the query's (flipped, uncoloured) global crop, each resized to
         `crop_size` and given the query colours independently; their boxes `[x1, y1, x2, y2]` are in
         pixels of the global crop.
Grayscale images (C = 1) get the intensity parts only: brightness and contrast, no saturation, hue or
grayscale conversion.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import ml_collections
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CROP_ATTEMPTS = 10


def to_float(image_uint8: np.ndarray) -> np.ndarray:
  """uint8 `[H, W, C]` -> float32 `[H, W, C]` in [0, 1]."""
  if image_uint8.dtype != np.uint8 or image_uint8.ndim != 3:
    raise ValueError(f"expected a uint8 [H, W, C] image, got {image_uint8.dtype} {image_uint8.shape}")
  return image_uint8.astype(np.float32) * np.float32(1.0 / 255.0)


# ----------------------------------------------------------------------------------------- geometry


def sample_crop_box(height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0),
                    ratio=(3 / 4, 4 / 3)) -> np.ndarray:
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


@functools.lru_cache(maxsize=256)
def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
  """Bilinear weights `[out_size, in_size]` with antialiasing when shrinking (PIL's resampling).

  Output pixel `o` is centred at `(o + 0.5) * in_size / out_size` in input coordinates; input pixel `i`
  gets the triangle weight `max(0, 1 - |i + 0.5 - centre| / s)`, `s = max(in_size / out_size, 1)`, and
  each row is renormalised (so the image edges need no padding).
  """
  step = in_size / out_size
  support = max(step, 1.0)
  centres = (np.arange(out_size, dtype=np.float64) + 0.5) * step
  taps = np.arange(in_size, dtype=np.float64) + 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centres[:, None]) / support)
  weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
  weights.flags.writeable = False  # shared by the cache
  return weights


def resize(image: np.ndarray, size) -> np.ndarray:
  """Bilinear (antialiased) resize of `[H, W, C]` to `[h, w, C]`; `size` is `h = w` or `(h, w)`."""
  out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else size
  height, width, channels = image.shape
  if (out_h, out_w) == (height, width):
    return image
  rows = _resample_matrix(height, out_h) @ image.reshape(height, width * channels)
  # [out_w, W] @ [out_h, W, C] broadcasts over out_h: [out_h, out_w, C].
  return np.matmul(_resample_matrix(width, out_w), rows.reshape(out_h, width, channels))


def resized_crop(image: np.ndarray, box: np.ndarray, size) -> np.ndarray:
  """The integer box `[x1, y1, x2, y2]` of `image` `[H, W, C]`, resized to `size`."""
  x1, y1, x2, y2 = (int(v) for v in box)
  return resize(image[y1:y2, x1:x2], size)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tuple[np.ndarray, np.ndarray]:
  """RandomResizedCrop: `([size, size, C] crop, box [x1, y1, x2, y2] in pixels of image)`."""
  box = sample_crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
  return resized_crop(image, box, size), box


def horizontal_flip(image: np.ndarray) -> np.ndarray:
  """Mirror left-right: `[H, W, C]`."""
  return image[:, ::-1]


def random_flip(image: np.ndarray, rng: np.random.Generator, prob: float = 0.5) -> np.ndarray:
  """Horizontal flip with probability `prob`."""
  return horizontal_flip(image) if rng.random() < prob else image


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central `size x size` window (torchvision rounding: top = round((H - size) / 2))."""
  height, width = image.shape[:2]
  if size > height or size > width:
    raise ValueError(f"center crop {size} is larger than the image {height}x{width}")
  top, left = int(round((height - size) / 2)), int(round((width - size) / 2))
  return image[top:top + size, left:left + size]


# ------------------------------------------------------------------------------------------- colour


def to_grayscale(image: np.ndarray) -> np.ndarray:
  """Luma of an RGB image, repeated over the 3 channels: `[H, W, 3]`."""
  gray = image @ _LUMA
  return np.repeat(gray[..., None], 3, axis=-1)


def _intensity(image: np.ndarray) -> np.ndarray:
  """`[H, W, 1]` luma (RGB) or the image itself (grayscale)."""
  return image if image.shape[-1] == 1 else (image @ _LUMA)[..., None]


def _blend(image: np.ndarray, other, factor: float) -> np.ndarray:
  return np.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0).astype(np.float32)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """Scale intensities by `factor` (blend with black)."""
  return np.clip(image * np.float32(factor), 0.0, 1.0)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the image's mean intensity (a uniform gray)."""
  return _blend(image, np.float32(_intensity(image).mean()), np.float32(factor))


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend an RGB image with its own grayscale version."""
  return _blend(image, _intensity(image), np.float32(factor))


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """`[..., 3]` RGB in [0, 1] -> `[..., 3]` HSV, hue in [0, 1)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = image.max(axis=-1)
  chroma = value - image.min(axis=-1)
  gray = chroma == 0
  saturation = chroma / np.where(gray, 1.0, value)
  safe_chroma = np.where(gray, 1.0, chroma)
  # Hue sector: which channel is the max decides the 60-degree sector; ties go to red, then green.
  hue = np.where(value == r, (g - b) / safe_chroma,
                 np.where(value == g, 2.0 + (b - r) / safe_chroma, 4.0 + (r - g) / safe_chroma))
  hue = np.where(gray, 0.0, hue)
  hue = np.mod(hue / 6.0, 1.0)
  return np.stack([hue, saturation, value], axis=-1).astype(np.float32)


def hsv_to_rgb(image: np.ndarray) -> np.ndarray:
  """`[..., 3]` HSV (hue in [0, 1)) -> `[..., 3]` RGB in [0, 1]."""
  hue, saturation, value = image[..., 0], image[..., 1], image[..., 2]
  sector_float = np.floor(hue * 6.0)
  frac = hue * 6.0 - sector_float
  sector = np.mod(sector_float.astype(np.int64), 6)
  p = np.clip(value * (1.0 - saturation), 0.0, 1.0)
  q = np.clip(value * (1.0 - saturation * frac), 0.0, 1.0)
  t = np.clip(value * (1.0 - saturation * (1.0 - frac)), 0.0, 1.0)
  # (r, g, b) for sectors 0..5 of the hue circle.
  choices = np.stack([np.stack(c, axis=-1) for c in
                      ((value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value),
                       (value, p, q))], axis=0)
  return np.take_along_axis(choices, sector[None, ..., None], axis=0)[0].astype(np.float32)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
  """Rotate the hue of an RGB image by `shift` turns (`shift` in [-0.5, 0.5])."""
  hsv = rgb_to_hsv(image)
  hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(shift), 1.0)
  return hsv_to_rgb(hsv)


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0) -> np.ndarray:
  """ColorJitter: the non-zero parts, in a random order, each with a random strength.

  Brightness, contrast and saturation factors are uniform in `[max(0, 1 - x), 1 + x]`, the hue shift
  uniform in `[-hue, hue]`. A zero strength skips that part. Grayscale images (C = 1) must come with
  `saturation = hue = 0` (they only have intensity).
  """
  for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
    if value < 0:
      raise ValueError(f"{name} jitter must be >= 0, got {value}")
  if not 0 <= hue <= 0.5:
    raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
  if image.shape[-1] == 1 and (saturation or hue):
    raise ValueError(f"a 1-channel image has no saturation or hue; got saturation {saturation}, hue {hue}")
  for part in rng.permutation(4):
    if part == 0 and brightness:
      image = adjust_brightness(image, rng.uniform(max(0.0, 1 - brightness), 1 + brightness))
    elif part == 1 and contrast:
      image = adjust_contrast(image, rng.uniform(max(0.0, 1 - contrast), 1 + contrast))
    elif part == 2 and saturation:
      image = adjust_saturation(image, rng.uniform(max(0.0, 1 - saturation), 1 + saturation))
    elif part == 3 and hue:
      image = adjust_hue(image, rng.uniform(-hue, hue))
  return image


def random_grayscale(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
  """RGB -> grayscale (3 equal channels) with probability `prob`; grayscale images pass through."""
  if image.shape[-1] == 1:
    return image
  return to_grayscale(image) if rng.random() < prob else image


def blur_kernel_size(side: int) -> int:
  """Odd Gaussian kernel about 10% of the side: `2 * max(1, round(side / 20)) + 1` (23 for 224)."""
  return 2 * max(1, int(round(side / 20))) + 1


@functools.lru_cache(maxsize=64)
def _reflect_taps(size: int, radius: int) -> np.ndarray:
  """`[size, 2 * radius + 1]` flat indices into a `[size, size]` matrix: row i, reflected column i + d."""
  if radius >= size:
    raise ValueError(f"blur kernel of {2 * radius + 1} taps needs a side > {radius}, got {size}")
  rows = np.arange(size)[:, None]
  cols = np.abs(rows + np.arange(-radius, radius + 1)[None, :])
  cols = np.where(cols > size - 1, 2 * (size - 1) - cols, cols)
  taps = rows * size + cols
  taps.flags.writeable = False
  return taps


def _reflect_blur_matrix(size: int, kernel: np.ndarray) -> np.ndarray:
  """`[size, size]` matrix applying the 1-D `kernel` with reflect padding (edge not repeated)."""
  taps = _reflect_taps(size, len(kernel) // 2)
  # bincount sums the weights of taps that reflect onto the same pixel.
  weights = np.broadcast_to(kernel, taps.shape).ravel()
  return np.bincount(taps.ravel(), weights, minlength=size * size).reshape(size, size).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float, kernel_size: int | None = None) -> np.ndarray:
  """Separable Gaussian blur of `[H, W, C]`, reflect padding; kernel defaults to `blur_kernel_size`."""
  height, width, channels = image.shape
  if kernel_size is None:
    kernel_size = blur_kernel_size(min(height, width))
  if kernel_size % 2 != 1 or sigma <= 0:
    raise ValueError(f"blur needs an odd kernel and sigma > 0, got kernel {kernel_size}, sigma {sigma}")
  offsets = np.arange(kernel_size, dtype=np.float32) - (kernel_size - 1) / 2
  kernel = np.exp(-0.5 * (offsets / np.float32(sigma)) ** 2)
  kernel /= kernel.sum()
  rows = _reflect_blur_matrix(height, kernel) @ image.reshape(height, width * channels)
  return np.matmul(_reflect_blur_matrix(width, kernel), rows.reshape(height, width, channels))


def normalize(image: np.ndarray, mean, std) -> np.ndarray:
  """`(image - mean) / std` per channel; `mean`, `std` have one entry per channel."""
  channels = image.shape[-1]
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f"mean {tuple(mean)} / std {tuple(std)} need {channels} entries for a {channels}-channel "
                     f"image; set config.augment.mean / std")
  return ((image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


# ------------------------------------------------------------------------------------------ recipes


def colour_recipe(image: np.ndarray, rng: np.random.Generator, recipe: Any,
                  blur_sigma=(0.1, 2.0)) -> np.ndarray:
  """`recipe` (jitter=(b, c, s, h), jitter_prob, grayscale_prob, blur_prob) applied to `[H, W, C]`.

  Jitter with probability `jitter_prob`, then grayscale, then a Gaussian blur with sigma uniform in
  `blur_sigma`. Grayscale inputs keep only brightness and contrast.
  """
  brightness, contrast, saturation, hue = recipe.jitter
  if image.shape[-1] == 1:
    saturation, hue = 0.0, 0.0
  if rng.random() < recipe.jitter_prob:
    image = color_jitter(image, rng, brightness, contrast, saturation, hue)
  image = random_grayscale(image, rng, recipe.grayscale_prob)
  if rng.random() < recipe.blur_prob:
    image = gaussian_blur(image, rng.uniform(blur_sigma[0], blur_sigma[1]))
  return image


def _global_crop(image: np.ndarray, rng: np.random.Generator, cfg_augment: Any) -> np.ndarray:
  crop, _ = random_resized_crop(image, rng, cfg_augment.image_size, cfg_augment.crop_scale,
                                cfg_augment.crop_ratio)
  return random_flip(crop, rng)


def pretrain_views(image_uint8: np.ndarray, rng: np.random.Generator, cfg_augment: Any,
                   cfg_pbsd: Any) -> dict[str, np.ndarray]:
  """The two contrastive views of one image and, with PBSD or multi-crop, its small crops.

  Returns float32 'query' and 'key' `[S, S, C]` (S = image_size), and when `cfg_pbsd.enabled` or
  `cfg_pbsd.multicrop`: 'small_crops' `[n, s, s, C]` (s = crop_size) and 'boxes' `[n, 4]`, the small
  crops' `[x1, y1, x2, y2]` in pixels of the query's `S x S` global crop (after its flip).
  """
  image = to_float(image_uint8)
  query_crop = _global_crop(image, rng, cfg_augment)
  key_crop = _global_crop(image, rng, cfg_augment)
  mean, std, sigma = cfg_augment.mean, cfg_augment.std, cfg_augment.blur_sigma
  views = {}
  if cfg_pbsd.enabled or cfg_pbsd.multicrop:
    if cfg_pbsd.num_crops < 1 or cfg_pbsd.crop_size < 1:
      raise ValueError(f"PBSD / multi-crop needs num_crops >= 1 and crop_size >= 1, got {cfg_pbsd.num_crops} "
                       f"and {cfg_pbsd.crop_size}; or set pbsd.enabled = pbsd.multicrop = False")
    ratio = getattr(cfg_pbsd, "crop_ratio", (3 / 4, 4 / 3))
    size = cfg_augment.image_size
    boxes = [sample_crop_box(size, size, rng, cfg_pbsd.crop_scale, ratio) for _ in range(cfg_pbsd.num_crops)]
    views["small_crops"] = np.stack([
        normalize(colour_recipe(resized_crop(query_crop, box, cfg_pbsd.crop_size), rng, cfg_augment.query,
                                sigma), mean, std)
        for box in boxes])
    views["boxes"] = np.stack(boxes).astype(np.float32)
  views["query"] = normalize(colour_recipe(query_crop, rng, cfg_augment.query, sigma), mean, std)
  views["key"] = normalize(colour_recipe(key_crop, rng, cfg_augment.key, sigma), mean, std)
  return views


def probe_view(image_uint8: np.ndarray, rng: np.random.Generator, cfg_augment: Any) -> np.ndarray:
  """Linear-probe training view `[S, S, C]`: RandomResizedCrop(probe_crop_scale) -> flip -> normalize."""
  crop, _ = random_resized_crop(to_float(image_uint8), rng, cfg_augment.image_size,
                                cfg_augment.probe_crop_scale, cfg_augment.crop_ratio)
  return normalize(random_flip(crop, rng), cfg_augment.mean, cfg_augment.std)


def eval_view(image_uint8: np.ndarray, cfg_augment: Any) -> np.ndarray:
  """Evaluation view `[S, S, C]`: shorter side to round(S * eval_resize_ratio), centre crop S, normalize."""
  ratio = cfg_augment.eval_resize_ratio
  if ratio < 1:
    raise ValueError(f"eval_resize_ratio must be >= 1 (resize, then crop image_size), got {ratio}")
  image = to_float(image_uint8)
  size = cfg_augment.image_size
  short_target = int(round(size * ratio))
  height, width = image.shape[:2]
  # torchvision Resize(int): the shorter side becomes the target, the longer one is truncated.
  if height <= width:
    new_shape = (short_target, int(short_target * width / height))
  else:
    new_shape = (int(short_target * height / width), short_target)
  return normalize(center_crop(resize(image, new_shape), size), cfg_augment.mean, cfg_augment.std)


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
  cfg.eval_resize_ratio = 256 / 224 if image_size >= 128 else 1.0
  cfg.blur_sigma = (0.1, 2.0)
  cfg.query = dict(jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5)
  cfg.key = dict(jitter=(0.4, 0.4, 0.4, 0.0), jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0)
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
  return cfg
