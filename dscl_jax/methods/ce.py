"""Cross-entropy baseline: trunk + linear classifier on instance-uniform batches of the query view.

No target, no queue, no projection head, no key view. Evaluation reports its own classifier and, like
every method, a class-balanced linear probe on the frozen trunk (classifier re-training).

`ce.class_aware_mixup` is a control for ICCL (dscl_jax/methods/iccl.py): the same class-aware second
sample (`iccl.class_aware_power`) and interpolation (`iccl.beta_a`), and ICCL's two cross-entropy terms
with its weights, without the momentum target, the projection head and the centroids:

    L = w_ce * CE(logits(x_a), y_a) + w_mix * mean_b [lam_b CE(logits(x)_b, y_a,b) + (1 - lam_b) CE(logits(x)_b, y_b,b)]
"""

from __future__ import annotations

from dscl_jax import losses
from dscl_jax.methods import iccl
from dscl_jax.methods.base import LossOutput, Requirements
from dscl_jax.methods.base import Method as BaseMethod


class Method(BaseMethod):
  name = "ce"

  def make_requirements(self, config) -> Requirements:
    if config.ce.class_aware_mixup:
      return Requirements(
        momentum_target=False,
        queue=False,
        views=("query", "class_aware"),
        sampler="instance_and_class_aware",
        class_aware_power=config.iccl.class_aware_power,
        projection_head=None,
        classifier=True,
      )
    return Requirements(momentum_target=False, queue=False, views=("query",), projection_head=None, classifier=True)

  def validate(self, config) -> None:
    if config.pbsd.enabled or config.pbsd.multicrop:
      raise ValueError("method 'ce' has no small crops: set pbsd.enabled = pbsd.multicrop = False")
    if config.ce.class_aware_mixup:
      iccl.check_class_aware_power(config.iccl.class_aware_power)
      if config.iccl.beta_a <= 0:
        raise ValueError(f"iccl.beta_a {config.iccl.beta_a} must be > 0 (lambda ~ Beta(a, a))")

  def loss(self, online, inputs) -> LossOutput:
    batch = inputs.batch
    ce = losses.cross_entropy_loss(online(batch["query"])["logits"], batch["label"])
    if not self.config.ce.class_aware_mixup:
      return LossOutput(ce, {"ce": ce})
    weights = self.config.iccl
    lam, mixed = iccl.mix_samples(batch, inputs.rng, weights.beta_a)
    mix_ce = losses.mixup_cross_entropy_loss(online(mixed)["logits"], batch["label"], batch["class_aware_label"], lam)
    return LossOutput(weights.weight_ce * ce + weights.weight_mix * mix_ce, {"ce": ce, "mix_ce": mix_ce})
