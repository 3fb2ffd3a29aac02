"""DSCL + PBSD on Places-LT (365 classes, 62.5k images, 4980 down to 5 per class) with ResNet-152.

  python -m dscl_jax.main --config configs/places_lt_dscl_pbsd.py --workdir <dir> \
      --config.data.root=<Places365 data_256/> --config.data.split_dir=<dir of Places_LT_*.txt> \
      --config.model.init_from=<resnet152.npz from tools/convert_torchvision_resnet.py>

Places-LT runs start from an ImageNet-pretrained trunk (the common protocol of the PaCo and DSCL papers);
`model.init_from` loads converted torchvision weights into the trunk of both encoders. Without it the
trunk starts from scratch, which is not the published protocol. The fine-tuning schedule (30 epochs,
lr 0.02 at batch 256) follows PaCo's Places-LT recipe; check it against the DSCL paper before quoting
numbers.
"""

from configs.common import imagenet_recipe_config


def get_config():
  c = imagenet_recipe_config("places_lt", depth=152)
  c.train.epochs = 30
  c.train.warmup_epochs = 1
  c.train.base_lr = 0.02
  c.probe.epochs = 10
  c.probe.milestones = (0.5, 0.75)
  return c
