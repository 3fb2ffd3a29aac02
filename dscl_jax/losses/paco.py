"""Parametric contrastive losses: PaCo and GPaCo over a MoCo-style queue.

Both contrast A anchors against C learnable class centres followed by the
features F = concat(query, key, queue) `[2B+K, D]` with labels
concat(labels, labels, queue_labels). For anchor i, with class logits l_ic
(centre c's linear-layer output for anchor i) and class frequencies pi_c:

    s_ic = (l_ic + log(pi_c + 1e-9)) / T_sup       (no log term without pi)
    a_ij = z_i . F_j / T                            (j in F, j != i)
    D_i  = sum_c exp(s_ic) + gamma * sum_{j != i} exp(a_ij)
    L_i  = -[beta * sum_c w_ic (s_ic - log D_i)
             + alpha * sum_{j in P_i} (a_ij - log D_i)] / (beta + alpha |P_i|)

P_i is every element of F with label y_i except the anchor itself (so it
always holds the anchor's other view). w_ic is one-hot on y_i, or with label
smoothing eps: 1 - eps on y_i and eps / (C - 1) on every other class; either
way sum_c w_ic = 1. The loss is mean_i L_i. As in the reference, every row is
shifted by its max over all C + 2B + K columns (the excluded self column
included, held constant) and 1e-12 is added inside log D_i.

PaCo's anchors are the B queries; GPaCo's are all 2B queries and keys.
"""

import numbers

import jax
import jax.numpy as jnp

from dscl_jax.losses.dscl import LOG_EPSILON, check_contrastive_shapes, check_positive_scalar

# Added to the class frequencies before the log, as the reference does, so
# that a class absent from the training set gets a finite (very low) prior.
PRIOR_EPSILON = 1e-9


def _check_class_inputs(class_logits, class_prior, num_anchors):
  if class_logits.ndim != 2 or class_logits.shape[0] != num_anchors:
    raise ValueError(f"class_logits must be [A, C] with A={num_anchors} anchors, got shape {class_logits.shape}.")
  num_classes = class_logits.shape[1]
  if class_prior is not None and class_prior.shape != (num_classes,):
    raise ValueError(
      f"class_prior shape {class_prior.shape} must be [C]=({num_classes},) to match class_logits {class_logits.shape}."
    )


def _check_weights(alpha, beta, gamma, label_smoothing, num_classes):
  check_positive_scalar("alpha", alpha, allow_zero=True)
  check_positive_scalar("beta", beta, allow_zero=True)
  check_positive_scalar("gamma", gamma, allow_zero=True)
  if isinstance(alpha, numbers.Real) and isinstance(beta, numbers.Real) and alpha == 0 and beta == 0:
    raise ValueError("alpha=0 and beta=0 leave no positive weight.")
  if isinstance(label_smoothing, numbers.Real):
    if not 0 <= label_smoothing <= 1:
      raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1].")
    if label_smoothing > 0 and num_classes < 2:
      raise ValueError(f"label_smoothing={label_smoothing} needs C >= 2 classes, got C={num_classes}.")


def _parametric_contrastive_loss(
  query,
  key,
  queue,
  labels,
  queue_labels,
  class_logits,
  class_prior,
  *,
  both_views,
  alpha,
  beta,
  gamma,
  temperature,
  sup_temperature,
  label_smoothing,
):
  """The module docstring's mean_i L_i; anchors F[:B] or F[:2B]."""
  query, key, queue, labels, queue_labels, class_logits = (
    jnp.asarray(x) for x in (query, key, queue, labels, queue_labels, class_logits)
  )
  if class_prior is not None:
    class_prior = jnp.asarray(class_prior)
  check_contrastive_shapes(query, key, queue, labels, queue_labels)
  batch = query.shape[0]
  num_anchors = 2 * batch if both_views else batch
  _check_class_inputs(class_logits, class_prior, num_anchors)
  num_classes = class_logits.shape[1]
  check_positive_scalar("temperature", temperature)
  check_positive_scalar("sup_temperature", sup_temperature)
  _check_weights(alpha, beta, gamma, label_smoothing, num_classes)

  features = jnp.concatenate([x.astype(jnp.float32) for x in (query, key, queue)], axis=0)
  feature_labels = jnp.concatenate([labels, labels, queue_labels], axis=0)
  anchors, anchor_labels = features[:num_anchors], feature_labels[:num_anchors]

  # HIGHEST keeps the dot products in true float32 on TPU/GPU (see dscl.py).
  contrast_logits = jnp.matmul(anchors, features.T, precision=jax.lax.Precision.HIGHEST) / temperature
  class_scores = class_logits.astype(jnp.float32)
  if class_prior is not None:
    class_scores = class_scores + jnp.log(class_prior.astype(jnp.float32) + PRIOR_EPSILON)
  class_scores = class_scores / sup_temperature

  # One max over the class and feature columns together, as the reference
  # takes it on their concatenation.
  row_max = jax.lax.stop_gradient(
    jnp.maximum(jnp.max(class_scores, axis=1, keepdims=True), jnp.max(contrast_logits, axis=1, keepdims=True))
  )
  class_scores = class_scores - row_max
  contrast_logits = contrast_logits - row_max

  is_self = jnp.arange(features.shape[0])[None, :] == jnp.arange(num_anchors)[:, None]
  contrast_exp = jnp.where(is_self, 0.0, jnp.exp(contrast_logits))
  log_denominator = jnp.log(
    jnp.sum(jnp.exp(class_scores), axis=1, keepdims=True)
    + gamma * jnp.sum(contrast_exp, axis=1, keepdims=True)
    + LOG_EPSILON
  )

  class_weights = jax.nn.one_hot(anchor_labels, num_classes, dtype=jnp.float32)
  # max(., 1) only avoids dividing by 0 at C = 1, where eps must be 0.
  class_weights = (1.0 - label_smoothing) * class_weights + label_smoothing / max(num_classes - 1, 1) * (
    1.0 - class_weights
  )
  class_term = jnp.sum(class_weights * (class_scores - log_denominator), axis=1)

  positive = (anchor_labels[:, None] == feature_labels[None, :]) & ~is_self
  contrast_term = jnp.sum(jnp.where(positive, contrast_logits - log_denominator, 0.0), axis=1)
  # The anchor's other view is always in P_i, so this is >= alpha + beta > 0.
  normaliser = beta + alpha * jnp.sum(positive, axis=1)
  per_anchor = (beta * class_term + alpha * contrast_term) / normaliser
  return -jnp.mean(per_anchor)


def paco_loss(
  query,
  key,
  queue,
  labels,
  queue_labels,
  class_logits,
  class_prior,
  *,
  alpha,
  beta=1.0,
  gamma=1.0,
  temperature,
  sup_temperature=1.0,
):
  """PaCo loss (module docstring), averaged over the B query anchors.

  Gradients flow to every array argument; PaCo's training step, whose keys
  come from the momentum encoder, stops the key gradient itself.

  Args:
    query: `[B, D]` L2-normalised online embeddings (the anchors).
    key: `[B, D]` L2-normalised embeddings of the other view.
    queue: `[K, D]` L2-normalised queued keys; K may be 0.
    labels: `[B]` integer class labels of the batch, in [0, C).
    queue_labels: `[K]` integer class labels of the queue.
    class_logits: `[B, C]` class-centre logits of the queries.
    class_prior: `[C]` training class frequencies pi (summing to 1), or None
      to drop the log pi term.
    alpha: weight of each feature positive in P_i (>= 0).
    beta: weight of the class-centre positive (>= 0; alpha + beta > 0).
    gamma: weight of the feature terms in D_i (>= 0).
    temperature: feature temperature T (> 0).
    sup_temperature: class-logit temperature T_sup (> 0).

  Returns:
    Scalar float32 loss.
  """
  return _parametric_contrastive_loss(
    query,
    key,
    queue,
    labels,
    queue_labels,
    class_logits,
    class_prior,
    both_views=False,
    alpha=alpha,
    beta=beta,
    gamma=gamma,
    temperature=temperature,
    sup_temperature=sup_temperature,
    label_smoothing=0.0,
  )


def gpaco_loss(
  query,
  key,
  queue,
  labels,
  queue_labels,
  class_logits,
  class_prior,
  *,
  alpha,
  beta=1.0,
  gamma=1.0,
  temperature,
  sup_temperature=1.0,
  label_smoothing=0.0,
):
  """GPaCo loss (module docstring), averaged over all 2B query and key anchors.

  Both views are anchors, each with its own class logits; key i's other view
  (in P_i) is query i. Gradients flow to every array argument, keys included.

  Args:
    query: `[B, D]` L2-normalised embeddings of the first view.
    key: `[B, D]` L2-normalised embeddings of the second view.
    queue: `[K, D]` L2-normalised queued keys; K may be 0.
    labels: `[B]` integer class labels of the batch, in [0, C).
    queue_labels: `[K]` integer class labels of the queue.
    class_logits: `[2B, C]` class-centre logits, queries' rows then keys'.
    class_prior: `[C]` training class frequencies pi (summing to 1), or None
      to drop the log pi term.
    alpha: weight of each feature positive in P_i (>= 0).
    beta: total weight of the class-centre targets w_i (>= 0;
      alpha + beta > 0).
    gamma: weight of the feature terms in D_i (>= 0).
    temperature: feature temperature T (> 0).
    sup_temperature: class-logit temperature T_sup (> 0).
    label_smoothing: eps in [0, 1] of the class targets w_i (C >= 2 if > 0).

  Returns:
    Scalar float32 loss.
  """
  return _parametric_contrastive_loss(
    query,
    key,
    queue,
    labels,
    queue_labels,
    class_logits,
    class_prior,
    both_views=True,
    alpha=alpha,
    beta=beta,
    gamma=gamma,
    temperature=temperature,
    sup_temperature=sup_temperature,
    label_smoothing=label_smoothing,
  )
