"""PaCo: parametric contrastive learning (METHODS.md section 5).

Class centres are a linear layer with bias on the pooled trunk feature (the encoder's classifier); the
B queries are the anchors, contrasted with the C centres (logit-adjusted by the training prior during
training) and with concat(query, key, queue) from the momentum target and its queue. Projection head
Dense -> BatchNorm -> ReLU -> Dense. At test time the centres' logits alone predict, without the prior.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dscl_jax import losses
from dscl_jax.methods.base import LossOutput, Requirements, l2_normalize
from dscl_jax.methods.base import Method as BaseMethod


def class_prior(class_counts) -> jnp.ndarray:
  """Training class frequencies pi [C] from images per class [C]."""
  if class_counts is None:
    raise ValueError("PaCo / GPaCo need the training class counts for their prior (log pi); none were given")
  counts = np.asarray(class_counts, np.float64)
  if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
    raise ValueError(f"class counts must be a non-negative [C] vector with a positive sum, got {counts}")
  return jnp.asarray(counts / counts.sum(), jnp.float32)


def check_paco_config(config) -> None:
  paco = config.paco
  for name in ("alpha", "beta", "gamma"):
    if paco[name] < 0:
      raise ValueError(f"paco.{name} {paco[name]} must be >= 0")
  if paco.beta == 0 and paco.alpha == 0:
    raise ValueError("paco.alpha and paco.beta are both 0: nothing would be learned")
  if paco.sup_temperature <= 0 or config.loss.temperature <= 0:
    raise ValueError(
      f"paco.sup_temperature {paco.sup_temperature} and loss.temperature {config.loss.temperature} must be > 0"
    )
  if not 0 <= paco.label_smoothing < 1:
    raise ValueError(f"paco.label_smoothing {paco.label_smoothing} must be in [0, 1)")


class Method(BaseMethod):
  name = "paco"

  def make_requirements(self, config) -> Requirements:
    return Requirements(
      momentum_target=True, queue=True, views=("query", "key"), projection_head="mlp_bn", classifier=True
    )

  def validate(self, config) -> None:
    check_paco_config(config)
    if config.paco.label_smoothing:
      raise ValueError("paco.label_smoothing is GPaCo's option (method 'gpaco'); PaCo's loss has none")

  def init_state(self, rng, class_counts):
    return {"class_prior": class_prior(class_counts)}

  def loss(self, online, inputs) -> LossOutput:
    paco, batch = self.config.paco, inputs.batch
    out = online(batch["query"])
    loss = losses.paco_loss(
      l2_normalize(out["embedding"]),
      inputs.keys,
      inputs.queue,
      batch["label"],
      inputs.queue_labels,
      out["logits"],
      inputs.method_state["class_prior"],
      alpha=paco.alpha,
      beta=paco.beta,
      gamma=paco.gamma,
      temperature=self.config.loss.temperature,
      sup_temperature=paco.sup_temperature,
    )
    return LossOutput(loss, {"paco": loss})
