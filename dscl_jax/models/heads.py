"""Projection heads on top of the pooled trunk feature: [B, F] -> [B, D] (not normalised).

"mlp":    Dense(hidden) -> ReLU -> Dense(D)                          MoCo v2 / DSCL
"mlp_bn": Dense(hidden) -> BatchNorm -> ReLU -> Dense(D)             PaCo
"mlp3":   Dense(hidden) -> ReLU -> Dense(hidden) -> ReLU -> Dense(D)  GPaCo
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dscl_jax.models.resnet import BatchNorm


class ProjectionHead(nn.Module):
  hidden_dim: int
  embed_dim: int
  kind: str = "mlp"
  bn_group_size: int | None = None
  dtype: Any = jnp.float32
  bn_interleaved: bool = False

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.kind not in ("mlp", "mlp_bn", "mlp3"):
      raise ValueError(f"projection head kind {self.kind!r} must be 'mlp', 'mlp_bn' or 'mlp3'")
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, name="hidden")(x)
    if self.kind == "mlp_bn":
      x = BatchNorm(
        use_running_average=not train,
        group_size=self.bn_group_size,
        dtype=self.dtype,
        interleaved=self.bn_interleaved,
        name="hidden_bn",
      )(x)
    x = nn.relu(x)
    if self.kind == "mlp3":
      x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="hidden2")(x))
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="out")(x).astype(jnp.float32)
