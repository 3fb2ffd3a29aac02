"""DSCL + PBSD on Fashion-MNIST-LT (IF 100): the flagship objective L = L_DSCL + 1.5 L_PBSD.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_dscl_pbsd.py --workdir /tmp/fmnist_dscl_pbsd

5 small crops of 12x12 (the 64/224 ratio of the ImageNet recipe) with scale (0.05, 0.6) per image; the
teacher pools their boxes from the 7x7 last feature map of the first global crop with roi_align.
"""

from dscl_jax.config.schema import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("dscl")
  c.pbsd.enabled = True
  return c
