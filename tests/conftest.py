"""Session-wide settings, read before any test module imports JAX.

One persistent XLA compilation cache per test run, shared by the pytest-xdist workers and by every
subprocess a test starts (they inherit the environment): the suite compiles the same small steps many
times (every kill-and-resume, every end-to-end run of the digits config), and a cached executable is
the same program, so results do not change. A run never reuses another run's cache.
"""

import os
import tempfile

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"dscl_jax_tests_xla_{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
