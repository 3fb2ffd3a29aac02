"""DSCL + PBSD on ImageNet-LT with ResNet-50: the paper's recipe (57.7% top-1 reported).

  python -m dscl_jax.main --config configs/imagenet_lt_dscl_pbsd.py --workdir <dir> \
      --config.data.root=<ImageNet train/val images> --config.data.split_dir=<dir of ImageNet_LT_*.txt>

Needs ImageNet_LT_{train,val,test}.txt in split_dir and the ImageNet images under root. On a v4-32 TPU
pod or 8 GPUs, set --config.model.dtype=bfloat16. Everything else follows METHODS.md section 4.
"""

from configs.common import imagenet_recipe_config


def get_config():
  return imagenet_recipe_config("imagenet_lt", depth=50)
