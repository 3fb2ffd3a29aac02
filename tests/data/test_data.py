"""Long-tailed profile and subsets, shot groups, Digits-LT, Fashion-MNIST-LT and the registry."""

import gzip
import os

import ml_collections
import numpy as np
import pytest
from sklearn import datasets as sklearn_datasets

from data import digits, fashion_mnist, long_tail, registry

# --------------------------------------------------------------------------------- long-tailed profile


def test_cifar100_lt_profile_matches_the_published_counts():
  counts = long_tail.long_tail_counts(500, 100, 100)
  assert counts[0] == 500 and counts[-1] == 5
  assert counts.sum() == 10_847
  assert np.all(np.diff(counts) <= 0)


@pytest.mark.parametrize(
  "n_max, num_classes, imbalance_factor, total",
  [
    (500, 100, 50, 12_608),
    (500, 100, 10, 19_573),
    (5000, 10, 100, 12_406),
    (5000, 10, 50, 13_996),
    (5000, 10, 10, 20_431),
  ],
)
def test_cifar_lt_totals(n_max, num_classes, imbalance_factor, total):
  assert long_tail.long_tail_counts(n_max, num_classes, imbalance_factor).sum() == total


def test_profile_is_the_truncated_exponential():
  counts = long_tail.long_tail_counts(6000, 10, 100)
  expected = [int(6000 * 100 ** (-c / 9)) for c in range(10)]
  np.testing.assert_array_equal(counts, expected)
  np.testing.assert_array_equal(counts, [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60])
  np.testing.assert_array_equal(long_tail.long_tail_counts(7, 4, 1), [7, 7, 7, 7])


@pytest.mark.parametrize(
  "args, message",
  [
    ((500, 10, 0.5), "imbalance_factor must be >= 1"),
    ((10, 10, 100), "leaves class 9 with no image"),
    ((0, 10, 10), "n_max must be >= 1"),
    ((10, 0, 10), "num_classes must be >= 1"),
  ],
)
def test_profile_rejects_bad_arguments(args, message):
  with pytest.raises(ValueError, match=message):
    long_tail.long_tail_counts(*args)


def _balanced_labels(num_classes=10, per_class=50, seed=0):
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_subset_follows_the_profile_and_the_seed():
  labels = _balanced_labels()
  subset = long_tail.long_tail_subset(labels, 10, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[subset], minlength=10), long_tail.long_tail_counts(50, 10, 10))
  assert np.all(np.diff(subset) > 0)  # sorted, no repeats
  np.testing.assert_array_equal(subset, long_tail.long_tail_subset(labels, 10, seed=3))
  assert not np.array_equal(subset, long_tail.long_tail_subset(labels, 10, seed=4))
  smaller = long_tail.long_tail_subset(labels, 10, seed=3, n_max=20)
  np.testing.assert_array_equal(np.bincount(labels[smaller]), long_tail.long_tail_counts(20, 10, 10))


def test_subset_default_n_max_is_the_smallest_class():
  labels = np.concatenate([_balanced_labels(per_class=30), np.zeros(25, np.int64)])  # class 0 has 55
  subset = long_tail.long_tail_subset(labels, 5, seed=0)
  assert np.bincount(labels[subset])[0] == 30


def test_subset_errors_name_the_problem():
  labels = _balanced_labels(per_class=20)
  with pytest.raises(ValueError, match="class 0 has 20 images but the profile"):
    long_tail.long_tail_subset(labels, 10, seed=0, n_max=30)
  with pytest.raises(ValueError, match="imbalance_factor must be >= 1"):
    long_tail.long_tail_subset(labels, 0.9, seed=0)
  with pytest.raises(ValueError, match="class 1 has no image"):
    long_tail.long_tail_subset(np.array([0, 0, 2, 2]), 1, seed=0)
  with pytest.raises(ValueError, match="integers"):
    long_tail.long_tail_subset(np.array([0.0, 1.0]), 1, seed=0)


# --------------------------------------------------------------------------------------- shot groups


def test_shot_groups_many_medium_few():
  counts = np.array([500, 150, 101, 100, 50, 20, 19, 5])
  groups, scheme = long_tail.shot_groups(counts)
  assert scheme == "shots"
  assert list(groups) == ["many", "medium", "few"]
  np.testing.assert_array_equal(groups["many"], [0, 1, 2])
  np.testing.assert_array_equal(groups["medium"], [3, 4, 5])
  np.testing.assert_array_equal(groups["few"], [6, 7])


def test_shot_groups_fall_back_to_thirds_of_the_ranking():
  # No class under 20 images: 'few' would be empty. Ranking (ties by index): 1, 4, 5, 2, 3, 0.
  groups, scheme = long_tail.shot_groups(np.array([60, 6000, 100, 100, 3596, 278]))
  assert scheme == "thirds"
  assert list(groups) == ["head", "middle", "tail"]
  np.testing.assert_array_equal(groups["head"], [1, 4])
  np.testing.assert_array_equal(groups["middle"], [2, 5])
  np.testing.assert_array_equal(groups["tail"], [0, 3])
  # Seven classes: sizes 3, 2, 2.
  groups, _ = long_tail.shot_groups(np.array([7, 6, 5, 4, 3, 2, 1]))
  assert [len(g) for g in groups.values()] == [3, 2, 2]
  np.testing.assert_array_equal(groups["tail"], [5, 6])


def test_fashion_profile_uses_thirds():
  _, scheme = long_tail.shot_groups(long_tail.long_tail_counts(6000, 10, 100))
  assert scheme == "thirds"


# -------------------------------------------------------------------------------------------- digits


def test_digits_lt_counts_and_balanced_test():
  dataset = digits.load_digits_lt(imbalance_factor=10, seed=0)
  assert dataset.num_classes == 10 and dataset.channels == 1
  # load_digits has 174..183 images per class; 50 go to test, so n_max = 174 - 50 = 124.
  np.testing.assert_array_equal(dataset.class_counts, long_tail.long_tail_counts(124, 10, 10))
  np.testing.assert_array_equal(np.bincount(dataset.test.labels), [50] * 10)
  images = dataset.train.source.images
  assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1) and images.max() == 255
  record = dataset.train.source[0]
  assert record["image"].shape == (8, 8, 1) and record["label"] == dataset.train.labels[0]


def test_digits_lt_test_split_does_not_depend_on_the_seed():
  a = digits.load_digits_lt(seed=0)
  b = digits.load_digits_lt(seed=1)
  np.testing.assert_array_equal(a.test.source.images, b.test.source.images)
  assert not np.array_equal(a.train.source.images, b.train.source.images)
  labels = sklearn_datasets.load_digits().target
  train, test = digits.split_indices(labels, 10, seed=0, test_per_class=50)
  assert np.intersect1d(train, test).size == 0
  np.testing.assert_array_equal(np.bincount(labels[test]), [50] * 10)


# ------------------------------------------------------------------------------------- fashion-MNIST

_HAS_FASHION = os.path.exists(os.path.join(fashion_mnist.DEFAULT_ROOT, "train-images-idx3-ubyte.gz"))


@pytest.mark.skipif(not _HAS_FASHION, reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_lt_counts():
  dataset = fashion_mnist.load_fashion_mnist_lt(imbalance_factor=100, seed=0)
  np.testing.assert_array_equal(dataset.class_counts, [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60])
  np.testing.assert_array_equal(np.bincount(dataset.test.labels), [1000] * 10)
  assert dataset.train.source.images.shape[1:] == (28, 28, 1)
  assert dataset.test.source.images.dtype == np.uint8
  assert dataset.class_names[9] == "Ankle boot"


@pytest.mark.skipif(not _HAS_FASHION, reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_lt_validation_split_is_held_out_training_images():
  plain = fashion_mnist.load_fashion_mnist_lt(imbalance_factor=100, seed=0)
  dataset = fashion_mnist.load_fashion_mnist_lt(imbalance_factor=100, seed=0, val_per_class=500)
  assert plain.val is None
  # The train split does not move: runs without the split and runs with it train on the same images.
  np.testing.assert_array_equal(dataset.train.source.images, plain.train.source.images)
  np.testing.assert_array_equal(dataset.train.labels, plain.train.labels)
  # Class 0 keeps all 6000 of its images for training: none is left for validation.
  np.testing.assert_array_equal(np.bincount(dataset.val.labels, minlength=10), [0] + [500] * 9)
  # Held out: no validation image appears among the training images, compared by their pixels.
  train_rows = {row.tobytes() for row in dataset.train.source.images}
  assert not any(row.tobytes() in train_rows for row in dataset.val.source.images)
  again = fashion_mnist.load_fashion_mnist_lt(imbalance_factor=100, seed=0, val_per_class=500)
  np.testing.assert_array_equal(again.val.source.images, dataset.val.source.images)


def test_held_out_subset_takes_unused_images_only():
  labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  used = np.array([0, 1, 2, 3, 7])  # all of class 0, one of class 1, one of class 2
  held_out = long_tail.held_out_subset(labels, used, per_class=2, seed=3)
  assert np.intersect1d(held_out, used).size == 0
  np.testing.assert_array_equal(np.bincount(labels[held_out], minlength=3), [0, 2, 2])
  assert held_out.dtype == np.int64 and np.all(np.diff(held_out) > 0)
  everything = long_tail.held_out_subset(labels, used, per_class=10, seed=3)
  np.testing.assert_array_equal(everything, [4, 5, 6, 8, 9])
  with pytest.raises(ValueError, match="per_class must be >= 0, got -1"):
    long_tail.held_out_subset(labels, used, per_class=-1, seed=3)


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    fashion_mnist.load_fashion_mnist_lt(root=str(tmp_path))
  message = str(error.value)
  assert str(tmp_path) in message
  assert "sudo apt-get install dataset-fashion-mnist" in message
  assert "--config.data.root=" in message


def _write_idx(path, header: bytes, payload: bytes):
  with gzip.open(path, "wb") as f:
    f.write(header + payload)


def test_read_idx_parses_and_validates_the_header(tmp_path):
  path = str(tmp_path / "ok.gz")
  data = np.arange(24, dtype=np.uint8)
  _write_idx(path, bytes([0, 0, 8, 3]) + np.array([2, 3, 4], ">u4").tobytes(), data.tobytes())
  np.testing.assert_array_equal(fashion_mnist.read_idx(path, 3), data.reshape(2, 3, 4))
  with pytest.raises(ValueError, match="2 dimensions, expected 3"):
    _write_idx(path, bytes([0, 0, 8, 2]) + np.array([6, 4], ">u4").tobytes(), data.tobytes())
    fashion_mnist.read_idx(path, 3)
  with pytest.raises(ValueError, match="type code"):
    _write_idx(path, bytes([0, 0, 0x0D, 1]) + np.array([24], ">u4").tobytes(), data.tobytes())
    fashion_mnist.read_idx(path, 1)
  with pytest.raises(ValueError, match="truncated"):
    _write_idx(path, bytes([0, 0, 8, 1]) + np.array([30], ">u4").tobytes(), data.tobytes())
    fashion_mnist.read_idx(path, 1)
  with pytest.raises(ValueError, match="not an IDX file"):
    _write_idx(path, b"\x1f\x8b\x08\x01", data.tobytes())
    fashion_mnist.read_idx(path, 1)


# ------------------------------------------------------------------------------------------ registry


def _data_config(name, **overrides):
  config = ml_collections.ConfigDict(dict(name=name, imbalance_factor=10, seed=0, root=None))
  config.update(overrides)
  return config


def test_registry_builds_silently_and_the_job_preamble_summarises(capsys):
  # The data layer prints nothing (a multi-process run would print it once per process); the job
  # preamble logs the one-line summary from process 0.
  from dscl_jax.config.schema import base_config
  from dscl_jax.core import build

  config = _data_config("digits_lt", seed=7)
  dataset = registry.get_dataset(config)
  assert dataset.name == "digits_lt" and capsys.readouterr().out == ""
  line = registry.summary(dataset)
  assert "\n" not in line
  assert "digits_lt: 10 classes, train 503 images" in line and "test 500" in line
  assert "many 1, medium 7, few 2" in line
  job = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")
  job.data.seed = 7
  job.data.imbalance_factor = 10
  build.setup_job(job)
  assert capsys.readouterr().out == f"[data] {line}\n"


def test_registry_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="unknown dataset 'cifar7'.*digits_lt, fashion_mnist_lt"):
    registry.get_dataset(_data_config("cifar7"))


def test_registry_refuses_a_validation_split_where_it_cannot_make_one():
  with pytest.raises(ValueError, match="data.val_per_class 20: only fashion_mnist_lt can hold out"):
    registry.get_dataset(_data_config("digits_lt", val_per_class=20))
  with pytest.raises(ValueError, match="data.val_per_class must be >= 0, got -5"):
    registry.get_dataset(_data_config("fashion_mnist_lt", val_per_class=-5))


def test_registry_passes_root_to_fashion(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    registry.get_dataset(_data_config("fashion_mnist_lt", root=str(tmp_path)))
