"""The pure, jittable steps. One pretrain step serves every method; methods differ in their loss.

`make_pretrain_step(...)` returns `train_step(state, batch) -> (state, metrics)`:
1. the momentum target takes its EMA step towards the current online params (as the reference does
   before computing the keys);
2. the target embeds the key view of a randomly permuted batch with BatchNorm over fixed-size groups
   (`model.key_bn_group_size`), then the keys are un-permuted: the device-count-independent stand-in
   for MoCo's shuffle-BN, so no query shares BatchNorm statistics with its own key's group by design;
3. the online encoder embeds the query view (global-batch BatchNorm) and, with PBSD or multi-crop, all
   small crops in one batched call `[n * B, h, w, C]`;
4. the loss: DSCL or SupCon over concat(query, key, queue), or cross-entropy; plus w * PBSD (teacher from
   `roi_align` on the query's last feature map) or w * multi-crop DSCL;
5. SGD update; the whole global batch of keys and labels is written into the queue at the pointer.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dscl_jax import losses
from dscl_jax.ops import roi_align
from dscl_jax.state import PretrainState, ProbeState

METHODS = ("dscl", "supcon", "ce")


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||, eps), as torch.nn.functional.normalize."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def enqueue(queue, queue_labels, queue_ptr, keys, labels):
  """Write `keys` [B, D] and `labels` [B] into the ring buffer at `queue_ptr`; advance it by B mod K.

  K must be a multiple of B (checked when the config is validated), so a write never straddles the end.
  A missing queue (None, K = 0) stays missing.
  """
  if queue is None or queue.shape[0] == 0:
    return queue, queue_labels, queue_ptr
  queue_size = queue.shape[0]
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (queue_ptr, 0))
  queue_labels = jax.lax.dynamic_update_slice(queue_labels, labels.astype(queue_labels.dtype), (queue_ptr,))
  return queue, queue_labels, (queue_ptr + keys.shape[0]) % queue_size


def _crop_major(x):
  """[B, n, ...] -> [n * B, ...] with all first crops, then all second crops, ..."""
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def make_pretrain_step(config: ml_collections.ConfigDict, online_model, target_model,
                       tx: optax.GradientTransformation, lr_schedule: Callable) -> Callable:
  """Build `train_step(state, batch) -> (state, metrics)` for `config.method`.

  batch: "query", "key" [B, H, W, C] float32, "label" [B] int32, and with PBSD / multi-crop
  "small_crops" [B, n, h, w, C] and "boxes" [B, n, 4] (x1, y1, x2, y2 in query-view pixels).
  """
  method = config.method
  if method not in METHODS:
    raise ValueError(f"method {method!r} must be one of {METHODS}")
  contrastive = method != "ce"
  use_pbsd = contrastive and config.pbsd.enabled
  use_multicrop = contrastive and config.pbsd.multicrop
  if use_pbsd and use_multicrop:
    raise ValueError("pbsd.enabled and pbsd.multicrop are alternatives (the paper's ablation): set one")
  momentum = config.moco.momentum
  temperature = config.loss.temperature
  weight = config.pbsd.weight

  def queue_arrays(state, embed_dim):
    """The queue and its labels; [0, D] and [0] when the state holds none (K = 0)."""
    if state.queue is None:
      return jnp.zeros((0, embed_dim), jnp.float32), jnp.zeros((0,), jnp.int32)
    return state.queue, state.queue_labels

  def contrastive_loss(query, key, state, labels):
    queue, queue_labels = queue_arrays(state, key.shape[-1])
    if method == "dscl":
      return losses.dscl_loss(query, key, queue, labels, queue_labels, beta=config.loss.beta,
                              temperature=temperature)
    return losses.supcon_loss(query, key, queue, labels, queue_labels, temperature=temperature)

  def train_step(state: PretrainState, batch: dict[str, jax.Array]):
    labels = batch["label"]
    batch_size = labels.shape[0]
    step_rng = jax.random.fold_in(state.rng, state.step)
    target_params, target_batch_stats, keys = state.target_params, state.target_batch_stats, None
    if contrastive:
      target_params = optax.incremental_update(state.params, state.target_params, 1.0 - momentum)
      perm = jax.random.permutation(step_rng, batch_size)
      out_k, mutated = target_model.apply({"params": target_params, "batch_stats": target_batch_stats},
                                          batch["key"][perm], train=True, mutable=["batch_stats"])
      target_batch_stats = mutated["batch_stats"]
      keys = jnp.zeros_like(out_k["embedding"]).at[perm].set(l2_normalize(out_k["embedding"]))
      keys = jax.lax.stop_gradient(keys)

    def loss_fn(params):
      variables = {"params": params, "batch_stats": state.batch_stats}
      out, mutated = online_model.apply(variables, batch["query"], train=True, mutable=["batch_stats"])
      batch_stats = mutated["batch_stats"]
      terms = {}
      if not contrastive:
        terms["ce"] = losses.cross_entropy_loss(out["logits"], labels)
        return terms["ce"], (batch_stats, terms)
      query = l2_normalize(out["embedding"])
      terms[method] = contrastive_loss(query, keys, state, labels)
      total = terms[method]
      if use_pbsd or use_multicrop:
        num_crops = batch["small_crops"].shape[1]
        out_s, mutated = online_model.apply({"params": params, "batch_stats": batch_stats},
                                            _crop_major(batch["small_crops"]), train=True,
                                            mutable=["batch_stats"])
        batch_stats = mutated["batch_stats"]
        student = l2_normalize(out_s["embedding"]).reshape(num_crops, batch_size, -1)
        if use_pbsd:
          feature_map = out["feature_map"]
          boxes = _crop_major(batch["boxes"])
          box_indices = jnp.tile(jnp.arange(batch_size), num_crops)
          pooled = roi_align(feature_map.astype(jnp.float32), boxes, box_indices, output_size=(2, 2),
                             spatial_scale=feature_map.shape[1] / batch["query"].shape[1], sampling_ratio=-1)
          teacher = online_model.apply({"params": params}, pooled.mean(axis=(1, 2)), method="project")
          teacher = l2_normalize(teacher).reshape(num_crops, batch_size, -1)
          queue, _ = queue_arrays(state, keys.shape[-1])
          terms["pbsd"] = losses.pbsd_loss(teacher, student, keys, queue, temperature=temperature)
        else:
          per_crop = jax.vmap(lambda s: contrastive_loss(s, keys, state, labels))(student)
          terms["multicrop"] = per_crop.mean()
        total = total + weight * terms["pbsd" if use_pbsd else "multicrop"]
      return total, (batch_stats, terms)

    (loss, (batch_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    queue, queue_labels, queue_ptr = state.queue, state.queue_labels, state.queue_ptr
    if contrastive:
      queue, queue_labels, queue_ptr = enqueue(queue, queue_labels, queue_ptr, keys, labels)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              target_params=target_params, target_batch_stats=target_batch_stats,
                              opt_state=opt_state, queue=queue, queue_labels=queue_labels, queue_ptr=queue_ptr)
    metrics = {"loss": loss, "lr": lr_schedule(state.step), **terms}
    return new_state, metrics

  return train_step


def make_probe_step(trunk_model, tx: optax.GradientTransformation, lr_schedule: Callable) -> Callable:
  """`probe_step(state, trunk_variables, batch) -> (state, metrics)`: a linear classifier on frozen features.

  The trunk runs in inference mode (running BatchNorm statistics) and gets no gradient.
  batch: "image" [B, H, W, C], "label" [B].
  """

  def probe_step(state: ProbeState, trunk_variables, batch):
    features = trunk_model.apply(trunk_variables, batch["image"], train=False)["pooled"]
    features = jax.lax.stop_gradient(features)

    def loss_fn(params):
      logits = features @ params["kernel"] + params["bias"]
      return losses.cross_entropy_loss(logits, batch["label"]), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    metrics = {"loss": loss, "accuracy": accuracy, "lr": lr_schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return probe_step
