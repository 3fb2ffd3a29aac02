"""The command line on one workdir, as a user meets it over a long run: resume refuses a changed config
unless told, eval restores only what it needs, and TensorBoard events and eval figures are written."""

import json
import os
import subprocess
import sys

import pytest

from tests import REPO_ROOT

pytestmark = pytest.mark.slow

ROOT = REPO_ROOT


def run(workdir, *overrides):
  command = [
    sys.executable,
    "-m",
    "dscl_jax.main",
    "--config",
    "configs/digits_lt_dscl.py",
    "--workdir",
    str(workdir),
    "--config.train.log_every=3",
    "--config.train.checkpoint_every=3",
    "--config.probe.max_steps=4",
    "--config.probe.log_every=2",
    *overrides,
  ]
  return subprocess.run(
    command, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=600
  )


def test_resume_eval_and_outputs_on_one_workdir(tmp_path):
  workdir = tmp_path / "run"
  first = run(workdir, "--config.mode=pretrain", "--config.train.max_steps=6")
  assert first.returncode == 0, first.stderr[-3000:]

  changed = run(workdir, "--config.mode=pretrain", "--config.train.max_steps=9", "--config.train.base_lr=0.2")
  assert changed.returncode != 0
  assert "Traceback" not in changed.stderr, changed.stderr[-3000:]
  assert "changed: train.base_lr: 0.1 -> 0.2." in changed.stderr
  assert not (workdir / ".lock").exists()  # released on the way out

  # Damage the newest step: the resumed run reports it in one line and falls back to step 3.
  step_dir = workdir / "pretrain" / "checkpoints" / "6"
  arrays = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  max(arrays, key=lambda p: p.stat().st_size).unlink()
  allowed = run(
    workdir,
    "--config.mode=pretrain",
    "--config.train.max_steps=9",
    "--config.train.base_lr=0.2",
    "--config.allow_config_change=True",
  )
  assert allowed.returncode == 0, allowed.stderr[-3000:]
  assert "Traceback" not in allowed.stderr, allowed.stderr[-3000:]  # no asyncio traces from the failed read
  damaged = [line for line in allowed.stdout.splitlines() if "damaged" in line]
  assert len(damaged) == 1 and f"damaged checkpoint {step_dir} (missing file state/" in damaged[0]
  assert damaged[0].endswith("; falling back to step 3")
  assert "resuming from step 3" in allowed.stdout
  assert "resuming with a changed config (allow_config_change): train.base_lr: 0.1 -> 0.2" in allowed.stdout

  events = [name for name in os.listdir(workdir / "pretrain") if "tfevents" in name]
  assert events, os.listdir(workdir / "pretrain")

  probe = run(workdir, "--config.mode=linear_probe", "--config.train.base_lr=0.2")
  assert probe.returncode == 0, probe.stderr[-3000:]
  # Eval with a field that only pretraining uses changed: the trunk is all it restores.
  evaluated = run(workdir, "--config.mode=eval", "--config.train.base_lr=0.2", "--config.moco.queue_size=128")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  report = json.loads((workdir / "eval_test.json").read_text())
  assert report["num_images"] == 500 and 0 <= report["overall"] <= 100
  for figure in ("eval_test_per_class.png", "eval_test_confusion.png"):
    assert (workdir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure

  # A true shape change is named with its path and the field that sets it.
  wrong = run(workdir, "--config.mode=eval", "--config.train.base_lr=0.2", "--config.model.depth=14")
  assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
  assert "/trunk/" in wrong.stderr and "model.depth" in wrong.stderr
