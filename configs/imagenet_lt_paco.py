"""PaCo on ImageNet-LT with ResNet-50 (57.0% top-1 reported by the PaCo paper).

  python -m dscl_jax.main --config configs/imagenet_lt_paco.py --workdir <dir> \
      --config.data.root=<ImageNet train/val images> --config.data.split_dir=<dir of ImageNet_LT_*.txt>

The public script's values (METHODS.md section 5): alpha 0.05, beta = gamma = 1, T 0.2, lr 0.02 at
batch 128, weight decay 5e-4, K 8192, m 0.999, 400 epochs (10 warm-up, cosine); query RandAugment(2, 10)
after crop / flip / jitter, SimCLR key. `eval` reports the class centres (PaCo's own prediction) and the
class-balanced linear probe. Key BatchNorm groups of 32: the per-GPU batch of the public 4-GPU runs.
"""

from configs.common import imagenet_recipe_config, paco_recipe


def get_config():
  c = imagenet_recipe_config("imagenet_lt", depth=50)
  c = paco_recipe(c, "paco", alpha=0.05, temperature=0.2, lr=0.02, weight_decay=5e-4, queue_size=8192)
  c.model.key_bn_group_size = 32
  return c
