"""kNN and logistic regression on frozen features (dscl_jax/evaluation/feature_eval.py): the kNN against a
brute-force reference written with loops, class-balanced voting on a hand-worked case, the logistic
regression's convergence, and the features against the trunk applied directly to the eval views."""

import jax
import numpy as np
import pytest

from data.registry import get_dataset
from dscl_jax.config.schema import base_config
from dscl_jax.core import sharding
from dscl_jax.evaluation.feature_eval import extract_features, knn_predict, logistic_regression_predict
from dscl_jax.input import augment
from dscl_jax.models.resnet import ResNet


def brute_force_knn(train, train_labels, test, num_classes, k):
  counts = np.bincount(train_labels, minlength=num_classes)
  predictions = []
  for x in test:
    similarity = [float(np.dot(x, t) / (np.linalg.norm(x) * np.linalg.norm(t))) for t in train]
    nearest = sorted(range(len(train)), key=lambda i: -similarity[i])[:k]
    votes = [0.0] * num_classes
    for i in nearest:
      votes[train_labels[i]] += 1.0 / counts[train_labels[i]]
    predictions.append(int(np.argmax(votes)))
  return np.array(predictions)


def test_knn_matches_brute_force():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), [40, 20, 8, 3])
  centres = rng.normal(size=(4, 6)) * 2
  train = centres[labels] + rng.normal(size=(len(labels), 6))
  test = centres[rng.integers(0, 4, 30)] + rng.normal(size=(30, 6))
  for k in (1, 5, 20):
    np.testing.assert_array_equal(
      knn_predict(train, labels, test, 4, k, chunk=7), brute_force_knn(train, labels, test, 4, k)
    )


def test_knn_votes_are_class_balanced():
  # Nearest 5: three of the head class (30 images), two of the tail class (2 images): 3/30 < 2/2.
  train = np.array([[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [1.0, -0.1], [1.0, -0.2]] + [[-1.0, 0.0]] * 27)
  labels = np.array([0, 0, 0, 1, 1] + [0] * 27)
  assert knn_predict(train, labels, np.array([[1.0, 0.0]]), 2, k=5)[0] == 1


def test_logistic_regression_converges_on_separable_blobs():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(3), [60, 20, 5])
  x = np.eye(3)[labels] * 6 + rng.normal(size=(len(labels), 3))
  predicted, iterations = logistic_regression_predict(x, labels, x)
  assert (predicted == labels).mean() == 1.0 and iterations < 1000
  with pytest.raises(RuntimeError, match="did not converge in eval.logistic_max_iter=1 iterations"):
    logistic_regression_predict(x, labels, x, max_iter=1)


def test_features_are_the_trunk_on_the_eval_views():
  config = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")
  config.augment.mean, config.augment.std = (0.3,), (0.4,)
  dataset = get_dataset(config.data)
  trunk = ResNet(8, "cifar")
  variables = trunk.init(jax.random.PRNGKey(0), np.zeros((2, 16, 16, 1), np.float32), train=False)
  features, labels = extract_features(trunk, variables, dataset.test, config.augment, 64, sharding.make_mesh(1))
  assert features.shape == (len(dataset.test), 64)  # 500 images: the padded last batch is dropped
  first = [dataset.test.source[i] for i in (0, 1, len(dataset.test) - 1)]
  views = np.stack([augment.eval_view(example["image"], config.augment) for example in first])
  direct = np.asarray(trunk.apply(variables, views, train=False)["pooled"])
  np.testing.assert_allclose(features[[0, 1, -1]], direct, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(labels[[0, 1, -1]], [int(example["label"]) for example in first])
