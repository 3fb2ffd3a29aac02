"""The encoder every method trains: a ResNet trunk, a projection head and an optional classifier."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from dscl_jax.models.heads import ProjectionHead
from dscl_jax.models.resnet import ResNet


class Encoder(nn.Module):
  """Trunk + projection head (`projection_head`: a kind of heads.py, or None for none) + a linear
  classifier on the pooled feature when `num_classes` > 0 (cross-entropy, PaCo's class centres).

  `__call__(x [B, H, W, C], train)` returns {"feature_map" [B, h, w, F], "pooled" [B, F],
  "embedding" [B, D] (unnormalised) with a head, and "logits" [B, num_classes] with a classifier}.
  `project(pooled [R, F], train) -> [R, D]` runs the projection head alone (PBSD's teacher path).
  """

  depth: int
  style: str
  width: int = 1
  embed_dim: int = 128
  head_hidden_dim: int | None = None
  num_classes: int = 0
  projection_head: str | None = "mlp"
  bn_group_size: int | None = None
  dtype: Any = jnp.float32
  zero_init_residual: bool = False
  bn_interleaved: bool = False  # the BatchNorm groups are strided (BatchNorm.interleaved)

  def setup(self):
    self.trunk = ResNet(
      self.depth,
      self.style,
      self.width,
      self.bn_group_size,
      self.dtype,
      self.zero_init_residual,
      bn_interleaved=self.bn_interleaved,
    )
    hidden = self.head_hidden_dim or self.trunk.num_features
    if self.projection_head is not None:
      self.head = ProjectionHead(
        hidden, self.embed_dim, self.projection_head, self.bn_group_size, self.dtype, bn_interleaved=self.bn_interleaved
      )
    if self.num_classes:
      self.classifier = nn.Dense(self.num_classes, dtype=self.dtype)

  def __call__(self, x, train: bool):
    out = dict(self.trunk(x, train))
    if self.projection_head is not None:
      out["embedding"] = self.head(out["pooled"], train)
    if self.num_classes:
      out["logits"] = self.classifier(out["pooled"]).astype(jnp.float32)
    return out

  def project(self, pooled, train: bool = True):
    return self.head(pooled, train)


def compute_dtype(model_config: ml_collections.ConfigDict):
  """`model.dtype` as a jnp dtype: activations in it, parameters and losses stay float32."""
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(model_config.get("dtype", "float32"))
  if dtype is None:
    raise ValueError(f"model.dtype {model_config.dtype!r} must be 'float32' or 'bfloat16'")
  return dtype


def build_trunk(model_config: ml_collections.ConfigDict) -> ResNet:
  """The Encoder's ResNet trunk alone (linear probe and evaluation use its pooled feature)."""
  return ResNet(model_config.depth, model_config.style, model_config.get("width", 1), None, compute_dtype(model_config))


def build_encoder(
  model_config: ml_collections.ConfigDict,
  num_classes: int = 0,
  bn_group_size: int | None = None,
  projection_head: str | None = "mlp",
) -> Encoder:
  """An Encoder from `config.model` (depth, style, width, embed_dim, head_hidden_dim, dtype)."""
  dtype = compute_dtype(model_config)
  return Encoder(
    depth=model_config.depth,
    style=model_config.style,
    width=model_config.get("width", 1),
    embed_dim=model_config.embed_dim,
    head_hidden_dim=model_config.get("head_hidden_dim"),
    num_classes=num_classes,
    projection_head=projection_head,
    bn_group_size=bn_group_size,
    dtype=dtype,
    zero_init_residual=model_config.get("zero_init_residual", False),
  )
