"""Cross-entropy baseline on Fashion-MNIST-LT, same trunk, data and epochs as fashion_mnist_lt_dscl.py.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_ce.py --workdir /tmp/fmnist_ce

Stage 1 trains trunk + linear classifier with cross-entropy on instance-uniform batches; stage 2 is the
same class-balanced linear probe on the frozen trunk as every other method (classifier re-training).
"""

from dscl_jax.config.schema import fashion_mnist_lt_config


def get_config():
  return fashion_mnist_lt_config("ce")
