"""Loss functions: pure functions of arrays, one method per module."""

from dscl_jax.losses.cross_entropy import cross_entropy_loss, mixup_cross_entropy_loss
from dscl_jax.losses.dscl import dscl_loss
from dscl_jax.losses.iccl import iccl_loss
from dscl_jax.losses.paco import gpaco_loss, paco_loss
from dscl_jax.losses.pbsd import pbsd_loss
from dscl_jax.losses.supcon import supcon_loss

__all__ = [
  "cross_entropy_loss",
  "dscl_loss",
  "gpaco_loss",
  "iccl_loss",
  "mixup_cross_entropy_loss",
  "paco_loss",
  "pbsd_loss",
  "supcon_loss",
]
