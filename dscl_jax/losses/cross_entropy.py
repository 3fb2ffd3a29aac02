"""Softmax cross-entropy with integer labels (linear probe, classifiers)."""

import jax
import jax.numpy as jnp


def cross_entropy_loss(logits, labels):
  """Mean softmax cross-entropy.

      L = mean_b -log softmax(logits_b)[labels_b]

  Args:
    logits: `[B, C]` unnormalised class scores (any float dtype).
    labels: `[B]` integer class indices in [0, C).

  Returns:
    Scalar float32 loss.
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"logits must be [B, C] and labels [B]; got {logits.shape} and {labels.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  label_log_probs = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)
  return -jnp.mean(label_log_probs)


def mixup_cross_entropy_loss(logits, labels_a, labels_b, lam):
  """Cross-entropy of interpolated images against both source labels, weighted by the interpolation.

      L = mean_b [lam_b CE(logits_b, a_b) + (1 - lam_b) CE(logits_b, b_b)]

  Args:
    logits: `[B, C]` class scores of the images `lam * x_a + (1 - lam) * x_b`.
    labels_a, labels_b: `[B]` integer labels of the two source images.
    lam: `[B]` interpolation weights in [0, 1].

  Returns:
    Scalar float32 loss.
  """
  log_probs = jax.nn.log_softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)
  of = lambda labels: -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return jnp.mean(lam * of(labels_a) + (1.0 - lam) * of(labels_b))
