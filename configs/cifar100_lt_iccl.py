"""ICCL on CIFAR-100-LT (IF 100) with ResNet-32.

  python -m dscl_jax.main --config configs/cifar100_lt_iccl.py --workdir <dir> \
      --config.data.tfds_data_dir=<tfds data_dir holding cifar100>

Every value is ours (the ICCL paper's text and code were not available to us; never quote a paper
number for this config): 200 epochs (10 warm-up, cosine), batch 128, lr 0.1 x batch / 256, weight decay
5e-4, m 0.999, key BatchNorm groups of 64; ICCL as in dscl_jax/config/schema.py (Beta(1, 1), per-step EMA
centroids with momentum 0.9, temperature 0.1, weights 1 / 1 / 1, class-uniform class-aware sampler).
"""

from configs.common import cifar100_lt_config


def get_config():
  c = cifar100_lt_config("iccl")
  c.model.key_bn_group_size = 64
  c.train.batch_size = 128
  c.train.epochs = 200
  c.train.warmup_epochs = 10
  return c
