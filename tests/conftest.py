"""Session-wide settings, read before any test module imports JAX.

One persistent XLA compilation cache per test run, shared by the pytest-xdist workers and by every
subprocess a test starts (they inherit the environment of the pytest process that set it): the suite
compiles the same small steps many times (every kill-and-resume, every end-to-end run of the digits
config), and a cached executable is the same program, so results do not change. A run never reuses
another run's cache, and removes its own at the end.
"""

import os
import shutil
import tempfile

_CACHE = os.path.join(tempfile.gettempdir(), f"dscl_jax_tests_xla_{os.getpid()}")
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # set here, not by the user or a parent run
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_sessionfinish(session):
  # The process that made the cache (the xdist controller, or pytest itself without workers) removes it.
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(_CACHE, ignore_errors=True)
