"""The config schema: every field a run reads, with its default and what it means (`base_config`).
Experiments live in configs/ (shared recipes in configs/common.py); each calls `base_config(...)` and
changes what differs. Every field can be overridden on the command line, e.g.
`--config.train.batch_size=512`.
"""

from __future__ import annotations

import difflib
import functools
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


def flat_keys(tree, prefix: str = "") -> set[str]:
  """Every dotted field name of a nested dict ("train", "train.batch_size", ...)."""
  keys = set()
  for key, value in tree.items():
    name = f"{prefix}{key}"
    keys.add(name)
    if isinstance(value, dict):
      keys |= flat_keys(value, name + ".")
  return keys


@functools.cache
def _known_fields() -> frozenset[str]:
  base = base_config(dataset="digits_lt", image_size=32, channels=3, depth=20, style="cifar")
  return frozenset(flat_keys(base.to_dict()))


def known_fields() -> set[str]:
  """Every field name of the base config (the schema every config file extends)."""
  return set(_known_fields())


def closest_fields(field: str) -> list[str]:
  """Up to three known field names close to `field` (for "did you mean" hints)."""
  return difflib.get_close_matches(field, _known_fields(), n=3, cutoff=0.6)


def base_config(
  *, dataset: str, image_size: int, channels: int, depth: int, style: str, method: str = "dscl"
) -> ml_collections.ConfigDict:
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
  c.data.tfds_data_dir = (
    ""  # tfds-backed datasets (CIFAR-LT, imagenet_lt_tfds, inat18_tfds): the tfds data_dir; empty: data.root
  )

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

  c.ce = ml_collections.ConfigDict()
  # True: cross-entropy with ICCL's class-aware second sample and mixup (dscl_jax/methods/ce.py).
  c.ce.class_aware_mixup = False

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
  # True: the classifier sees each feature standardised with its mean and std over the training split's
  # evaluation view (recomputed from the trunk by the probe and by eval, folded into the weights for
  # eval), as the logistic regression does. The reference probes raw features; see
  # `core.build.feature_statistics`.
  c.probe.standardize_features = False

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
