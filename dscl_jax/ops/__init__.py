"""Array operations used by the models and losses (pure JAX, jittable)."""

from dscl_jax.ops.roi_align import adaptive_grid_size, default_max_samples_per_bin, grid_within_bound, roi_align

__all__ = [
  "adaptive_grid_size",
  "default_max_samples_per_bin",
  "grid_within_bound",
  "roi_align",
]
