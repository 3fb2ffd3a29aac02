"""Datasets by name: `get_dataset(config.data)` builds the `LongTailedDataset` a config asks for.

To add a dataset, write a builder `(data_config) -> LongTailedDataset` and add it to `BUILDERS`.
`data_config` is an ml_collections ConfigDict with `name`, `imbalance_factor`, `seed` and `root`
(None selects the dataset's default location).
"""

from __future__ import annotations

from typing import Any, Callable

from data import base, cifar_lt, digits, fashion_mnist, long_tail, split_list, tfds_lt


def _build_digits_lt(data_config: Any) -> base.LongTailedDataset:
  return digits.load_digits_lt(imbalance_factor=data_config.imbalance_factor, seed=data_config.seed)


def _build_fashion_mnist_lt(data_config: Any) -> base.LongTailedDataset:
  root = data_config.root or fashion_mnist.DEFAULT_ROOT
  return fashion_mnist.load_fashion_mnist_lt(
    imbalance_factor=data_config.imbalance_factor,
    seed=data_config.seed,
    root=root,
    val_per_class=data_config.get("val_per_class", 0),
  )


BUILDERS: dict[str, Callable[[Any], base.LongTailedDataset]] = {
  "digits_lt": _build_digits_lt,
  "fashion_mnist_lt": _build_fashion_mnist_lt,
  "cifar10_lt": cifar_lt.build_cifar10_lt,
  "cifar100_lt": cifar_lt.build_cifar100_lt,
  "imagenet_lt": split_list.build_imagenet_lt,
  "places_lt": split_list.build_places_lt,
  "inat18": split_list.build_inat18,
  "imagenet_lt_tfds": tfds_lt.build_imagenet_lt_tfds,
  "inat18_tfds": tfds_lt.build_inat18_tfds,
}

# Datasets that can take a validation split (`data.val_per_class`) from the training images their
# long-tailed profile leaves out.
HELD_OUT_VAL = ("fashion_mnist_lt",)

# (classes, image channels) of every dataset, known without reading it: `--config.dry_run` sizes a job from
# these (tests check them against the built datasets).
SHAPES: dict[str, tuple[int, int]] = {
  "digits_lt": (10, 1),
  "fashion_mnist_lt": (10, 1),
  "cifar10_lt": (10, 3),
  "cifar100_lt": (100, 3),
  "imagenet_lt": (split_list.IMAGENET_LT_CLASSES, 3),
  "places_lt": (split_list.PLACES_LT_CLASSES, 3),
  "inat18": (split_list.INAT18_CLASSES, 3),
  "imagenet_lt_tfds": (split_list.IMAGENET_LT_CLASSES, 3),
  "inat18_tfds": (split_list.INAT18_CLASSES, 3),
}


def summary(dataset: base.LongTailedDataset) -> str:
  """One line: classes, image counts, per-class range and the evaluation groups' sizes."""
  counts = dataset.class_counts
  groups, scheme = long_tail.shot_groups(counts)
  group_sizes = ", ".join(f"{name} {len(classes)}" for name, classes in groups.items())
  val = f", val {len(dataset.val)}" if dataset.val is not None else ""
  return (
    f"{dataset.name}: {dataset.num_classes} classes, train {len(dataset.train)} images "
    f"({int(counts.max())}..{int(counts.min())} per class, IF {counts.max() / max(counts.min(), 1):.1f}), "
    f"test {len(dataset.test)}{val}; groups by {scheme}: {group_sizes} classes"
  )


def get_dataset(data_config: Any) -> base.LongTailedDataset:
  """The dataset `data_config.name` names; prints a one-line summary the first time each is built."""
  name = data_config.name
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(BUILDERS))}")
  val_per_class = data_config.get("val_per_class", 0)
  if val_per_class < 0:
    raise ValueError(f"data.val_per_class must be >= 0, got {val_per_class}")
  if val_per_class and name not in HELD_OUT_VAL:
    raise ValueError(
      f"data.val_per_class {val_per_class}: only {', '.join(HELD_OUT_VAL)} can hold out a "
      f"validation split; {name} has its own or none (set data.val_per_class=0)"
    )
  return BUILDERS[name](data_config)
