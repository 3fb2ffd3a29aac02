"""DSCL + multi-crop on Fashion-MNIST-LT: the paper's ablation of PBSD. The same small crops are extra
DSCL queries (L = L_DSCL + 1.5 * mean over crops of L_DSCL(crop)) instead of distillation students.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_dscl_multicrop.py --workdir /tmp/fmnist_multicrop
"""

from dscl_jax.config.schema import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("dscl")
  c.pbsd.multicrop = True
  return c
