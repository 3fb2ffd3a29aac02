"""Tests grouped like the package's layers (tests/core, tests/input, ...); shared helpers live here."""

import os

# The repository root and this folder, for tests in any subfolder (configs, tools, the split lists in
# ../shared are found relative to the root).
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
