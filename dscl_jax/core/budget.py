"""What a pretraining run is given: images drawn, images embedded, and how often the rarest class's
images are seen. Comparisons put these next to accuracy, so that a method given more data is never read
as a method that learns better.

Counted from the method's requirements (`dscl_jax.methods.base.Requirements`) and the sampler of the
input pipeline (`dscl_jax.input.pipeline`), for `steps` steps of a global batch of `B` positions:

- images drawn: every position reads one instance-uniform image, and a second, class-aware one with the
  `instance_and_class_aware` sampler. The views of one image (query, key, small crops) are one draw.
- online forward images: images the online encoder embeds with gradient: the query of each position,
  each of its small crops when the method embeds them (PBSD students, multi-crop), the key view when the
  method has no momentum target but asks for a key (GPaCo embeds both views online), and one more image
  per position with the class-aware sampler (ICCL embeds the interpolation of its two samples).
- target forward images: the key views the momentum target embeds (no gradient).
- rarest-class draws per image: expected draws of one image of the class with fewest training images.
  Instance-uniform epochs read every image once per `N` positions; a class-aware sample picks class `c`
  with probability `p_c = n_c ** q / sum_k n_k ** q` and then one of its `n_c` images uniformly, so

      draws(c) = steps * B / N + [class-aware] steps * B * p_c / n_c.
"""

from __future__ import annotations

import numpy as np

from dscl_jax.input.pipeline import steps_per_epoch
from dscl_jax.methods.base import Requirements


def forward_images_per_position(requirements: Requirements, num_small_crops: int) -> tuple[int, int]:
  """(online, target) images embedded per batch position for a method with these requirements."""
  online = 1  # the query
  if "small_crops" in requirements.views:
    online += num_small_crops
  if "key" in requirements.views and not requirements.momentum_target:
    online += 1
  if requirements.sampler == "instance_and_class_aware":
    online += 1
  target = 1 if requirements.momentum_target else 0
  return online, target


def class_aware_probabilities(class_counts, power: float) -> np.ndarray:
  """p_c [C] of the class-aware sampler: proportional to n_c ** power over the classes present."""
  counts = np.asarray(class_counts, np.float64)
  weights = np.where(counts > 0, counts**power, 0.0)
  return weights / weights.sum()


def pretrain_budget(
  requirements: Requirements, num_small_crops: int, class_counts, batch_size: int, steps: int
) -> dict:
  """{"images_drawn", "online_forward_images", "target_forward_images", "rarest_class_draws_per_image"}
  of `steps` pretraining steps at global batch `batch_size` on training classes of `class_counts` [C]."""
  counts = np.asarray(class_counts, np.float64)
  positions = steps * batch_size
  samples = 2 if requirements.sampler == "instance_and_class_aware" else 1
  online, target = forward_images_per_position(requirements, num_small_crops)
  rarest = int(np.argmin(np.where(counts > 0, counts, np.inf)))
  draws = positions / counts.sum()
  if samples == 2:
    draws += positions * class_aware_probabilities(counts, requirements.class_aware_power)[rarest] / counts[rarest]
  return {
    "images_drawn": int(positions * samples),
    "online_forward_images": int(positions * online),
    "target_forward_images": int(positions * target),
    "rarest_class_draws_per_image": round(float(draws), 2),
  }


def config_budget(config, method, class_counts) -> dict:
  """The budget of the whole pretraining run that `config` describes (its epochs, or `train.max_steps`
  when set) for `method` (a `dscl_jax.methods.Method`) on training classes of `class_counts`."""
  steps = config.train.epochs * steps_per_epoch(int(np.sum(class_counts)), config.train.batch_size)
  if config.train.max_steps >= 0:
    steps = min(steps, config.train.max_steps)
  return pretrain_budget(method.requirements, config.pbsd.num_crops, class_counts, config.train.batch_size, steps)
