"""DSCL + PBSD on iNaturalist 2018 (8,142 classes, 437.5k training images) with ResNet-50.

  python -m dscl_jax.main --config configs/inat18_dscl_pbsd.py --workdir <dir> \
      --config.data.root=<dir holding train_val2018/> --config.data.split_dir=<dir of iNaturalist18_*.txt>

The ImageNet-LT recipe of METHODS.md section 4 (batch 256, 200 epochs, K 65536, PBSD 5 x 64px, w 1.5).
iNaturalist 2018 has no public labelled test set: its validation list is the reported split, so nothing
is selected on it during training (the probe keeps its last epoch).
"""

from configs.common import imagenet_recipe_config


def get_config():
  return imagenet_recipe_config("inat18", depth=50)
