"""Tests for dscl_jax.ops.roi_align against torchvision's RoIAlign semantics.

The main reference is `reference_roi_align`, a loop-based float64 NumPy
transcription of torchvision's CPU algorithm (one box, one bin, one sample at
a time). torchvision itself is checked in a /usr/bin/python3 subprocess when it
is installed there.
"""

import itertools
import json
import math
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dscl_jax.ops import adaptive_grid_size, default_max_samples_per_bin, grid_within_bound, roi_align
from tests import TESTS_DIR

SYSTEM_PYTHON = "/usr/bin/python3"
TORCH_SCRIPT = os.path.join(TESTS_DIR, "torch_roi_align_ref.py")


# ----------------------------------------------------------------------------
# Independent NumPy reference.


def _bilinear(image, y, x):
  """torchvision's bilinear_interpolate: image [H, W, C] at (y, x) -> [C]."""
  height, width = image.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return np.zeros(image.shape[2])
  y = max(y, 0.0)
  x = max(x, 0.0)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_low = y_high = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_low = x_high = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1.0 - ly, 1.0 - lx
  return (
    hy * hx * image[y_low, x_low]
    + hy * lx * image[y_low, x_high]
    + ly * hx * image[y_high, x_low]
    + ly * lx * image[y_high, x_high]
  )


def reference_grid(box, output_size, spatial_scale, sampling_ratio, aligned):
  """(grid_h, grid_w) torchvision uses for one box (float64 arithmetic)."""
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in box)
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
  if sampling_ratio > 0:
    return sampling_ratio, sampling_ratio
  return (int(math.ceil(roi_h / output_size[0])), int(math.ceil(roi_w / output_size[1])))


def reference_roi_align(
  features, boxes, box_indices, output_size, spatial_scale, sampling_ratio, aligned, grid_cap=None
):
  """torchvision's CPU roi_align in float64 loops, on NHWC features.

  `grid_cap` (grid_h, grid_w) optionally clamps the adaptive grid, to model
  roi_align past its `max_samples_per_bin`.
  """
  features = np.asarray(features, np.float64)
  out_h, out_w = output_size
  offset = 0.5 if aligned else 0.0
  out = np.zeros((len(boxes), out_h, out_w, features.shape[3]))
  for r, (box, image_index) in enumerate(zip(boxes, box_indices)):
    image = features[image_index]
    x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
      roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    grid_h, grid_w = reference_grid(box, output_size, spatial_scale, sampling_ratio, aligned)
    if grid_cap is not None and sampling_ratio <= 0:
      grid_h, grid_w = min(grid_h, grid_cap[0]), min(grid_w, grid_cap[1])
    count = max(grid_h * grid_w, 1)
    for ph in range(out_h):
      for pw in range(out_w):
        total = np.zeros(features.shape[3])
        for iy in range(grid_h):
          y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
          for ix in range(grid_w):
            x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
            total += _bilinear(image, y, x)
        out[r, ph, pw] = total / count
  return out


# ----------------------------------------------------------------------------
# Cases.


def random_boxes(rng, height, width, spatial_scale, per_kind=6):
  """Boxes [R, 4] in input pixels covering every kind of box that matters.

  Kinds (in feature-map units): inside the map, partly outside (no larger
  than the map), wholly outside (beyond -1 or past the far edge), zero
  width / height / both, flipped (x2 < x1, y2 < y1), tiny (< 0.3 units).
  """

  def uniform(low, high):
    return rng.uniform(low, high, per_kind)

  kinds = []
  # Inside.
  x1, y1 = uniform(0, width - 0.5), uniform(0, height - 0.5)
  kinds.append(
    [x1, y1, x1 + rng.uniform(0, 1, per_kind) * (width - x1), y1 + rng.uniform(0, 1, per_kind) * (height - y1)]
  )
  # Partly outside, sizes up to the map's.
  w, h = uniform(0.5, width), uniform(0.5, height)
  x1, y1 = uniform(-w, width), uniform(-h, height)
  kinds.append([x1, y1, x1 + w, y1 + h])
  # Wholly outside: below -1 on one axis, past the far edge on the other.
  x1, y1 = uniform(-width - 1.5, -3.0), uniform(height + 1.5, 2 * height)
  kinds.append([x1, y1, x1 + uniform(0.1, 1.4), y1 + uniform(0.1, height)])
  # Zero width, zero height, both.
  x1, y1 = uniform(-0.5, width), uniform(-0.5, height)
  kinds.append([x1, y1, x1, y1 + uniform(0, height)])
  kinds.append([x1, y1, x1 + uniform(0, width), y1])
  kinds.append([x1, y1, x1, y1])
  # Flipped.
  x1, y1 = uniform(0, width), uniform(0, height)
  kinds.append([x1, y1, x1 - uniform(0, 3), y1 - uniform(0, 3)])
  # Tiny.
  x1, y1 = uniform(-1, width), uniform(-1, height)
  kinds.append([x1, y1, x1 + uniform(0, 0.3), y1 + uniform(0, 0.3)])
  boxes = np.concatenate([np.stack(kind, axis=1) for kind in kinds])
  return (boxes / spatial_scale).astype(np.float32)


# (output_size, feature shape [N, H, W, C], spatial_scale). Non-square maps
# catch x / y mix-ups; the 20 x 24 map and the (3, 2) output on a 7-row map
# exercise the sparse-axis path, the others the dense one.
GEOMETRIES = [
  ((2, 2), (3, 7, 9, 4), 1 / 32),
  ((3, 2), (2, 7, 7, 3), 1 / 16),
  ((7, 7), (2, 20, 24, 3), 1 / 4),
  ((1, 3), (2, 5, 6, 2), 1.0),
]
CASES = [
  dict(
    name=f"g{g}_sr{sr}_al{int(al)}",
    output_size=geom[0],
    feature_shape=geom[1],
    spatial_scale=geom[2],
    sampling_ratio=sr,
    aligned=al,
    seed=g * 100 + (sr + 1) * 10 + int(al),
  )
  for (g, geom), sr, al in itertools.product(enumerate(GEOMETRIES), (-1, 1, 2), (False, True))
]


def border_boxes(aligned):
  """Boxes [8, 4] on a 4 x 5 map whose single sample (scale 1, output 1 x 1,
  sampling_ratio 1) lands exactly on, or just past, the map's limits.

  Returns the boxes and the (row, column) each one reads, None for zero.
  """
  boxes = np.array(
    [
      [0, 3, 2, 5],  # y = 4 = H: kept, reads the last row.
      [0, 4.25, 2, 6.25],  # y = 5.25 > H: zero.
      [0, -2, 2, 0],  # y = -1: kept, clamped to row 0.
      [0, -2.5, 2, -0.5],  # y = -1.5 < -1: zero.
      [4, 1, 6, 3],  # x = 5 = W: kept, reads the last column.
      [-2, 1, 0, 3],  # x = -1: kept, clamped to column 0.
      [-2.25, 1, -0.25, 3],  # x = -1.25 < -1: zero.
      [3.5, 2.5, 4.5, 3.5],  # (y, x) = (3, 4): the last row and column.
    ],
    np.float32,
  )
  reads = [(3, 1), None, (0, 1), None, (2, 4), (2, 0), None, (3, 4)]
  # aligned=True shifts by -0.5; shifting the boxes by +0.5 keeps the samples.
  return boxes + (0.5 if aligned else 0.0), reads


BORDER_CASES = [
  dict(
    name=f"border_al{int(al)}",
    output_size=(1, 1),
    feature_shape=(1, 4, 5, 2),
    spatial_scale=1.0,
    sampling_ratio=1,
    aligned=al,
    seed=900 + int(al),
  )
  for al in (False, True)
]
CASES += BORDER_CASES


def make_case(case):
  rng = np.random.default_rng(case["seed"])
  num_images, height, width, _ = case["feature_shape"]
  features = rng.standard_normal(case["feature_shape"]).astype(np.float32)
  if case["name"].startswith("border"):
    boxes = border_boxes(case["aligned"])[0]
    return features, boxes, np.zeros(len(boxes), np.int32)
  boxes = random_boxes(rng, height, width, case["spatial_scale"])
  box_indices = rng.integers(0, num_images, len(boxes)).astype(np.int32)
  return features, boxes, box_indices


def run_roi_align(case, features, boxes, box_indices, **kwargs):
  return np.asarray(
    roi_align(
      features,
      boxes,
      box_indices,
      output_size=case["output_size"],
      spatial_scale=case["spatial_scale"],
      sampling_ratio=case["sampling_ratio"],
      aligned=case["aligned"],
      **kwargs,
    )
  )


# ----------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_matches_numpy_reference(case):
  features, boxes, box_indices = make_case(case)
  expected = reference_roi_align(
    features, boxes, box_indices, case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"]
  )
  actual = run_roi_align(case, features, boxes, box_indices)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  # The cases must exercise both "all zero" boxes and real values.
  per_box = np.abs(expected).reshape(len(boxes), -1).max(axis=1)
  assert (per_box == 0).any() and (per_box > 0.1).sum() >= len(boxes) // 3


@pytest.fixture(scope="module")
def torchvision_outputs(tmp_path_factory):
  """torchvision's outputs for every case, computed in one subprocess."""
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True, check=False)
  if probe.returncode != 0:
    pytest.skip(f"{SYSTEM_PYTHON} cannot import torchvision: {probe.stderr.decode(errors='replace').strip()[-200:]}")
  case_dir = tmp_path_factory.mktemp("torchvision_roi_align")
  for case in CASES:
    features, boxes, box_indices = make_case(case)
    prefix = os.path.join(case_dir, case["name"])
    np.save(prefix + "_features.npy", features)
    np.save(prefix + "_boxes.npy", boxes)
    np.save(prefix + "_box_indices.npy", box_indices)
  with open(os.path.join(case_dir, "cases.json"), "w") as f:
    json.dump(
      [{k: case[k] for k in ("name", "output_size", "spatial_scale", "sampling_ratio", "aligned")} for case in CASES], f
    )
  subprocess.run(
    [SYSTEM_PYTHON, TORCH_SCRIPT, str(case_dir)],
    check=True,
    capture_output=True,
    env=dict(os.environ, OMP_NUM_THREADS="1"),
  )
  return {case["name"]: np.load(os.path.join(case_dir, case["name"] + "_out.npy")) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_matches_torchvision(case, torchvision_outputs):
  features, boxes, box_indices = make_case(case)
  actual = run_roi_align(case, features, boxes, box_indices)
  np.testing.assert_allclose(actual, torchvision_outputs[case["name"]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", BORDER_CASES, ids=lambda c: c["name"])
def test_samples_on_the_map_border(case):
  features, boxes, box_indices = make_case(case)
  out = run_roi_align(case, features, boxes, box_indices)[:, 0, 0]
  for value, read in zip(out, border_boxes(case["aligned"])[1]):
    expected = np.zeros(2) if read is None else features[0, read[0], read[1]]
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def test_linear_ramp_gives_bin_centres():
  # Bilinear interpolation reproduces a linear function, so on the map
  # f[h, w] = h + 10 w each bin of an inside box (aligned=True) is the value
  # at the bin's centre: y1 * s - 0.5 + (i + 0.5) * (y2 - y1) * s / out_h.
  height, width, scale = 12, 10, 0.5
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  features = (rows + 10.0 * cols)[None, :, :, None].astype(np.float32)
  boxes = np.array([[2.0, 3.0, 14.0, 19.0], [1.0, 1.0, 2.0, 2.0], [5.5, 2.25, 18.0, 21.75]], np.float32)
  out = np.asarray(
    roi_align(
      features, boxes, np.zeros(3, np.int32), output_size=(4, 3), spatial_scale=scale, sampling_ratio=-1, aligned=True
    )
  )
  x1, y1, x2, y2 = (boxes[:, k, None] * scale - 0.5 for k in range(4))
  centre_y = y1 + (np.arange(4) + 0.5) * (y2 - y1) / 4  # [R, 4]
  centre_x = x1 + (np.arange(3) + 0.5) * (x2 - x1) / 3  # [R, 3]
  expected = centre_y[:, :, None] + 10.0 * centre_x[:, None, :]
  np.testing.assert_allclose(out[..., 0], expected, rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------
# The adaptive-sampling bound.


def _big_boxes():
  """Boxes [R, 4] for a 7 x 9 map at scale 1/32, the last two larger than it."""
  return np.array([[0, 0, 288, 224], [40, 30, 100, 200], [-64, -96, 320, 288], [-300, 10, 500, 150]], np.float32)


def test_default_bound_and_grid_helpers():
  assert default_max_samples_per_bin((7, 7), (2, 2)) == (4, 4)
  assert default_max_samples_per_bin((7, 9), (3, 2)) == (3, 5)
  boxes = _big_boxes()
  grid = np.asarray(adaptive_grid_size(boxes, (2, 2), 1 / 32))
  expected = [reference_grid(b, (2, 2), 1 / 32, -1, False) for b in boxes]
  np.testing.assert_array_equal(grid, expected)
  np.testing.assert_array_equal(grid, [[4, 5], [3, 1], [6, 6], [3, 13]])
  within = jax.jit(grid_within_bound, static_argnums=(1, 2, 3, 4, 5))(boxes, (7, 9), (2, 2), 1 / 32, -1, False)
  np.testing.assert_array_equal(within, [True, True, False, False])
  np.testing.assert_array_equal(
    grid_within_bound(boxes, (7, 9), (2, 2), 1 / 32, max_samples_per_bin=(6, 13)), [True] * 4
  )
  np.testing.assert_array_equal(grid_within_bound(boxes, (7, 9), (2, 2), 1 / 32, sampling_ratio=2), [True] * 4)


@pytest.mark.parametrize("aligned", [False, True])
def test_past_the_bound_grid_is_clamped(aligned):
  rng = np.random.default_rng(7)
  features = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
  boxes = _big_boxes()
  box_indices = np.array([0, 1, 1, 0], np.int32)
  args = (features, boxes, box_indices, (2, 2), 1 / 32, -1, aligned)
  torch_like = reference_roi_align(*args)
  clamped = reference_roi_align(*args, grid_cap=(4, 5))
  default = np.asarray(roi_align(*args))
  # Default bound (4, 5): boxes within it are exact, bigger ones use the
  # bound's grid, i.e. fewer samples than torchvision.
  np.testing.assert_allclose(default, clamped, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(default[:2], torch_like[:2], rtol=1e-5, atol=1e-5)
  assert np.abs(default[2:] - torch_like[2:]).max() > 1e-3
  # A bound that covers every box is exact everywhere.
  wide = np.asarray(roi_align(*args, max_samples_per_bin=(6, 13)))
  np.testing.assert_allclose(wide, torch_like, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# Gradient, jit, shapes, errors.


@pytest.mark.parametrize("output_size,sampling_ratio", [((2, 2), -1), ((3, 3), 1)])
def test_gradient_matches_finite_differences(output_size, sampling_ratio):
  # (2, 2) adaptive on a 9 x 10 map uses dense y / x weights; (3, 3) with one
  # sample per bin gathers sparse rows and columns.
  rng = np.random.default_rng(3)
  features = rng.standard_normal((2, 9, 10, 2))
  boxes = np.concatenate([random_boxes(rng, 9, 10, 0.5, per_kind=1), np.array([[1.0, 2.0, 17.0, 15.0]])])
  box_indices = rng.integers(0, 2, len(boxes))
  with jax.enable_x64(True):
    cotangent = jnp.asarray(rng.standard_normal((len(boxes), *output_size, 2)))

    def objective(x):
      out = roi_align(
        x,
        jnp.asarray(boxes),
        jnp.asarray(box_indices),
        output_size=output_size,
        spatial_scale=0.5,
        sampling_ratio=sampling_ratio,
        aligned=False,
      )
      return jnp.sum(out * cotangent)

    grad = np.asarray(jax.jit(jax.grad(objective))(jnp.asarray(features)))
    objective = jax.jit(objective)
    eps = 1e-3
    numeric = np.zeros(features.size)
    for i in range(features.size):
      step = np.zeros(features.size)
      step[i] = eps
      step = step.reshape(features.shape)
      numeric[i] = (objective(features + step) - objective(features - step)) / (2 * eps)
  assert grad.dtype == np.float64
  np.testing.assert_allclose(grad.ravel(), numeric, rtol=1e-7, atol=1e-9)
  assert np.count_nonzero(grad) > 20


def test_boxes_get_no_gradient():
  rng = np.random.default_rng(4)
  features = jnp.asarray(rng.standard_normal((1, 7, 7, 2)), jnp.float32)
  boxes = jnp.asarray([[10.0, 20.0, 150.0, 200.0], [3.0, 5.0, 60.0, 90.0]])
  grad = jax.grad(lambda b: jnp.sum(roi_align(features, b, jnp.zeros(2, jnp.int32)) ** 2))(boxes)
  np.testing.assert_array_equal(grad, np.zeros((2, 4)))


def test_jit_shapes_and_dtypes():
  rng = np.random.default_rng(5)
  features = rng.standard_normal((3, 7, 7, 8)).astype(np.float32)
  boxes = random_boxes(rng, 7, 7, 1 / 32)
  box_indices = rng.integers(0, 3, len(boxes)).astype(np.int32)
  jitted = jax.jit(roi_align, static_argnames=("output_size", "sampling_ratio", "aligned", "max_samples_per_bin"))
  # spatial_scale is traced here.
  out = jitted(features, boxes, box_indices, output_size=(3, 2), spatial_scale=jnp.float32(1 / 32))
  assert out.shape == (len(boxes), 3, 2, 8) and out.dtype == jnp.float32
  eager = roi_align(features, boxes, box_indices, output_size=(3, 2))
  np.testing.assert_allclose(out, eager, rtol=1e-6, atol=1e-6)

  half = roi_align(jnp.asarray(features, jnp.bfloat16), boxes, box_indices)
  assert half.dtype == jnp.bfloat16 and half.shape == (len(boxes), 2, 2, 8)
  from_half = roi_align(np.asarray(jnp.asarray(features, jnp.bfloat16), np.float32), boxes, box_indices)
  np.testing.assert_allclose(np.asarray(half, np.float32), from_half, rtol=1e-2, atol=1e-2)

  assert roi_align(features, np.zeros((0, 4), np.float32), np.zeros(0, np.int32)).shape == (0, 2, 2, 8)
  assert roi_align(features, boxes, box_indices, output_size=3).shape == (len(boxes), 3, 3, 8)


def test_box_indices_outside_range_are_clamped():
  rng = np.random.default_rng(6)
  features = rng.standard_normal((3, 7, 7, 2)).astype(np.float32)
  boxes = np.tile(np.array([[10.0, 20.0, 150.0, 200.0]], np.float32), (2, 1))
  out = roi_align(features, boxes, np.array([-4, 9], np.int32))
  expected = roi_align(features, boxes, np.array([0, 2], np.int32))
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(features=np.zeros((7, 7, 4))), "features must be"),
    (dict(boxes=np.zeros((3, 5))), "boxes must be"),
    (dict(box_indices=np.zeros(2, np.int32)), "box_indices must be"),
    (dict(box_indices=np.zeros(3)), "must be integers"),
    (dict(output_size=(2, 0)), "output_size"),
    (dict(output_size=(2, 2, 2)), "output_size"),
    (dict(sampling_ratio=1.5), "sampling_ratio"),
    (dict(max_samples_per_bin=0), "max_samples_per_bin"),
  ],
)
def test_bad_arguments_raise(kwargs, message):
  args = dict(
    features=np.zeros((1, 7, 7, 4), np.float32), boxes=np.zeros((3, 4), np.float32), box_indices=np.zeros(3, np.int32)
  )
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    roi_align(**args)
