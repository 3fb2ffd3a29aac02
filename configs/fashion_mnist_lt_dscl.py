"""DSCL on Fashion-MNIST-LT (IF 100), CIFAR-style ResNet-20 on 28x28.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_dscl.py --workdir /tmp/fmnist_dscl

Needs the Debian package dataset-fashion-mnist (or --config.data.root=<dir with the IDX files>).
"""

from configs.common import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("dscl")
  # DSCL (METHODS.md section 3): beta 8, temperature 0.07, 4096 queued keys of a momentum-0.99 target.
  c.loss.beta = 8.0
  c.loss.temperature = 0.07
  c.moco.queue_size = 4096
  c.moco.momentum = 0.99
  c.pbsd.enabled = False
  return c
