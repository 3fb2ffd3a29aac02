"""Every config in configs/ builds and runs two pretrain steps on random data of its real shapes.

The ImageNet-scale configs run with a reduced batch (the override a user would pass on a small machine);
image size, model, queue length, embedding size and PBSD crops stay as configured.
"""

import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from dscl_jax import optim, sharding, synthetic
from dscl_jax.step import make_pretrain_step
from dscl_jax.train import build_models, init_pretrain_state, validate_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
# (classes, channels) of each dataset, so no data has to be on disk.
DATASETS = {"digits_lt": (10, 1), "fashion_mnist_lt": (10, 1), "cifar10_lt": (10, 3), "cifar100_lt": (100, 3),
            "imagenet_lt": (1000, 3), "places_lt": (365, 3), "inat18": (8142, 3)}


def load_config(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_there_are_configs():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {"digits_lt_dscl.py", "fashion_mnist_lt_dscl.py", "imagenet_lt_dscl_pbsd.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p)[:-3] for p in CONFIGS])
def test_config_runs_two_steps(path):
  config = load_config(path)
  num_classes, channels = DATASETS[config.data.name]
  if config.augment.image_size >= 128:  # ImageNet-scale: a CPU-sized batch, everything else as configured
    config.train.batch_size = 4
    config.model.key_bn_group_size = 2
  mesh = sharding.make_mesh(-1)
  validate_config(config, mesh)
  schedule = optim.warmup_cosine_schedule(config.train.base_lr, 100, 10)
  tx = optim.sgd(schedule, config.train.momentum, config.train.weight_decay)
  online, target = build_models(config, num_classes)
  counts = np.linspace(100, 1, num_classes).round()  # long-tailed, for the methods with a class prior
  state = init_pretrain_state(config, online, tx, num_classes, channels, mesh, counts)
  step = jax.jit(make_pretrain_step(config, online, target, tx, schedule), donate_argnums=0)
  rng = np.random.default_rng(0)
  for i in range(2):
    batch = synthetic.pretrain_batch(config, channels, num_classes, rng)
    state, metrics = step(state, sharding.to_global(batch, mesh))
    assert np.isfinite(float(metrics["loss"])), (path, i, metrics)
  assert int(state.step) == 2
  if state.queue is not None:
    assert int(state.queue_ptr) == (2 * config.train.batch_size) % config.moco.queue_size
    if config.pbsd.enabled:
      assert float(metrics["pbsd"]) > 0
