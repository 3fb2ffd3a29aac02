"""Cross-entropy baseline on Fashion-MNIST-LT, same trunk, data and epochs as fashion_mnist_lt_dscl.py.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_ce.py --workdir /tmp/fmnist_ce

Stage 1 trains trunk + linear classifier with cross-entropy on instance-uniform batches; stage 2 is the
same class-balanced linear probe on the frozen trunk as every other method (classifier re-training).
"""

from configs.common import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("ce")
  # Cross-entropy on the query view: the same trunk, schedule and probe as every Fashion-MNIST-LT method.
  c.train.base_lr = 0.1
  c.train.weight_decay = 5e-4
  return c
