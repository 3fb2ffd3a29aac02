"""The pure, jittable steps. One pretrain step serves every method (`dscl_jax/methods/`).

`make_pretrain_step(...)` returns `train_step(state, batch) -> (state, metrics)`; it does what every
method shares and leaves the loss to the method:
1. with a momentum target, the target takes its EMA step towards the current online params (as the
   reference does before computing the keys) and embeds the key view of a randomly permuted batch with
   BatchNorm over fixed-size groups (`model.key_bn_group_size`); the keys are then un-permuted. This is
   the device-count-independent stand-in for MoCo's shuffle-BN: no query shares BatchNorm statistics
   with its own key's group by design;
2. the method's loss from the online encoder's forward outputs (`Method.loss`), differentiated;
3. the SGD update; with a queue, the method's embeddings for it (by default the target's keys) and the
   labels of the whole global batch are written at the pointer;
4. the numerical guard: if the loss, a gradient or any value of the new state is not finite, the whole
   update is dropped (the state keeps its old values, only the step and the skip counters advance).
   It is a `lax.cond` inside the jitted step, so it costs no host synchronisation (an element-wise
   select over the whole state compiled 7x slower on CPU); the loop reads the counters one step late and
   stops after `train.max_skipped_steps` skips in a row.
The step never branches on the method's name, only on what the method declares it needs.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dscl_jax import losses
from dscl_jax.core.state import PretrainState, ProbeState
from dscl_jax.input import device_augment
from dscl_jax.methods import Method, OnlineForward, StepInputs
from dscl_jax.methods.base import l2_normalize

# Domain tag separating the method's random stream from the key permutation's.
_METHOD_STREAM = 1


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


def momentum_keys(target_model, target_params, target_batch_stats, key_images, rng, batch_sharding=None):
  """The target's L2-normalised embeddings [B, D] of `key_images` [B, H, W, C] (stop-gradient), computed
  on a permuted batch so that grouped BatchNorm mixes samples, and its new BatchNorm statistics.
  `batch_sharding` (the batch's sharding over the mesh) keeps the permuted batch split over the devices."""
  perm = jax.random.permutation(rng, key_images.shape[0])
  permuted = key_images[perm]
  if batch_sharding is not None:
    # A gather by a global permutation is free to come out replicated, and XLA then runs the target's
    # forward on the whole global batch on every device (measured without PBSD: x2.7 the FLOPs and
    # +1.6 GiB per device for the ResNet-50 recipe on 8 devices). Resharding the images costs one all-to-all.
    permuted = jax.lax.with_sharding_constraint(permuted, batch_sharding)
  out, mutated = target_model.apply(
    {"params": target_params, "batch_stats": target_batch_stats}, permuted, train=True, mutable=["batch_stats"]
  )
  keys = jnp.zeros_like(out["embedding"]).at[perm].set(l2_normalize(out["embedding"]))
  return jax.lax.stop_gradient(keys), mutated["batch_stats"]


def all_finite(*trees) -> jax.Array:
  """True when every floating-point value in `trees` is finite (a scalar bool)."""
  leaves = [x for tree in trees for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def guarded(old_state, new_state, finite: jax.Array):
  """`new_state` if `finite`, else `old_state`; in both cases the step advances and the skip counters
  (`skipped_in_a_row`, `skipped_total`) are updated. Returns (state, {"skipped": 0. or 1.})."""
  kept = jax.lax.cond(finite, lambda: new_state, lambda: old_state)
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  state = kept.replace(
    step=old_state.step + 1,
    skipped_total=old_state.skipped_total + skipped,
    skipped_in_a_row=jnp.where(finite, 0, old_state.skipped_in_a_row + 1),
  )
  return state, {"skipped": skipped.astype(jnp.float32), "skipped_in_a_row": state.skipped_in_a_row}


def make_pretrain_step(
  config: ml_collections.ConfigDict,
  method: Method,
  online_model,
  target_model,
  tx: optax.GradientTransformation,
  lr_schedule: Callable,
  batch_sharding=None,
) -> Callable:
  """Build `train_step(state, batch) -> (state, metrics)` for `method` (the one `config.method` names).

  batch: "label" [B] int32 and the views the method requires: "query", "key" [B, H, W, C] (uint8 pixels,
  normalised here with `config.augment`'s mean / std, or floats already normalised),
  "small_crops" [B, n, h, w, C] with "boxes" [B, n, 4] (x1, y1, x2, y2 in query-view pixels),
  "class_aware" [B, H, W, C] with "class_aware_label" [B]. With `augment.on_device` each image view comes
  with its parameters "<view>_augment" [B, 11] and "small_crops_augment" [B, n, 11] replaces "small_crops":
  the step augments them first (`dscl_jax.input.device_augment`).
  `target_model` is None for methods without a momentum target. `batch_sharding`: the batch's sharding
  (`sharding.data_sharded(mesh)`), which keeps the target's permuted forward split over the devices.
  """
  needs = method.requirements
  method.validate(config)
  if needs.momentum_target and target_model is None:
    raise ValueError(f"method {method.name!r} needs a momentum target model")
  momentum = config.moco.momentum
  embed_dim = config.model.embed_dim

  def train_step(state: PretrainState, batch: dict[str, jax.Array]):
    batch = device_augment.finish_views(batch, config.augment, config.pbsd)
    labels = batch["label"]
    step_rng = jax.random.fold_in(state.rng, state.step)
    target_params, target_batch_stats, keys = state.target_params, state.target_batch_stats, None
    if needs.momentum_target:
      target_params = optax.incremental_update(state.params, state.target_params, 1.0 - momentum)
      keys, target_batch_stats = momentum_keys(
        target_model, target_params, target_batch_stats, batch["key"], step_rng, batch_sharding
      )
    if state.queue is None:  # [0, D]: the losses see "no queue" without a special case
      queue, queue_labels = jnp.zeros((0, embed_dim), jnp.float32), jnp.zeros((0,), jnp.int32)
    else:
      queue, queue_labels = state.queue, state.queue_labels
    inputs = StepInputs(
      batch=batch,
      keys=keys,
      queue=queue,
      queue_labels=queue_labels,
      method_state=state.method_state,
      rng=jax.random.fold_in(step_rng, _METHOD_STREAM),
      step=state.step,
    )

    def loss_fn(params):
      online = OnlineForward(online_model, params, state.batch_stats)
      result = method.loss(online, inputs)
      return result.loss, (online.batch_stats, result)

    (loss, (batch_stats, result)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    queue, queue_labels, queue_ptr = state.queue, state.queue_labels, state.queue_ptr
    if needs.queue:
      written = keys if result.enqueue is None else jax.lax.stop_gradient(result.enqueue)
      queue, queue_labels, queue_ptr = enqueue(queue, queue_labels, queue_ptr, written, labels)
    method_state = state.method_state if result.method_state is None else result.method_state
    new_state = state.replace(
      params=params,
      batch_stats=batch_stats,
      target_params=target_params,
      target_batch_stats=target_batch_stats,
      opt_state=opt_state,
      queue=queue,
      queue_labels=queue_labels,
      queue_ptr=queue_ptr,
      method_state=method_state,
    )
    new_state, guard = guarded(state, new_state, all_finite(loss, grads, new_state))
    metrics = {"loss": loss, "lr": lr_schedule(state.step), **result.terms, **guard}
    return new_state, metrics

  return train_step


def make_probe_step(trunk_model, cfg_augment, tx: optax.GradientTransformation, lr_schedule: Callable) -> Callable:
  """`probe_step(state, trunk_variables, batch, feature_stats) -> (state, metrics)`: a linear classifier on
  frozen features, standardised with `feature_stats` = (mean [F], std [F]) unless it is None.

  The trunk runs in inference mode (running BatchNorm statistics) and gets no gradient.
  batch: "image" [B, H, W, C] (uint8 pixels, normalised with `cfg_augment`'s mean / std), "label" [B], and
  with `augment.on_device` "image_augment" [B, 11] (its flip).
  """

  def probe_step(state: ProbeState, trunk_variables, batch, feature_stats=None):
    images = device_augment.finish_views(batch, cfg_augment, None)["image"]
    features = jax.lax.stop_gradient(trunk_model.apply(trunk_variables, images, train=False)["pooled"])
    if feature_stats is not None:  # probe.standardize_features (dscl_jax/core/build.py)
      features = (features - feature_stats[0]) / feature_stats[1]

    def loss_fn(params):
      logits = features @ params["kernel"] + params["bias"]
      return losses.cross_entropy_loss(logits, batch["label"]), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state, guard = guarded(
      state, state.replace(params=params, opt_state=opt_state), all_finite(loss, grads, params, opt_state)
    )
    metrics = {"loss": loss, "accuracy": accuracy, "lr": lr_schedule(state.step), **guard}
    return new_state, metrics

  return probe_step
