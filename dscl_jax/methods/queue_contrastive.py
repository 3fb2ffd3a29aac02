"""The MoCo-style supervised contrastive family (DSCL, SupCon), with PBSD or the multi-crop ablation.

Anchors are the B online queries; the contrastive set is concat(query, key, queue) with the momentum
target's keys. With `pbsd.enabled` the n small crops of each image are students of a teacher pooled
from the query's last feature map by `roi_align` (L = L_c + w * L_PBSD); with `pbsd.multicrop` they are
extra queries instead (L = L_c + w * mean over crops of L_c(crop)).
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp

from dscl_jax import losses
from dscl_jax.methods.base import LossOutput, Method, Requirements, l2_normalize
from dscl_jax.ops import roi_align


def batch_major(x):
  """[B, n, ...] -> [B * n, ...]: the n crops of image 0, then of image 1, ... A sharded batch stays
  sharded (each device keeps its images' crops); a crop-major [n * B] stack would be gathered whole on
  every device, which then runs the crops' forward for the global batch."""
  return x.reshape((-1,) + x.shape[2:])


def crops_first(x, num_crops: int):
  """[B * n, D] batch-major -> [n, B, D]."""
  return jnp.swapaxes(x.reshape((-1, num_crops) + x.shape[1:]), 0, 1)


class QueueContrastive(Method):
  """Subclasses give `contrastive_loss(query, key, queue, labels, queue_labels) -> scalar`."""

  def make_requirements(self, config) -> Requirements:
    small_crops = config.pbsd.enabled or config.pbsd.multicrop
    views = ("query", "key", "small_crops") if small_crops else ("query", "key")
    return Requirements(momentum_target=True, queue=True, views=views, projection_head="mlp")

  def validate(self, config) -> None:
    if config.pbsd.enabled and config.pbsd.multicrop:
      raise ValueError("pbsd.enabled and pbsd.multicrop are alternatives (the paper's ablation): set one")

  @abc.abstractmethod
  def contrastive_loss(self, query, key, queue, labels, queue_labels):
    """The contrastive loss over concat(query, key, queue) with the B queries as anchors (scalar)."""

  def loss(self, online, inputs) -> LossOutput:
    config, batch = self.config, inputs.batch
    labels, keys = batch["label"], inputs.keys
    out = online(batch["query"])
    query = l2_normalize(out["embedding"])
    terms = {self.name: self.contrastive_loss(query, keys, inputs.queue, labels, inputs.queue_labels)}
    total = terms[self.name]
    if "small_crops" not in batch:
      return LossOutput(total, terms)

    batch_size, num_crops = labels.shape[0], batch["small_crops"].shape[1]
    # Each crop's [B] batch is normalised on its own, as the reference's one encoder call per crop: in the
    # batch-major stack crop k of every image is every n-th row, hence the interleaved groups.
    out_small = online(
      batch_major(batch["small_crops"]),
      bn_group_size=batch_size if config.pbsd.crop_bn_groups else None,
      interleaved=True,
    )
    student = crops_first(l2_normalize(out_small["embedding"]), num_crops)  # [n, B, D]
    if config.pbsd.enabled:
      feature_map = out["feature_map"]
      pooled = roi_align(
        feature_map.astype(jnp.float32),
        batch_major(batch["boxes"]),
        jnp.repeat(jnp.arange(batch_size), num_crops),
        output_size=(2, 2),
        spatial_scale=feature_map.shape[1] / batch["query"].shape[1],
        sampling_ratio=-1,
      )
      teacher = crops_first(l2_normalize(online.project(pooled.mean(axis=(1, 2)))), num_crops)  # [n, B, D]
      terms["pbsd"] = losses.pbsd_loss(teacher, student, keys, inputs.queue, temperature=config.loss.temperature)
      extra = terms["pbsd"]
    else:
      # One crop at a time, recomputed in the backward pass (as pbsd_loss does): the [B, 2B + K] logits
      # never exist for all n crops at once.
      @jax.checkpoint
      def crop_loss(crop):
        return self.contrastive_loss(crop, keys, inputs.queue, labels, inputs.queue_labels)

      terms["multicrop"] = extra = jax.lax.map(crop_loss, student).mean()
    return LossOutput(total + config.pbsd.weight * extra, terms)
