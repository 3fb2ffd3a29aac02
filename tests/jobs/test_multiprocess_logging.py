"""A run of two jax.distributed processes prints its progress lines and its eval table once, from
process 0; process 1 prints none of them (it would print its own errors)."""

import os
import subprocess
import sys

import pytest

from tests import REPO_ROOT, cpu_env
from tests.core.test_multidevice import free_port

pytestmark = pytest.mark.slow
ROOT = REPO_ROOT
SHORT = [
  "--config.train.max_steps=2",
  "--config.train.log_every=1",
  "--config.probe.max_steps=2",
  "--config.probe.log_every=1",
  "--config.eval.knn_k=0",
  "--config.eval.logistic_regression=False",
]


def test_only_process_zero_prints_logs_and_tables(tmp_path):
  port = free_port()
  procs = []
  for process_id in range(2):
    env = cpu_env(1, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    procs.append(
      subprocess.Popen(
        [
          sys.executable,
          "-m",
          "dscl_jax.main",
          "--config",
          "configs/digits_lt_dscl.py",
          "--workdir",
          str(tmp_path / "run"),
          *SHORT,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outputs = [p.communicate(timeout=900) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
  first, second = outputs[0][0], outputs[1][0]
  for line in ("[pretrain] step 2/2", "[probe] step 2/2", "| linear_probe |", "[eval] wrote"):
    assert first.count(line) == 1, (line, first)
    assert line not in second, (line, second)
  assert not any(line.startswith(("[pretrain]", "[probe]", "[eval]", "|")) for line in second.splitlines()), second
