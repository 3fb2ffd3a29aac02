"""SupCon over the MoCo-style queue: every positive weighted equally (the baseline DSCL decouples)."""

from __future__ import annotations

from dscl_jax import losses
from dscl_jax.methods.queue_contrastive import QueueContrastive


class Method(QueueContrastive):
  name = "supcon"

  def contrastive_loss(self, query, key, queue, labels, queue_labels):
    return losses.supcon_loss(query, key, queue, labels, queue_labels, temperature=self.config.loss.temperature)
