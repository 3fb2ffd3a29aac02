"""Cross-entropy baseline: trunk + linear classifier on instance-uniform batches of the query view.

No target, no queue, no projection head, no key view. Evaluation reports its own classifier and, like
every method, a class-balanced linear probe on the frozen trunk (classifier re-training).
"""

from __future__ import annotations

from dscl_jax import losses
from dscl_jax.methods.base import LossOutput, Requirements
from dscl_jax.methods.base import Method as BaseMethod


class Method(BaseMethod):
  name = "ce"

  def make_requirements(self, config) -> Requirements:
    return Requirements(momentum_target=False, queue=False, views=("query",), projection_head=None, classifier=True)

  def validate(self, config) -> None:
    if config.pbsd.enabled or config.pbsd.multicrop:
      raise ValueError("method 'ce' has no small crops: set pbsd.enabled = pbsd.multicrop = False")

  def loss(self, online, inputs) -> LossOutput:
    ce = losses.cross_entropy_loss(online(inputs.batch["query"])["logits"], inputs.batch["label"])
    return LossOutput(ce, {"ce": ce})
