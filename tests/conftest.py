"""Session-wide settings, read before any test module imports JAX.

One persistent XLA compilation cache per test run, shared by the pytest-xdist workers and by every
subprocess a test starts (they inherit the environment of the pytest process that set it): the suite
compiles the same small steps many times (every kill-and-resume, every end-to-end run of the digits
config), and a cached executable is the same program, so results do not change. A run never reuses
another run's cache, and removes its own at the end.

The suite compiles a few hundred distinct small programs that then run for milliseconds, so LLVM's
optimisation passes cost more than they save: tests compile at `--xla_backend_optimization_level=0`
(measured on this 2-core machine: a ResNet-8 DSCL pretrain step compiles in 3.7 s instead of 5.4 s and
its init in 1.9 s instead of 4.8 s; the whole suite takes 626 s instead of 770 s). The XLA program is the
same; only its machine code changes, which can move a float32 result by an ulp (no fused multiply-adds),
so tests compare within one level and with tolerances that hold at any level. The one test about the
optimised code itself (tests/input/test_pixels.py) compiles its function at an optimising level. Users,
benchmarks and the recorded runs use XLA's default; `DSCL_JAX_TESTS_DEFAULT_XLA=1` runs the suite so too.
"""

import os
import shutil
import tempfile

_CACHE = os.path.join(tempfile.gettempdir(), f"dscl_jax_tests_xla_{os.getpid()}")
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # set here, not by the user or a parent run
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
if os.environ.get("DSCL_JAX_TESTS_DEFAULT_XLA") != "1" and "xla_backend_optimization_level" not in os.environ.get(
  "XLA_FLAGS", ""
):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def pytest_sessionfinish(session):
  # The process that made the cache (the xdist controller, or pytest itself without workers) removes it.
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(_CACHE, ignore_errors=True)
