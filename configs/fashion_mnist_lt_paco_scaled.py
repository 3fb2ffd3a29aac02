"""PaCo on Fashion-MNIST-LT with a recipe that fits the data: a control of issue 26.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_paco_scaled.py --workdir /tmp/fmnist_paco_scaled

configs/fashion_mnist_lt_paco.py runs the public ImageNet-LT recipe, whose alpha and K make a tail
anchor's class term weigh 48 times a head anchor's on this 10-class data. Here alpha and K give the ratio
of PaCo's CIFAR-100-LT recipe (1.58), and the learning rate, epochs, augmentation and weight decay are
those of the other Fashion-MNIST-LT methods; the formula is in configs/common.py (paco_scaled_config).
"""

from configs.common import paco_scaled_config


def get_config():
  return paco_scaled_config("paco", queue_size=1024)
