"""PaCo on CIFAR-100-LT (IF 100) with ResNet-32 (52.0% top-1 reported by the PaCo paper).

  python -m dscl_jax.main --config configs/cifar100_lt_paco.py --workdir <dir> \
      --config.data.tfds_data_dir=<tfds data_dir holding cifar100>

The public script's values (METHODS.md section 5): alpha 0.01, beta = gamma = 1, T 0.05, lr 0.05 at
batch 128, weight decay 5e-4, K 1024, D 32, 400 epochs (10 warm-up, cosine), m 0.999, a single GPU (so
the key BatchNorm is over the whole batch). Ours, where we differ: the public query view is
crop(32, pad 4) + flip + AutoAugment's CIFAR policy + Cutout(16), which we do not implement; our query
view is RandomResizedCrop (0.2, 1) + flip + jitter + RandAugment(2, 10) instead.
"""

from configs.common import cifar100_lt_config, paco_recipe


def get_config():
  c = paco_recipe(
    cifar100_lt_config("paco"), "paco", alpha=0.01, temperature=0.05, lr=0.05, weight_decay=5e-4, queue_size=1024
  )
  c.model.embed_dim = 32
  c.model.key_bn_group_size = 0
  return c
