"""GPaCo on Fashion-MNIST-LT (IF 100), ResNet-20 on 28x28: the ImageNet-LT recipe scaled like the other
Fashion-MNIST configs.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_gpaco.py --workdir /tmp/fmnist_gpaco

From GPaCo's ImageNet-LT script: alpha 0.045, beta = gamma = 1, T 0.2, lr 0.04 at batch 128, weight decay
5e-4, no momentum encoder, RandAugment(2, 10) on both views (the key also gets grayscale and blur, which
are no-ops or mild on grayscale images). Scaled like fashion_mnist_lt_dscl.py (ours): 15 epochs with 1
warm-up, K 4096. `eval` reports the class centres and the class-balanced linear probe.
"""

from configs.common import fashion_mnist_lt_config, paco_recipe


def get_config():
  c = fashion_mnist_lt_config("gpaco")
  c = paco_recipe(
    c, "gpaco", alpha=0.045, temperature=0.2, lr=0.04, weight_decay=5e-4, queue_size=4096, key_randaugment=True
  )
  c.train.epochs = 15
  c.train.warmup_epochs = 1
  return c
