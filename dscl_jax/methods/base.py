"""What a method is to the shared step: its requirements, its own state, and its loss terms.

A method never runs the momentum target, the optimiser or the queue update itself: `dscl_jax/core/step.py`
does that for every method, according to the method's `Requirements`. The method receives the online
encoder as an `OnlineForward` (so it can run whichever views it asked for, with gradient) and the
step's shared arrays as `StepInputs`, and returns a `LossOutput`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dscl_jax.input import batch_spec

# Projection heads of the encoder (dscl_jax/models/heads.py); None: no projection head at all.
HEADS = ("mlp", "mlp_bn", "mlp3")


@dataclasses.dataclass(frozen=True)
class Requirements:
  """What a method needs from the shared machinery.

  momentum_target: an EMA copy of the encoder embeds the key view (no gradient) before the loss.
  queue: a `[K, D]` ring buffer of past embeddings and labels, written after every step.
  views: the images the input pipeline must produce per sample (a subset of `batch_spec.VIEWS`).
  sampler: how the pipeline draws images (one of `batch_spec.SAMPLERS`); `class_aware_power` q weights the classes
    of the class-aware sample by n_c ** q (0: class-uniform).
  projection_head: the encoder's projection head (one of `HEADS`), or None for no embedding.
  classifier: the encoder has a linear classifier on its pooled feature ("logits"); evaluation then also
    reports the model's own classifier beside the linear probe.
  """

  momentum_target: bool
  queue: bool
  views: tuple[str, ...]
  sampler: str = "instance"
  class_aware_power: float = 0.0
  projection_head: str | None = "mlp"
  classifier: bool = False

  def __post_init__(self):
    batch_spec.check_request(self.views, self.sampler)
    if self.projection_head not in HEADS + (None,):
      raise ValueError(f"projection_head {self.projection_head!r} must be one of {HEADS} or None")
    if self.momentum_target and "key" not in self.views:
      raise ValueError("a momentum target embeds the key view: add 'key' to views")


@dataclasses.dataclass
class StepInputs:
  """The shared arrays a method's loss reads.

  batch: the global batch, "label" [B] and the views the method asked for ("query" [B, H, W, C], ...).
  keys: [B, D] L2-normalised momentum-target embeddings of batch["key"] (stop-gradient), or None without
    a target.
  queue, queue_labels: [K, D] and [K] ([0, D] and [0] when the method keeps no queue or K = 0).
  method_state: the method's own part of the state (whatever `init_state` returned).
  rng: a key for this step's random draws, independent of the step's other draws.
  step: the index of this step (0 for the first), a scalar int32 array.
  """

  batch: dict[str, jax.Array]
  keys: jax.Array | None
  queue: jax.Array
  queue_labels: jax.Array
  method_state: Any
  rng: jax.Array
  step: jax.Array


@flax.struct.dataclass  # a pytree: it leaves the differentiated function as auxiliary output
class LossOutput:
  """loss: the scalar to minimise. terms: named scalars to log (the loss is logged as "loss" anyway).
  enqueue: [B, D] embeddings to write into the queue (stop-gradient is applied by the step); None writes
  the momentum target's keys. method_state: the new method state; None keeps it unchanged."""

  loss: jax.Array
  terms: dict[str, jax.Array]
  enqueue: jax.Array | None = None
  method_state: Any = None


class OnlineForward:
  """The online encoder in training mode, with gradient, threading BatchNorm statistics through calls.

  Each call normalises its input batch on its own (as a separate forward call in PyTorch would) and the
  running statistics are updated call after call; the step stores `batch_stats` after the loss.
  """

  def __init__(self, model, params, batch_stats):
    self.model, self.params, self.batch_stats = model, params, batch_stats

  def _apply(self, x, model=None, **kwargs):
    model = model or self.model
    out, mutated = model.apply(
      {"params": self.params, "batch_stats": self.batch_stats}, x, train=True, mutable=["batch_stats"], **kwargs
    )
    self.batch_stats = mutated["batch_stats"]
    return out

  def __call__(self, images, bn_group_size: int | None = None, interleaved: bool = False):
    """images [N, H, W, C] -> {"feature_map", "pooled", "embedding" (unnormalised)[, "logits"]}.
    `bn_group_size` g: BatchNorm normalises each group of g images on its own (same parameters), as one
    forward call per group would: consecutive blocks, or with `interleaved` every (N / g)-th image (each
    crop's batch of a batch-major [B, n] stack of crops)."""
    model = None if bn_group_size is None else self.model.clone(bn_group_size=bn_group_size, bn_interleaved=interleaved)
    return self._apply(images, model)

  def project(self, pooled):
    """pooled [R, F] -> [R, D]: the projection head alone (PBSD's teacher path)."""
    return self._apply(pooled, method="project")


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||, eps), as torch.nn.functional.normalize; float32."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


class Method(abc.ABC):
  """Base class: subclasses set `name`, build `requirements` from the config and implement `loss`."""

  name: str = ""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.requirements = self.make_requirements(config)

  @abc.abstractmethod
  def make_requirements(self, config) -> Requirements:
    """What this method needs from the shared machinery, for `config`."""

  def validate(self, config) -> None:
    """Raise a ValueError naming a bad method-specific config value (called before any data is read)."""

  def init_state(self, rng: jax.Array, class_counts: np.ndarray | None) -> Any:
    """The method's own state (a pytree of arrays; {} when it keeps none). `class_counts` [C]: training
    images per class, or None where unknown (a method that needs them raises)."""
    del rng, class_counts
    return {}

  @abc.abstractmethod
  def loss(self, online: OnlineForward, inputs: StepInputs) -> LossOutput:
    """The loss terms of one step from the online encoder's forward outputs."""
