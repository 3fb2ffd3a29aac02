"""The exponential long-tailed profile, the subset that follows it, and the many / medium / few groups.

A long-tailed version of a balanced set keeps `n_c = int(n_max * IF ** (-c / (C - 1)))` images of class
`c` (the CIFAR-LT convention: class 0 is the head, counts are truncated, `IF = n_max / n_min`). CIFAR-100
with `n_max = 500` and `IF = 100` gives 500, 477, ..., 5 and 10,847 images in total.
"""

from __future__ import annotations

import numpy as np

# Shot thresholds of the long-tailed protocol (METHODS.md section 7), in training images per class.
MANY_SHOT_MIN = 101  # many: > 100
FEW_SHOT_MAX = 19  # few: < 20; medium is 20..100 inclusive


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> np.ndarray:
  """Images per class of the exponential profile, `[num_classes]` int64, non-increasing.

  `n_c = int(n_max * imbalance_factor ** (-c / (num_classes - 1)))`, so class 0 keeps `n_max` and the
  last class keeps `int(n_max / imbalance_factor)`.
  """
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  if n_max < 1:
    raise ValueError(f"n_max must be >= 1, got {n_max}")
  if not imbalance_factor >= 1:
    raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min), got {imbalance_factor}")
  if num_classes == 1:
    return np.array([n_max], dtype=np.int64)
  # Python floats, class by class, so the truncation matches the reference CIFAR-LT lists exactly.
  counts = np.array(
    [int(n_max * imbalance_factor ** (-c / (num_classes - 1))) for c in range(num_classes)], dtype=np.int64
  )
  if counts[-1] < 1:
    raise ValueError(
      f"imbalance_factor {imbalance_factor} with n_max {n_max} leaves class {num_classes - 1} with no "
      f"image; use imbalance_factor <= n_max ({n_max})"
    )
  return counts


def long_tail_subset(labels: np.ndarray, imbalance_factor: float, seed: int, n_max: int | None = None) -> np.ndarray:
  """Indices into `labels` `[N]` of a long-tailed subset, sorted, int64.

  Class `c` (classes are `0 .. labels.max()`) keeps a fixed-seed random choice of
  `long_tail_counts(n_max, C, imbalance_factor)[c]` of its images. `n_max` defaults to the smallest class
  count, so every class can supply its share.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
  if labels.min() < 0:
    raise ValueError(f"labels must be >= 0, got {labels.min()}")
  num_classes = int(labels.max()) + 1
  available = np.bincount(labels, minlength=num_classes)
  if available.min() == 0:
    raise ValueError(
      f"class {int(np.argmin(available))} has no image among the {labels.size} labels; "
      f"labels must cover 0 .. {num_classes - 1}"
    )
  if n_max is None:
    n_max = int(available.min())
  wanted = long_tail_counts(n_max, num_classes, imbalance_factor)
  short = np.flatnonzero(wanted > available)
  if short.size:
    c = int(short[0])
    raise ValueError(
      f"class {c} has {available[c]} images but the profile (n_max {n_max}, imbalance_factor "
      f"{imbalance_factor}) asks for {wanted[c]}; lower n_max (default: the smallest class "
      f"count, {available.min()})"
    )
  rng = np.random.default_rng(seed)
  chosen = [rng.choice(np.flatnonzero(labels == c), size=wanted[c], replace=False) for c in range(num_classes)]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def held_out_subset(labels: np.ndarray, used: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Indices into `labels` `[N]` of up to `per_class` images of each class that are not in `used`, sorted,
  int64: a validation split from the images a long-tailed subset left out. A class with fewer unused
  images gives all it has (none when the subset took every image of it, as the head class often does).
  Drawn with its own generator, so the subset `used` and this choice never share random numbers.
  """
  labels = np.asarray(labels)
  if per_class < 0:
    raise ValueError(f"per_class must be >= 0, got {per_class}")
  unused = np.ones(labels.size, bool)
  unused[np.asarray(used, np.int64)] = False
  rng = np.random.default_rng([seed, 1])
  chosen = []
  for c in range(int(labels.max()) + 1):
    candidates = np.flatnonzero(unused & (labels == c))
    chosen.append(rng.choice(candidates, size=min(per_class, candidates.size), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def shot_groups(class_counts: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
  """Split classes into evaluation groups by their training image counts `[C]`.

  Returns `(groups, scheme)`. With scheme 'shots' the groups are 'many' (> 100 images), 'medium'
  (20..100) and 'few' (< 20). When one of those would be empty (small or mildly imbalanced sets) the
  scheme is 'thirds': 'head', 'middle', 'tail' thirds of the classes ranked by count (descending, ties
  by class index), sizes as equal as possible (larger groups first). Each group holds sorted class
  indices, int64.
  """
  shots = shot_classes(class_counts)
  if all(group.size for group in shots.values()):
    return shots, "shots"
  return count_thirds(class_counts), "thirds"


def _counts(class_counts) -> np.ndarray:
  counts = np.asarray(class_counts).astype(np.int64)
  if counts.ndim != 1 or counts.size < 3:
    raise ValueError(f"class_counts must be 1-D with at least 3 classes, got shape {counts.shape}")
  return counts


def shot_classes(class_counts) -> dict[str, np.ndarray]:
  """'many' (> 100 training images), 'medium' (20..100), 'few' (< 20): sorted class indices, int64,
  each possibly empty."""
  counts = _counts(class_counts)
  classes = np.arange(counts.size, dtype=np.int64)
  return {
    "many": classes[counts >= MANY_SHOT_MIN],
    "medium": classes[(counts > FEW_SHOT_MAX) & (counts < MANY_SHOT_MIN)],
    "few": classes[counts <= FEW_SHOT_MAX],
  }


def count_thirds(class_counts) -> dict[str, np.ndarray]:
  """'head', 'middle', 'tail': thirds of the classes ranked by training images (descending, ties by class
  index), sizes as equal as possible (larger groups first); sorted class indices, int64."""
  ranking = np.argsort(-_counts(class_counts), kind="stable")
  return {
    name: np.sort(part).astype(np.int64) for name, part in zip(("head", "middle", "tail"), np.array_split(ranking, 3))
  }
