"""Digits-LT: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), long-tailed.

Offline and tiny, so a whole pretrain + probe + eval run fits in a test. A balanced test split of
`test_per_class` images per class is set aside first with a fixed seed that does not depend on `seed`
(every long-tailed draw is scored on the same test images); the long-tailed train subset is drawn from
the remaining images (about 125 per class, so `n_max` is the smallest remaining class count).
"""

from __future__ import annotations

import numpy as np

from data import base, long_tail

# The test split is drawn with this seed whatever the long-tailed `seed` is.
TEST_SPLIT_SEED = 0
_MAX_PIXEL = 16.0  # load_digits pixel values are 0..16


def _balanced_test_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted indices of `per_class` images of every class, chosen with `seed`."""
  rng = np.random.default_rng(seed)
  chosen = []
  for c in range(int(labels.max()) + 1):
    members = np.flatnonzero(labels == c)
    if members.size <= per_class:
      raise ValueError(
        f"digits class {c} has {members.size} images; test_per_class {per_class} would leave none for training"
      )
    chosen.append(rng.choice(members, size=per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def split_indices(
  labels: np.ndarray, imbalance_factor: float, seed: int, test_per_class: int
) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) indices into `labels`: a balanced test split, then a long-tailed train subset of the rest."""
  if test_per_class < 1:
    raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
  test_indices = _balanced_test_indices(labels, test_per_class, TEST_SPLIT_SEED)
  rest = np.setdiff1d(np.arange(labels.size), test_indices)
  return rest[long_tail.long_tail_subset(labels[rest], imbalance_factor, seed)], test_indices


def load_digits_lt(imbalance_factor: float = 10, seed: int = 0, test_per_class: int = 50) -> base.LongTailedDataset:
  """Digits-LT: train long-tailed (class 0 the head), test balanced; images uint8 `[N, 8, 8, 1]`."""
  # Imported here: scikit-learn takes about a second to import and only this dataset needs it.
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top

  digits = sklearn_datasets.load_digits()
  images = np.round(digits.images * (255.0 / _MAX_PIXEL)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)

  train_indices, test_indices = split_indices(labels, imbalance_factor, seed, test_per_class)

  def split(name, indices):
    source = base.ArraySource(images[indices], labels[indices])
    return base.Split(name=name, source=source, labels=source.labels)

  return base.LongTailedDataset(
    name="digits_lt",
    num_classes=10,
    channels=1,
    train=split("train", train_indices),
    test=split("test", test_indices),
    class_names=[str(d) for d in range(10)],
  )
