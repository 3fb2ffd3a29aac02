"""The one shape every dataset definition returns.

A dataset is a `LongTailedDataset` holding up to three `Split`s. A split is random-access: `len(split)`
images, `split.source[i]` gives `{"image": uint8 [H, W, C], "label": int}` (a grain
`RandomAccessDataSource`), and `split.labels` `[N]` holds every label without decoding an image, so the
class counts, the many / medium / few groups and the class-balanced sampler never touch pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np


class ImageSource(Protocol):
  """A grain random-access source of `{"image": uint8 [H, W, C], "label": int}` records."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """An in-memory source: `images` uint8 [N, H, W, C], `labels` int [N]."""

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if self.images.ndim != 4 or self.images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}")
    if len(self.images) != len(self.labels):
      raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": int(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: a random-access `source` and its labels `[N]` int32 (same order)."""

  name: str
  source: ImageSource
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class LongTailedDataset:
  """A long-tailed training split plus balanced evaluation split(s).

  `channels` is 1 for grayscale data and 3 for RGB; the augmentation recipe depends on it.
  `val` is the split used for any choice made during training (never `test`); it may be None.
  """

  name: str
  num_classes: int
  channels: int
  train: Split
  test: Split
  val: Split | None = None
  class_names: Sequence[str] | None = None

  @property
  def class_counts(self) -> np.ndarray:
    """Training images per class, `[num_classes]` int64."""
    return np.bincount(self.train.labels, minlength=self.num_classes)
