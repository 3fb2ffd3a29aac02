"""Re-estimation of the frozen trunk's BatchNorm running statistics on the probe's training images.

Pretraining leaves running statistics that also averaged every extra forward of the online encoder
(PBSD's small crops, ICCL's mixed images), which a frozen trunk then applies to full-size images. With
`probe.reestimate_bn_batches` = N > 0 the probe first runs the trunk in training mode on N batches of
its own (class-balanced) training stream and replaces every running mean / variance by the average over
those batches of the batch mean / unbiased variance, as PyTorch's cumulative average (momentum None)
would. The probe's state keeps the result, so eval uses the same statistics.
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from dscl_jax.core import sharding
from dscl_jax.input import device_augment
from dscl_jax.models.resnet import BatchNorm


def batch_statistics_step(trunk, mesh, cfg_augment):
  """`(trunk_variables, batch) -> batch_stats` whose leaves are this batch's mean and unbiased variance of
  every BatchNorm input (the whole global batch: synchronised over devices). `batch`: a probe batch's
  "image" [B, H, W, C] uint8, with its "image_augment" [B, 11] under `augment.on_device` (the flip the probe
  step applies too)."""
  momentum = BatchNorm.momentum

  def step(variables, batch):
    images = device_augment.finish_views(batch, cfg_augment, None)["image"]
    # From zero running statistics one training-mode update leaves (1 - momentum) x the batch statistic.
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    _, mutated = trunk.apply(
      {"params": variables["params"], "batch_stats": zeros},
      images,
      train=True,
      mutable=["batch_stats"],
    )
    return jax.tree.map(lambda x: x / (1.0 - momentum), mutated["batch_stats"])

  replicated = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(replicated, sharding.data_sharded(mesh)), out_shardings=replicated)


def reestimate_batch_stats(
  trunk, trunk_variables, batches: Iterator[dict[str, np.ndarray]], num_batches: int, mesh, cfg_augment
):
  """The trunk's batch_stats averaged over `num_batches` probe batches of `batches` (their "image" [B, H, W,
  C], and "image_augment" where the probe augments on the device)."""
  if num_batches < 1:
    raise ValueError(f"num_batches {num_batches} must be >= 1")
  step = batch_statistics_step(trunk, mesh, cfg_augment)
  total = None
  for _ in range(num_batches):
    batch = next(batches)
    images = sharding.to_global({k: v for k, v in batch.items() if k.startswith("image")}, mesh)
    stats = jax.tree.map(lambda x: np.asarray(x, np.float64), step(trunk_variables, images))
    total = stats if total is None else jax.tree.map(np.add, total, stats)
  return jax.tree.map(lambda x: jnp.asarray(x / num_batches, jnp.float32), total)
