"""SupCon baseline (MoCo-style queue, every positive weighted equally) on Fashion-MNIST-LT.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_supcon.py --workdir /tmp/fmnist_supcon
"""

from dscl_jax.config.schema import fashion_mnist_lt_config


def get_config():
  return fashion_mnist_lt_config("supcon")
