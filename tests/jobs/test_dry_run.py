"""`--config.dry_run`: the largest-batch arithmetic on a hand-worked case; the abstract compile's memory
against the step compiled on real arrays; the command reads no data; and, on 8 simulated devices, the
step's work is split over the devices (per-device FLOPs x 8 = one device's), which is what caught the
key encoder and the small crops running on the whole global batch on every device."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs.common import fashion_mnist_lt_config
from data.registry import BUILDERS, SHAPES, get_dataset
from dscl_jax.config.schema import load_config_file
from dscl_jax.core import sharding
from dscl_jax.core.build import init_pretrain_state
from dscl_jax.input import synthetic
from dscl_jax.jobs import dry_run
from dscl_jax.methods import get_method
from tests import REPO_ROOT, cpu_env

GIB = 2**30
REPO = REPO_ROOT


def test_largest_batch_on_a_hand_worked_case():
  # 10 GiB at batch 256, 6 GiB at 128: 32 MiB per sample, 2 GiB fixed; 16 GiB leaves room for 448 samples,
  # 384 as a multiple of 128.
  batch, per_sample = dry_run.largest_batch(256, 10 * GIB, 128, 6 * GIB, 16 * GIB, 128)
  assert per_sample == 32 * 2**20 and batch == 384
  assert dry_run.largest_batch(256, 10 * GIB, 128, 6 * GIB, 16 * GIB, 64)[0] == 448
  assert dry_run.largest_batch(256, 10 * GIB, 128, 6 * GIB, GIB, 8)[0] == 0  # not even the fixed part fits


def test_dataset_shapes_match_the_built_datasets():
  assert set(SHAPES) == set(BUILDERS)
  names = ["digits_lt"] + (["fashion_mnist_lt"] if os.path.isdir("/usr/share/datasets/fashion-mnist") else [])
  for name in names:
    dataset = get_dataset(ml_collections.ConfigDict({"name": name, "imbalance_factor": 10.0, "seed": 0, "root": ""}))
    assert SHAPES[name] == (dataset.num_classes, dataset.channels)


def small_config(method="dscl"):
  c = fashion_mnist_lt_config(method)
  c.model.depth = 8
  c.train.batch_size = 32
  c.model.key_bn_group_size = 8
  c.moco.queue_size = 256
  return c


def test_abstract_compile_memory_matches_the_real_step():
  config = small_config()
  config.pbsd.enabled = True
  mesh = sharding.make_mesh(1)
  compiled, _ = dry_run.compile_step(config, get_method(config), mesh, 10, 1)
  abstract = dry_run.memory_bytes(compiled)

  # The same step compiled on real arrays: an initialised state and a synthetic batch.
  from dscl_jax.core import optim
  from dscl_jax.core.build import build_models, jit_pretrain_step

  schedule = optim.warmup_cosine_schedule(0.1, 1000, 10)
  tx = optim.sgd(schedule, config.train.momentum, config.train.weight_decay)
  online, target = build_models(config, get_method(config), 10)
  state = init_pretrain_state(config, get_method(config), online, tx, 10, 1, mesh, np.ones(10))
  batch = sharding.to_global(
    synthetic.pretrain_batch(
      config, get_method(config).requirements.views, 1, 10, np.random.default_rng(0), pixels=True
    ),
    mesh,
  )
  real = jit_pretrain_step(config, get_method(config), online, target, tx, schedule, mesh).lower(state, batch).compile()
  measured = dry_run.memory_bytes(real)
  assert measured["total"] > 0
  assert abs(abstract["total"] - measured["total"]) <= 0.2 * measured["total"], (abstract, measured)
  assert abstract["arguments"] == measured["arguments"]
  # The FLOPs of the DSCL + PBSD step: at least the query's forward and backward (3x the forward).
  assert dry_run.step_flops(compiled) > 0


def test_the_command_reads_no_data(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "dscl_jax.main",
      f"--config={REPO}/configs/fashion_mnist_lt_dscl.py",
      f"--workdir={tmp_path / 'work'}",
      "--config.dry_run=True",
      "--config.model.depth=8",
      "--config.dry_run_memory_gib=2",
      f"--config.data.root={tmp_path / 'no_such_dir'}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  # ResNet-8 (CIFAR style) on 1 channel: 77,104 trunk + 12,480 projection-head parameters, counted by hand.
  assert "parameters 89,584 (0.09M)" in out.stdout and "FLOPs per step" in out.stdout
  assert "largest global batch within 2 GiB per device" in out.stdout
  assert not (tmp_path / "work").exists()  # nothing written


SPLIT_CHECK = """
import json, sys
import numpy as np
from dscl_jax.core import sharding
from dscl_jax.jobs.dry_run import compile_step, memory_bytes, step_flops
from dscl_jax.methods import get_method
sys.path.insert(0, sys.argv[1])
from tests.jobs.test_dry_run import small_config
out = {}
# The key path (DSCL, SupCon, PaCo, GPaCo share it) and the small crops, and ICCL's class-aware view.
for method, pbsd, multicrop in (("dscl", True, False), ("iccl", False, False)):
  c = small_config(method)
  c.pbsd.enabled, c.pbsd.multicrop = pbsd, multicrop
  for devices in (1, 8):
    compiled, _ = compile_step(c, get_method(c), sharding.make_mesh(devices), 10, 1)
    out[f"{method}{'_pbsd' * pbsd}{'_multicrop' * multicrop}/{devices}"] = (
        step_flops(compiled), memory_bytes(compiled)["temporaries"])
print(json.dumps(out))
"""


def test_the_step_is_split_over_eight_devices():
  env = cpu_env(8)
  out = subprocess.run(
    [sys.executable, "-c", SPLIT_CHECK, REPO], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
  )
  assert out.returncode == 0, out.stderr[-3000:]
  figures = json.loads(out.stdout.strip().splitlines()[-1])
  for case in {k.split("/")[0] for k in figures}:
    (flops1, temp1), (flops8, temp8) = figures[f"{case}/1"], figures[f"{case}/8"]
    # Every convolution of the step runs on the device's own 4 images; what is left replicated (the loss
    # over the gathered embeddings, the queue, the update) is a few per cent.
    assert flops8 * 8 == pytest.approx(flops1, rel=0.05), (case, flops1, flops8)
    assert temp8 < temp1, (case, temp1, temp8)


def test_the_largest_batch_is_one_the_config_accepts():
  # 640 is a multiple of the 8 devices and of the 128-sample key BatchNorm groups, but the 65536-entry
  # queue takes whole batches only: 512 is the largest batch the validation accepts below it.
  config = load_config_file(os.path.join(REPO, "configs", "imagenet_lt_dscl_pbsd.py"))
  assert dry_run.batch_multiple(config, 8) == 128
  assert dry_run.accepted_batch(config, 640, 128, 8, 1) == 512
  assert dry_run.accepted_batch(config, 127, 128, 8, 1) == 0
