"""DSCL + PBSD on Fashion-MNIST-LT (IF 100): the flagship objective L = L_DSCL + 1.5 L_PBSD.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_dscl_pbsd.py --workdir /tmp/fmnist_dscl_pbsd

5 small crops of 12x12 (the 64/224 ratio of the ImageNet recipe) with scale (0.05, 0.6) per image; the
teacher pools their boxes from the 7x7 last feature map of the first global crop with roi_align.
"""

from configs.common import fashion_mnist_lt_config


def get_config():
  c = fashion_mnist_lt_config("dscl")
  c.loss.beta = 8.0
  c.loss.temperature = 0.07
  # PBSD: 5 crops of 12 px (64 / 224 of the view, as the ImageNet recipe), weight 1.5.
  c.pbsd.enabled = True
  c.pbsd.num_crops = 5
  c.pbsd.crop_size = 12
  c.pbsd.weight = 1.5
  return c
