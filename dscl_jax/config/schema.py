"""The shared base of every config in configs/. Each config file calls `base_config(...)` and changes
only what differs (STYLE.md). Every field can be overridden on the command line, e.g.
`--config.train.batch_size=512`.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from dscl_jax.input import augment


def load_config_file(path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (e.g. configs/fashion_mnist_lt_paco.py), as `--config` would load it."""
  path = os.fspath(path)
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def base_config(*, dataset: str, image_size: int, channels: int, depth: int, style: str,
                method: str = "dscl") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # "all" runs pretrain, then linear_probe, then eval; or pick one of the three.
  c.mode = "all"
  c.method = method  # a module of dscl_jax/methods/: "dscl" | "supcon" | "ce" | "paco" | "gpaco" | "iccl"
  c.seed = 0
  # A pretrain workdir (or its checkpoints dir) for linear_probe / eval; empty: this run's --workdir.
  c.pretrained = ""
  # A rerun on a workdir with checkpoints must use the config they were trained with (dscl_jax/runtime/workdir.py);
  # True resumes with the changed fields anyway (e.g. a lower learning rate after a divergence).
  c.allow_config_change = False
  # True: compile the pretrain step for the configured mesh on abstract inputs and print parameters,
  # per-device memory and FLOPs; reads no data and writes nothing (dscl_jax/jobs/dry_run.py). With
  # dry_run_memory_gib > 0 also the largest global batch that fits that much memory per device (one more
  # compile).
  c.dry_run = False
  c.dry_run_memory_gib = 0.0

  c.data = ml_collections.ConfigDict()
  c.data.name = dataset
  c.data.imbalance_factor = 100.0
  c.data.seed = 0
  # > 0: a validation split of up to this many per class from the training images the long-tailed profile
  # leaves out (Fashion-MNIST-LT only; data/registry.py HELD_OUT_VAL). It is for studies that must not look
  # at the test split; the probe then keeps its best epoch on it.
  c.data.val_per_class = 0
  c.data.root = ""  # empty: the dataset's default location
  c.data.split_dir = ""  # split-list datasets: directory of the .txt lists; empty: data.root
  c.data.tfds_data_dir = ""  # tfds-backed datasets (CIFAR-LT, imagenet_lt_tfds, inat18_tfds): the tfds data_dir; empty: data.root

  c.augment = augment.default_augment_config(image_size, channels)
  c.pbsd = augment.default_pbsd_config()
  c.pbsd.enabled = False  # the *_dscl_pbsd configs turn it on

  c.model = ml_collections.ConfigDict()
  c.model.depth = depth
  c.model.style = style
  c.model.width = 1
  c.model.embed_dim = 128
  # Every residual block's last BatchNorm scale starts at 0, as the DSCL reference builds its ResNets
  # (torchvision's zero_init_residual=True).
  c.model.zero_init_residual = True
  c.model.head_hidden_dim = 0  # 0: the trunk's feature width (2048 for ResNet-50), as the reference
  c.model.dtype = "float32"  # "bfloat16" on TPU / recent GPUs
  # A .npz of torchvision ResNet weights (tools/convert_torchvision_resnet.py) to start both encoders'
  # trunks from; empty: random initialisation.
  c.model.init_from = ""
  # Momentum-target BatchNorm over groups of this many samples of a permuted batch (shuffle-BN's
  # stand-in, see dscl_jax/core/step.py); 0 = the whole global batch.
  c.model.key_bn_group_size = 0

  c.loss = ml_collections.ConfigDict()
  c.loss.beta = 8.0
  c.loss.temperature = 0.07

  # PaCo / GPaCo (METHODS.md section 5): weights of the contrastive positives (alpha), of the class
  # centre (beta), of the contrastive terms in the denominator (gamma); the class logits' temperature;
  # GPaCo's label smoothing of the class term. loss.temperature is the contrastive temperature.
  c.paco = ml_collections.ConfigDict()
  c.paco.alpha = 0.05
  c.paco.beta = 1.0
  c.paco.gamma = 1.0
  c.paco.sup_temperature = 1.0
  c.paco.label_smoothing = 0.0

  # ICCL (METHODS.md section 6; every value is ours, dscl_jax/methods/iccl.py): lambda ~ Beta(beta_a,
  # beta_a) per sample; centroids refreshed per step by EMA ("ema", centroid_momentum) or per epoch
  # ("epoch"); the centroid-retrieval temperature; the weights of the three terms; the class-aware
  # sampler's class weights n_c ** class_aware_power (0: class-uniform).
  c.iccl = ml_collections.ConfigDict()
  c.iccl.beta_a = 1.0
  c.iccl.centroid_update = "ema"
  c.iccl.centroid_momentum = 0.9
  c.iccl.temperature = 0.1
  c.iccl.weight_icc = 1.0
  c.iccl.weight_ce = 1.0
  c.iccl.weight_mix = 1.0
  c.iccl.class_aware_power = 0.0

  c.moco = ml_collections.ConfigDict()
  c.moco.momentum = 0.999
  c.moco.queue_size = 65536

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256  # global, over every device and host
  c.train.epochs = 200
  c.train.warmup_epochs = 10
  c.train.base_lr = 0.1  # at batch 256; lr = base_lr * batch_size / 256
  c.train.momentum = 0.9
  c.train.weight_decay = 5e-4
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.num_workers = 0  # grain worker processes per host; 0 decodes in the main process
  c.train.max_steps = -1  # >= 0 stops early after this many steps (smoke tests); -1 runs every epoch
  # The numerical guard skips a step whose loss, gradient or new state is not finite; this many skips in
  # a row stop the run (dscl_jax/core/step.py, dscl_jax/core/loop.py).
  c.train.max_skipped_steps = 20

  c.probe = ml_collections.ConfigDict()
  c.probe.batch_size = 2048
  c.probe.epochs = 40
  c.probe.lr = 10.0
  c.probe.momentum = 0.9
  c.probe.weight_decay = 0.0
  c.probe.milestones = (0.5, 0.75)  # fractions of the epochs where lr is multiplied by 0.1 (20, 30 of 40)
  c.probe.log_every = 50
  c.probe.checkpoint_every = 1000
  c.probe.max_steps = -1
  # > 0: before the probe, the frozen trunk's BatchNorm running statistics are re-estimated on this many
  # batches of probe training images (dscl_jax/evaluation/bn_reestimation.py); 0 keeps the pretrained ones.
  c.probe.reestimate_bn_batches = 0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 512
  c.eval.split = "test"
  # Probe-free measures on the frozen trunk's features (dscl_jax/evaluation/feature_eval.py): cosine kNN with this
  # many neighbours (0: off), and a logistic regression fitted to convergence (scikit-learn, on the host).
  c.eval.knn_k = 20
  c.eval.logistic_regression = True
  # A cap, not the criterion (L-BFGS to tol 1e-6): cross-entropy features of Fashion-MNIST-LT took 1111.
  c.eval.logistic_max_iter = 10000

  c.mesh = ml_collections.ConfigDict()
  c.mesh.num_devices = -1  # -1: every device of every process
  return c


def fashion_mnist_lt_config(method: str) -> ml_collections.ConfigDict:
  """Fashion-MNIST-LT (IF 100: 6000 down to 60 images per class), ResNet-20 sized for 28x28.

  The schedule is short so that pretrain + probe + eval fit a CPU; on an accelerator raise
  `train.epochs` (e.g. 200) and `probe.epochs`.
  """
  c = base_config(dataset="fashion_mnist_lt", image_size=28, channels=1, depth=20, style="cifar",
                  method=method)
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


def paco_recipe(c: ml_collections.ConfigDict, method: str, *, alpha: float, temperature: float, lr: float,
                weight_decay: float, queue_size: int, key_randaugment: bool = False) -> ml_collections.ConfigDict:
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
  c.augment.query = dict(jitter=(0.4, 0.4, 0.4, 0.0), jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0,
                         randaugment_ops=2, randaugment_magnitude=10)
  c.augment.key = dict(jitter=(0.4, 0.4, 0.4, 0.0), jitter_prob=1.0, grayscale_prob=0.2, blur_prob=0.5,
                       randaugment_ops=2 if key_randaugment else 0, randaugment_magnitude=10)
  return c
