"""Supervised contrastive loss (SupCon) over a MoCo queue: the baseline."""

import jax.numpy as jnp

from dscl_jax.losses.dscl import contrastive_log_prob


def supcon_loss(query, key, queue, labels, queue_labels, *, temperature=0.07):
  """SupCon with every positive weighted equally, averaged over B anchors.

  Same candidates and log p_i(j) as `dscl_loss`; with k_i the anchor's own key
  and P_i the other same-label candidates:

      L_i = -1 / (|P_i| + 1) * sum_{p in P_i + {k_i}} log p_i(p)

  and the loss is mean_i L_i. The own key is always a positive, so the
  normaliser is at least 1.

  Args:
    query: `[B, D]` L2-normalised online embeddings (the anchors).
    key: `[B, D]` L2-normalised target embeddings of the other view.
    queue: `[K, D]` L2-normalised queued target embeddings; K may be 0.
    labels: `[B]` integer class labels of the batch.
    queue_labels: `[K]` integer class labels of the queue.
    temperature: softmax temperature T (> 0).

  Returns:
    Scalar float32 loss.
  """
  log_prob, positive = contrastive_log_prob(query, key, queue, labels, queue_labels, temperature)
  positive_log_prob_sum = jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1)
  per_anchor = positive_log_prob_sum / jnp.sum(positive, axis=1)
  return -jnp.mean(per_anchor)
