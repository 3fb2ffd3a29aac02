"""Cross-entropy with ICCL's class-aware second sample and mixup on Fashion-MNIST-LT: a control of issue 26.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_ce_class_aware_mixup.py --workdir /tmp/fmnist_ce_mix

ICCL (configs/fashion_mnist_lt_iccl.py) without its momentum target, projection head and centroids: the
same two samples per position (the second class-uniform), the same interpolation and the same two
cross-entropy terms with their weights (dscl_jax/methods/ce.py). Its draws equal ICCL's.
"""

from configs.common import fashion_mnist_lt_config
from configs.fashion_mnist_lt_iccl import get_config as iccl_config


def get_config():
  c = fashion_mnist_lt_config("ce")
  c.ce.class_aware_mixup = True
  c.iccl = iccl_config().iccl  # the sampler, interpolation and weights ICCL uses
  return c
