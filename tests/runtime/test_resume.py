"""Killing a pretrain run mid-way and rerunning the same command reaches the same final state, bit for bit
(DSCL, and PaCo with RandAugment on the query so the augmentation stream is covered too)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import REPO_ROOT

pytestmark = pytest.mark.slow

# 4 epochs of 15 steps: the kill lands at step 10-15, so the resumed run crosses epoch boundaries.
TOTAL_STEPS = 60


METHOD_OVERRIDES = {
  "dscl": [],
  "paco": ["--config.method=paco", "--config.loss.temperature=0.2", "--config.augment.query.randaugment_ops=2"],
  "iccl": ["--config.method=iccl"],
}


def command(workdir, method, checkpoint_every=5):
  return [
    sys.executable,
    "-m",
    "dscl_jax.main",
    "--config",
    "configs/digits_lt_dscl.py",
    "--workdir",
    str(workdir),
    "--config.mode=pretrain",
    "--config.train.batch_size=32",
    "--config.moco.queue_size=64",
    "--config.model.key_bn_group_size=16",
    f"--config.train.max_steps={TOTAL_STEPS}",
    f"--config.train.checkpoint_every={checkpoint_every}",
    "--config.train.log_every=2",  # records after the last checkpoint exist at the kill
    *METHOD_OVERRIDES[method],
  ]


def steps_saved(workdir):
  directory = os.path.join(workdir, "pretrain", "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def final_params(workdir):
  path = os.path.join(workdir, "pretrain", "checkpoints", str(TOTAL_STEPS), "state")
  return ocp.PyTreeCheckpointer().restore(os.path.abspath(path))


def logged_steps(workdir):
  return [json.loads(line)["step"] for line in (workdir / "pretrain" / "metrics.jsonl").read_text().splitlines()]


ROOT = REPO_ROOT


@pytest.mark.parametrize("method", sorted(METHOD_OVERRIDES))
def test_kill_and_resume_matches_uninterrupted(tmp_path, method):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  # The reference saves only its last step: how often a run checkpoints must not change what it computes.
  subprocess.run(
    command(straight, method, checkpoint_every=1000), check=True, cwd=ROOT, env=env, timeout=600, capture_output=True
  )

  proc = subprocess.Popen(
    command(resumed, method), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if any(s >= 10 for s in steps_saved(resumed)):
      proc.send_signal(signal.SIGKILL)  # no chance to save: resume must use the periodic checkpoint
      break
    time.sleep(0.02)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = max(steps_saved(resumed))
  assert 10 <= killed_at < TOTAL_STEPS

  out = subprocess.run(
    command(resumed, method), check=True, cwd=ROOT, env=env, timeout=600, capture_output=True, text=True
  )
  assert f"resuming from step {killed_at}" in out.stdout

  assert logged_steps(resumed) == logged_steps(straight)  # each logged step once, in order, across the kill

  a, b = final_params(straight), final_params(resumed)
  assert int(a["step"]) == int(b["step"]) == TOTAL_STEPS
  leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [path for path, _ in leaves_a] == [path for path, _ in leaves_b]
  assert any("class_prior" in jax.tree_util.keystr(path) for path, _ in leaves_a) == (method == "paco")
  for (path, x), (_, y) in zip(leaves_a, leaves_b):  # every leaf: params, optimiser, target, queue, RNG, ...
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
