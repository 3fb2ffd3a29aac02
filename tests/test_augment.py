"""Augmentations: geometry, colour, blur, normalisation and the pretrain / probe / eval recipes."""

import functools
import os
import subprocess
import textwrap

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dscl_jax import augment


def _rng(seed=0):
  return np.random.default_rng(seed)


def _image(height=20, width=24, channels=3, seed=0):
  return _rng(seed).random((height, width, channels), dtype=np.float32)


# ------------------------------------------------------------------------- torchvision, out of process

_SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=1)
def _has_torchvision() -> bool:
  if not os.path.exists(_SYSTEM_PYTHON):
    return False
  return subprocess.run([_SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True).returncode == 0


def _torchvision(tmp_path, script: str, **arrays) -> dict[str, np.ndarray]:
  """Runs `script` under the system python with `inputs` (dict of arrays) and torchvision's `F`.

  The script fills `outputs` (a dict of numpy arrays); images cross as `[H, W, C]` float32.
  """
  if not _has_torchvision():
    pytest.skip("torchvision is not importable by /usr/bin/python3")
  for name, array in arrays.items():
    np.save(tmp_path / f"in_{name}.npy", array)
  program = textwrap.dedent("""
      import glob, os, sys
      import numpy as np
      import torch
      import torchvision.transforms.functional as F
      root = sys.argv[1]
      inputs = {os.path.basename(p)[3:-4]: np.load(p) for p in glob.glob(os.path.join(root, 'in_*.npy'))}
      def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
      def array(t):
        return t.numpy().transpose(1, 2, 0)
      outputs = {}
  """) + textwrap.dedent(script) + textwrap.dedent("""
      for name, value in outputs.items():
        np.save(os.path.join(root, 'out_' + name + '.npy'), value)
  """)
  subprocess.run([_SYSTEM_PYTHON, "-c", program, str(tmp_path)], check=True, capture_output=True)
  return {p[4:-4]: np.load(tmp_path / p) for p in os.listdir(tmp_path) if p.startswith("out_")}


# ----------------------------------------------------------------------------------------- geometry


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


@pytest.mark.parametrize("out_shape", [(7, 9), (30, 25), (13, 40), (20, 24)])
def test_resize_matches_pil_bilinear(out_shape):
  image = _image(20, 24, 1)
  ours = augment.resize(image, out_shape)[..., 0]
  pil = np.asarray(Image.fromarray(image[..., 0], mode="F").resize(out_shape[::-1], Image.BILINEAR))
  np.testing.assert_allclose(ours, pil, atol=2e-6)


def test_resize_keeps_channels_and_constants():
  image = np.full((11, 13, 3), 0.25, np.float32) * np.array([1, 2, 3], np.float32)
  out = augment.resize(image, 5)
  assert out.shape == (5, 5, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, np.broadcast_to(image[:5, :5], (5, 5, 3)), rtol=1e-6)
  rgb = _image(9, 9, 3)
  for c in range(3):  # each channel is resized on its own
    np.testing.assert_allclose(augment.resize(rgb, 4)[..., c], augment.resize(rgb[..., c:c + 1], 4)[..., 0],
                               rtol=1e-6)


def test_resized_crop_with_an_integer_box_of_the_output_size_is_the_exact_window():
  image = _image(20, 20, 3)
  box = np.array([3, 5, 13, 15])  # [x1, y1, x2, y2], 10 x 10
  np.testing.assert_array_equal(augment.resized_crop(image, box, 10), image[5:15, 3:13])
  # Upscaling by 2: output pixel centres fall at quarter positions, so each is 3/4 of its nearest
  # input pixel plus 1/4 of the next one (edges clamp).
  row = np.array([0.0, 0.4, 1.0], np.float32)[None, :, None]
  np.testing.assert_allclose(augment.resized_crop(np.repeat(row, 2, axis=0), np.array([0, 0, 3, 1]), (1, 6)),
                             [[[0.0], [0.1], [0.3], [0.55], [0.85], [1.0]]], atol=1e-6)


def test_random_resized_crop_returns_its_box():
  image = _image(30, 30, 3)
  crop, box = augment.random_resized_crop(image, _rng(5), 16, (0.1, 0.5))
  assert crop.shape == (16, 16, 3)
  np.testing.assert_array_equal(crop, augment.resized_crop(image, box, 16))


def test_flip_and_center_crop():
  image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
  np.testing.assert_array_equal(augment.horizontal_flip(image)[0, :, 0], [3, 2, 1, 0])
  flips = [augment.random_flip(image, _rng(s))[0, 0, 0] == 3 for s in range(200)]
  assert 70 < sum(flips) < 130
  np.testing.assert_array_equal(augment.center_crop(np.zeros((7, 10, 1)), 4).shape, (4, 4, 1))
  window = augment.center_crop(np.arange(36.0).reshape(6, 6, 1), 2)
  np.testing.assert_array_equal(window[..., 0], [[14, 15], [20, 21]])


# -------------------------------------------------------------------------------------------- colour


def test_colour_jitter_is_the_identity_at_zero_strength():
  for channels in (1, 3):
    image = _image(channels=channels)
    np.testing.assert_array_equal(augment.color_jitter(image, _rng(), 0, 0, 0, 0), image)
  image = _image()
  np.testing.assert_array_equal(augment.adjust_brightness(image, 1.0), image)
  np.testing.assert_allclose(augment.adjust_contrast(image, 1.0), image, atol=1e-7)
  np.testing.assert_allclose(augment.adjust_saturation(image, 1.0), image, atol=1e-7)
  np.testing.assert_allclose(augment.adjust_hue(image, 0.0), image, atol=1e-6)


def test_colour_adjustments_closed_forms():
  image = _image()
  np.testing.assert_allclose(augment.adjust_brightness(image, 0.5), image * 0.5, rtol=1e-6)
  gray_mean = (image @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
  np.testing.assert_allclose(augment.adjust_contrast(image, 0.0), np.full_like(image, gray_mean), rtol=1e-6)
  gray = augment.adjust_saturation(image, 0.0)
  np.testing.assert_allclose(gray, augment.to_grayscale(image), rtol=1e-6)
  np.testing.assert_allclose(gray[..., 0], gray[..., 2])
  red = np.array([[[1.0, 0.0, 0.0]]], np.float32)
  np.testing.assert_allclose(augment.adjust_hue(red, 1 / 3), [[[0, 1, 0]]], atol=1e-6)
  np.testing.assert_allclose(augment.adjust_hue(red, -1 / 3), [[[0, 0, 1]]], atol=1e-6)
  np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(image)), image, atol=1e-6)
  single = _image(channels=1)  # grayscale contrast blends with the plain mean
  np.testing.assert_allclose(augment.adjust_contrast(single, 0.5), 0.5 * single + 0.5 * single.mean(),
                             rtol=1e-6)


def test_resize_colour_and_blur_match_torchvision(tmp_path):
  image = _image(16, 12, 3)
  ref = _torchvision(tmp_path, """
      im = tensor(inputs['image'])
      outputs['small'] = array(F.resize(im, [7, 5], antialias=True))
      outputs['large'] = array(F.resize(im, [30, 41], antialias=True))
      outputs['brightness'] = array(F.adjust_brightness(im, 1.3))
      outputs['contrast'] = array(F.adjust_contrast(im, 0.6))
      outputs['saturation'] = array(F.adjust_saturation(im, 1.4))
      outputs['hue'] = array(F.adjust_hue(im, 0.08))
      outputs['hue_negative'] = array(F.adjust_hue(im, -0.3))
      outputs['gray'] = array(F.rgb_to_grayscale(im, num_output_channels=3))
      outputs['blur'] = array(F.gaussian_blur(im, [5, 5], [1.3, 1.3]))
  """, image=image)
  np.testing.assert_allclose(augment.resize(image, (7, 5)), ref["small"], atol=1e-5)
  np.testing.assert_allclose(augment.resize(image, (30, 41)), ref["large"], atol=1e-5)
  np.testing.assert_allclose(augment.adjust_brightness(image, 1.3), ref["brightness"], atol=1e-6)
  # Our luma is PIL's (0.299, 0.587, 0.114), what the reference's PIL pipeline uses; torchvision's tensor
  # path uses 0.2989 for red, which moves gray by at most 1e-4.
  np.testing.assert_allclose(augment.adjust_contrast(image, 0.6), ref["contrast"], atol=1e-4)
  np.testing.assert_allclose(augment.adjust_saturation(image, 1.4), ref["saturation"], atol=1e-4)
  np.testing.assert_allclose(augment.adjust_hue(image, 0.08), ref["hue"], atol=1e-5)
  np.testing.assert_allclose(augment.adjust_hue(image, -0.3), ref["hue_negative"], atol=1e-5)
  np.testing.assert_allclose(augment.to_grayscale(image), ref["gray"], atol=1e-4)
  np.testing.assert_allclose(augment.gaussian_blur(image, 1.3, kernel_size=5), ref["blur"], atol=1e-6)


def test_colour_jitter_grayscale_rules():
  single = _image(channels=1)
  with pytest.raises(ValueError, match="no saturation or hue"):
    augment.color_jitter(single, _rng(), 0.4, 0.4, 0.4, 0.1)
  assert augment.color_jitter(single, _rng(), 0.4, 0.4).shape == single.shape
  assert augment.random_grayscale(single, _rng(), 1.0) is single
  with pytest.raises(ValueError, match="hue jitter"):
    augment.color_jitter(_image(), _rng(), hue=0.7)
  # The default (RGB) query recipe works on grayscale images: intensity parts only.
  out = augment.colour_recipe(single, _rng(), augment.default_augment_config(24, 1).query)
  assert out.shape == single.shape and out.dtype == np.float32


def test_colour_jitter_factors_are_in_range():
  image = np.full((4, 4, 1), 0.5, np.float32)
  values = [augment.color_jitter(image, _rng(s), brightness=0.4)[0, 0, 0] for s in range(300)]
  assert 0.5 * 0.6 - 1e-6 <= min(values) < 0.5 * 0.65 and 0.5 * 1.35 < max(values) <= 0.5 * 1.4 + 1e-6


def _reference_blur(image, sigma, kernel_size):
  """Direct 2-D convolution of the reflect-padded image with the outer product of 1-D Gaussians."""
  radius = kernel_size // 2
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  kernel = np.outer(taps, taps) / taps.sum() ** 2
  padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
  out = np.zeros(image.shape)
  height, width = image.shape[:2]
  for dy in range(kernel_size):
    for dx in range(kernel_size):
      out += kernel[dy, dx] * padded[dy:dy + height, dx:dx + width]
  return out


def test_gaussian_blur_matches_a_direct_convolution():
  image = _image(17, 13, 3)
  for sigma, kernel_size in ((0.7, 3), (2.0, 7), (1.1, 11)):
    np.testing.assert_allclose(augment.gaussian_blur(image, sigma, kernel_size),
                               _reference_blur(image, sigma, kernel_size), atol=1e-6)
  constant = np.full((9, 9, 1), 0.3, np.float32)
  np.testing.assert_allclose(augment.gaussian_blur(constant, 2.0), constant, rtol=1e-6)
  assert [augment.blur_kernel_size(s) for s in (8, 12, 28, 32, 64, 224)] == [3, 3, 3, 5, 7, 23]
  with pytest.raises(ValueError, match="odd kernel"):
    augment.gaussian_blur(image, 1.0, kernel_size=4)


def test_normalize():
  image = np.stack([np.full((2, 2), v, np.float32) for v in (0.5, 0.25, 1.0)], axis=-1)
  out = augment.normalize(image, (0.5, 0.5, 0.5), (0.5, 0.25, 0.25))
  np.testing.assert_allclose(out[0, 0], [0.0, -1.0, 2.0])
  assert out.dtype == np.float32
  with pytest.raises(ValueError, match="need 1 entries"):
    augment.normalize(image[..., :1], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# ------------------------------------------------------------------------------------------- recipes


def _configs(image_size=16, channels=3, crop_size=6, **pbsd):
  cfg_augment = augment.default_augment_config(image_size, channels)
  cfg_pbsd = augment.default_pbsd_config()
  cfg_pbsd.crop_size = crop_size
  cfg_pbsd.update(pbsd)
  return cfg_augment, cfg_pbsd


def _uint8_image(height=24, width=20, channels=3, seed=0):
  return _rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


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


def test_small_crops_are_cut_from_the_flipped_global_crop():
  """With an identity global crop and no colour, each small crop is the resize of its box of the query."""
  size = 16
  cfg_augment, cfg_pbsd = _configs(image_size=size, crop_size=8)
  cfg_augment.crop_scale, cfg_augment.crop_ratio = (1.0, 1.0), (1.0, 1.0)  # global crop = whole image
  cfg_augment.mean, cfg_augment.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
  cfg_augment.query = dict(jitter=(0.0, 0.0, 0.0, 0.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  image = _uint8_image(size, size)
  image_float = augment.to_float(image)
  flipped_seen = set()
  for seed in range(12):
    views = augment.pretrain_views(image, _rng(seed), cfg_augment, cfg_pbsd)
    query = views["query"]
    flipped = np.array_equal(query, image_float[:, ::-1])
    assert flipped or np.array_equal(query, image_float)
    flipped_seen.add(flipped)
    for crop, box in zip(views["small_crops"], views["boxes"]):
      assert np.array_equal(box, np.round(box))  # integer pixels
      x1, y1, x2, y2 = box.astype(int)
      np.testing.assert_allclose(crop, augment.resize(query[y1:y2, x1:x2], 8), atol=1e-6)
      if flipped:  # the box is in flipped coordinates: mirrored, it indexes the original image
        mirrored = image_float[y1:y2, size - x2:size - x1][:, ::-1]
        np.testing.assert_allclose(crop, augment.resize(mirrored, 8), atol=1e-6)
  assert flipped_seen == {True, False}


def test_small_crop_boxes_follow_the_pbsd_scale():
  cfg_augment, cfg_pbsd = _configs(image_size=32, crop_size=8, num_crops=50)
  boxes = augment.pretrain_views(_uint8_image(40, 40), _rng(3), cfg_augment, cfg_pbsd)["boxes"]
  widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  fractions = widths * heights / 32 ** 2
  assert fractions.min() > 0.05 * 0.7 and fractions.max() < 0.6 * 1.2


def test_probe_and_eval_views():
  cfg_augment, _ = _configs(image_size=16, channels=1)
  image = _uint8_image(20, 20, 1)
  assert augment.probe_view(image, _rng(), cfg_augment).shape == (16, 16, 1)
  # Same size and ratio 1: eval is normalisation alone.
  cfg_augment.image_size = 20
  expected = (augment.to_float(image) - 0.5) / 0.5
  np.testing.assert_allclose(augment.eval_view(image, cfg_augment), expected, rtol=1e-6)
  # ImageNet style: shorter side to 256 (longer truncated), then the central 224.
  cfg_rgb, _ = _configs(image_size=224)
  assert cfg_rgb.eval_resize_ratio == 256 / 224
  photo = _uint8_image(300, 400, 3)
  resized = augment.resize(augment.to_float(photo), (256, 341))
  expected = augment.normalize(resized[16:240, 58:282], cfg_rgb.mean, cfg_rgb.std)
  np.testing.assert_allclose(augment.eval_view(photo, cfg_rgb), expected, rtol=1e-6)


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
