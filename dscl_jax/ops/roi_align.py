"""RoIAlign with torchvision's semantics, in pure JAX (gathers and matmuls).

`roi_align` pools a fixed `out_h x out_w` grid of bins from every box on an
NHWC feature map. Each bin is the mean of a regular grid of bilinear samples,
computed exactly as `torchvision.ops.roi_align` computes it (CPU kernel):

  * box corners are multiplied by `spatial_scale`; with `aligned=True` they are
    then shifted by -0.5 so that pixel centres sit on integer coordinates;
  * with `aligned=False` the box height and width are clamped to at least 1;
    with `aligned=True` they are not (a box with x2 < x1 has negative width);
  * bin `(i, j)` samples the points
      y = y_start + i * bin_h + (iy + 0.5) * bin_h / grid_h,  iy < grid_h
      x = x_start + j * bin_w + (ix + 0.5) * bin_w / grid_w,  ix < grid_w
    where `grid = sampling_ratio` if it is positive, else the adaptive
    `ceil(roi_size / output_size)` of that box (per axis, in feature-map units);
  * a sample with y < -1, y > H, x < -1 or x > W contributes 0; otherwise
    negative coordinates are clamped to 0 and coordinates at or past the last
    row / column read that edge row / column;
  * the bin is the sum of its samples divided by `max(grid_h * grid_w, 1)`
    (a grid of size <= 0, possible for degenerate aligned boxes, gives 0).

How it is computed. Bilinear interpolation and the out-of-range rule factor
into a y part and an x part, so every box gets two small interpolation
matrices, `Wy [out_h, H]` and `Wx [out_w, W]`, which already hold the
bilinear weights, the sample mask and the `1 / grid` averaging; the result is
`Wy @ features[box_index] @ Wx^T` per channel. The matrices are built with
vectorised arithmetic for all boxes at once. When an axis is longer than
the taps of one bin (`2 * grid_bound < length`: two neighbours per sample),
that axis keeps its taps sparse instead (row indices plus weights) and only
those rows / columns are gathered.

The contraction runs in chunks of boxes (`jax.lax.map` with a batch size)
sized so that the feature maps gathered for one chunk stay around
`_CHUNK_BYTES`: on CPU, materialising `features[box_indices]` for all boxes at
once ([1280, 7, 7, 2048] floats = 513 MB at the PBSD shapes) made the gather
four times slower than the arithmetic. Everything is differentiable with
respect to `features`; boxes are treated as constants (like torchvision, which
gives no gradient for boxes).
"""

import functools
import math
from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

# Bytes of gathered feature maps per step of the chunked contraction: small
# enough to stay in a CPU's L2/L3 cache. On a 2-core CPU, 4 MiB was the
# fastest of {1, 4, 16} MiB at the PBSD shapes and within 10% of the best at
# features [8, 64, 64, 256] with 7 x 7 outputs.
_CHUNK_BYTES = 4 * 2**20

IntPair = Union[int, Sequence[int]]


def _as_pair(value: IntPair, name: str) -> Tuple[int, int]:
  """Returns `value` as a pair of Python ints (an int is used for both)."""
  if isinstance(value, int) and not isinstance(value, bool):
    pair = (value, value)
  else:
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
      raise ValueError(f"{name}={value!r} must be an int or a pair of ints (height, width).")
  if min(pair) < 1:
    raise ValueError(f"{name}={value!r} must be positive.")
  return pair


def default_max_samples_per_bin(feature_size: Tuple[int, int], output_size: IntPair) -> Tuple[int, int]:
  """The default static bound on the adaptive sampling grid.

  Args:
    feature_size: (H, W) of the feature map.
    output_size: (out_h, out_w) or an int for both.

  Returns:
    (ceil(H / out_h), ceil(W / out_w)): the largest adaptive grid of any box
    that lies inside the feature map (a box inside the map is at most H x W
    in feature-map units, and the aligned=False clamp to 1 needs a grid of 1).
  """
  out_h, out_w = _as_pair(output_size, "output_size")
  height, width = feature_size
  return (max(1, math.ceil(height / out_h)), max(1, math.ceil(width / out_w)))


def _box_geometry(boxes, spatial_scale, aligned, dtype):
  """Start corner and size of every box in feature-map units.

  Args:
    boxes: [R, 4] x1, y1, x2, y2 in input-image pixels.
    spatial_scale: feature-map units per input pixel.
    aligned: torchvision's `aligned` flag.
    dtype: floating dtype of the computation.

  Returns:
    (start [R, 2], size [R, 2]), each as (y, x).
  """
  boxes = boxes.astype(dtype)
  offset = 0.5 if aligned else 0.0
  start = boxes[:, 1::-1] * spatial_scale - offset  # (y1, x1)
  end = boxes[:, 3:1:-1] * spatial_scale - offset  # (y2, x2)
  size = end - start
  if not aligned:
    size = jnp.maximum(size, 1.0)
  return start, size


def _grid_size(size, output_size, sampling_ratio):
  """Samples per bin along y and x, before any bound: int32 [R, 2]."""
  if sampling_ratio > 0:
    return jnp.full(size.shape, sampling_ratio, jnp.int32)
  out = jnp.asarray(output_size, size.dtype)
  # Same float arithmetic as torchvision: ceil(roi_size / pooled_size).
  return jnp.ceil(size / out).astype(jnp.int32)


def adaptive_grid_size(
  boxes: jax.Array,
  output_size: IntPair = (2, 2),
  spatial_scale: float = 1 / 32,
  sampling_ratio: int = -1,
  aligned: bool = False,
) -> jax.Array:
  """torchvision's samples per bin for every box, without any bound.

  Args:
    boxes: [R, 4] x1, y1, x2, y2 in input-image pixels.
    output_size, spatial_scale, sampling_ratio, aligned: as for `roi_align`.

  Returns:
    int32 [R, 2]: (grid_h, grid_w). `sampling_ratio` everywhere when it is
    positive; otherwise ceil(roi_h / out_h), ceil(roi_w / out_w), which is
    <= 0 for aligned boxes of zero or negative size (torchvision then returns
    zeros for that box).
  """
  output_size = _as_pair(output_size, "output_size")
  dtype = jnp.promote_types(jnp.asarray(boxes).dtype, jnp.float32)
  _, size = _box_geometry(jnp.asarray(boxes), spatial_scale, aligned, dtype)
  return _grid_size(size, output_size, sampling_ratio)


def grid_within_bound(
  boxes: jax.Array,
  feature_size: Tuple[int, int],
  output_size: IntPair = (2, 2),
  spatial_scale: float = 1 / 32,
  sampling_ratio: int = -1,
  aligned: bool = False,
  max_samples_per_bin: Optional[IntPair] = None,
) -> jax.Array:
  """Which boxes `roi_align` pools exactly as torchvision does.

  Jittable, no host callbacks: use it to count or mask boxes whose adaptive
  grid is clamped by `max_samples_per_bin`.

  Args:
    boxes: [R, 4] x1, y1, x2, y2 in input-image pixels.
    feature_size: (H, W) of the feature map `roi_align` will see.
    output_size, spatial_scale, sampling_ratio, aligned, max_samples_per_bin:
      as for `roi_align`.

  Returns:
    bool [R]: True where the box's own grid fits in the bound on both axes
    (always True for a positive `sampling_ratio`).
  """
  if sampling_ratio > 0:
    return jnp.ones(jnp.shape(boxes)[0], bool)
  bound = _sampling_bound(feature_size, output_size, max_samples_per_bin)
  grid = adaptive_grid_size(boxes, output_size, spatial_scale, sampling_ratio, aligned)
  return jnp.all(grid <= jnp.asarray(bound), axis=1)


def _sampling_bound(feature_size, output_size, max_samples_per_bin):
  if max_samples_per_bin is None:
    return default_max_samples_per_bin(feature_size, output_size)
  return _as_pair(max_samples_per_bin, "max_samples_per_bin")


def _axis_taps(start, size, grid, length, out_size, bound):
  """Bilinear taps of every sample along one axis.

  Args:
    start: [R] first coordinate of each box (feature-map units).
    size: [R] box size along the axis.
    grid: [R] int samples per bin actually used (already <= bound).
    length: static size of the feature map along the axis.
    out_size: static number of bins along the axis.
    bound: static grid bound: samples with index >= grid are masked.

  Returns:
    (low, high) int32 [R, out_size, bound] neighbouring row (or column)
    indices and (w_low, w_high) [R, out_size, bound] weights that include the
    out-of-range mask and the 1 / grid share of the bin average.
  """
  dtype = start.dtype
  bin_size = (size / out_size)[:, None, None]
  bins = jnp.arange(out_size, dtype=dtype)[None, :, None]
  sample = jnp.arange(bound)
  grid_f = jnp.maximum(grid, 1).astype(dtype)[:, None, None]
  # Written in torchvision's operation order to round the same way.
  pos = start[:, None, None] + bins * bin_size + (sample.astype(dtype) + 0.5) * bin_size / grid_f
  used = (sample < grid[:, None, None]) & (pos >= -1.0) & (pos <= length)
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos).astype(jnp.int32)
  at_edge = low >= length - 1
  low = jnp.where(at_edge, length - 1, low)
  high = jnp.where(at_edge, length - 1, low + 1)
  frac = jnp.where(at_edge, 0.0, pos - low.astype(dtype))
  share = used.astype(dtype) / grid_f
  return low, high, (1.0 - frac) * share, frac * share


def _dense_weights(low, high, w_low, w_high, length):
  """Taps -> interpolation matrix [R, out_size, length] (samples summed)."""
  index = jnp.arange(length)
  matrix = jnp.where(low[..., None] == index, w_low[..., None], 0.0) + jnp.where(
    high[..., None] == index, w_high[..., None], 0.0
  )
  return matrix.sum(axis=2)


def _sparse_weights(low, high, w_low, w_high):
  """Taps -> (indices, weights), each [R, out_size, 2 * bound]."""
  num_boxes, out_size, bound = low.shape
  indices = jnp.stack([low, high], axis=-1).reshape(num_boxes, out_size, 2 * bound)
  weights = jnp.stack([w_low, w_high], axis=-1).reshape(num_boxes, out_size, 2 * bound)
  return indices, weights


def _pool_one_box(features, box_index, y_taps, x_taps, dense_y, dense_x, dtype):
  """Pools one box: [out_h, out_w, C] from features [N, H, W, C].

  A dense axis's taps are a matrix [out, length]; a sparse axis's taps are
  (indices [out, K], weights [out, K]).
  """
  _, height, width, channels = features.shape
  if dense_y and dense_x:
    # Small maps: one [out_h * out_w, H * W] x [H * W, C] product per box is
    # faster than two thin ones.
    weights = jnp.einsum("ih,jw->ijhw", y_taps, x_taps)
    out_h, out_w = weights.shape[:2]
    image = features[box_index].astype(dtype).reshape(height * width, channels)
    pooled = weights.reshape(out_h * out_w, height * width) @ image
    return pooled.reshape(out_h, out_w, channels)
  if dense_y:
    rows = jnp.einsum("ih,hwc->iwc", y_taps, features[box_index].astype(dtype))
  else:
    row_index, row_weight = y_taps
    picked = features[box_index, row_index].astype(dtype)  # [out_h, K, W, C]
    rows = jnp.einsum("ik,ikwc->iwc", row_weight, picked)
  if dense_x:
    return jnp.einsum("jw,iwc->ijc", x_taps, rows)
  col_index, col_weight = x_taps
  picked = rows[:, col_index]  # [out_h, out_w, K, C]
  return jnp.einsum("jk,ijkc->ijc", col_weight, picked)


@functools.partial(jax.jit, static_argnames=("output_size", "sampling_ratio", "aligned", "bound"))
def _roi_align(features, boxes, box_indices, spatial_scale, *, output_size, sampling_ratio, aligned, bound):
  num_images, height, width, channels = features.shape
  out_h, out_w = output_size
  num_boxes = boxes.shape[0]
  dtype = jnp.promote_types(features.dtype, jnp.float32)

  # No gradient for the boxes (as in torchvision): they are data here, and
  # the bilinear weights are only piecewise differentiable in them.
  start, size = jax.lax.stop_gradient(_box_geometry(boxes, spatial_scale, aligned, dtype))
  grid = jnp.minimum(_grid_size(size, output_size, sampling_ratio), jnp.asarray(bound, jnp.int32))
  y_taps = _axis_taps(start[:, 0], size[:, 0], grid[:, 0], height, out_h, bound[0])
  x_taps = _axis_taps(start[:, 1], size[:, 1], grid[:, 1], width, out_w, bound[1])
  # A sparse axis gathers 2 * bound rows (or columns) per bin; use it only
  # when that is fewer than the whole axis.
  dense_y = 2 * bound[0] >= height
  dense_x = 2 * bound[1] >= width
  y_taps = _dense_weights(*y_taps, height) if dense_y else _sparse_weights(*y_taps)
  x_taps = _dense_weights(*x_taps, width) if dense_x else _sparse_weights(*x_taps)

  box_indices = jnp.clip(box_indices.astype(jnp.int32), 0, num_images - 1)
  rows_per_box = height if dense_y else out_h * 2 * bound[0]
  box_bytes = rows_per_box * width * channels * jnp.dtype(dtype).itemsize
  chunk = max(1, min(num_boxes, _CHUNK_BYTES // box_bytes))
  pool = functools.partial(_pool_one_box, features, dense_y=dense_y, dense_x=dense_x, dtype=dtype)
  pooled = jax.lax.map(lambda args: pool(*args), (box_indices, y_taps, x_taps), batch_size=chunk)
  return pooled.astype(features.dtype)


def roi_align(
  features: jax.Array,
  boxes: jax.Array,
  box_indices: jax.Array,
  output_size: IntPair = (2, 2),
  spatial_scale: float = 1 / 32,
  sampling_ratio: int = -1,
  aligned: bool = False,
  max_samples_per_bin: Optional[IntPair] = None,
) -> jax.Array:
  """RoIAlign equal to `torchvision.ops.roi_align`, on NHWC features.

  Args:
    features: [N, H, W, C] feature maps.
    boxes: [R, 4] x1, y1, x2, y2 in input-image pixels (any float dtype).
      Constants for autodiff: their gradient is zero, as in torchvision.
    box_indices: [R] int, the image of `features` each box belongs to.
      Values outside [0, N) are clamped into it.
    output_size: (out_h, out_w) bins per box, or an int for both. Static.
    spatial_scale: feature-map units per input pixel (1/32 for a stride-32
      map). May be a traced scalar.
    sampling_ratio: samples per bin along each axis when positive; when <= 0,
      adaptive like torchvision: each box uses its own
      ceil(roi_h / out_h) x ceil(roi_w / out_w) grid, roi sizes measured in
      feature-map units after `spatial_scale` and the aligned/clamping rules.
      Static.
    aligned: torchvision's `aligned` (shift by -0.5 pixel, no size clamp).
      Static.
    max_samples_per_bin: static bound (an int, or (grid_h, grid_w)) on the
      adaptive grid, needed for static shapes; ignored when `sampling_ratio`
      is positive. Default: (ceil(H / out_h), ceil(W / out_w)), which bounds
      the grid of every box no larger than the feature map (roi_h <= H and
      roi_w <= W in feature-map units, e.g. every box inside the map), so
      those boxes are pooled exactly as torchvision pools them. Every
      bin is sampled on a bound_h x bound_w grid and samples with index >=
      the box's own grid are masked out, so the result is exact for every box
      whose adaptive grid is within the bound. Past it, the grid is clamped
      to the bound: such a box (for example one larger than the feature map)
      is averaged over bound evenly spaced samples per bin along that axis,
      i.e. fewer samples than torchvision takes; its result equals
      torchvision's with that axis's grid set to the bound. Pass a larger
      bound for such boxes, and use `grid_within_bound` (jittable) to find
      them. Work and memory grow with the bound.

  Returns:
    [R, out_h, out_w, C] in `features`' dtype (computed in at least float32).

  Raises:
    ValueError: on arrays of the wrong rank or mismatched box counts, or
      non-positive output sizes or bounds.
  """
  features = jnp.asarray(features)
  boxes = jnp.asarray(boxes)
  box_indices = jnp.asarray(box_indices)
  if features.ndim != 4:
    raise ValueError(
      f"features must be [N, H, W, C], got shape {features.shape}; "
      "transpose NCHW maps with features.transpose(0, 2, 3, 1)."
    )
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"boxes must be [R, 4] (x1, y1, x2, y2), got shape {boxes.shape}.")
  if box_indices.shape != (boxes.shape[0],):
    raise ValueError(
      f"box_indices must be [R] = [{boxes.shape[0]}] (one image index per box), got shape {box_indices.shape}."
    )
  if not jnp.issubdtype(box_indices.dtype, jnp.integer):
    raise ValueError(f"box_indices must be integers, got dtype {box_indices.dtype}.")
  if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
    raise ValueError(f"sampling_ratio={sampling_ratio!r} must be a Python int (<= 0 for adaptive sampling).")
  output_size = _as_pair(output_size, "output_size")
  if sampling_ratio > 0:
    bound = (sampling_ratio, sampling_ratio)
  else:
    bound = _sampling_bound(features.shape[1:3], output_size, max_samples_per_bin)
  return _roi_align(
    features,
    boxes,
    box_indices,
    spatial_scale,
    output_size=output_size,
    sampling_ratio=sampling_ratio,
    aligned=bool(aligned),
    bound=bound,
  )
