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

# The modules that take longest (about a minute or more each on a 2-core machine), longest first. With
# `--dist loadscope` each module is one unit of work, handed out in collection order: starting the long
# ones first keeps both workers busy to the end instead of leaving one running a long module alone.
LONGEST_FIRST = (
  "tests/core/test_multidevice.py",
  "tests/config/test_configs.py",
  "tests/runtime/test_resume.py",
  "tests/jobs/test_dry_run.py",
  "tests/jobs/test_provenance.py",
  "tests/core/test_method_step.py",
  "tests/benchmarks/test_compare_methods.py",
  "tests/runtime/test_long_runs.py",
  "tests/core/test_bfloat16.py",
  "tests/core/test_numerical_guard.py",
  "tests/runtime/test_checkpoint_write_errors.py",
  "tests/jobs/test_multiprocess_logging.py",
  "tests/evaluation/test_eval_classifiers.py",
  "tests/jobs/test_end_to_end.py",
)


def pytest_collection_modifyitems(items):
  def rank(item):
    path = item.nodeid.split("::")[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

  items.sort(key=rank)  # stable: the order within a module, and of the other modules, is kept
