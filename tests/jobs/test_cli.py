"""The command line's own messages: an unknown `--config.<field>` is named in one line with the closest
known fields, in words of ours (not ml_collections' exception text rebuilt)."""

import os
import subprocess
import sys

from dscl_jax import main
from tests import REPO_ROOT

ROOT = REPO_ROOT


def test_unknown_override_names_the_field_and_the_closest_ones():
  argv = ["main", "--config", "configs/digits_lt_dscl.py", "--config.train.epochs=3", "--config.train.batchsize=3"]
  message = main.unknown_override(argv)
  assert message.startswith("--config.train.batchsize=3: the config has no field 'train.batchsize'; did you mean ")
  assert "train.batch_size" in message
  assert main.unknown_override(argv[:4]) is None
  assert main.unknown_override(["main", "--config.trainn.batch_size=1"]).startswith(
    "--config.trainn.batch_size=1: the config has no field 'trainn.batch_size'"
  )


def test_an_unknown_override_fails_in_one_line():
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "dscl_jax.main",
      "--config",
      "configs/digits_lt_dscl.py",
      "--workdir",
      "/nonexistent/unused",
      "--config.train.batchsize=3",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert lines == [
    "error: --config.train.batchsize=3: the config has no field 'train.batchsize'; did you mean "
    "train.batch_size or eval.batch_size or train.base_lr?"
  ], out.stderr
