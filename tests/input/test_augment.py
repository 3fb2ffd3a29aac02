"""Augmentations: geometry, colour, blur, normalisation and the pretrain / probe / eval recipes.

The operations work on uint8 PIL images, so they are checked at the uint8 level: against independent
float64 references (resampling weights, PIL's integer luma, colorsys' HSV), against closed forms, and
against torchvision's PIL-path functions run by the system python.
"""

import colorsys
import functools
import os
import subprocess
import textwrap

import ml_collections
import numpy as np
import pytest

from dscl_jax.input import augment


def _rng(seed=0):
  return np.random.default_rng(seed)


def _uint8_image(height=24, width=20, channels=3, seed=0):
  return _rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def _pil(height=24, width=20, channels=3, seed=0):
  return augment.to_pil(_uint8_image(height, width, channels, seed))


def _pixels(image):
  """A PIL image as int64 `[H, W, C]`, so differences do not wrap around."""
  return augment.to_array(image).astype(np.int64)


def _smooth_uint8_image(height=40, width=48):
  """Smooth colour gradients and a bright disc: photo-like content, where rounding is the only noise."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  disc = ((y - height / 2) ** 2 + (x - width / 3) ** 2 < (height / 4) ** 2) * 90.0
  channels = [40 + 4 * x + disc, 200 - 3 * y + 0.5 * disc, 60 + 2 * (x + y) % 150]
  return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------- torchvision, out of process

_SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=1)
def _has_torchvision() -> bool:
  if not os.path.exists(_SYSTEM_PYTHON):
    return False
  return subprocess.run([_SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True).returncode == 0


def _torchvision(tmp_path, script: str, **arrays) -> dict[str, np.ndarray]:
  """Runs `script` under the system python with `inputs` (dict of arrays), torchvision's `F` and PIL.

  `pil(a)` turns a uint8 `[H, W, C]` input into a PIL image and `array(im)` back; the script fills
  `outputs` (a dict of numpy arrays).
  """
  if not _has_torchvision():
    pytest.skip("torchvision is not importable by /usr/bin/python3")
  for name, array in arrays.items():
    np.save(tmp_path / f"in_{name}.npy", array)
  program = (
    textwrap.dedent("""
      import glob, os, sys
      import numpy as np
      import torch
      import torchvision.transforms.functional as F
      from PIL import Image, ImageFilter
      root = sys.argv[1]
      inputs = {os.path.basename(p)[3:-4]: np.load(p) for p in glob.glob(os.path.join(root, 'in_*.npy'))}
      def pil(a):
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
      def array(im):
        a = np.asarray(im)
        return a[..., None] if a.ndim == 2 else a
      outputs = {}
  """)
    + textwrap.dedent(script)
    + textwrap.dedent("""
      for name, value in outputs.items():
        np.save(os.path.join(root, 'out_' + name + '.npy'), value)
  """)
  )
  subprocess.run([_SYSTEM_PYTHON, "-c", program, str(tmp_path)], check=True, capture_output=True)
  return {p[4:-4]: np.load(tmp_path / p) for p in os.listdir(tmp_path) if p.startswith("out_")}


# ----------------------------------------------------------------------------------------- geometry


def test_pil_conversions_round_trip():
  for channels, mode in ((1, "L"), (3, "RGB")):
    pixels = _uint8_image(channels=channels)
    image = augment.to_pil(pixels)
    assert image.mode == mode and image.size == (20, 24)
    np.testing.assert_array_equal(augment.to_array(image), pixels)
  with pytest.raises(ValueError, match=r"uint8 \[H, W, 1 or 3\]"):
    augment.to_pil(np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError, match="uint8 \\[H, W, 1 or 3\\]"):
    augment.to_pil(np.zeros((4, 4, 2), np.uint8))
  with pytest.raises(ValueError, match="mode 'HSV'"):
    augment.to_array(augment.to_pil(_uint8_image()).convert("HSV"))


def test_crop_boxes_lie_inside_and_have_the_requested_area():
  rng = _rng(1)
  height, width, scale, ratio = 30, 40, (0.2, 0.7), (3 / 4, 4 / 3)
  for _ in range(500):
    box = augment.sample_crop_box(height, width, rng, scale, ratio)
    x1, y1, x2, y2 = box
    assert box.dtype == np.int64
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    w, h = x2 - x1, y2 - y1
    # w and h are rounded from sqrt(area * r) and sqrt(area / r): each is off by at most 1/2.
    slack = 0.5 * (w + h) + 0.25
    assert scale[0] * height * width - slack <= w * h <= scale[1] * height * width + slack
    assert ratio[0] * (h - 0.5) / (h + 0.5) - 1e-9 <= w / h


def test_crop_box_fallback_is_the_largest_centred_box_in_ratio():
  never_fits = (2.0, 3.0)  # more than the whole image: all 10 attempts fail
  np.testing.assert_array_equal(augment.sample_crop_box(10, 40, _rng(), never_fits), [13, 0, 26, 10])
  np.testing.assert_array_equal(augment.sample_crop_box(40, 10, _rng(), never_fits), [0, 13, 10, 26])
  np.testing.assert_array_equal(augment.sample_crop_box(12, 14, _rng(), never_fits), [0, 0, 14, 12])


def test_crop_box_rejects_bad_ranges():
  with pytest.raises(ValueError, match="crop scale"):
    augment.sample_crop_box(10, 10, _rng(), (0.5, 0.1))
  with pytest.raises(ValueError, match="crop ratio"):
    augment.sample_crop_box(10, 10, _rng(), (0.5, 1.0), (0.0, 1.0))


def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
  """Antialiased bilinear weights `[out_size, in_size]`, float64, written from the definition.

  Output pixel `o` is centred at `(o + 0.5) * in_size / out_size`; input pixel `i` gets the triangle
  weight `max(0, 1 - |i + 0.5 - centre| / s)` with `s = max(in_size / out_size, 1)`; rows renormalised.
  """
  step = in_size / out_size
  centres = (np.arange(out_size) + 0.5) * step
  weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size)[None, :] + 0.5 - centres[:, None]) / max(step, 1.0))
  return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("out_shape", [(7, 9), (30, 25), (13, 40), (24, 20)])
def test_resize_is_antialiased_bilinear(out_shape, channels):
  pixels = _uint8_image(24, 20, channels)
  ours = _pixels(augment.resize(augment.to_pil(pixels), out_shape))
  reference = np.einsum(
    "oh,hwc,pw->opc", _resample_matrix(24, out_shape[0]), pixels.astype(np.float64), _resample_matrix(20, out_shape[1])
  )
  assert ours.shape == (*out_shape, channels)
  # PIL rounds to 8 bits between its two 1-D passes and at the end (fixed-point weights): at most one
  # level from the exact value (plus float64 noise in the reference).
  assert np.abs(ours - reference).max() <= 1 + 1e-9


def test_resize_keeps_constants_and_resizes_channels_independently():
  constant = np.broadcast_to(np.array([10, 100, 250], np.uint8), (11, 13, 3)).copy()
  out = augment.resize(augment.to_pil(constant), 5)
  assert out.size == (5, 5)
  np.testing.assert_array_equal(augment.to_array(out), constant[:5, :5])
  rgb = _uint8_image(9, 9, 3)
  for c in range(3):
    np.testing.assert_array_equal(
      augment.to_array(augment.resize(augment.to_pil(rgb), 4))[..., c],
      augment.to_array(augment.resize(augment.to_pil(rgb[..., c : c + 1]), 4))[..., 0],
    )


def test_resized_crop_reads_only_its_box():
  pixels = _uint8_image(20, 20, 3)
  box = np.array([3, 5, 13, 15])  # [x1, y1, x2, y2], 10 x 10
  np.testing.assert_array_equal(
    augment.to_array(augment.resized_crop(augment.to_pil(pixels), box, 10)), pixels[5:15, 3:13]
  )
  # Shrinking: the filter straddles the box edges, yet pixels outside the box must not matter (crop, then
  # resize, as torchvision does; PIL's resize(box=...) would blend them in).
  other = _uint8_image(20, 20, 3, seed=1)
  other[5:15, 3:13] = pixels[5:15, 3:13]
  np.testing.assert_array_equal(
    augment.to_array(augment.resized_crop(augment.to_pil(pixels), box, 4)),
    augment.to_array(augment.resized_crop(augment.to_pil(other), box, 4)),
  )
  # Upscaling by 2: output centres fall at quarter positions, so each is 3/4 of its nearest input pixel
  # plus 1/4 of the next one (edges clamp): exact in uint8 for these values.
  row = np.array([[[0], [100], [200]]], np.uint8)
  np.testing.assert_array_equal(
    augment.to_array(augment.resized_crop(augment.to_pil(row), [0, 0, 3, 1], (1, 6))),
    [[[0], [25], [75], [125], [175], [200]]],
  )
  with pytest.raises(ValueError, match="not a non-empty box inside"):
    augment.resized_crop(augment.to_pil(pixels), [15, 0, 25, 10], 4)


def test_random_resized_crop_returns_its_box():
  image = _pil(30, 30, 3)
  crop, box = augment.random_resized_crop(image, _rng(5), 16, (0.1, 0.5))
  assert crop.size == (16, 16)
  np.testing.assert_array_equal(augment.to_array(crop), augment.to_array(augment.resized_crop(image, box, 16)))


def test_flip_and_center_crop():
  pixels = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
  np.testing.assert_array_equal(
    augment.to_array(augment.horizontal_flip(augment.to_pil(pixels)))[0, :, 0], [3, 2, 1, 0]
  )
  flips = [augment.to_array(augment.random_flip(augment.to_pil(pixels), _rng(s)))[0, 0, 0] == 3 for s in range(200)]
  assert 70 < sum(flips) < 130
  assert augment.center_crop(augment.to_pil(np.zeros((7, 10, 1), np.uint8)), 4).size == (4, 4)
  window = augment.center_crop(augment.to_pil(np.arange(36, dtype=np.uint8).reshape(6, 6, 1)), 2)
  np.testing.assert_array_equal(augment.to_array(window)[..., 0], [[14, 15], [20, 21]])
  with pytest.raises(ValueError, match="larger than the image"):
    augment.center_crop(augment.to_pil(np.zeros((7, 10, 1), np.uint8)), 8)


# -------------------------------------------------------------------------------------------- colour


def _luma(pixels):
  """PIL's integer ITU-R 601 luma of uint8 `[..., 3]`: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
  r, g, b = (pixels[..., c].astype(np.int64) for c in range(3))
  return (19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16


def test_colour_jitter_is_the_identity_at_zero_strength():
  for channels in (1, 3):
    image = _pil(channels=channels)
    np.testing.assert_array_equal(
      augment.to_array(augment.color_jitter(image, _rng(), 0, 0, 0, 0)), augment.to_array(image)
    )
  image = _pil()
  for adjust in (augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation):
    np.testing.assert_array_equal(augment.to_array(adjust(image, 1.0)), augment.to_array(image))
  # A zero hue shift still goes through PIL's 8-bit HSV, which loses a few levels on noise.
  assert np.abs(_pixels(augment.adjust_hue(image, 0.0)) - _pixels(image)).max() <= 8
  smooth = augment.to_pil(_smooth_uint8_image())
  assert np.abs(_pixels(augment.adjust_hue(smooth, 0.0)) - _pixels(smooth)).mean() < 0.5


def test_colour_adjustments_closed_forms():
  pixels = _uint8_image()
  image = augment.to_pil(pixels)
  # PIL's blend truncates: brightness 0.5 is floor(x / 2).
  np.testing.assert_array_equal(augment.to_array(augment.adjust_brightness(image, 0.5)), pixels // 2)
  gray_mean = int(_luma(pixels).mean() + 0.5)
  np.testing.assert_array_equal(augment.to_array(augment.adjust_contrast(image, 0.0)), np.full_like(pixels, gray_mean))
  gray = np.repeat(_luma(pixels)[..., None], 3, axis=-1)
  np.testing.assert_array_equal(augment.to_array(augment.adjust_saturation(image, 0.0)), gray)
  np.testing.assert_array_equal(augment.to_array(augment.to_grayscale(image)), gray)
  single = _uint8_image(channels=1)  # grayscale contrast blends with the image's own rounded mean
  mean = int(single.mean() + 0.5)
  expected = np.trunc(mean + 0.5 * (single.astype(np.float64) - mean)).astype(np.uint8)
  assert np.abs(_pixels(augment.adjust_contrast(augment.to_pil(single), 0.5)) - expected).max() <= 1
  assert augment.adjust_saturation(augment.to_pil(single), 0.0).mode == "L"
  np.testing.assert_array_equal(augment.to_array(augment.adjust_hue(augment.to_pil(single), 0.2)), single)
  with pytest.raises(ValueError, match="hue shift"):
    augment.adjust_hue(image, 0.6)


@pytest.mark.parametrize("shift", [1 / 3, -1 / 3, 0.08, -0.3, 0.5, -0.5])
def test_hue_rotation_of_saturated_colours_matches_colorsys(shift):
  """Fully saturated colours survive 8-bit HSV: the result is colorsys' RGB of the rotated hue."""
  hues = np.array([0, 21, 43, 85, 128, 170, 200, 240])  # 8-bit hue levels
  rgb = np.array([colorsys.hsv_to_rgb(h / 255, 1.0, 1.0) for h in hues])
  pixels = np.round(255 * rgb).astype(np.uint8)[None]
  image = augment.to_pil(pixels)
  start = np.asarray(image.convert("HSV"))[0, :, 0].astype(np.int64)
  # The shift is int(shift * 255) levels, truncated towards zero, modulo 256.
  rotated = (start + int(shift * 255)) % 256
  expected = np.round(255 * np.array([colorsys.hsv_to_rgb(h / 255, 1.0, 1.0) for h in rotated]))
  assert np.abs(_pixels(augment.adjust_hue(image, shift))[0] - expected).max() <= 1


def test_colour_jitter_grayscale_rules():
  single = _pil(channels=1)
  with pytest.raises(ValueError, match="no saturation or hue"):
    augment.color_jitter(single, _rng(), 0.4, 0.4, 0.4, 0.1)
  assert augment.color_jitter(single, _rng(), 0.4, 0.4).mode == "L"
  assert augment.random_grayscale(single, _rng(), 1.0) is single
  with pytest.raises(ValueError, match="hue jitter"):
    augment.color_jitter(_pil(), _rng(), hue=0.7)
  # The default (RGB) query recipe works on grayscale images: intensity parts only.
  out = augment.colour_recipe(single, _rng(), augment.default_augment_config(24, 1).query)
  assert out.mode == "L" and out.size == single.size


def test_colour_jitter_factors_are_in_range():
  image = augment.to_pil(np.full((4, 4, 1), 128, np.uint8))
  values = [augment.to_array(augment.color_jitter(image, _rng(s), brightness=0.4))[0, 0, 0] for s in range(300)]
  # Factors uniform in [0.6, 1.4]: floor(128 * 0.6) = 76 .. floor(128 * 1.4) = 179.
  assert 76 <= min(values) < 128 * 0.65 and 128 * 1.35 < max(values) <= 179


def test_random_grayscale_probability():
  image = _pil()
  grays = [augment.random_grayscale(image, _rng(s), 0.2) is not image for s in range(400)]
  assert 50 < sum(grays) < 110  # Binomial(400, 0.2): mean 80, sd 8


def test_gaussian_blur_sigma_is_the_standard_deviation():
  """A blurred step edge's derivative is the (discretised) kernel: its spread is sigma."""
  step = np.zeros((8, 81, 1), np.uint8)
  step[:, 40:] = 255
  for sigma in (0.5, 1.0, 1.3, 2.0):
    profile = _pixels(augment.gaussian_blur(augment.to_pil(step), sigma))[4, :, 0]
    derivative = np.diff(profile).astype(np.float64)
    assert derivative.sum() == 255 and np.all(derivative >= 0)
    positions = np.arange(80) + 0.5  # between pixels i and i + 1
    centre = (derivative * positions).sum() / 255
    spread = np.sqrt((derivative * (positions - centre) ** 2).sum() / 255)
    assert abs(centre - 39.5) < 0.05 and abs(spread - sigma) < 0.03, (sigma, centre, spread)
  constant = augment.to_pil(np.full((9, 9, 3), 77, np.uint8))
  np.testing.assert_array_equal(augment.to_array(augment.gaussian_blur(constant, 2.0)), augment.to_array(constant))
  with pytest.raises(ValueError, match="sigma must be > 0"):
    augment.gaussian_blur(constant, 0.0)


def test_normalize():
  pixels = np.stack([np.full((2, 2), v, np.uint8) for v in (128, 64, 255)], axis=-1)
  out = augment.normalize(pixels, (0.5, 0.5, 0.5), (0.5, 0.25, 0.25))
  np.testing.assert_allclose(out[0, 0], [(128 / 255 - 0.5) / 0.5, (64 / 255 - 0.5) / 0.25, 2.0], atol=1e-6)
  assert out.dtype == np.float32 and out.shape == (2, 2, 3)
  np.testing.assert_array_equal(augment.normalize(augment.to_pil(pixels), (0.5,) * 3, (0.5, 0.25, 0.25)), out)
  batch = np.stack([pixels, pixels[::-1]])  # leading axes broadcast, same numbers per image
  np.testing.assert_array_equal(augment.normalize(batch, (0.5,) * 3, (0.5, 0.25, 0.25))[1], out[::-1])
  with pytest.raises(ValueError, match="need 1 entries"):
    augment.normalize(pixels[..., :1], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
  with pytest.raises(ValueError, match="uint8 pixels"):
    augment.normalize(pixels.astype(np.float32), (0.5,) * 3, (0.5,) * 3)


def test_operations_match_torchvision_pil_path(tmp_path):
  """Every operation against torchvision 0.14's PIL path (and MoCo v2's blur) on the system's PIL.

  Both sides run PIL's C code (Pillow 13 here, 9.4 there) and agree to the last uint8 level; only the
  final float32 normalisation rounds differently.
  """
  photo = _smooth_uint8_image(40, 48)
  noise = _uint8_image(16, 12, 3)
  single = _uint8_image(16, 12, 1)
  ref = _torchvision(
    tmp_path,
    """
      im, noise, single = pil(inputs['photo']), pil(inputs['noise']), pil(inputs['single'])
      outputs['shrink'] = array(F.resize(im, [17, 11]))
      outputs['enlarge'] = array(F.resize(noise, [30, 41]))
      outputs['resized_crop'] = array(F.resized_crop(im, 5, 7, 21, 30, [16, 16]))
      outputs['flip'] = array(F.hflip(im))
      outputs['center_crop'] = array(F.center_crop(im, [20, 20]))
      for name, image in (('photo', im), ('noise', noise)):
        outputs[name + '_brightness'] = array(F.adjust_brightness(image, 1.3))
        outputs[name + '_contrast'] = array(F.adjust_contrast(image, 0.6))
        outputs[name + '_saturation'] = array(F.adjust_saturation(image, 1.4))
        for shift in (0.08, -0.3, 0.5, -0.5):
          outputs[f'{name}_hue_{shift}'] = array(F.adjust_hue(image, shift))
        outputs[name + '_gray'] = array(F.rgb_to_grayscale(image, num_output_channels=3))
        outputs[name + '_blur'] = array(image.filter(ImageFilter.GaussianBlur(radius=1.3)))
      outputs['single_brightness'] = array(F.adjust_brightness(single, 0.7))
      outputs['single_contrast'] = array(F.adjust_contrast(single, 1.35))
      outputs['single_blur'] = array(single.filter(ImageFilter.GaussianBlur(radius=0.6)))
      outputs['normalized'] = F.normalize(F.to_tensor(im), [0.485, 0.456, 0.406],
                                          [0.229, 0.224, 0.225]).numpy().transpose(1, 2, 0)
  """,
    photo=photo,
    noise=noise,
    single=single,
  )
  image = augment.to_pil(photo)
  exact = np.testing.assert_array_equal
  exact(augment.to_array(augment.resize(image, (17, 11))), ref["shrink"])
  exact(augment.to_array(augment.resize(augment.to_pil(noise), (30, 41))), ref["enlarge"])
  exact(augment.to_array(augment.resized_crop(image, [7, 5, 37, 26], 16)), ref["resized_crop"])
  exact(augment.to_array(augment.horizontal_flip(image)), ref["flip"])
  exact(augment.to_array(augment.center_crop(image, 20)), ref["center_crop"])
  for name, pixels in (("photo", photo), ("noise", noise)):
    rgb = augment.to_pil(pixels)
    exact(augment.to_array(augment.adjust_brightness(rgb, 1.3)), ref[name + "_brightness"])
    exact(augment.to_array(augment.adjust_contrast(rgb, 0.6)), ref[name + "_contrast"])
    exact(augment.to_array(augment.adjust_saturation(rgb, 1.4)), ref[name + "_saturation"])
    for shift in (0.08, -0.3, 0.5, -0.5):
      exact(augment.to_array(augment.adjust_hue(rgb, shift)), ref[f"{name}_hue_{shift}"], err_msg=str(shift))
    exact(augment.to_array(augment.to_grayscale(rgb)), ref[name + "_gray"])
    exact(augment.to_array(augment.gaussian_blur(rgb, 1.3)), ref[name + "_blur"])
  gray = augment.to_pil(single)
  exact(augment.to_array(augment.adjust_brightness(gray, 0.7)), ref["single_brightness"])
  exact(augment.to_array(augment.adjust_contrast(gray, 1.35)), ref["single_contrast"])
  exact(augment.to_array(augment.gaussian_blur(gray, 0.6)), ref["single_blur"])
  # ToTensor + Normalize divide by 255, subtract and divide; we multiply and subtract: float32 rounding.
  np.testing.assert_allclose(
    augment.normalize(image, augment.IMAGENET_MEAN, augment.IMAGENET_STD), ref["normalized"], rtol=0, atol=2e-6
  )


# ------------------------------------------------------------------------------------------- recipes


def _configs(image_size=16, channels=3, crop_size=6, **pbsd):
  cfg_augment = augment.default_augment_config(image_size, channels)
  cfg_pbsd = augment.default_pbsd_config()
  cfg_pbsd.crop_size = crop_size
  cfg_pbsd.update(pbsd)
  return cfg_augment, cfg_pbsd


@pytest.mark.parametrize("channels", [1, 3])
def test_pretrain_views_shapes(channels):
  cfg_augment, cfg_pbsd = _configs(channels=channels)
  views = augment.pretrain_views(_uint8_image(channels=channels), _rng(), cfg_augment, cfg_pbsd)
  assert views["query"].shape == views["key"].shape == (16, 16, channels)
  assert views["small_crops"].shape == (5, 6, 6, channels)
  assert views["boxes"].shape == (5, 4) and views["boxes"].dtype == np.float32
  assert all(v.dtype == np.float32 for v in views.values())
  boxes = views["boxes"]
  assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 16) and np.all(boxes[:, 2:] > boxes[:, :2])
  again = augment.pretrain_views(_uint8_image(channels=channels), _rng(), cfg_augment, cfg_pbsd)
  for name in views:
    np.testing.assert_array_equal(views[name], again[name])
  image = _uint8_image(channels=channels)
  _, off = _configs(enabled=False)
  assert set(augment.pretrain_views(image, _rng(), cfg_augment, off)) == {"query", "key"}
  _, multicrop = _configs(enabled=False, multicrop=True)
  assert augment.pretrain_views(image, _rng(), cfg_augment, multicrop)["small_crops"].shape[0] == 5
  _, no_crops = _configs(num_crops=0)
  with pytest.raises(ValueError, match="num_crops >= 1"):
    augment.pretrain_views(image, _rng(), cfg_augment, no_crops)


def test_pretrain_views_builds_only_what_is_asked():
  """A method asking for the query alone gets no key and no small crops; RandAugment in the query's recipe
  changes the query."""
  cfg_augment, cfg_pbsd = _configs(channels=3)
  image = _uint8_image(channels=3)
  full = augment.pretrain_views(image, _rng(), cfg_augment, cfg_pbsd, ("query", "key", "small_crops"))
  assert set(full) == {"query", "key", "small_crops", "boxes"}
  alone = augment.pretrain_views(image, _rng(), cfg_augment, cfg_pbsd, ("query",))
  assert set(alone) == {"query"}
  two = augment.pretrain_views(image, _rng(), cfg_augment, cfg_pbsd, ("query", "key"))
  assert set(two) == {"query", "key"}
  cfg_augment.query.randaugment_ops = 2
  with_ra = augment.pretrain_views(image, _rng(), cfg_augment, cfg_pbsd, ("query", "key"))
  assert not np.array_equal(with_ra["query"], two["query"])
  with pytest.raises(ValueError, match="must include 'query'"):
    augment.pretrain_views(image, _rng(), cfg_augment, cfg_pbsd, ("key",))


def _identity_normalisation(cfg_augment):
  """mean 0, std 1: a view is its pixels / 255, so `round(view * 255)` gives the uint8 pixels back."""
  cfg_augment.mean, cfg_augment.std = (0.0,) * 3, (1.0,) * 3


def _as_uint8(view):
  return np.round(view * 255).astype(np.uint8)


def test_small_crops_are_cut_from_the_flipped_global_crop():
  """With an identity global crop and no colour, each small crop is the resize of its box of the query."""
  size = 16
  cfg_augment, cfg_pbsd = _configs(image_size=size, crop_size=8)
  cfg_augment.crop_scale, cfg_augment.crop_ratio = (1.0, 1.0), (1.0, 1.0)  # global crop = whole image
  _identity_normalisation(cfg_augment)
  cfg_augment.query = dict(
    jitter=(0.0, 0.0, 0.0, 0.0),
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    randaugment_ops=0,
    randaugment_magnitude=10,
  )
  cfg_pbsd.flip_prob = 0.0  # the crops' own flip is tested in test_reference_recipe.py
  image = _uint8_image(size, size)
  flipped_seen = set()
  for seed in range(12):
    views = augment.pretrain_views(image, _rng(seed), cfg_augment, cfg_pbsd)
    query = _as_uint8(views["query"])
    flipped = np.array_equal(query, image[:, ::-1])
    assert flipped or np.array_equal(query, image)
    flipped_seen.add(flipped)
    for crop, box in zip(views["small_crops"], views["boxes"]):
      assert np.array_equal(box, np.round(box))  # integer pixels
      x1, y1, x2, y2 = box.astype(int)
      expected = augment.to_array(augment.resize(augment.to_pil(np.ascontiguousarray(query[y1:y2, x1:x2])), 8))
      np.testing.assert_array_equal(_as_uint8(crop), expected)
      if flipped:  # the box is in flipped coordinates: mirrored, it indexes the original image
        mirrored = np.ascontiguousarray(image[y1:y2, size - x2 : size - x1][:, ::-1])
        np.testing.assert_array_equal(_as_uint8(crop), augment.to_array(augment.resize(augment.to_pil(mirrored), 8)))
  assert flipped_seen == {True, False}


def test_query_colours_are_drawn_independently_for_each_small_crop():
  """Same box, full-strength query jitter: the small crops differ only by their own colour draws."""
  cfg_augment, cfg_pbsd = _configs(
    image_size=16, crop_size=8, num_crops=4, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)
  )  # every small crop is the whole global crop
  cfg_augment.query = dict(
    jitter=(0.4, 0.4, 0.4, 0.1),
    jitter_prob=1.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    randaugment_ops=0,
    randaugment_magnitude=10,
  )
  views = augment.pretrain_views(_uint8_image(16, 16), _rng(2), cfg_augment, cfg_pbsd)
  np.testing.assert_array_equal(views["boxes"], np.tile([0, 0, 16, 16], (4, 1)))
  crops = views["small_crops"]
  assert all(not np.array_equal(crops[i], crops[j]) for i in range(4) for j in range(i))


def test_small_crop_boxes_follow_the_pbsd_scale():
  cfg_augment, cfg_pbsd = _configs(image_size=32, crop_size=8, num_crops=50)
  boxes = augment.pretrain_views(_uint8_image(40, 40), _rng(3), cfg_augment, cfg_pbsd)["boxes"]
  widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  fractions = widths * heights / 32**2
  assert fractions.min() > 0.05 * 0.7 and fractions.max() < 0.6 * 1.2


def test_probe_and_eval_views():
  cfg_augment, _ = _configs(image_size=16, channels=1)
  image = _uint8_image(20, 20, 1)
  assert augment.probe_view(image, _rng(), cfg_augment).shape == (16, 16, 1)
  # Same size and ratio 1: eval is normalisation alone.
  cfg_augment.image_size = 20
  expected = (augment.to_float(image) - 0.5) / 0.5
  np.testing.assert_allclose(augment.eval_view(image, cfg_augment), expected, rtol=1e-6, atol=1e-6)
  cfg_augment.eval_resize_ratio = 0.9
  with pytest.raises(ValueError, match="eval_resize_ratio must be >= 1"):
    augment.eval_view(image, cfg_augment)


def test_eval_view_matches_torchvision(tmp_path):
  """ImageNet style: Resize(256) (shorter side, longer truncated), CenterCrop(224), ToTensor, Normalize."""
  cfg_rgb, _ = _configs(image_size=224)
  assert cfg_rgb.eval_resize_ratio == 256 / 224
  landscape = _smooth_uint8_image(300, 400)
  portrait = np.ascontiguousarray(landscape.transpose(1, 0, 2))
  ref = _torchvision(
    tmp_path,
    """
      for name in ('landscape', 'portrait'):
        view = F.center_crop(F.resize(pil(inputs[name]), 256), 224)
        outputs[name + '_pixels'] = array(view)
        outputs[name] = F.normalize(F.to_tensor(view), [0.485, 0.456, 0.406],
                                    [0.229, 0.224, 0.225]).numpy().transpose(1, 2, 0)
  """,
    landscape=landscape,
    portrait=portrait,
  )
  for name, pixels in (("landscape", landscape), ("portrait", portrait)):
    ours = augment.eval_view(pixels, cfg_rgb)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref[name], rtol=0, atol=2e-6)  # float32 rounding of the normalisation
    resized = augment.resize(augment.to_pil(pixels), (256, 341) if name == "landscape" else (341, 256))
    top, left = (16, 58) if name == "landscape" else (58, 16)
    window = augment.to_array(resized)[top : top + 224, left : left + 224]
    np.testing.assert_array_equal(window, ref[name + "_pixels"])
    np.testing.assert_array_equal(ours, augment.normalize(window, cfg_rgb.mean, cfg_rgb.std))


def test_default_configs():
  cfg = augment.default_augment_config(224, 3)
  assert isinstance(cfg, ml_collections.ConfigDict)
  assert cfg.query.jitter == (0.4, 0.4, 0.4, 0.1) and cfg.query.jitter_prob == 0.8
  assert cfg.query.grayscale_prob == 0.2 and cfg.query.blur_prob == 0.5
  assert cfg.key.jitter == (0.4, 0.4, 0.4, 0.0) and cfg.key.jitter_prob == 1.0
  assert cfg.key.grayscale_prob == 0.0 and cfg.key.blur_prob == 0.0
  assert len(augment.default_augment_config(28, 1).mean) == 1
  assert augment.default_augment_config(28, 1).eval_resize_ratio == 1.0
  pbsd = augment.default_pbsd_config()
  assert (pbsd.num_crops, pbsd.crop_size, pbsd.crop_scale, pbsd.weight) == (5, 64, (0.05, 0.6), 1.5)
  with pytest.raises(ValueError, match="channels must be 1 or 3"):
    augment.default_augment_config(32, 2)
