"""CIFAR-10-LT and CIFAR-100-LT from the tensorflow-datasets `cifar10` / `cifar100` builders.

The train split (5,000 images per class for CIFAR-10, 500 for CIFAR-100) is cut to the exponential profile
`n_c = int(n_max * IF ** (-c / (C - 1)))` with a fixed-seed choice of images (`data.long_tail`); the
test split (1,000 / 100 per class) is kept whole and balanced. With IF 100, CIFAR-10-LT keeps 5000 .. 50
per class (12,406 images) and CIFAR-100-LT 500 .. 5 (10,847 images). The standard protocol has no
validation split, so `val` is None.

Reading goes through `tfds.data_source`, which random-accesses the prepared ArrayRecord files and
decodes the PNGs with PIL: tensorflow is not needed to read. Preparing the files is a separate, one-off
step on a machine with network access and tensorflow (tfds encodes the images with it):

    tfds build cifar100 --file_format=array_record --data_dir=<dir>

then copy `<dir>/cifar100` here and pass `--config.data.tfds_data_dir=<dir>`. Both splits are read into
memory once (about 180 MB for all of CIFAR, about 10 s on one core), so training never decodes
a PNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data import base, long_tail, tfds_common

# Images per class of each builder's train split: the head class keeps them all.
TRAIN_PER_CLASS = {"cifar10": 5000, "cifar100": 500}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def _build_hint(builder_name: str) -> str:
  """How to prepare `builder_name`'s files, for the end of `tfds_common.open_split`'s errors."""
  return (
    f"Prepare it once as ArrayRecord: `tfds build {builder_name} --file_format=array_record "
    f"--data_dir=<dir>` on a machine with network access and tensorflow, copy <dir>/{builder_name} "
    f"here and pass --config.data.tfds_data_dir=<dir> (or set TFDS_DATA_DIR)"
  )


def read_all(source: Any) -> tuple[np.ndarray, np.ndarray]:
  """Every record of a tfds source: images uint8 `[N, 32, 32, 3]`, labels int32 `[N]`."""
  # One record at a time: `__getitems__` would be twice as fast on real files, but tfds's mock source
  # (tfds.testing.mock_data, 4.9.10) cannot serve it, and this runs once per job.
  images, labels = [], []
  for index in range(len(source)):
    record = source[index]
    images.append(np.asarray(record["image"], dtype=np.uint8))
    labels.append(int(record["label"]))
  if not labels:
    raise ValueError(f"tfds source {source!r} holds no record")
  return np.stack(images), np.asarray(labels, dtype=np.int32)


def load_cifar_lt(
  builder_name: str, imbalance_factor: float = 100, seed: int = 0, data_dir: str | None = None, n_max: int | None = None
) -> base.LongTailedDataset:
  """CIFAR-10-LT (`builder_name` 'cifar10') or CIFAR-100-LT ('cifar100') at `imbalance_factor`.

  `n_max` defaults to the full class size (5000 / 500), so class 0 keeps every image; `seed` picks which
  images the other classes keep. `data_dir` is the tfds data directory (None: tfds's default).
  """
  if builder_name not in NUM_CLASSES:
    raise ValueError(f"builder_name must be one of {sorted(NUM_CLASSES)}, got {builder_name!r}")
  num_classes = NUM_CLASSES[builder_name]
  n_max = TRAIN_PER_CLASS[builder_name] if n_max is None else n_max
  hint = _build_hint(builder_name)
  train_images, train_labels = read_all(tfds_common.open_split(builder_name, "train", data_dir, build_hint=hint))
  test_images, test_labels = read_all(tfds_common.open_split(builder_name, "test", data_dir, build_hint=hint))
  for split, labels in (("train", train_labels), ("test", test_labels)):
    if labels.max() >= num_classes:
      raise ValueError(f"{builder_name} {split} has label {labels.max()}, expected < {num_classes}")
  keep = long_tail.long_tail_subset(train_labels, imbalance_factor, seed, n_max=n_max)

  def split(name, images, labels):
    return base.Split(name=name, source=base.ArraySource(images, labels), labels=labels)

  return base.LongTailedDataset(
    name=f"{builder_name}_lt",
    num_classes=num_classes,
    channels=3,
    train=split("train", train_images[keep], train_labels[keep]),
    test=split("test", test_images, test_labels),
    class_names=tfds_common.class_names(builder_name, data_dir, num_classes),
  )


def load_cifar10_lt(
  imbalance_factor: float = 100, seed: int = 0, data_dir: str | None = None
) -> base.LongTailedDataset:
  """CIFAR-10-LT: train `int(5000 * IF ** (-c / 9))` images of class c, test 1,000 per class."""
  return load_cifar_lt("cifar10", imbalance_factor, seed, data_dir)


def load_cifar100_lt(
  imbalance_factor: float = 100, seed: int = 0, data_dir: str | None = None
) -> base.LongTailedDataset:
  """CIFAR-100-LT: train `int(500 * IF ** (-c / 99))` images of class c, test 100 per class."""
  return load_cifar_lt("cifar100", imbalance_factor, seed, data_dir)


def build_cifar10_lt(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: imbalance_factor, seed and the tfds data directory from `data_config`."""
  return load_cifar10_lt(data_config.imbalance_factor, data_config.seed, tfds_common.tfds_data_dir(data_config))


def build_cifar100_lt(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: imbalance_factor, seed and the tfds data directory from `data_config`."""
  return load_cifar100_lt(data_config.imbalance_factor, data_config.seed, tfds_common.tfds_data_dir(data_config))
