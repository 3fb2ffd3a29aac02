"""Flax models: ResNet trunks, the projection head, and the encoder that joins them."""

from dscl_jax.models.encoder import Encoder, build_encoder, build_trunk
from dscl_jax.models.heads import ProjectionHead
from dscl_jax.models.resnet import BatchNorm, ResNet, resnet_stage_sizes

__all__ = ["BatchNorm", "Encoder", "ProjectionHead", "ResNet", "build_encoder", "build_trunk", "resnet_stage_sizes"]
