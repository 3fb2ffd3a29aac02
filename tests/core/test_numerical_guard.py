"""The numerical guard: a non-finite step changes nothing but the step and the skip counters, and a
diverging run stops with a message, leaving only finite checkpoints."""

import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dscl_jax.core import sharding
from tests import REPO_ROOT
from tests.step_runner import case_config, random_batches, setup

ROOT = REPO_ROOT


def host_leaves(state):
  return {jax.tree_util.keystr(path): np.array(x) for path, x in jax.tree_util.tree_leaves_with_path(state)}


@pytest.mark.parametrize("case", ["dscl", "paco", "iccl"])
def test_a_non_finite_step_leaves_the_state_unchanged(case):
  config = case_config(case)
  state, step, mesh = setup(config)
  batches = list(random_batches(config, 3))
  state, metrics = step(state, sharding.to_global(batches[0], mesh))
  assert float(metrics["skipped"]) == 0.0
  before = host_leaves(state)

  poisoned = dict(batches[1])
  poisoned["query"] = poisoned["query"].copy()
  poisoned["query"][0, 0, 0, 0] = np.nan  # one pixel: BatchNorm spreads it to the whole batch
  state, metrics = step(state, sharding.to_global(poisoned, mesh))
  assert float(metrics["skipped"]) == 1.0 and int(metrics["skipped_in_a_row"]) == 1
  after = host_leaves(state)
  assert after.keys() == before.keys()
  for name in before:
    if name.endswith(("step", "skipped_in_a_row", "skipped_total")):
      continue
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)  # bitwise: nothing moved
  assert int(state.step) == 2 and int(state.skipped_total) == 1 and int(state.skipped_in_a_row) == 1

  state, metrics = step(state, sharding.to_global(batches[2], mesh))
  assert float(metrics["skipped"]) == 0.0 and np.isfinite(float(metrics["loss"]))
  assert int(state.skipped_in_a_row) == 0 and int(state.skipped_total) == 1  # the streak resets, the total stays
  changed = host_leaves(state)
  moved = [name for name in after if name.startswith(".params") and not np.array_equal(changed[name], after[name])]
  assert moved, "a finite step after a skipped one must update the parameters again"


@pytest.mark.slow
def test_a_diverging_run_stops_and_leaves_only_finite_checkpoints(tmp_path):
  # base_lr 1e8 makes the digits model overflow within a few steps. log_every 3 does not divide
  # checkpoint_every 2: checkpoints fall on steps that are never logged, where the old loop never looked.
  workdir = tmp_path / "run"
  command = [
    sys.executable,
    "-m",
    "dscl_jax.main",
    "--config",
    "configs/digits_lt_dscl.py",
    "--workdir",
    str(workdir),
    "--config.mode=pretrain",
    "--config.train.base_lr=1e8",
    "--config.train.warmup_epochs=0",
    "--config.train.max_steps=40",
    "--config.train.log_every=3",
    "--config.train.checkpoint_every=2",
    "--config.train.max_skipped_steps=3",
  ]
  out = subprocess.run(
    command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=600
  )
  assert out.returncode != 0, out.stdout[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert "update skipped (3 in a row)" in out.stdout
  assert "3 steps in a row" in out.stderr and "had a non-finite loss, gradient or state" in out.stderr
  directory = workdir / "pretrain" / "checkpoints"
  steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
  assert steps, "the run should have checkpointed before diverging"
  assert f"the last good checkpoint is {directory / str(steps[-1])}" in out.stderr
  for step in steps:
    tree = ocp.PyTreeCheckpointer().restore(str(directory / str(step) / "state"))
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
      x = np.asarray(x)
      if np.issubdtype(x.dtype, np.floating):
        assert np.isfinite(x).all(), (step, jax.tree_util.keystr(path))
