"""Interpolative centroid contrastive (ICC) loss of ICCL.

An image x = lam x_a + (1 - lam) x_b interpolates a class-agnostic sample
(x_a, y_a) with a class-aware one (x_b, y_b); its embedding z must retrieve
the centroids of both source classes, in proportion to lam. With C class
centroids c_c and temperature T, for sample b:

    logits_bc = z_b . c_c / T
    L_b = -lam_b log softmax(logits_b)[y_a,b]
          - (1 - lam_b) log softmax(logits_b)[y_b,b]

and the loss is mean_b L_b (METHODS.md section 6; the exact form is this
implementation's choice, the ICCL paper's code being unavailable).
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from dscl_jax.losses.dscl import check_positive_scalar


def _check_lam(lam, batch):
  """Raises unless lam is a scalar or [B]; host values must be in [0, 1]."""
  if isinstance(lam, numbers.Real):
    if not 0 <= lam <= 1:
      raise ValueError(f"lam={lam} must be in [0, 1].")
    return
  shape = np.shape(lam)
  if shape not in ((), (batch,)):
    raise ValueError(f"lam must be a scalar or [B]=({batch},), got shape {shape}.")
  # Values on the host (lists, NumPy) are checked; jax arrays, traced or
  # not, are only shape-checked to avoid a device sync.
  if not isinstance(lam, jax.Array):
    lam = np.asarray(lam, np.float64)
    outside = (lam < 0) | (lam > 1) | np.isnan(lam)
    if np.any(outside):
      raise ValueError(
        f"lam must be in [0, 1], got {lam[outside].ravel()[0]} (first of {int(np.sum(outside))} out of range)."
      )


def _check_shapes(embedding, centroids, labels_a, labels_b):
  if embedding.ndim != 2:
    raise ValueError(f"embedding must be [B, D], got shape {embedding.shape}.")
  dim = embedding.shape[1]
  if centroids.ndim != 2 or centroids.shape[1] != dim:
    raise ValueError(f"centroids must be [C, D] with D={dim}, got shape {centroids.shape}.")
  if centroids.shape[0] == 0:
    raise ValueError("centroids must hold at least one class, got C=0.")
  for name, labels in (("labels_a", labels_a), ("labels_b", labels_b)):
    if labels.shape != embedding.shape[:1]:
      raise ValueError(f"{name} shape {labels.shape} must be [B]=({embedding.shape[0]},).")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f"{name} must be integers, got dtype {labels.dtype}.")


def iccl_loss(embedding, centroids, labels_a, labels_b, lam, *, temperature):
  """Interpolative centroid contrastive loss (module docstring), mean over B.

  Neither input is renormalised here: pass L2-normalised rows. Gradients flow
  to `embedding` and `centroids`; a caller whose centroids are fixed targets
  (e.g. an EMA of momentum embeddings) stops their gradient itself.

  Args:
    embedding: `[B, D]` L2-normalised embeddings z of the interpolated images.
    centroids: `[C, D]` L2-normalised class centroids c.
    labels_a: `[B]` integer classes y_a in [0, C) of the class-agnostic
      samples (weight lam).
    labels_b: `[B]` integer classes y_b in [0, C) of the class-aware samples
      (weight 1 - lam).
    lam: mixing coefficient(s) in [0, 1], a scalar shared by the batch or a
      `[B]` vector, one per sample.
    temperature: softmax temperature T (> 0).

  Returns:
    Scalar float32 loss.
  """
  embedding, centroids, labels_a, labels_b = (jnp.asarray(x) for x in (embedding, centroids, labels_a, labels_b))
  _check_shapes(embedding, centroids, labels_a, labels_b)
  _check_lam(lam, embedding.shape[0])
  check_positive_scalar("temperature", temperature)

  # HIGHEST keeps the dot products in true float32 on TPU/GPU (see dscl.py).
  logits = (
    jnp.matmul(embedding.astype(jnp.float32), centroids.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST)
    / temperature
  )
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  log_prob_a = jnp.take_along_axis(log_probs, labels_a[:, None], axis=-1)[:, 0]
  log_prob_b = jnp.take_along_axis(log_probs, labels_b[:, None], axis=-1)[:, 0]
  lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), log_prob_a.shape)
  return -jnp.mean(lam * log_prob_a + (1.0 - lam) * log_prob_b)
