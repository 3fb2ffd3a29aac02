"""PaCo on Fashion-MNIST-LT (IF 100), ResNet-20 on 28x28: the ImageNet-LT recipe scaled like the other
Fashion-MNIST configs.

  python -m dscl_jax.main --config configs/fashion_mnist_lt_paco.py --workdir /tmp/fmnist_paco

From PaCo's ImageNet-LT script: alpha 0.05, beta = gamma = 1, T 0.2, lr 0.02 at batch 128, weight decay
5e-4, query RandAugment(2, 10) after crop / flip / jitter, SimCLR key. Scaled like
fashion_mnist_lt_dscl.py (ours): 15 epochs with 1 warm-up, K 4096, m 0.99, key BatchNorm groups of 64,
D 128. `eval` reports the class centres (PaCo's prediction, no prior) and the class-balanced linear probe.
"""

from configs.common import fashion_mnist_lt_config, paco_recipe


def get_config():
  c = fashion_mnist_lt_config("paco")
  c = paco_recipe(c, "paco", alpha=0.05, temperature=0.2, lr=0.02, weight_decay=5e-4, queue_size=4096)
  c.moco.momentum = 0.99
  c.train.epochs = 15
  c.train.warmup_epochs = 1
  return c
