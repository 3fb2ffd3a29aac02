"""Orbax round trip of the whole state, for every kind of state a config can make."""

import jax
import numpy as np
import pytest

from dscl_jax import methods
from dscl_jax.core import optim, sharding
from dscl_jax.core.build import build_models, init_pretrain_state
from dscl_jax.methods import get_method
from dscl_jax.runtime import checkpoint
from tests.step_runner import CASES, CLASS_COUNTS, case_config


@pytest.mark.parametrize("case,queue_size", [(case, 48) for case in CASES] + [("dscl", 0)])
def test_save_and_restore_the_whole_state(tmp_path, case, queue_size):
  config = case_config(case)
  config.moco.queue_size = queue_size
  mesh = sharding.make_mesh(1)
  tx = optim.sgd(optim.warmup_cosine_schedule(0.1, 10, 1), 0.9, 5e-4)
  online, _ = build_models(config, get_method(config), 10)
  state = init_pretrain_state(config, get_method(config), online, tx, 10, 1, mesh, CLASS_COUNTS)
  needs = methods.get_method(config).requirements
  assert (state.queue is None) == (not needs.queue or queue_size == 0)
  assert (state.target_params is None) == (not needs.momentum_target)
  mgr = checkpoint.manager(str(tmp_path / "ckpt"))
  mgr.save(7, state)
  mgr.wait_until_finished()
  fresh = init_pretrain_state(config, get_method(config), online, tx, 10, 1, mesh, CLASS_COUNTS).replace(
    rng=jax.random.PRNGKey(99)
  )
  restored = checkpoint.restore_latest(checkpoint.manager(str(tmp_path / "ckpt")), fresh)
  leaves_a, tree_a = jax.tree.flatten(state)
  leaves_b, tree_b = jax.tree.flatten(restored)
  assert tree_a == tree_b
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_latest_without_checkpoint_is_none(tmp_path):
  assert checkpoint.restore_latest(checkpoint.manager(str(tmp_path / "empty")), {"x": np.zeros(2)}) is None


def test_find_checkpoint_dir_names_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match="run --config.mode=pretrain first"):
    checkpoint.find_checkpoint_dir(str(tmp_path), "pretrain")


# ---- Integrity: checksums, fallback to the newest intact step, retention ----


def small_state(offset):
  return {
    "params": {
      "trunk": {"kernel": np.arange(4096, dtype=np.float32).reshape(64, 64) + offset},
      "head": {"bias": np.full((5,), offset, np.float32)},
    },
    "step": np.asarray(offset, np.int32),
  }


def saved_steps(tmp_path, steps=(1, 2)):
  mgr = checkpoint.manager(tmp_path / "ckpt", keep=3, job="test")
  for step in steps:
    mgr.save(step, jax.device_put(small_state(step)))
  mgr.wait_until_finished()
  return tmp_path / "ckpt"


def largest_array_file(step_dir):
  files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  return max(files, key=lambda p: p.stat().st_size)


def delete(path):
  path.unlink()


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


def overwrite(path):
  # Bytes in the middle of an array file: a silent corruption that only the checksums catch.
  with open(path, "r+b") as f:
    f.seek(path.stat().st_size // 2)
    f.write(b"\xff" * 16)


@pytest.mark.parametrize("damage", [delete, truncate, overwrite], ids=lambda f: f.__name__)
def test_a_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, capfd, damage):
  directory = saved_steps(tmp_path)
  damage(largest_array_file(directory / "2"))
  capfd.readouterr()
  template = checkpoint.abstract_like(jax.device_put(small_state(0)))
  state, step = checkpoint.manager(directory, job="test").restore_latest(template)
  assert step == 1
  np.testing.assert_array_equal(
    np.asarray(state["params"]["trunk"]["kernel"]), small_state(1)["params"]["trunk"]["kernel"]
  )
  out, err = capfd.readouterr()
  lines = [line for line in (out + err).splitlines() if line.strip() and "warn" not in line.lower()]
  assert len(lines) == 1, lines  # one clear line, no traceback
  assert lines[0].startswith(f"[test] damaged checkpoint {directory / '2'} (")
  assert lines[0].endswith("; falling back to step 1")
  if damage is overwrite:
    assert "checksum mismatch in 'params/trunk/kernel'" in lines[0]


def test_every_step_damaged_names_each_cause(tmp_path):
  directory = saved_steps(tmp_path)
  for step in ("1", "2"):
    overwrite(largest_array_file(directory / step))
  template = checkpoint.abstract_like(jax.device_put(small_state(0)))
  with pytest.raises(
    checkpoint.DamagedCheckpoint,
    match=r"every checkpoint in .* is damaged: .*/2: checksum "
    r"mismatch .*/1: checksum mismatch",
  ):
    checkpoint.manager(directory, job="test").restore_latest(template)


def test_a_step_without_checksums_is_damaged(tmp_path):
  directory = saved_steps(tmp_path)
  import shutil

  shutil.rmtree(directory / "2" / "checksums")
  template = checkpoint.abstract_like(jax.device_put(small_state(0)))
  _, step = checkpoint.manager(directory, job="test").restore_latest(template)
  assert step == 1


def test_checksums_are_crc32_of_the_array_bytes(tmp_path):
  import json
  import zlib

  directory = saved_steps(tmp_path, steps=(3,))
  sums = json.loads((directory / "3" / "checksums" / "metadata").read_text())
  kernel = small_state(3)["params"]["trunk"]["kernel"]
  assert sums["params/trunk/kernel"] == {"shape": [64, 64], "dtype": "float32", "crc32": zlib.crc32(kernel.tobytes())}
  assert sums["step"] == {"shape": [], "dtype": "int32", "crc32": zlib.crc32(np.int32(3).tobytes())}


def test_saving_a_non_finite_state_is_refused(tmp_path):
  state = small_state(1)
  state["params"]["head"]["bias"][2] = np.inf
  with pytest.raises(FloatingPointError, match="params/head/bias"):
    checkpoint.manager(tmp_path / "ckpt").save(1, state)


def test_retention_keeps_the_newest_steps_once_verified(tmp_path):
  mgr = checkpoint.manager(tmp_path / "ckpt", keep=2, job="test")
  for step in range(1, 6):
    mgr.save(step, small_state(step))
  mgr.wait_until_finished()
  assert mgr.steps() == [4, 5]


def test_retention_keeps_older_steps_while_the_newest_does_not_verify(tmp_path, capsys):
  mgr = checkpoint.manager(tmp_path / "ckpt", keep=2, job="test")
  for step in (1, 2):
    mgr.save(step, small_state(step))
  mgr.wait_until_finished()
  mgr.save(3, small_state(3))
  mgr._mgr.wait_until_finished()  # the write is done, retention has not run yet
  overwrite(largest_array_file(tmp_path / "ckpt" / "3"))
  mgr.wait_until_finished()
  assert mgr.steps() == [1, 2, 3]  # nothing deleted: step 3 is not a verified successor
  assert "did not verify (checksum mismatch" in capsys.readouterr().out


def test_partial_restore_reads_a_sub_tree_and_names_a_shape_mismatch(tmp_path):
  directory = saved_steps(tmp_path)
  template = {"params": {"trunk": {"kernel": jax.ShapeDtypeStruct((64, 64), np.float32)}}}
  state, source = checkpoint.restore_from(directory, template, sharding.replicated(sharding.make_mesh(1)), partial=True)
  assert source.endswith("/2") and set(state) == {"params"} and set(state["params"]) == {"trunk"}
  np.testing.assert_array_equal(
    np.asarray(state["params"]["trunk"]["kernel"]), small_state(2)["params"]["trunk"]["kernel"]
  )
  wrong = {"params": {"head": {"bias": jax.ShapeDtypeStruct((7,), np.float32)}}}
  with pytest.raises(
    checkpoint.ShapeMismatch,
    match=r"'params/head/bias' is \(5,\) in .*/2 but this config "
    r"builds \(7,\); it is set by model.embed_dim",
  ):
    checkpoint.restore_from(directory, wrong, sharding.replicated(sharding.make_mesh(1)), partial=True)
