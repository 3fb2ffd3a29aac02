"""Tests grouped like the package's layers (tests/core, tests/input, ...); shared helpers live here."""

import os

# The repository root and this folder, for tests in any subfolder (configs, tools, the split lists in
# ../shared are found relative to the root).
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


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
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
