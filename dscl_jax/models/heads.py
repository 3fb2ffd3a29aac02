"""Heads on top of the pooled trunk feature."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ProjectionHead(nn.Module):
  """MoCo v2 / DSCL projection MLP: Dense(hidden) -> ReLU -> Dense(embed_dim). [B, F] -> [B, D] (not normalised)."""

  hidden_dim: int
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="hidden")(x))
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="out")(x).astype(jnp.float32)
