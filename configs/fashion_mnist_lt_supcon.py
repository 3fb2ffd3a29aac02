"""SupCon baseline (MoCo-style queue, every positive weighted equally) on Fashion-MNIST-LT.

python -m dscl_jax.main --config configs/fashion_mnist_lt_supcon.py --workdir /tmp/fmnist_supcon
"""

from configs.common import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("supcon")
  # SupCon with DSCL's queue and target, temperature 0.07: DSCL without the decoupling.
  c.loss.temperature = 0.07
  c.moco.queue_size = 4096
  c.moco.momentum = 0.99
  return c
