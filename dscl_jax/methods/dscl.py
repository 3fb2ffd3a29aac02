"""DSCL: the decoupled supervised contrastive loss (METHODS.md section 2), optionally with PBSD
(`pbsd.enabled`) or the multi-crop ablation (`pbsd.multicrop`)."""

from __future__ import annotations

from dscl_jax import losses
from dscl_jax.methods.queue_contrastive import QueueContrastive


class Method(QueueContrastive):
  name = "dscl"

  def contrastive_loss(self, query, key, queue, labels, queue_labels):
    return losses.dscl_loss(
      query, key, queue, labels, queue_labels, beta=self.config.loss.beta, temperature=self.config.loss.temperature
    )
