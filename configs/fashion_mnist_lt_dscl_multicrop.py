"""DSCL + multi-crop on Fashion-MNIST-LT: the paper's ablation of PBSD. The same small crops are extra
DSCL queries (L = L_DSCL + 1.5 * mean over crops of L_DSCL(crop)) instead of distillation students.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_dscl_multicrop.py --workdir /tmp/fmnist_multicrop
"""

from configs.common import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("dscl")
  c.loss.beta = 8.0
  c.loss.temperature = 0.07
  # The multi-crop ablation: the same 5 crops of 12 px as PBSD, used as extra DSCL anchors instead.
  c.pbsd.multicrop = True
  c.pbsd.num_crops = 5
  c.pbsd.crop_size = 12
  return c
