"""Tests grouped like the package's layers (tests/core, tests/input, ...); shared helpers live here."""

import os

# The repository root and this folder, for tests in any subfolder (configs, tools, the split lists in
# ../shared are found relative to the root).
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


def cpu_env(devices: int | None = None, **extra: str) -> dict:
  """The environment for a subprocess on the CPU: this one's, with `devices` simulated CPU devices when
  given (added to the inherited XLA_FLAGS, which carry the suite's compile settings, tests/conftest.py)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
  if devices is not None:
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  return env


def run_main(*args: str, cwd=REPO_ROOT, timeout: float = 900):
  """`python -m dscl_jax.main *args` on the CPU from the repository root: its CompletedProcess (text)."""
  import subprocess
  import sys

  return subprocess.run(
    [sys.executable, "-m", "dscl_jax.main", *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=cpu_env(),
  )
