"""The scripts of benchmarks/ as modules for the tests (benchmarks/ is a folder of scripts, not a package)."""

import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
  """`benchmarks/<name>.py`, imported once (the scripts import each other by name, e.g. compare_methods)."""
  if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
  return importlib.import_module(name)
