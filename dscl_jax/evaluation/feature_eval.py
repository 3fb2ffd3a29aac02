"""Probe-free measures of a frozen trunk: k-nearest neighbours and logistic regression on its features.

Both use the pooled features of the evaluation view, computed once for the training split and the
evaluated split:
- kNN: cosine similarity, the k most similar training images vote, each vote weighted by 1 / (training
  images of its class), so that head classes do not win by numbers alone (class-balanced voting);
- logistic regression: multinomial, L-BFGS on standardised features, class-balanced sample weights,
  run until it converges (scikit-learn; a non-converged fit is reported as such, never silently used).
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils

from dscl_jax.core import sharding
from dscl_jax.input import pipeline, pixels


def extract_features(trunk, trunk_variables, split, cfg_augment, batch_size: int, mesh):
  """(features [N, F] float32, labels [N] int32) of every image of `split`, in order, on every host."""
  replicated = sharding.replicated(mesh)
  features_of = lambda variables, images: trunk.apply(variables, pixels.to_float(images, cfg_augment), train=False)[
    "pooled"
  ]
  step = jax.jit(
    features_of, in_shardings=(replicated, sharding.data_sharded(mesh)), out_shardings=sharding.data_sharded(mesh)
  )
  features, labels = [], []
  for batch in pipeline.eval_batches(
    split, cfg_augment, batch_size=batch_size, process_index=jax.process_index(), process_count=jax.process_count()
  ):
    batch = sharding.to_global(batch, mesh)
    pooled = multihost_utils.process_allgather(step(trunk_variables, batch["image"]), tiled=True)
    mask = multihost_utils.process_allgather(batch["mask"], tiled=True).astype(bool)
    label = multihost_utils.process_allgather(batch["label"], tiled=True)
    features.append(np.asarray(pooled, np.float32)[mask])
    labels.append(np.asarray(label, np.int32)[mask])
  return np.concatenate(features), np.concatenate(labels)


def knn_predict(
  train_features, train_labels, test_features, num_classes: int, k: int = 20, chunk: int = 256
) -> np.ndarray:
  """Predicted class [M] of each test feature [M, F] by cosine kNN over train [N, F] with class-balanced
  votes (weight 1 / n_c per neighbour of class c). Ties go to the lower class index."""
  if not 0 < k <= len(train_features):
    raise ValueError(f"k {k} must be in [1, {len(train_features)}] (the training images)")
  normalise = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  train, test = normalise(train_features.astype(np.float32)), normalise(test_features.astype(np.float32))
  counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
  weights = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
  predictions = []
  for start in range(0, len(test), chunk):
    similarity = test[start : start + chunk] @ train.T
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    votes = np.zeros((len(neighbours), num_classes))
    np.add.at(votes, (np.arange(len(neighbours))[:, None], train_labels[neighbours]), weights[train_labels[neighbours]])
    predictions.append(np.argmax(votes, axis=1))
  return np.concatenate(predictions)


def logistic_regression_predict(train_features, train_labels, test_features, max_iter: int = 1000):
  """(predicted class [M], iterations used) of a multinomial logistic regression fitted to convergence.
  Raises if L-BFGS has not converged within `max_iter` iterations."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression  # scikit-learn is a dependency; imported when used

  mean, std = train_features.mean(0), train_features.std(0) + 1e-6
  model = LogisticRegression(max_iter=max_iter, class_weight="balanced", tol=1e-6)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # checked below, and raised as an error
    model.fit((train_features - mean) / std, train_labels)
  iterations = int(np.max(model.n_iter_))
  if iterations >= max_iter:
    raise RuntimeError(f"logistic regression did not converge in eval.logistic_max_iter={max_iter} iterations")
  return model.predict((test_features - mean) / std).astype(np.int32), iterations
