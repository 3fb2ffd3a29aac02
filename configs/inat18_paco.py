"""PaCo on iNaturalist 2018 with ResNet-50 (73.2% top-1 reported by the PaCo paper).

  python -m dscl_jax.main --config configs/inat18_paco.py --workdir <dir> \
      --config.data.root=<dir holding train_val2018/> --config.data.split_dir=<dir of iNaturalist18_*.txt>

The public script's values (METHODS.md section 5): alpha 0.05, beta = gamma = 1, T 0.2, lr 0.02 at
batch 128, weight decay 1e-4, K 8192, 400 epochs; the ImageNet-LT views; iNaturalist's own normalisation
(mean 0.466, 0.471, 0.380; std 0.195, 0.194, 0.192), as the public code. iNaturalist 2018's validation
list is the reported split: nothing is selected on it.
"""

from configs.common import imagenet_recipe_config, paco_recipe


def get_config():
  c = imagenet_recipe_config("inat18", depth=50)
  c = paco_recipe(c, "paco", alpha=0.05, temperature=0.2, lr=0.02, weight_decay=1e-4, queue_size=8192)
  c.augment.mean, c.augment.std = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)
  c.model.key_bn_group_size = 32
  return c
