"""Learning-rate schedules and the SGD optimiser, built from the config."""

from __future__ import annotations

from typing import Sequence

import optax


def warmup_cosine_schedule(base_lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `base_lr` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
  if total_steps <= 0:
    raise ValueError(f"total_steps {total_steps} must be positive")
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f"warmup_steps {warmup_steps} must be in [0, total_steps={total_steps})")
  cosine = optax.cosine_decay_schedule(base_lr, total_steps - warmup_steps)
  if warmup_steps == 0:
    return cosine
  warmup = optax.linear_schedule(0.0, base_lr, warmup_steps)
  return optax.join_schedules([warmup, cosine], [warmup_steps])


def step_schedule(base_lr: float, boundaries: Sequence[int], factor: float = 0.1) -> optax.Schedule:
  """`base_lr`, multiplied by `factor` at each step in `boundaries` (the linear probe's schedule)."""
  return optax.piecewise_constant_schedule(base_lr, {int(b): factor for b in boundaries})


def sgd(schedule: optax.Schedule, momentum: float, weight_decay: float) -> optax.GradientTransformation:
  """PyTorch's SGD: the decay term is added to the gradient before the momentum buffer."""
  parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
  return optax.chain(*parts, optax.sgd(schedule, momentum=momentum or None))
