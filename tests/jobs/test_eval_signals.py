"""SIGTERM or Ctrl-C during `eval` stops it in one line, without a traceback, and releases the workdir lock
(SIGTERM's default action used to end the process without unwinding, leaving `<workdir>/.lock`)."""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dscl_jax.core import build
from dscl_jax.runtime.interrupt import StopAtOnce
from tests import REPO_ROOT, TESTS_DIR
from tests.test_layout import fixture_config

# A finished pretrain + probe (digits, 2 steps each) kept as a fixture: making one with the command line
# takes about a minute on a loaded machine, evaluating it a few seconds.
FIXTURE = os.path.join(TESTS_DIR, "fixtures", "pre_layout_checkpoint")
FIXTURE_OVERRIDES = [
  "--config.moco.queue_size=64",
  "--config.model.embed_dim=8",
  "--config.model.head_hidden_dim=8",
  "--config.train.batch_size=32",
  "--config.model.key_bn_group_size=16",
]


def read_until(proc, marker: bytes, timeout: float) -> bytes:
  """stdout of `proc` up to and including the first line holding `marker` (or all of it, if it ends first)."""
  out, deadline = b"", time.time() + timeout
  fd = proc.stdout.fileno()
  while marker not in out and time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], max(deadline - time.time(), 0))
    chunk = os.read(fd, 65536) if ready else b""
    if ready and not chunk:
      break
    out += chunk
  return out


def record_the_probes_trunk(workdir) -> None:
  """The fixture's probe predates probe provenance: record the trunk it was trained on (the fixture's own
  pretrain checkpoint), so that eval accepts it and runs long enough to be signalled."""
  config = fixture_config()
  setup = build.setup_job(config)
  loaded, source = build.load_pretrained(config, setup, workdir)
  record = build.trunk_record(loaded["trunk"], source)
  (workdir / "probe" / build.PROBE_TRUNK_RECORD).write_text(json.dumps(record))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_eval_in_one_line_and_releases_the_lock(tmp_path, signum):
  workdir = tmp_path / "run"
  shutil.copytree(FIXTURE, workdir)
  record_the_probes_trunk(workdir)
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "dscl_jax.main",
      "--config",
      "configs/digits_lt_dscl.py",
      "--workdir",
      str(workdir),
      "--config.mode=eval",
      "--config.eval.logistic_regression=True",
      *FIXTURE_OVERRIDES,
    ],
    cwd=REPO_ROOT,
    env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1"),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )
  try:
    # The dataset line comes from the job's setup: the command is past taking the lock, and evaluating
    # takes seconds more (features, logistic regression).
    started = read_until(proc, b"[data]", timeout=120)
    assert b"[data]" in started, started.decode()
    proc.send_signal(signum)
    rest, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  stderr = stderr.decode()
  assert proc.returncode == 1, (proc.returncode, stderr)
  assert "Traceback" not in stderr, stderr
  message = f"[eval] stopped by signal {int(signum)} before finishing; rerun the same command to evaluate again"
  assert stderr.strip().splitlines()[-1] == message, stderr
  assert not (workdir / ".lock").exists()
  assert not (workdir / "eval_test.json").exists()  # stopped before the report, not after it


def test_stop_at_once_raises_one_line_then_restores_the_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit, match=r"^\[job\] stopped by signal 15 before finishing; rerun it$"):
    with StopAtOnce("job", "rerun it"):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler raises here, at the next bytecode
  assert signal.getsignal(signal.SIGTERM) is before
