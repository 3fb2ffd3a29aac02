"""GPaCo: generalized parametric contrastive learning (METHODS.md section 5).

No momentum target: both views go through the online encoder with gradient (two calls, so each view is
normalised by its own BatchNorm statistics, as in the public code), and all 2B embeddings are anchors,
each with its own class-centre logits. The queue holds the detached key embeddings. Projection head
Dense -> ReLU -> Dense -> ReLU -> Dense without BatchNorm; optional label smoothing of the class term.
"""

from __future__ import annotations

import jax.numpy as jnp

from dscl_jax import losses
from dscl_jax.methods import paco
from dscl_jax.methods.base import LossOutput, Requirements, l2_normalize


class Method(paco.Method):
  """PaCo's state (the class prior) and config checks; its own requirements, loss and label smoothing."""

  name = "gpaco"

  def make_requirements(self, config) -> Requirements:
    return Requirements(
      momentum_target=False, queue=True, views=("query", "key"), projection_head="mlp3", classifier=True
    )

  def validate(self, config) -> None:
    paco.check_paco_config(config)

  def loss(self, online, inputs) -> LossOutput:
    paco, batch = self.config.paco, inputs.batch
    out_q, out_k = online(batch["query"]), online(batch["key"])
    query, key = l2_normalize(out_q["embedding"]), l2_normalize(out_k["embedding"])
    class_logits = jnp.concatenate([out_q["logits"], out_k["logits"]], axis=0)
    loss = losses.gpaco_loss(
      query,
      key,
      inputs.queue,
      batch["label"],
      inputs.queue_labels,
      class_logits,
      inputs.method_state["class_prior"],
      alpha=paco.alpha,
      beta=paco.beta,
      gamma=paco.gamma,
      temperature=self.config.loss.temperature,
      sup_temperature=paco.sup_temperature,
      label_smoothing=paco.label_smoothing,
    )
    return LossOutput(loss, {"gpaco": loss}, enqueue=key)
