"""The command line's own messages: an unknown `--config.<field>` is named in one line with the closest
known fields, in words of ours (not ml_collections' exception text rebuilt); a missing, broken or wrong
config file and a workdir whose filesystem package is missing fail in one line before JAX starts."""

import importlib.util
import subprocess
import sys
import time

import pytest

from dscl_jax import main
from tests import REPO_ROOT, run_main

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
  out = run_main(
    "--config",
    "configs/digits_lt_dscl.py",
    "--workdir",
    "/nonexistent/unused",
    "--config.train.batchsize=3",
    timeout=300,
  )
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert lines == [
    "error: --config.train.batchsize=3: the config has no field 'train.batchsize'; did you mean "
    "train.batch_size or eval.batch_size or train.base_lr?"
  ], out.stderr


def main_lines(*args, cwd=ROOT):
  """(exit status, stderr lines, seconds) of `python -m dscl_jax.main args`."""
  start = time.monotonic()
  out = run_main(*args, cwd=cwd, timeout=120)
  return out.returncode, out.stderr.strip().splitlines(), time.monotonic() - start


CONFIG_FILES = {
  "syntax": "from dscl_jax.config.schema import base_config\n\ndef get_config(:\n  return base_config()\n",
  "no_get_config": "from dscl_jax.config.schema import base_config\n\nCONFIG = base_config()\n",
  "returns_dict": "def get_config():\n  return {'train': {'epochs': 3}}\n",
}


@pytest.mark.parametrize(
  "name, expected",
  [
    ("missing", ": no such file"),
    ("syntax", ": syntax error at line 3: invalid syntax: 'def get_config(:'"),
    ("no_get_config", ": defines no get_config()"),
    ("returns_dict", ": get_config() returned a dict ({'train': {'epochs': 3}}), not an ml_collections.ConfigDict"),
  ],
)
def test_a_bad_config_file_fails_in_one_line_naming_it(tmp_path, name, expected):
  path = tmp_path / f"{name}.py"
  if name in CONFIG_FILES:
    path.write_text(CONFIG_FILES[name])
  rc, lines, _ = main_lines("--config", str(path), "--workdir", str(tmp_path / "run"))
  assert rc != 0
  assert len(lines) == 1 and lines[0].startswith(f"error: --config {path}{expected}"), lines
  assert not (tmp_path / "run").exists()


def test_an_override_of_a_config_that_is_not_a_configdict_names_the_config(tmp_path):
  path = tmp_path / "returns_dict.py"
  path.write_text(CONFIG_FILES["returns_dict"])
  rc, lines, _ = main_lines("--config", str(path), "--workdir", str(tmp_path / "run"), "--config.train.epochs=1")
  assert rc != 0
  assert len(lines) == 1 and lines[0].startswith(f"error: --config {path}: get_config() returned a dict ("), lines
  assert lines[0].endswith("not an ml_collections.ConfigDict"), lines


def test_the_config_checks_do_not_import_jax(tmp_path):
  code = (
    "import sys, dscl_jax.main as m; m.config_file_problem('configs/digits_lt_dscl.py'); print('jax' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.stdout.strip() == "False", out.stderr


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_a_gs_workdir_without_gcsfs_fails_in_one_line_before_anything_runs():
  rc, lines, seconds = main_lines("--config", "configs/digits_lt_dscl.py", "--workdir", "gs://no-such-bucket/x")
  assert rc != 0
  assert lines == [
    "error: --workdir gs://no-such-bucket/x: gs:// paths need gcsfs, which is not installed; pip install gcsfs"
  ], lines
  assert seconds < 30  # no JAX start-up, no data, no network
