"""ICCL: interpolative centroid contrastive learning (METHODS.md section 6), with our documented choices.

Every step reads two samples per position: a class-agnostic one (x_a, y_a; every image equally likely,
with a second view for the momentum target) and a class-aware one (x_b, y_b; class c drawn with
probability proportional to n_c ** `iccl.class_aware_power`, class-uniform at 0). With
`lam ~ Beta(a, a)` per sample, drawn inside the step from the state's RNG, the interpolated image
`x = lam * x_a + (1 - lam) * x_b` is embedded by the online encoder and must retrieve the centroids of
both source classes:

    L = w_icc * iccl_loss(z(x), centroids, y_a, y_b, lam, T_icc)
        + w_ce * CE(logits(x_a), y_a)
        + w_mix * mean_b [lam_b CE(logits(x)_b, y_a,b) + (1 - lam_b) CE(logits(x)_b, y_b,b)]

Centroids (method state, [C, D], no gradient) are normalised means of the momentum target's embeddings
of the class-agnostic key views: per step by EMA (`iccl.centroid_update = "ema"`: a class seen for the
first time takes its batch mean, afterwards c <- normalise(m c + (1 - m) batch mean)), or per epoch
(`"epoch"`: sums over the epoch replace the centroids at its end; before the first refresh they are 0,
so the first epoch trains the classifier terms only). Stage 2 (classifier rebalancing) is the
class-balanced linear probe on the frozen trunk; `eval` also reports the model's own classifier.
Every value in `config.iccl` is our choice: the ICCL paper's text and code were not available to us.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dscl_jax import losses
from dscl_jax.methods.base import LossOutput, Requirements, l2_normalize
from dscl_jax.methods.base import Method as BaseMethod

CENTROID_UPDATES = ("ema", "epoch")


def check_class_aware_power(power: float) -> None:
  """0 draws the second sample's class uniformly (ICCL's rebalancing); 1 draws classes in proportion to
  their images, i.e. an instance-uniform second sample: the same draws without the rebalancing."""
  if not 0.0 <= power <= 1.0:
    raise ValueError(
      f"iccl.class_aware_power {power} must be in [0, 1]: 0 draws classes uniformly, 1 in proportion "
      f"to their images (instance-uniform)"
    )


def class_means(embeddings, labels, num_classes):
  """(sums [C, D], counts [C]) of `embeddings` [B, D] by `labels` [B] (a matmul: sharding-friendly)."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return jnp.matmul(one_hot.T, embeddings.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST), one_hot.sum(0)


def ema_centroids(centroids, seen, embeddings, labels, momentum):
  """Per-step update: classes in the batch move to normalise(m c + (1 - m) mean), or to their mean when
  seen for the first time; the others stay. Returns (centroids [C, D], seen [C] bool)."""
  sums, counts = class_means(embeddings, labels, centroids.shape[0])
  present = counts > 0
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  moved = jnp.where(seen[:, None], momentum * centroids + (1.0 - momentum) * means, means)
  return jnp.where(present[:, None], l2_normalize(moved), centroids), seen | present


def mix_samples(batch, rng, beta_a: float):
  """(lam [B], interpolated images [B, H, W, C]) of the batch's class-agnostic "query" and class-aware
  "class_aware" views: x = lam * x_a + (1 - lam) * x_b, lam ~ Beta(a, a) per sample."""
  images_a, images_b = batch["query"], batch["class_aware"]
  lam = jax.random.beta(rng, beta_a, beta_a, images_a.shape[:1], jnp.float32)
  mix = lam.reshape((-1,) + (1,) * (images_a.ndim - 1))
  return lam, mix * images_a + (1.0 - mix) * images_b


class Method(BaseMethod):
  name = "iccl"

  def make_requirements(self, config) -> Requirements:
    return Requirements(
      momentum_target=True,
      queue=False,
      views=("query", "key", "class_aware"),
      sampler="instance_and_class_aware",
      class_aware_power=config.iccl.class_aware_power,
      projection_head="mlp",
      classifier=True,
    )

  def validate(self, config) -> None:
    iccl = config.iccl
    if iccl.centroid_update not in CENTROID_UPDATES:
      raise ValueError(f"iccl.centroid_update {iccl.centroid_update!r} must be one of {CENTROID_UPDATES}")
    if not 0.0 <= iccl.centroid_momentum < 1.0:
      raise ValueError(f"iccl.centroid_momentum {iccl.centroid_momentum} must be in [0, 1)")
    if iccl.beta_a <= 0:
      raise ValueError(f"iccl.beta_a {iccl.beta_a} must be > 0 (lambda ~ Beta(a, a))")
    if iccl.temperature <= 0:
      raise ValueError(f"iccl.temperature {iccl.temperature} must be > 0")
    for name in ("weight_icc", "weight_ce", "weight_mix"):
      if iccl[name] < 0:
        raise ValueError(f"iccl.{name} {iccl[name]} must be >= 0")
    check_class_aware_power(iccl.class_aware_power)
    if config.pbsd.enabled or config.pbsd.multicrop:
      raise ValueError("method 'iccl' has no small crops: set pbsd.enabled = pbsd.multicrop = False")

  def init_state(self, rng, class_counts):
    del rng
    if class_counts is None:
      raise ValueError("ICCL needs the training class counts (number of classes, images per epoch)")
    num_classes, dim = len(class_counts), self.config.model.embed_dim
    steps_per_epoch = int(np.sum(class_counts)) // self.config.train.batch_size
    return {
      "centroids": jnp.zeros((num_classes, dim), jnp.float32),
      "seen": jnp.zeros((num_classes,), jnp.bool_),
      "sums": jnp.zeros((num_classes, dim), jnp.float32),
      "counts": jnp.zeros((num_classes,), jnp.float32),
      "steps_per_epoch": jnp.asarray(max(steps_per_epoch, 1), jnp.int32),
    }

  def update_centroids(self, state, keys, labels, step):
    """The method state after a step whose target embeddings of the class-agnostic views are `keys`."""
    iccl = self.config.iccl
    if iccl.centroid_update == "ema":
      centroids, seen = ema_centroids(state["centroids"], state["seen"], keys, labels, iccl.centroid_momentum)
      return {**state, "centroids": centroids, "seen": seen}
    sums, counts = class_means(keys, labels, state["centroids"].shape[0])
    sums, counts = state["sums"] + sums, state["counts"] + counts
    epoch_end = (step + 1) % state["steps_per_epoch"] == 0
    refreshed = jnp.where((counts > 0)[:, None], l2_normalize(sums), state["centroids"])
    return {
      **state,
      "centroids": jnp.where(epoch_end, refreshed, state["centroids"]),
      "seen": jnp.where(epoch_end, state["seen"] | (counts > 0), state["seen"]),
      "sums": jnp.where(epoch_end, 0.0, sums),
      "counts": jnp.where(epoch_end, 0.0, counts),
    }

  def loss(self, online, inputs) -> LossOutput:
    iccl, batch = self.config.iccl, inputs.batch
    labels_a, labels_b = batch["label"], batch["class_aware_label"]
    lam, mixed = mix_samples(batch, inputs.rng, iccl.beta_a)
    out_a, out_mixed = online(batch["query"]), online(mixed)
    centroids = jax.lax.stop_gradient(inputs.method_state["centroids"])
    terms = {
      "icc": losses.iccl_loss(
        l2_normalize(out_mixed["embedding"]), centroids, labels_a, labels_b, lam, temperature=iccl.temperature
      ),
      "ce": losses.cross_entropy_loss(out_a["logits"], labels_a),
      "mix_ce": losses.mixup_cross_entropy_loss(out_mixed["logits"], labels_a, labels_b, lam),
    }
    total = iccl.weight_icc * terms["icc"] + iccl.weight_ce * terms["ce"] + iccl.weight_mix * terms["mix_ce"]
    state = self.update_centroids(inputs.method_state, inputs.keys, labels_a, inputs.step)
    return LossOutput(total, terms, method_state=jax.lax.stop_gradient(state))
