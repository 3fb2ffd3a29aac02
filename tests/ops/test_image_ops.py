"""Tests for dscl_jax.ops.image against torchvision's tensor functional ops.

torchvision (v0.14, Debian's, under /usr/bin/python3: it cannot be imported beside the venv's numpy 2)
runs every case in one subprocess: the inputs go over as .npy files, `_REFERENCE_SCRIPT` applies the
`torchvision.transforms.functional` op to each image as a float `[C, H, W]` tensor and saves the
outputs. The ops run here as `jax.jit(jax.vmap(op))` with per-sample parameters, the traced path the
training step uses. The tests after the torchvision ones need no torch, so CI without it still runs
the ops.
"""

import functools
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dscl_jax.ops import image as image_ops

SYSTEM_PYTHON = "/usr/bin/python3"

# Tolerances, absolute, on [0, 1] floats (measured on CPU: at most 9e-7 and 5e-7 respectively).
# Point ops evaluate torchvision's float32 formulas op for op; XLA's fused multiply-adds, its x / 6 as
# x * (1 / 6) (hue) and the mean's summation order (contrast) move results by a few ulps.
ATOL = 2e-6
# Blur and resize sum up to 2 x 13 products per pass in an order that depends on the backend (n * eps
# ~ 2e-6 at worst); still 400 times below one uint8 level.
ATOL_FILTER = 1e-5

# Run by /usr/bin/python3 with the case directory: reads cases.json ([{name, op, static}]) and
# NAME_images.npy [B, H, W, C], NAME_params.npy [B, ...]; writes NAME_out.npy [B, H', W', C'].
_REFERENCE_SCRIPT = r"""
import json, os, sys
import numpy as np
import torch
import torchvision.transforms.functional as F


def apply(op, image, param, static):
  if op == "horizontal_flip":
    return F.hflip(image) if param else image
  if op == "rgb_to_grayscale":
    return F.rgb_to_grayscale(image, num_output_channels=1)
  if op == "adjust_brightness":
    return F.adjust_brightness(image, float(param))
  if op == "adjust_contrast":
    return F.adjust_contrast(image, float(param))
  if op == "adjust_saturation":
    return F.adjust_saturation(image, float(param))
  if op == "adjust_hue":
    return F.adjust_hue(image, float(param))
  if op == "gaussian_blur":
    k = 2 * static["radius"] + 1
    return F.gaussian_blur(image, [k, k], [float(param), float(param)])
  if op == "resized_crop":
    x1, y1, x2, y2 = (int(v) for v in param)
    return F.resized_crop(image, y1, x1, y2 - y1, x2 - x1, list(static["size"]),
                          F.InterpolationMode.BILINEAR, antialias=True)
  raise ValueError(op)


case_dir = sys.argv[1]
torch.set_num_threads(1)
for case in json.load(open(os.path.join(case_dir, "cases.json"))):
  prefix = os.path.join(case_dir, case["name"])
  images = np.load(prefix + "_images.npy")
  params = np.load(prefix + "_params.npy")
  outs = []
  for image, param in zip(images, params):
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    outs.append(apply(case["op"], chw, param, case["static"]).numpy().transpose(1, 2, 0))
  np.save(prefix + "_out.npy", np.stack(outs))
"""


# ----------------------------------------------------------------------------------------------- cases


def random_images(seed, batch, height, width, channels):
  """float32 `[B, H, W, C]` in [0, 1]: even samples continuous, odd ones uint8 / 255 (what the device
  gets: ties between channels, exact 0 and 1), with a few gray, black and white pixels in each."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 1, (batch, height, width, channels)).astype(np.float32)
  images[1::2] = rng.integers(0, 256, images[1::2].shape).astype(np.float32) / 255
  images[:, 0, :3] = np.array([0.0, 1.0, 0.5], np.float32)[:, None]  # black, white, gray pixels
  images[:, 1, 0] = images[:, 1, 0, :1]  # a random gray
  return images


def near_gray_images(seed, batch, height, width, channels):
  """float32 `[B, H, W, 3]` where hue is ill-conditioned: grays moved by a few ulps per channel (top
  half) and very dark colours, below 1e-3 (bottom half)."""
  rng = np.random.default_rng(seed)
  gray = rng.uniform(0, 1, (batch, height, width, 1)).astype(np.float32)
  images = np.repeat(gray, channels, -1)
  images = images + rng.integers(-4, 5, images.shape) * np.spacing(images)
  images[:, height // 2 :] = rng.uniform(0, 1e-3, images[:, height // 2 :].shape)
  return np.clip(images, 0, 1).astype(np.float32)


def case(name, op, shape, params, seed, images=random_images, **static):
  params = np.asarray(params, np.float32)
  return dict(name=name, op=op, static=static, params=params, images=images(seed, len(params), *shape))


FACTORS = [0.0, 1.0, 0.6, 1.4, 0.37, 2.5]  # 0 (all black / mean / gray), 1 (identity), recipe range, past it
HUE_SHIFTS = [-0.5, 0.5, 0.0, 0.1, -0.1, 0.25, -0.37, 0.49]
SIGMAS = [0.1, 0.5, 1.0, 2.0, 5.0]


def crop_boxes(height, width):
  """Boxes `[x1, y1, x2, y2]` in a `height x width` image: the whole image, each edge touched, one
  pixel, thin strips, and inside ones."""
  return [
    [0, 0, width, height],
    [0, 0, width // 2, height // 3],
    [width // 3, height // 2, width, height],
    [0, height - 5, 7, height],
    [width - 1, 0, width, 1],  # one pixel: enlarged to the whole output
    [2, 0, 3, height],  # one column
    [1, 2, width - 3, height - 1],
    [5, 3, 12, 15],
  ]


CASES = [
  case("flip_rgb", "horizontal_flip", (16, 16, 3), [0, 1, 1, 0], 1),
  case("flip_gray", "horizontal_flip", (13, 21, 1), [1, 0], 2),
  case("grayscale_square", "rgb_to_grayscale", (16, 16, 3), [0, 0, 0], 3),
  case("grayscale_wide", "rgb_to_grayscale", (13, 21, 3), [0, 0], 4),
  case("brightness_rgb", "adjust_brightness", (16, 16, 3), FACTORS, 5),
  case("brightness_gray", "adjust_brightness", (13, 21, 1), FACTORS, 6),
  case("contrast_rgb", "adjust_contrast", (13, 21, 3), FACTORS, 7),
  case("contrast_gray", "adjust_contrast", (16, 16, 1), FACTORS, 8),
  case("saturation_square", "adjust_saturation", (16, 16, 3), FACTORS, 9),
  case("saturation_wide", "adjust_saturation", (13, 21, 3), FACTORS, 10),
  case("hue_square", "adjust_hue", (16, 16, 3), HUE_SHIFTS, 11),
  case("hue_tall", "adjust_hue", (21, 13, 3), HUE_SHIFTS, 12),
  case("hue_near_gray", "adjust_hue", (16, 16, 3), HUE_SHIFTS, 21, images=near_gray_images),
  case("blur_r1_rgb", "gaussian_blur", (16, 16, 3), SIGMAS, 13, radius=1),
  case("blur_r3_gray", "gaussian_blur", (13, 21, 1), SIGMAS, 14, radius=3),
  case("blur_r6_rgb", "gaussian_blur", (24, 17, 3), SIGMAS, 15, radius=6),
  case("blur_r6_small", "gaussian_blur", (7, 9, 3), SIGMAS, 16, radius=6),  # radius = min(H, W) - 1
  case("crop_shrink_rgb", "resized_crop", (32, 40, 3), crop_boxes(32, 40), 17, size=(6, 9)),
  case("crop_enlarge_rgb", "resized_crop", (32, 40, 3), crop_boxes(32, 40), 18, size=(48, 56)),
  case("crop_mixed_gray", "resized_crop", (17, 23, 1), crop_boxes(17, 23), 19, size=(20, 5)),
  case("crop_same_size", "resized_crop", (17, 23, 3), crop_boxes(17, 23), 20, size=(17, 23)),
]
TOLERANCES = dict(gaussian_blur=ATOL_FILTER, resized_crop=ATOL_FILTER)


def run_op(op, images, params, **static):
  """`op` through `jax.jit(jax.vmap(...))` with one parameter per sample: `[B, H', W', C']` numpy."""
  fn = getattr(image_ops, op)
  if op == "rgb_to_grayscale":
    return np.asarray(jax.jit(jax.vmap(fn))(images))
  return np.asarray(jax.jit(jax.vmap(functools.partial(fn, **static)))(images, params))


# ------------------------------------------------------------------------------------------ torchvision


@pytest.fixture(scope="module")
def torchvision_outputs(tmp_path_factory):
  """torchvision's outputs for every case, computed in one subprocess."""
  probe = subprocess.run(
    [SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True, check=False, env=dict(os.environ)
  )
  if probe.returncode != 0:
    pytest.skip(f"{SYSTEM_PYTHON} cannot import torchvision: {probe.stderr.decode(errors='replace').strip()[-200:]}")
  case_dir = tmp_path_factory.mktemp("torchvision_image_ops")
  for c in CASES:
    np.save(case_dir / f"{c['name']}_images.npy", c["images"])
    np.save(case_dir / f"{c['name']}_params.npy", c["params"])
  (case_dir / "cases.json").write_text(json.dumps([{k: c[k] for k in ("name", "op", "static")} for c in CASES]))
  script = case_dir / "reference.py"
  script.write_text(_REFERENCE_SCRIPT)
  subprocess.run(
    [SYSTEM_PYTHON, str(script), str(case_dir)],
    check=True,
    capture_output=True,
    env=dict(os.environ, OMP_NUM_THREADS="1"),
  )
  return {c["name"]: np.load(case_dir / f"{c['name']}_out.npy") for c in CASES}


@pytest.mark.parametrize("c", CASES, ids=lambda c: c["name"])
def test_matches_torchvision(c, torchvision_outputs):
  expected = torchvision_outputs[c["name"]]
  actual = run_op(c["op"], c["images"], c["params"], **c["static"])
  assert actual.shape == expected.shape and actual.dtype == np.float32
  np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCES.get(c["op"], ATOL))


# ------------------------------------------------------------------------------------------- pure JAX


@pytest.mark.parametrize(
  "op,channels", [("adjust_brightness", 3), ("adjust_contrast", 1), ("adjust_contrast", 3), ("adjust_saturation", 3)]
)
def test_factor_one_is_the_identity(op, channels):
  images = random_images(30, 4, 13, 21, channels)
  np.testing.assert_array_equal(run_op(op, images, np.ones(4, np.float32)), images)


def test_factor_zero():
  images = random_images(31, 2, 13, 21, 3)
  zeros = np.zeros(2, np.float32)
  np.testing.assert_array_equal(run_op("adjust_brightness", images, zeros), 0)
  gray = run_op("rgb_to_grayscale", images, None)
  np.testing.assert_allclose(run_op("adjust_saturation", images, zeros), np.repeat(gray, 3, -1), atol=1e-7)
  means = gray.mean(axis=(1, 2, 3))
  np.testing.assert_allclose(
    run_op("adjust_contrast", images, zeros), np.broadcast_to(means[:, None, None, None], images.shape), atol=1e-6
  )


def test_flip():
  images = random_images(32, 3, 13, 21, 3)
  flips = np.array([True, False, True])
  once = run_op("horizontal_flip", images, flips)
  np.testing.assert_array_equal(once[0], images[0, :, ::-1])
  np.testing.assert_array_equal(once[1], images[1])
  np.testing.assert_array_equal(run_op("horizontal_flip", once, flips), images)


def test_grayscale_weights():
  rgb = np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)  # one red, one green, one blue pixel
  np.testing.assert_allclose(run_op("rgb_to_grayscale", rgb, None)[0, 0, :, 0], [0.2989, 0.587, 0.114], rtol=1e-6)


def test_hue():
  images = random_images(33, 4, 13, 21, 3)
  # Shift 0 is the identity up to the HSV round trip; +-0.5 are the same rotation.
  np.testing.assert_allclose(run_op("adjust_hue", images, np.zeros(4, np.float32)), images, atol=2e-6)
  np.testing.assert_allclose(
    run_op("adjust_hue", images, np.full(4, 0.5, np.float32)),
    run_op("adjust_hue", images, np.full(4, -0.5, np.float32)),
    atol=2e-6,
  )
  # Pure red by a third of a turn is pure green; gray pixels keep their value.
  pixels = np.array([[[[1.0, 0.0, 0.0], [0.4, 0.4, 0.4]]]], np.float32)
  np.testing.assert_allclose(
    run_op("adjust_hue", pixels, np.array([1 / 3], np.float32))[0, 0], [[0.0, 1.0, 0.0], [0.4, 0.4, 0.4]], atol=1e-6
  )


def test_blur_keeps_a_constant_and_sigma_limits():
  constant = np.full((3, 13, 21, 3), 0.3, np.float32)
  sigmas = np.array([0.1, 1.0, 50.0], np.float32)
  np.testing.assert_allclose(run_op("gaussian_blur", constant, sigmas, radius=6), constant, atol=1e-6)
  for sigma in (0.1, 1.0, 50.0):
    kernel = np.asarray(image_ops._gaussian_kernel(sigma, 6))
    assert kernel.shape == (13,) and abs(kernel.sum() - 1) < 1e-6 and np.argmax(kernel) == 6
  images = random_images(34, 2, 13, 21, 1)
  # A tiny sigma leaves the image; a huge one is the mean over the 13 x 13 (reflected) window.
  np.testing.assert_allclose(run_op("gaussian_blur", images, np.array([1e-3, 0.0], np.float32), radius=6), images)
  wide = run_op("gaussian_blur", images[:1], np.array([1e4], np.float32), radius=2)
  padded = np.pad(images[0, :, :, 0], 2, mode="reflect")
  np.testing.assert_allclose(wide[0, 5, 7, 0], padded[5:10, 7:12].mean(), atol=1e-6)


def test_resized_crop_whole_image_same_size_is_the_identity():
  images = random_images(35, 2, 17, 23, 3)
  boxes = np.tile(np.array([[0, 0, 23, 17]], np.float32), (2, 1))
  np.testing.assert_allclose(run_op("resized_crop", images, boxes, size=(17, 23)), images, atol=1e-6)


def test_resized_crop_reads_only_the_box():
  # The box of a big image resizes exactly as the sliced-out crop does (its whole-image box).
  images = random_images(36, 3, 32, 40, 3)
  boxes = np.array([[3, 5, 20, 30], [0, 0, 40, 9], [39, 31, 40, 32]], np.int32)
  for size in ((7, 11), (50, 45)):
    from_boxes = run_op("resized_crop", images, boxes, size=size)
    for image, box, out in zip(images, boxes, from_boxes):
      x1, y1, x2, y2 = box
      crop = image[y1:y2, x1:x2][None]
      whole = np.array([[0, 0, x2 - x1, y2 - y1]], np.int32)
      np.testing.assert_allclose(out, run_op("resized_crop", crop, whole, size=size)[0], atol=1e-6)


def test_resized_crop_by_hand():
  # Enlarging 2 -> 4 is plain bilinear with edge clamping: [0, 1] -> [0, 1/4, 3/4, 1].
  ramp = np.array([[[0.0], [1.0]]], np.float32)  # [1, 2, 1]
  out = run_op("resized_crop", ramp[None], np.array([[0, 0, 2, 1]], np.float32), size=(1, 4))
  np.testing.assert_allclose(out[0, 0, :, 0], [0, 0.25, 0.75, 1], atol=1e-7)
  # Shrinking 4 -> 2 (scale 2, tent half-width 2): output 0 has centre 1, window [0, 3), weights
  # 3/4, 3/4, 1/4; output 1 has centre 3, window [1, 4), weights 1/4, 3/4, 3/4.
  row = np.array([[[1.0], [2.0], [4.0], [8.0]]], np.float32)
  out = run_op("resized_crop", row[None], np.array([[0, 0, 4, 1]], np.float32), size=(1, 2))
  np.testing.assert_allclose(out[0, 0, :, 0], [(0.75 + 1.5 + 1.0) / 1.75, (0.5 + 3.0 + 6.0) / 1.75], rtol=1e-6)


@pytest.mark.parametrize(
  "call,message",
  [
    (lambda: image_ops.adjust_saturation(jnp.zeros((8, 8, 1)), 0.5), r"C = 3, got shape \(8, 8, 1\)"),
    (lambda: image_ops.adjust_hue(jnp.zeros((8, 8, 1)), 0.1), r"C = 3, got shape \(8, 8, 1\)"),
    (lambda: image_ops.rgb_to_grayscale(jnp.zeros((8, 8, 1))), r"got shape \(8, 8, 1\)"),
    (lambda: image_ops.adjust_brightness(jnp.zeros((2, 8, 8, 3)), 0.5), "vmap it over a batch"),
    (lambda: image_ops.adjust_contrast(jnp.zeros((8, 8, 3), jnp.uint8), 0.5), "float image"),
    (lambda: image_ops.gaussian_blur(jnp.zeros((6, 9, 3)), 1.0, 6), "radius 6 must be < min"),
    (lambda: image_ops.resized_crop(jnp.zeros((6, 9, 3)), jnp.zeros(4), (4, 0)), "static positive ints"),
  ],
)
def test_bad_arguments_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()
