"""The eval job's confusion matrix: class bins by training-count rank, and the on-device accumulation
against a NumPy recomputation from the same features; plus the figures it draws."""

import jax
import numpy as np
from PIL import Image

from dscl_jax.evaluation import figures
from dscl_jax.evaluation.accuracy import confusion_bins, make_count_step
from dscl_jax.input import augment
from dscl_jax.models.resnet import ResNet


def test_bins_are_the_count_ranking():
  counts = np.array([5, 50, 20, 50, 1])
  np.testing.assert_array_equal(confusion_bins(counts), [3, 0, 2, 1, 4])  # ties: lower index first
  many = np.random.default_rng(0).integers(1, 1000, size=250)
  bins = confusion_bins(many, max_bins=100)
  order = np.lexsort((np.arange(250), -many))
  assert bins[order[0]] == 0 and bins[order[-1]] == 99
  assert np.all(np.diff(bins[order]) >= 0)  # contiguous in the ranking
  sizes = np.bincount(bins)
  assert len(sizes) == 100 and sizes.max() - sizes.min() <= 1


def test_confusion_matches_numpy():
  trunk = ResNet(8, "cifar")
  rng = np.random.default_rng(0)
  images = rng.normal(size=(12, 8, 8, 1)).astype(np.float32)
  variables = trunk.init(jax.random.PRNGKey(0), images, train=False)
  classifier = {"kernel": rng.normal(size=(64, 5)).astype(np.float32), "bias": rng.normal(size=5).astype(np.float32)}
  labels = rng.integers(0, 5, size=12).astype(np.int32)
  mask = np.ones(12, bool)
  mask[-3:] = False  # padding rows of the last batch
  bins = np.array([0, 0, 1, 1, 2], np.int32)  # 5 classes in 3 bins
  correct, seen, confusion = jax.jit(make_count_step(trunk, augment.default_augment_config(8, 1), 5, bins))(
    variables, classifier, {"image": images, "label": labels, "mask": mask}
  )

  features = np.asarray(trunk.apply(variables, images, train=False)["pooled"], np.float64)
  predictions = np.argmax(features @ classifier["kernel"] + classifier["bias"], axis=1)
  expected = np.zeros((3, 3))
  np.add.at(expected, (bins[labels[mask]], bins[predictions[mask]]), 1)
  np.testing.assert_array_equal(np.asarray(confusion), expected)
  np.testing.assert_array_equal(np.asarray(seen), np.bincount(labels[mask], minlength=5))
  np.testing.assert_array_equal(
    np.asarray(correct), np.bincount(labels[mask], weights=predictions[mask] == labels[mask], minlength=5)
  )


def test_figures_are_pngs(tmp_path):
  figures.per_class_accuracy_plot(tmp_path / "a.png", [90.0, 50.0, 10.0], [600, 60, 6], title="t")
  figures.confusion_matrix_plot(tmp_path / "b.png", np.array([[3, 1], [0, 0]]), title="t", bin_labels=["x", "y"])
  for name in ("a.png", "b.png"):
    image = np.asarray(Image.open(tmp_path / name).convert("L"))
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 1  # drawn, not blank
