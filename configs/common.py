"""Recipes shared by the experiments in configs/: a dataset's protocol (data, augmentation statistics,
schedule, probe, eval) that every method compared on it must share, and the published PaCo / GPaCo
stage-1 recipe. An experiment file calls one of these and then sets its own method's values.
"""

from __future__ import annotations

import ml_collections

from dscl_jax.config.schema import base_config
from dscl_jax.input import augment


def fashion_mnist_lt_config(method: str) -> ml_collections.ConfigDict:
  """Fashion-MNIST-LT (IF 100: 6000 down to 60 images per class), ResNet-20 sized for 28x28.

  The schedule is short so that pretrain + probe + eval fit a CPU; on an accelerator raise
  `train.epochs` (e.g. 200) and `probe.epochs`.
  """
  c = base_config(dataset="fashion_mnist_lt", image_size=28, channels=1, depth=20, style="cifar", method=method)
  c.data.imbalance_factor = 100.0
  c.augment.crop_scale = (0.2, 1.0)
  c.augment.probe_crop_scale = (0.5, 1.0)
  c.augment.mean, c.augment.std = (0.2860,), (0.3530,)  # Fashion-MNIST training set
  c.pbsd.crop_size = 12  # the 64 / 224 ratio of the ImageNet recipe, at 28x28
  c.pbsd.blur_sigma = augment.scaled_blur_sigma(12, 64)
  c.moco.queue_size = 4096
  c.moco.momentum = 0.99  # ~1k steps in all: the target must follow faster than at 0.999
  c.model.key_bn_group_size = 64
  c.train.batch_size = 128
  c.train.epochs = 15
  c.train.warmup_epochs = 1
  c.train.log_every = 20
  c.train.checkpoint_every = 200
  c.probe.batch_size = 256
  # 30 epochs (about 1740 steps). On the held-out validation split (benchmarks/investigate_dscl.py) 10
  # epochs were not converged: 30 add 1.5 (CE), 2.5 (SupCon) and 2.9 (DSCL) points, and the validation
  # accuracy of all three is flat from about epoch 16 on. The same length for every method.
  c.probe.epochs = 30
  c.probe.lr = 1.0
  c.probe.standardize_features = True  # as the digits demo (configs/digits_lt_dscl.py) and the LR
  # The reference probes with the trunk in training mode, so its BatchNorm statistics come from probe
  # images; re-estimating them on 20 probe batches (5120 images) is the frozen-trunk equivalent.
  c.probe.reestimate_bn_batches = 20
  c.probe.log_every = 20
  c.eval.batch_size = 500
  return c


def cifar100_lt_config(method: str) -> ml_collections.ConfigDict:
  """CIFAR-100-LT (IF 100: 500 down to 5 images per class) with ResNet-32 on 32x32: data, augmentation
  statistics, probe and eval settings shared by the CIFAR configs; each method adds its recipe."""
  c = base_config(dataset="cifar100_lt", image_size=32, channels=3, depth=32, style="cifar", method=method)
  c.data.imbalance_factor = 100.0
  c.augment.mean, c.augment.std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
  c.augment.crop_scale = (0.2, 1.0)
  c.augment.probe_crop_scale = (0.5, 1.0)
  c.train.log_every = 40
  c.probe.batch_size = 512
  c.probe.epochs = 40
  c.probe.lr = 1.0
  c.probe.standardize_features = True
  c.eval.batch_size = 500
  return c


def imagenet_recipe_config(dataset: str, depth: int = 50) -> ml_collections.ConfigDict:
  """The DSCL + PBSD recipe of METHODS.md section 4 (ImageNet-LT, ResNet-50) for a 224x224 RGB dataset.

  Stage 1: SGD momentum 0.9, weight decay 5e-4, lr 0.1 * batch / 256, batch 256, 200 epochs (10 warm-up,
  then cosine), m 0.999, T 0.07, K 65536, beta 8, PBSD with 5 crops of 64x64 and weight 1.5.
  Stage 2: linear classifier on the frozen 2048-d feature, class-balanced sampling, lr 10, batch 2048,
  40 epochs, lr x0.1 at epochs 20 and 30, no weight decay.
  """
  c = base_config(dataset=dataset, image_size=224, channels=3, depth=depth, style="imagenet")
  c.pbsd.enabled = True
  # 128 samples per key-BatchNorm group: the per-GPU batch of the reference's 2-GPU runs at batch 256.
  c.model.key_bn_group_size = 128
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.num_workers = 16
  # The reference's probe runs the trunk in training mode, so its BatchNorm statistics follow the probe's
  # images; the frozen-trunk equivalent is to re-estimate them before the probe (dscl_jax/evaluation/bn_reestimation.py).
  c.probe.reestimate_bn_batches = 20
  # 115k x 2048 features and 1000+ classes: hours of scikit-learn on a host. The kNN stays on.
  c.eval.logistic_regression = False
  return c


def paco_class_term_ratio(alpha: float, queue_size: int, batch_size: int, class_counts, beta: float = 1.0) -> float:
  """How much more a tail anchor's class term weighs than a head anchor's in PaCo's loss.

  An anchor of class c has |P_c| ~ (K + 2B) n_c / N feature positives among the 2B batch features and
  the K queued ones, so its class term weighs beta / (beta + alpha |P_c|) (METHODS.md section 5), and

      R = (beta + alpha (K + 2B) n_head / N) / (beta + alpha (K + 2B) n_tail / N).

  PaCo's CIFAR-100-LT recipe (alpha 0.01, K 1024, B 128, 500 down to 5 of 10,847 images): R = 1.58.
  Its ImageNet-LT recipe (alpha 0.05, K 8192, 1280 down to 5 of 115,846): R = 5.6. Its ImageNet-LT
  values on Fashion-MNIST-LT (alpha 0.05, K 4096, 6000 down to 60 of 14,886): R = 48.
  """
  counts = [float(n) for n in class_counts]
  share = lambda n: alpha * (queue_size + 2 * batch_size) * n / sum(counts)
  return (beta + share(max(counts))) / (beta + share(min(counts)))


def paco_alpha_for_ratio(ratio: float, queue_size: int, batch_size: int, class_counts, beta: float = 1.0) -> float:
  """The alpha at which `paco_class_term_ratio` equals `ratio` (R above, solved for alpha)."""
  counts = [float(n) for n in class_counts]
  head, tail = [(queue_size + 2 * batch_size) * n / sum(counts) for n in (max(counts), min(counts))]
  return beta * (ratio - 1.0) / (head - ratio * tail)


# PaCo's CIFAR-100-LT recipe: alpha 0.01, K 1024, batch 128 on 500 down to 5 images per class (IF 100).
CIFAR100_LT_COUNTS = [int(500 * 0.01 ** (i / 99)) for i in range(100)]
PACO_CIFAR_RATIO = paco_class_term_ratio(0.01, 1024, 128, CIFAR100_LT_COUNTS)


def paco_scaled_config(method: str, queue_size: int = 1024) -> ml_collections.ConfigDict:
  """PaCo / GPaCo on Fashion-MNIST-LT with the recipe of the other Fashion-MNIST-LT methods (learning
  rate, epochs, augmentation, weight decay) and alpha chosen so that the head / tail weight ratio of the
  class term equals that of PaCo's CIFAR-100-LT recipe (`PACO_CIFAR_RATIO`, 1.58) at `queue_size`:

      alpha = beta (R - 1) / ((K + 2B) (n_head - R n_tail) / N)     (K 1024: alpha = 0.00114)

  beta = gamma = 1, T 0.2, D 128 and the projection heads stay PaCo's / GPaCo's; residual blocks start as
  torchvision's default (`zero_init_residual` off), as the official PaCo code."""
  c = fashion_mnist_lt_config(method)
  counts = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]  # Fashion-MNIST-LT, IF 100
  c.paco.alpha = paco_alpha_for_ratio(PACO_CIFAR_RATIO, queue_size, c.train.batch_size, counts)
  c.paco.beta = 1.0
  c.paco.gamma = 1.0
  c.loss.temperature = 0.2
  c.moco.queue_size = queue_size
  c.model.embed_dim = 128
  c.model.zero_init_residual = False
  return c


def paco_recipe(
  c: ml_collections.ConfigDict,
  method: str,
  *,
  alpha: float,
  temperature: float,
  lr: float,
  weight_decay: float,
  queue_size: int,
  key_randaugment: bool = False,
) -> ml_collections.ConfigDict:
  """PaCo / GPaCo's stage 1 (METHODS.md section 5) on top of a dataset config `c`.

  `lr` is the public scripts' learning rate at their global batch of 128 (written here as the
  batch-256 rule `base_lr = lr * 256 / 128`). beta = gamma = 1, D 128, m 0.999, SGD momentum 0.9, 400
  epochs with 10 warm-up epochs then cosine. Views, as the public `randcls_sim` recipe: the query is
  crop -> flip -> colour jitter (0.4, 0.4, 0.4, 0) -> RandAugment(2, 10); the key is SimCLR's crop ->
  jitter (0.4, 0.4, 0.4, 0) -> grayscale p 0.2 -> blur p 0.5 -> flip. `key_randaugment` (GPaCo's
  ImageNet-LT `randclsstack` key) appends RandAugment(2, 10) to the key too.

  Our RandAugment is torchvision's (dscl_jax/input/randaugment.py); the public code uses timm's
  `rand-n2-m10-mstd0.5` (magnitude noise, a slightly different operation set).
  """
  c.method = method
  c.paco.alpha = alpha
  c.paco.beta = 1.0
  c.paco.gamma = 1.0
  c.loss.temperature = temperature
  c.pbsd.enabled = False
  c.model.embed_dim = 128
  c.moco.momentum = 0.999
  c.moco.queue_size = queue_size
  c.train.batch_size = 128
  c.train.base_lr = lr * 256 / 128
  c.train.weight_decay = weight_decay
  c.train.epochs = 400
  c.train.warmup_epochs = 10
  c.augment.query = dict(
    jitter=(0.4, 0.4, 0.4, 0.0),
    jitter_prob=1.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    randaugment_ops=2,
    randaugment_magnitude=10,
  )
  c.augment.key = dict(
    jitter=(0.4, 0.4, 0.4, 0.0),
    jitter_prob=1.0,
    grayscale_prob=0.2,
    blur_prob=0.5,
    randaugment_ops=2 if key_randaugment else 0,
    randaugment_magnitude=10,
  )
  return c
