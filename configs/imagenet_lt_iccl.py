"""ICCL on ImageNet-LT with ResNet-50.

  python -m dscl_jax.main --config configs/imagenet_lt_iccl.py --workdir <dir> \
      --config.data.root=<ImageNet train/val images> --config.data.split_dir=<dir of ImageNet_LT_*.txt>

Every ICCL value is ours (the paper's text and code were not available to us; never quote a paper number
for this config): the DSCL recipe's stage 1 schedule and stage 2 probe (METHODS.md section 4: batch 256,
200 epochs, lr 0.1 x batch / 256, m 0.999, key BatchNorm groups of 128; class-balanced linear probe as the
classifier rebalancing), ICCL as in dscl_jax/config/schema.py (Beta(1, 1), per-step EMA centroids with
momentum 0.9, temperature 0.1, weights 1 / 1 / 1, class-uniform class-aware sampler).
"""

from configs.common import imagenet_recipe_config


def get_config():
  c = imagenet_recipe_config("imagenet_lt", depth=50)
  c.method = "iccl"
  c.pbsd.enabled = False
  return c
