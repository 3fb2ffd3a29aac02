"""Float64 NumPy references for the losses, written from METHODS.md.

They deliberately follow the reference code's dense formulation (a weight
matrix over all 2B+K columns) rather than the decomposed form the JAX code
uses, so that an agreement checks the algebra as well as the arithmetic.
"""

import math

import numpy as np


def unit_rows(rng, *shape):
  """Random L2-normalised rows, float32 (test inputs shared by the loss tests)."""
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def vectors_at_angles(*radians):
  """Unit vectors in 2-D at the given angles, float32 [len(radians), 2] (hand-computed cases)."""
  return np.array([[math.cos(a), math.sin(a)] for a in radians], np.float32)


def _log_prob_and_mask(query, key, queue, labels, queue_labels, temperature):
  """Returns log_prob [B, N], positive mask [B, N] (float) with N = 2B+K."""
  query, key, queue = (np.asarray(x, np.float64) for x in (query, key, queue))
  batch = query.shape[0]
  features = np.concatenate([query, key, queue], axis=0)
  feature_labels = np.concatenate([labels, labels, queue_labels], axis=0)
  logits = query @ features.T / temperature
  logits = logits - logits.max(axis=1, keepdims=True)
  logits_mask = np.ones_like(logits)
  logits_mask[np.arange(batch), np.arange(batch)] = 0.0
  mask = (np.asarray(labels)[:, None] == feature_labels[None, :]) * logits_mask
  exp_logits = np.exp(logits) * logits_mask
  log_prob = logits - np.log(exp_logits.sum(axis=1, keepdims=True) + 1e-12)
  return log_prob, mask


def dscl_reference(query, key, queue, labels, queue_labels, beta, temperature):
  log_prob, mask = _log_prob_and_mask(query, key, queue, labels, queue_labels, temperature)
  batch = log_prob.shape[0]
  weights = np.repeat(beta / (mask.sum(axis=1, keepdims=True) - 1 + 1e-12), log_prob.shape[1], axis=1)
  weights[np.arange(batch), batch + np.arange(batch)] = 1.0
  per_anchor = (mask * log_prob * weights).sum(axis=1) / (mask * weights).sum(axis=1)
  return -per_anchor.mean()


def supcon_reference(query, key, queue, labels, queue_labels, temperature):
  log_prob, mask = _log_prob_and_mask(query, key, queue, labels, queue_labels, temperature)
  per_anchor = (mask * log_prob).sum(axis=1) / mask.sum(axis=1)
  return -per_anchor.mean()


def _log_softmax(x):
  shifted = x - x.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def pbsd_teacher_probs(teacher, key, queue, temperature):
  """[n, B, 1+K] teacher distributions over [own key, queue]."""
  teacher, key, queue = (np.asarray(x, np.float64) for x in (teacher, key, queue))
  probs = []
  for crop in teacher:
    logits = np.concatenate([(crop * key).sum(axis=1, keepdims=True), crop @ queue.T], axis=1)
    probs.append(np.exp(_log_softmax(logits / temperature)))
  return np.stack(probs)


def pbsd_reference(teacher, student, key, queue, temperature):
  teacher_probs = pbsd_teacher_probs(teacher, key, queue, temperature)
  student, key, queue = (np.asarray(x, np.float64) for x in (student, key, queue))
  per_crop = []
  for probs, crop in zip(teacher_probs, student):
    logits = np.concatenate([(crop * key).sum(axis=1, keepdims=True), crop @ queue.T], axis=1)
    per_crop.append(-(probs * _log_softmax(logits / temperature)).sum(axis=1))
  # Mean over anchors of (1/n) * sum over crops.
  return np.sum(per_crop, axis=0).mean() / len(per_crop)


def cross_entropy_reference(logits, labels):
  log_probs = _log_softmax(np.asarray(logits, np.float64))
  return -log_probs[np.arange(len(labels)), labels].mean()


def _paco_dense(
  query,
  key,
  queue,
  labels,
  queue_labels,
  class_logits,
  class_prior,
  num_anchors,
  alpha,
  beta,
  gamma,
  temperature,
  sup_temperature,
  label_smoothing,
):
  """Mean over the first num_anchors rows of F of the PaCo / GPaCo L_i."""
  query, key, queue = (np.asarray(x, np.float64) for x in (query, key, queue))
  features = np.concatenate([query, key, queue], axis=0)
  feature_labels = np.concatenate([labels, labels, queue_labels], axis=0)
  anchor_labels = feature_labels[:num_anchors]
  num_classes = np.shape(class_logits)[1]
  anchor_dot_contrast = features[:num_anchors] @ features.T / temperature
  sup_logits = np.asarray(class_logits, np.float64)
  if class_prior is not None:
    sup_logits = sup_logits + np.log(np.asarray(class_prior, np.float64) + 1e-9)
  logits = np.concatenate([sup_logits / sup_temperature, anchor_dot_contrast], axis=1)
  logits = logits - logits.max(axis=1, keepdims=True)
  logits_mask = np.ones_like(anchor_dot_contrast)
  logits_mask[np.arange(num_anchors), np.arange(num_anchors)] = 0.0
  mask = (anchor_labels[:, None] == feature_labels[None, :]) * logits_mask
  one_hot = np.eye(num_classes)[anchor_labels]
  if label_smoothing:
    one_hot = label_smoothing / (num_classes - 1) * (1 - one_hot) + (1 - label_smoothing) * one_hot
  mask = np.concatenate([one_hot * beta, mask * alpha], axis=1)
  logits_mask = np.concatenate([np.ones((num_anchors, num_classes)), gamma * logits_mask], axis=1)
  exp_logits = np.exp(logits) * logits_mask
  log_prob = logits - np.log(exp_logits.sum(axis=1, keepdims=True) + 1e-12)
  per_anchor = (mask * log_prob).sum(axis=1) / mask.sum(axis=1)
  return -per_anchor.mean()


def paco_reference(
  query,
  key,
  queue,
  labels,
  queue_labels,
  class_logits,
  class_prior,
  alpha,
  beta,
  gamma,
  temperature,
  sup_temperature=1.0,
):
  """PaCo: the B queries are the anchors; class_logits is [B, C]."""
  return _paco_dense(
    query,
    key,
    queue,
    labels,
    queue_labels,
    class_logits,
    class_prior,
    len(query),
    alpha,
    beta,
    gamma,
    temperature,
    sup_temperature,
    0.0,
  )


def gpaco_reference(
  query,
  key,
  queue,
  labels,
  queue_labels,
  class_logits,
  class_prior,
  alpha,
  beta,
  gamma,
  temperature,
  sup_temperature=1.0,
  label_smoothing=0.0,
):
  """GPaCo: queries and keys are the 2B anchors; class_logits is [2B, C]."""
  return _paco_dense(
    query,
    key,
    queue,
    labels,
    queue_labels,
    class_logits,
    class_prior,
    2 * len(query),
    alpha,
    beta,
    gamma,
    temperature,
    sup_temperature,
    label_smoothing,
  )


def iccl_reference(embedding, centroids, labels_a, labels_b, lam, temperature):
  """ICC loss: mean_b of -lam_b log p_b[y_a,b] - (1 - lam_b) log p_b[y_b,b]."""
  embedding, centroids = (np.asarray(x, np.float64) for x in (embedding, centroids))
  logits = embedding @ centroids.T / temperature
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  rows = np.arange(len(embedding))
  lam = np.broadcast_to(np.asarray(lam, np.float64), rows.shape)
  per_sample = -(lam * log_probs[rows, np.asarray(labels_a)] + (1 - lam) * log_probs[rows, np.asarray(labels_b)])
  return per_sample.mean()
