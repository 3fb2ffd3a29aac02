"""Decoupled supervised contrastive loss (DSCL) over a MoCo-style queue."""

import numbers

import jax
import jax.numpy as jnp

# Added inside the log as the reference does: the row max used for stability
# is the excluded self column, so at low temperature every remaining
# exponential can underflow to zero and the log would be -inf without it.
LOG_EPSILON = 1e-12


def check_positive_scalar(name, value, *, allow_zero=False):
  """Raises early for a bad Python number; traced values pass through."""
  if not isinstance(value, numbers.Real):
    return
  if value < 0 or (value == 0 and not allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name}={value} must be {bound}.")


def check_contrastive_shapes(query, key, queue, labels, queue_labels):
  """Raises a ValueError naming the first inconsistent shape or dtype."""
  if query.ndim != 2:
    raise ValueError(f"query must be [B, D], got shape {query.shape}.")
  if key.shape != query.shape:
    raise ValueError(f"key shape {key.shape} must equal query shape {query.shape}.")
  if queue.ndim != 2 or queue.shape[1] != query.shape[1]:
    raise ValueError(
      f"queue must be [K, D] with D={query.shape[1]}, got {queue.shape}; pass jnp.zeros((0, D)) for an empty queue."
    )
  if labels.shape != query.shape[:1]:
    raise ValueError(f"labels shape {labels.shape} must be [B]=({query.shape[0]},).")
  if queue_labels.shape != queue.shape[:1]:
    raise ValueError(f"queue_labels shape {queue_labels.shape} must be [K]=({queue.shape[0]},).")
  for name, array in (("labels", labels), ("queue_labels", queue_labels)):
    if not jnp.issubdtype(array.dtype, jnp.integer):
      raise ValueError(f"{name} must be integers, got dtype {array.dtype}.")


def contrastive_log_prob(query, key, queue, labels, queue_labels, temperature):
  """Log-probability of every candidate for each query anchor.

  Candidates are F = concat(query, key, queue) `[2B+K, D]` with labels
  concat(labels, labels, queue_labels). For anchor i and candidate j != i:

      log p_i(j) = z_i . F_j / T - log(sum_{a != i} exp(z_i . F_a / T) + eps)

  computed after subtracting each row's max (self column included, held
  constant), exactly as the reference does.

  Args:
    query: `[B, D]` L2-normalised anchors.
    key: `[B, D]` L2-normalised keys; key i is anchor i's other view.
    queue: `[K, D]` L2-normalised queued keys (K may be 0).
    labels: `[B]` integer labels of query and key.
    queue_labels: `[K]` integer labels of the queue.
    temperature: softmax temperature T.

  Returns:
    log_prob: `[B, 2B+K]` float32 (the self column i is finite but unused).
    positive: `[B, 2B+K]` bool, same label as the anchor and not the anchor
      itself; it always holds the anchor's own key at column B+i.
  """
  query, key, queue, labels, queue_labels = (jnp.asarray(x) for x in (query, key, queue, labels, queue_labels))
  check_contrastive_shapes(query, key, queue, labels, queue_labels)
  check_positive_scalar("temperature", temperature)
  query, key, queue = (x.astype(jnp.float32) for x in (query, key, queue))
  batch = query.shape[0]

  candidates = jnp.concatenate([query, key, queue], axis=0)
  candidate_labels = jnp.concatenate([labels, labels, queue_labels], axis=0)
  # HIGHEST keeps the dot products in true float32 on TPU/GPU; at T=0.07 a
  # bf16/TF32 product error of 1e-3 would already move logits by 1.4e-2.
  logits = jnp.matmul(query, candidates.T, precision=jax.lax.Precision.HIGHEST) / temperature
  logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))

  columns = jnp.arange(candidates.shape[0])
  is_self = columns[None, :] == jnp.arange(batch)[:, None]
  exp_logits = jnp.where(is_self, 0.0, jnp.exp(logits))
  log_prob = logits - jnp.log(jnp.sum(exp_logits, axis=1, keepdims=True) + LOG_EPSILON)
  positive = (labels[:, None] == candidate_labels[None, :]) & ~is_self
  return log_prob, positive


def dscl_loss(query, key, queue, labels, queue_labels, *, beta=8.0, temperature=0.07):
  """Decoupled supervised contrastive loss, averaged over the B anchors.

  With log p_i(j) from `contrastive_log_prob` (softmax over all 2B+K-1
  candidates other than the anchor), k_i the anchor's own key and P_i the
  other candidates sharing its label (own key and anchor excluded):

      L_i = -[log p_i(k_i) + beta / |P_i| * sum_{p in P_i} log p_i(p)]
            / (1 + beta)

  and L_i = -log p_i(k_i) when P_i is empty. The loss is mean_i L_i. This is
  the reference's weighting: 1 on k_i and beta / |P_i| on each p in P_i.

  Args:
    query: `[B, D]` L2-normalised online embeddings (the anchors).
    key: `[B, D]` L2-normalised target embeddings of the other view.
    queue: `[K, D]` L2-normalised queued target embeddings; K may be 0.
    labels: `[B]` integer class labels of the batch.
    queue_labels: `[K]` integer class labels of the queue.
    beta: total weight shared by the same-class positives P_i (>= 0).
    temperature: softmax temperature T (> 0).

  Returns:
    Scalar float32 loss.
  """
  check_positive_scalar("beta", beta, allow_zero=True)
  log_prob, positive = contrastive_log_prob(query, key, queue, labels, queue_labels, temperature)
  batch = log_prob.shape[0]
  anchors = jnp.arange(batch)
  own_key_column = batch + anchors

  own_key_log_prob = log_prob[anchors, own_key_column]
  is_own_key = jnp.arange(log_prob.shape[1])[None, :] == own_key_column[:, None]
  others = positive & ~is_own_key
  num_others = jnp.sum(others, axis=1)
  others_log_prob_sum = jnp.sum(jnp.where(others, log_prob, 0.0), axis=1)
  # max(., 1) only guards the empty case, whose weight is zeroed just below.
  others_mean = others_log_prob_sum / jnp.maximum(num_others, 1)
  total_weight = 1.0 + beta * (num_others > 0)
  per_anchor = (own_key_log_prob + beta * others_mean) / total_weight
  return -jnp.mean(per_anchor)
