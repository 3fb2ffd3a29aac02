"""What a pretrain batch can hold: the views the input pipeline can produce and the samplers it can draw
with. Methods name what they need from these (`dscl_jax.methods.base.Requirements`); the input layer
checks a request here and never needs to know which method made it.
"""

from __future__ import annotations

from typing import Sequence

# Views the input pipeline can produce; "small_crops" also brings their "boxes" in query pixels, and
# "class_aware" (a query-recipe view of a second, class-aware sample) its "class_aware_label".
VIEWS = ("query", "key", "small_crops", "class_aware")
# How the input pipeline picks the images at each global position: one instance-uniform sample, or that
# and a class-aware sample (class c with probability proportional to n_c ** class_aware_power).
SAMPLERS = ("instance", "instance_and_class_aware")
# Batch entries that hold images ([..., H, W, C]): the pretrain views, and the probe / eval batches'
# "image". Every other entry (labels, boxes, masks) is not pixels.
IMAGE_VIEWS = VIEWS + ("image",)


def check_request(views: Sequence[str], sampler: str) -> None:
  """Raise a ValueError naming the problem unless `views` and `sampler` form a batch the pipeline can
  produce: known views including "query", a known sampler, and the "class_aware" view exactly when the
  sampler draws a class-aware sample."""
  unknown = set(views) - set(VIEWS)
  if unknown or "query" not in views:
    raise ValueError(f"views {tuple(views)} must include 'query' and be drawn from {VIEWS}")
  if sampler not in SAMPLERS:
    raise ValueError(f"sampler {sampler!r} must be one of {SAMPLERS}")
  if ("class_aware" in views) != (sampler == "instance_and_class_aware"):
    raise ValueError(
      f"the 'class_aware' view comes with the 'instance_and_class_aware' sampler; got views "
      f"{tuple(views)} and sampler {sampler!r}"
    )
