"""Every config in configs/ validates and builds; its pretrain step runs two steps on random data of its
real shapes (one config per dataset family, the ImageNet-LT one at a CPU-sized batch) or is traced at its
real shapes and batch (the others, see EXECUTED).
"""

import glob
import os

import jax
import numpy as np
import pytest

from data.registry import SHAPES
from dscl_jax.config import validation
from dscl_jax.config.schema import load_config_file as load_config
from dscl_jax.core import optim, sharding
from dscl_jax.core.build import abstract_pretrain_state, build_models, init_pretrain_state
from dscl_jax.core.step import make_pretrain_step
from dscl_jax.input import synthetic
from dscl_jax.methods import get_method
from tests import REPO_ROOT

CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
# Experiment files only: configs/common.py holds shared recipes, __init__.py makes configs a package.
CONFIGS = sorted(
  p for p in glob.glob(os.path.join(CONFIG_DIR, "*.py")) if os.path.basename(p) not in ("common.py", "__init__.py")
)


def test_there_are_configs():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {"digits_lt_dscl.py", "fashion_mnist_lt_dscl.py", "imagenet_lt_dscl_pbsd.py"} <= names


# Compiling a step costs 20 s (ResNet-20) to minutes (ResNet-50/152 at 224 px) on a CPU, and every method
# already runs real steps in test_method_step / test_multidevice. So one config per dataset family is
# executed (the flagship ImageNet-LT DSCL + PBSD recipe at a CPU-sized batch); the others are traced
# at their real shapes and batch (jax.eval_shape: every shape, dtype and config field the step
# touches, without compiling).
EXECUTED = {
  "digits_lt_dscl.py",
  "fashion_mnist_lt_dscl_pbsd.py",
  "cifar100_lt_dscl_pbsd.py",
  "imagenet_lt_dscl_pbsd.py",
}


def is_large(config):
  return config.augment.image_size >= 128


def executed(path):
  return os.path.basename(path) in EXECUTED


def build(config):
  num_classes, channels = SHAPES[config.data.name]  # (classes, channels): no data on disk
  mesh = sharding.make_mesh(-1)
  validation.validate(config, mesh.devices.size)
  schedule = optim.warmup_cosine_schedule(config.train.base_lr, 100, 10)
  tx = optim.sgd(schedule, config.train.momentum, config.train.weight_decay)
  online, target = build_models(config, get_method(config), num_classes)
  step = make_pretrain_step(config, get_method(config), online, target, tx, schedule)
  return num_classes, channels, mesh, tx, online, step


COUNTS = {n: np.linspace(100, 1, n).round() for n, _ in SHAPES.values()}  # long-tailed: methods with a prior


@pytest.mark.slow
@pytest.mark.parametrize(
  "path", [p for p in CONFIGS if executed(p)], ids=[os.path.basename(p)[:-3] for p in CONFIGS if executed(p)]
)
def test_config_runs_two_steps(path):
  config = load_config(path)
  # A CPU-sized batch, everything else as configured: the batch size changes how long a step takes on
  # this CPU, not which code runs (CIFAR-100-LT's 256 made its two steps 3x slower than at 32).
  if is_large(config):
    config.train.batch_size = 4
    config.model.key_bn_group_size = 2
  elif config.train.batch_size > 32:
    config.train.batch_size = 32
    config.model.key_bn_group_size = min(config.model.key_bn_group_size, 16)
  num_classes, channels, mesh, tx, online, step_fn = build(config)
  state = init_pretrain_state(config, get_method(config), online, tx, num_classes, channels, mesh, COUNTS[num_classes])
  step = jax.jit(step_fn, donate_argnums=0)
  rng = np.random.default_rng(0)
  for i in range(2):
    batch = synthetic.pretrain_batch(config, get_method(config).requirements.views, channels, num_classes, rng)
    state, metrics = step(state, sharding.to_global(batch, mesh))
    assert np.isfinite(float(metrics["loss"])), (path, i, metrics)
  assert int(state.step) == 2
  if state.queue is not None:
    assert int(state.queue_ptr) == (2 * config.train.batch_size) % config.moco.queue_size
    if config.pbsd.enabled:
      assert float(metrics["pbsd"]) > 0


@pytest.mark.parametrize(
  "path", [p for p in CONFIGS if not executed(p)], ids=[os.path.basename(p)[:-3] for p in CONFIGS if not executed(p)]
)
def test_config_step_traces_at_its_real_shapes(path):
  config = load_config(path)  # the configured batch (256 or 128) and image size: nothing is computed
  num_classes, channels, mesh, tx, online, step_fn = build(config)
  state = abstract_pretrain_state(config, get_method(config), online, tx, num_classes, channels, COUNTS[num_classes])
  batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
    synthetic.pretrain_batch(
      config, get_method(config).requirements.views, channels, num_classes, np.random.default_rng(0)
    ),
  )
  new_state, metrics = jax.eval_shape(step_fn, state, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
    assert (before.shape, before.dtype) == (after.shape, after.dtype)
  assert metrics["loss"].shape == () and metrics["skipped"].shape == ()
  if config.moco.queue_size and state.queue is not None:
    assert state.queue.shape == (config.moco.queue_size, config.model.embed_dim)
