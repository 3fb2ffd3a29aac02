"""GPaCo on ImageNet-LT with ResNet-50 (58.5% top-1 reported by the GPaCo README).

  python -m dscl_jax.main --config configs/imagenet_lt_gpaco.py --workdir <dir> \
      --config.data.root=<ImageNet train/val images> --config.data.split_dir=<dir of ImageNet_LT_*.txt>

The public script's values (METHODS.md section 5): alpha 0.045, beta = gamma = 1, T 0.2, lr 0.04 at
batch 128, weight decay 5e-4, K 8192, 400 epochs (10 warm-up, cosine); no momentum encoder; query
RandAugment(2, 10) after crop / flip / jitter, key the same plus grayscale and blur (`randclsstack`).
"""

from configs.common import imagenet_recipe_config, paco_recipe


def get_config():
  c = imagenet_recipe_config("imagenet_lt", depth=50)
  return paco_recipe(
    c, "gpaco", alpha=0.045, temperature=0.2, lr=0.04, weight_decay=5e-4, queue_size=8192, key_randaugment=True
  )
