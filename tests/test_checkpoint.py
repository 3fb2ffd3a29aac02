"""Orbax round trip of the whole state, for every kind of state a config can make."""

import jax
import numpy as np
import pytest

from dscl_jax import checkpoint, methods, optim, sharding
from dscl_jax.train import build_models, init_pretrain_state
from tests.step_runner import CASES, CLASS_COUNTS, case_config


@pytest.mark.parametrize("case,queue_size", [(case, 48) for case in CASES] + [("dscl", 0)])
def test_save_and_restore_the_whole_state(tmp_path, case, queue_size):
  config = case_config(case)
  config.moco.queue_size = queue_size
  mesh = sharding.make_mesh(1)
  tx = optim.sgd(optim.warmup_cosine_schedule(0.1, 10, 1), 0.9, 5e-4)
  online, _ = build_models(config, 10)
  state = init_pretrain_state(config, online, tx, 10, 1, mesh, CLASS_COUNTS)
  needs = methods.get_method(config).requirements
  assert (state.queue is None) == (not needs.queue or queue_size == 0)
  assert (state.target_params is None) == (not needs.momentum_target)
  mgr = checkpoint.manager(str(tmp_path / "ckpt"))
  checkpoint.save(mgr, 7, state, force=True)
  mgr.wait_until_finished()
  fresh = init_pretrain_state(config, online, tx, 10, 1, mesh, CLASS_COUNTS).replace(rng=jax.random.PRNGKey(99))
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
