"""ResNets for every scale in one implementation.

`ResNet(depth=20|32|56|..., style="cifar")`: 3 stages of basic blocks, widths 16/32/64, for 28-32 px inputs.
`ResNet(depth=18|34|50|101|152, style="imagenet")`: 7x7 stem, max-pool and 4 stages (stride 32) of basic
blocks at depth 18 / 34 (widths 64..512, as torchvision's resnet18 / resnet34) or bottleneck blocks at
depth 50 / 101 / 152 (4x expansion, 2048 features).
The trunk returns both its last feature map (PBSD pools boxes from it) and the globally pooled feature.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# torch's padding=1 on every side. Flax "SAME" pads (0, 1) for a stride-2 conv on an even size, which
# shifts the sampling grid by a pixel relative to torchvision and its pretrained weights.
PAD_1 = ((1, 1), (1, 1))

# He-normal over fan-out, as torchvision initialises ResNet convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

_IMAGENET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# ImageNet depths built from basic blocks (two 3x3 convolutions, expansion 1), as in the paper's table and
# torchvision; the deeper ones use bottlenecks.
_IMAGENET_BASIC_DEPTHS = (18, 34)


def resnet_stage_sizes(depth: int, style: str) -> tuple[int, ...]:
  """Blocks per stage for a depth: CIFAR depth = 6n + 2 (3 stages of n), ImageNet from the paper table."""
  if style == "cifar":
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth {depth} must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110)")
    return ((depth - 2) // 6,) * 3
  if style == "imagenet":
    if depth not in _IMAGENET_STAGES:
      raise ValueError(
        f"ImageNet-style ResNet depth {depth!r} must be one of "
        f"{sorted(_IMAGENET_STAGES)}: 18 and 34 are basic-block nets, 50, 101 and 152 "
        "bottleneck nets"
      )
    return _IMAGENET_STAGES[depth]
  raise ValueError(f"ResNet style {style!r} must be 'cifar' or 'imagenet'")


def resnet_block_kind(depth: int, style: str) -> str:
  """The residual block of a ResNet: "basic" (two 3x3 convolutions, expansion 1) for CIFAR ResNets and
  ImageNet ResNet-18 / 34, "bottleneck" (1x1 -> 3x3 -> 1x1, 4x expansion) for ImageNet ResNet-50 / 101 /
  152. Raises ValueError for a depth `resnet_stage_sizes` refuses."""
  resnet_stage_sizes(depth, style)  # raises for an unknown depth or style
  if style == "cifar" or depth in _IMAGENET_BASIC_DEPTHS:
    return "basic"
  return "bottleneck"


class BatchNorm(nn.Module):
  """BatchNorm whose batch statistics can be taken over fixed-size groups of the batch.

  `group_size=None` normalises over the whole (global) batch, which under `jax.jit` on a sharded batch is
  synchronised BatchNorm: the result does not depend on how many devices hold the batch. A
  `group_size` g normalises each consecutive block of g samples on its own ("ghost" batches); the
  momentum target uses it on a permuted batch as the device-count-independent stand-in for MoCo's
  shuffle-BN. With `interleaved` the B / g groups are strided instead: sample i belongs to group i mod
  (B / g), so a batch-major stack of n crops per image ([B, n] flattened) normalises each crop's batch on
  its own while every device keeps its own images (a crop-major stack of a sharded batch cannot stay
  sharded). Running statistics follow PyTorch's update with `momentum` = 1 - torch momentum.
  """

  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  group_size: int | None = None
  dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones
  interleaved: bool = False

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))

    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
      y = (x.astype(jnp.float32) - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon))) + bias
      return y.astype(self.dtype)

    x32 = x.astype(jnp.float32)
    batch = x.shape[0]
    groups = 1
    if self.group_size is not None and self.group_size < batch:
      if batch % self.group_size:
        raise ValueError(f"BatchNorm group_size {self.group_size} must divide the batch {batch}")
      groups = batch // self.group_size
    if self.interleaved:  # [B / groups, groups, ...]: group k is every groups-th sample from k
      xg = x32.reshape((batch // groups, groups) + x.shape[1:])
      reduce_axes = (0,) + tuple(range(2, xg.ndim - 1))
    else:  # [groups, B / groups, ...]: consecutive blocks
      xg = x32.reshape((groups, batch // groups) + x.shape[1:])
      reduce_axes = tuple(range(1, xg.ndim - 1))
    mean = jnp.mean(xg, axis=reduce_axes, keepdims=True)
    # Two-pass variance: the one-pass E[x^2] - E[x]^2 loses precision on large activations.
    var = jnp.mean(jnp.square(xg - mean), axis=reduce_axes, keepdims=True)
    y = (xg - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon))) + bias
    if not self.is_initializing():
      count = xg.size // (groups * features)
      unbiased = var * (count / max(count - 1, 1))
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * jnp.mean(
        mean, axis=tuple(range(xg.ndim - 1))
      )
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * jnp.mean(
        unbiased, axis=tuple(range(xg.ndim - 1))
      )
    return y.reshape(x.shape).astype(self.dtype)


def _shortcut(x, y, strides, conv, norm):
  """The identity, or a strided 1x1 projection + BatchNorm where the block changes shape (called from a
  block's compact `__call__`, so "proj_conv" / "proj_bn" are the block's submodules)."""
  if x.shape == y.shape:
    return x
  x = conv(y.shape[-1], (1, 1), (strides, strides), name="proj_conv")(x)
  return norm(name="proj_bn")(x)


def _last_scale_init(zero: bool):
  return nn.initializers.zeros if zero else nn.initializers.ones


class BasicBlock(nn.Module):
  """Two 3x3 convolutions, the first strided, expansion 1 (CIFAR ResNets and ImageNet ResNet-18 / 34, as
  torchvision's BasicBlock). `zero_init_residual`: the last BatchNorm's scale starts at 0, so the block
  starts as its shortcut (torchvision's `zero_init_residual=True`)."""

  filters: int
  strides: int
  norm: Any
  conv: Any
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=PAD_1)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3), padding=PAD_1)(y)
    y = self.norm(scale_init=_last_scale_init(self.zero_init_residual))(y)
    return nn.relu(_shortcut(x, y, self.strides, self.conv, self.norm) + y)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, as torchvision's v1.5) -> 1x1 with 4x expansion (ImageNet ResNets).
  `zero_init_residual` as in BasicBlock."""

  filters: int
  strides: int
  norm: Any
  conv: Any
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=PAD_1)(y)))
    y = self.norm(scale_init=_last_scale_init(self.zero_init_residual))(self.conv(self.filters * 4, (1, 1))(y))
    return nn.relu(_shortcut(x, y, self.strides, self.conv, self.norm) + y)


class ResNet(nn.Module):
  """ResNet trunk. `x` [B, H, W, C] -> {"feature_map": [B, h, w, F], "pooled": [B, F]}.

  F is 64 * width for CIFAR style, 512 * width for ImageNet-style ResNet-18 / 34 (basic blocks) and
  2048 * width for ImageNet-style ResNet-50 / 101 / 152 (bottlenecks); h = H / 4 (CIFAR) or H / 32
  (ImageNet). `zero_init_residual` starts every residual block's last BatchNorm scale at 0 (the DSCL /
  MoCo reference builds its ResNets so).
  """

  depth: int
  style: str = "imagenet"
  width: int = 1
  bn_group_size: int | None = None
  dtype: Any = jnp.float32
  zero_init_residual: bool = False
  bn_interleaved: bool = False

  @property
  def num_features(self) -> int:
    if self.style == "cifar":
      return 64 * self.width
    expansion = 1 if resnet_block_kind(self.depth, self.style) == "basic" else 4
    return 512 * expansion * self.width

  @nn.compact
  def __call__(self, x, train: bool):
    stages = resnet_stage_sizes(self.depth, self.style)
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME", kernel_init=conv_init, dtype=self.dtype)
    norm = functools.partial(
      BatchNorm,
      use_running_average=not train,
      group_size=self.bn_group_size,
      dtype=self.dtype,
      interleaved=self.bn_interleaved,
    )
    x = x.astype(self.dtype)
    if self.style == "cifar":
      block, base = BasicBlock, 16 * self.width
      x = nn.relu(norm(name="stem_bn")(conv(base, (3, 3), padding=PAD_1, name="stem_conv")(x)))
    else:
      block = BasicBlock if resnet_block_kind(self.depth, self.style) == "basic" else BottleneckBlock
      base = 64 * self.width
      x = conv(base, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(stages):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(base * 2**i, strides, norm, conv, self.zero_init_residual, name=f"stage{i + 1}_block{j + 1}")(x)
    feature_map = x
    pooled = jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))
    return {"feature_map": feature_map, "pooled": pooled}
