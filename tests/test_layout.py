"""The package's layers (docs/design.md): what may import what, and checkpoints written before the
modules moved still restore."""

import ast
import json
import pathlib

import jax
import numpy as np
import pytest

from dscl_jax.config.schema import base_config
from dscl_jax.core import build, sharding
from dscl_jax.methods import get_method
from dscl_jax.runtime import checkpoint

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "dscl_jax"
FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pre_layout_checkpoint"
# Layer -> packages of dscl_jax it must never import. Jobs sit on top; nothing imports them.
FORBIDDEN = {
  "core": {"jobs"},
  "input": {"jobs", "core", "methods", "losses", "models", "evaluation", "runtime", "convert", "config"},
  "models": {"jobs", "core", "runtime", "convert", "methods", "input", "evaluation"},
  "losses": {"jobs", "core", "runtime", "convert", "methods", "input", "models", "evaluation"},
  "ops": {"jobs", "core", "runtime", "convert", "methods", "input", "models", "evaluation"},
  "methods": {"jobs", "core", "runtime", "convert", "evaluation"},
  "evaluation": {"jobs"},
  "runtime": {"jobs", "core", "methods", "models", "input", "evaluation", "convert", "config"},
  "config": {"jobs", "core", "runtime", "evaluation", "convert"},
  "convert": {"jobs", "core"},
}


def imported_packages(path: pathlib.Path) -> set[str]:
  """The dscl_jax subpackages (or top-level modules) that `path` imports, e.g. {"core", "models"}."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dscl_jax"):
      parts = node.module.split(".")
      if len(parts) > 1:
        found.add(parts[1])
      else:
        found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.Import):
      found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dscl_jax."))
  return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_is_below_it(layer):
  offenders = {
    str(path.relative_to(PACKAGE)): sorted(imported_packages(path) & FORBIDDEN[layer])
    for path in (PACKAGE / layer).rglob("*.py")
  }
  assert {k: v for k, v in offenders.items() if v} == {}


def test_jobs_never_import_each_other():
  jobs = {path.stem for path in (PACKAGE / "jobs").glob("*.py")} - {"__init__"}
  for path in (PACKAGE / "jobs").glob("*.py"):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module:
        assert not node.module.startswith("dscl_jax.jobs"), f"{path.name} imports {node.module}"
        if node.module == "dscl_jax":
          assert not {a.name for a in node.names} & jobs | {"jobs"}, path.name


def test_the_checker_sees_a_forbidden_import(tmp_path):
  # The layer test must be able to fail: a module importing a job is caught.
  module = tmp_path / "bad.py"
  module.write_text("from dscl_jax.jobs.pretrain import pretrain\nfrom dscl_jax import methods\n")
  assert imported_packages(module) == {"jobs", "methods"}


def fixture_config():
  """The config the fixture was written with (its saved config.json, on today's schema)."""
  saved = json.loads((FIXTURE / "pretrain" / "config.json").read_text())
  c = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")
  c.update_from_flattened_dict(
    {
      "moco.queue_size": saved["moco"]["queue_size"],
      "model.embed_dim": saved["model"]["embed_dim"],
      "model.head_hidden_dim": saved["model"]["head_hidden_dim"],
      "train.batch_size": saved["train"]["batch_size"],
      "model.key_bn_group_size": saved["model"]["key_bn_group_size"],
    }
  )
  return c


def test_a_checkpoint_written_before_the_layout_change_restores():
  """tests/fixtures/pre_layout_checkpoint was written by the flat layout's code (commit c80e9d6: digits
  config, 2 pretrain steps of batch 32, K 64, D 8, then 2 probe steps). Every leaf restores into the
  state the current code builds, and its CRC-32 still matches (restore verifies it)."""
  c = fixture_config()
  method = get_method(c)
  online, _ = build.build_models(c, method, 10)
  schedule, _, _ = build.pretrain_schedule(c, 503)
  template = build.abstract_pretrain_state(c, method, online, build.pretrain_optimizer(c, schedule), 10, 1, np.ones(10))
  mesh = sharding.make_mesh(1)
  state, source = checkpoint.restore_from(
    FIXTURE / "pretrain" / "checkpoints", template, sharding.replicated(mesh), job="pre-layout checkpoint"
  )
  assert source.endswith("checkpoints/2")
  assert int(state.step) == 2 and int(state.queue_ptr) == 2 * 32 % 64
  assert state.queue.shape == (64, 8) and state.params["head"] is not None
  # Same leaf paths as the old code wrote, and the same bytes: the CRC-32s saved beside the arrays by
  # the old code, recomputed here from the restored state.
  saved = json.loads((FIXTURE / "pretrain" / "checkpoints" / "2" / "checksums" / "metadata").read_text())
  assert checkpoint.checksums(state) == saved


def test_a_probe_written_before_the_layout_change_restores():
  c = fixture_config()
  c.probe.batch_size = 32
  c.probe.standardize_features = False  # the old code's probe, on raw features
  mesh = sharding.make_mesh(1)
  probe, source = build.restore_probe(c, FIXTURE, 64, 10, 503, mesh)
  assert source.endswith("probe/checkpoints/2")
  assert int(probe.step) == 2 and probe.params["kernel"].shape == (64, 10)
  assert np.abs(jax.device_get(probe.params["kernel"])).sum() > 0  # trained, not the zero init
