"""DSCL on Fashion-MNIST-LT (IF 100), CIFAR-style ResNet-20 on 28x28.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_dscl.py --workdir /tmp/fmnist_dscl

Needs the Debian package dataset-fashion-mnist (or --config.data.root=<dir with the IDX files>).
"""

from dscl_jax.config.schema import fashion_mnist_lt_config


def get_config():
  return fashion_mnist_lt_config("dscl")
