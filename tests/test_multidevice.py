"""The same steps on 1 and on 8 simulated CPU devices give the same losses, params and queue."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "step_runner.py")


def run_on(devices, out, *args):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, RUNNER, str(out), *args], check=True, env=env, timeout=600)
  return dict(np.load(out))


@pytest.mark.parametrize("args", [(), ("--pbsd",), ("--method", "ce")], ids=["dscl", "dscl_pbsd", "ce"])
def test_one_vs_eight_devices(tmp_path, args):
  one = run_on(1, tmp_path / "one.npz", *args)
  eight = run_on(8, tmp_path / "eight.npz", *args)
  assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
  assert set(one) == set(eight)
  np.testing.assert_allclose(one["loss"], eight["loss"], rtol=1e-4, atol=1e-5)
  if "queue" in one:
    np.testing.assert_array_equal(one["queue_labels"], eight["queue_labels"])
  assert int(one["queue_ptr"]) == int(eight["queue_ptr"])
  for name in sorted(one):
    if name in ("devices", "loss", "queue_labels", "queue_ptr"):
      continue
    np.testing.assert_allclose(one[name], eight[name], rtol=2e-3, atol=2e-4, err_msg=name)


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_device(tmp_path):
  """Two jax.distributed processes on localhost (2 CPU devices each): one 4-device mesh, each process
  feeding its own rows of the global batch, give the single-device numbers."""
  one = run_on(1, tmp_path / "one.npz", "--pbsd")
  port = free_port()
  procs = []
  for process_id in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    procs.append(subprocess.Popen([sys.executable, RUNNER, str(tmp_path / "two.npz"), "--pbsd"], env=env))
  assert [p.wait(timeout=600) for p in procs] == [0, 0]
  two = dict(np.load(tmp_path / "two.npz"))
  assert int(two["processes"]) == 2 and int(two["devices"]) == 4
  np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(one["queue_labels"], two["queue_labels"])
  for name in sorted(one):
    if name.startswith(("params", "target", "stats")) or name == "queue":
      np.testing.assert_allclose(one[name], two[name], rtol=2e-3, atol=2e-4, err_msg=name)
