"""The pretrain step's bookkeeping: EMA target, queue ring buffer, learning-rate schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dscl_jax.core import optim, sharding
from dscl_jax.core.build import build_models, init_pretrain_state
from dscl_jax.core.step import enqueue, make_pretrain_step
from dscl_jax.methods import get_method
from tests.step_runner import random_batches, small_config


def test_enqueue_wraps_around_and_keeps_labels():
  queue = jnp.zeros((6, 2))
  labels = jnp.full((6,), -1, jnp.int32)
  ptr = jnp.zeros((), jnp.int32)
  written = []
  for t in range(4):  # 4 writes of 2 rows into 6 slots: the 4th overwrites slots 0-1
    keys = jnp.full((2, 2), float(t + 1))
    queue, labels, ptr = enqueue(queue, labels, ptr, keys, jnp.array([10 * t, 10 * t + 1]))
    written.append(int(ptr))
  assert written == [2, 4, 0, 2]
  np.testing.assert_array_equal(np.asarray(queue)[:, 0], [4, 4, 2, 2, 3, 3])
  np.testing.assert_array_equal(np.asarray(labels), [30, 31, 10, 11, 20, 21])


def test_enqueue_with_empty_queue_is_identity():
  queue, labels, ptr = enqueue(
    jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32), jnp.zeros((), jnp.int32), jnp.ones((2, 3)), jnp.array([1, 2])
  )
  assert queue.shape == (0, 3) and int(ptr) == 0


def _setup(config, num_classes=10):
  mesh = sharding.make_mesh(1)
  schedule = optim.warmup_cosine_schedule(0.05, 100, 2)
  tx = optim.sgd(schedule, 0.9, 5e-4)
  online, target = build_models(config, get_method(config), num_classes)
  state = init_pretrain_state(config, get_method(config), online, tx, num_classes, 1, mesh)
  return state, jax.jit(make_pretrain_step(config, get_method(config), online, target, tx, schedule))


def test_ema_target_and_queue_in_step():
  config = small_config()
  m = config.moco.momentum
  state, step = _setup(config)
  chex_equal = lambda a, b: jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
  chex_equal(state.params, state.target_params)  # the target starts as a copy
  batches = list(random_batches(config, 4))
  online_before = []
  target_before = []
  for batch in batches:
    online_before.append(jax.device_get(state.params))
    target_before.append(jax.device_get(state.target_params))
    state, metrics = step(state, batch)
    assert np.isfinite(metrics["loss"])
    # theta_k <- m theta_k + (1 - m) theta_q, with theta_q the online params *before* this update.
    expected = jax.tree.map(lambda k, q: m * k + (1 - m) * q, target_before[-1], online_before[-1])
    chex_equal(state.target_params, expected)
  assert not np.allclose(jax.tree.leaves(state.params)[0], jax.tree.leaves(state.target_params)[0])
  # 4 batches of 16 into a queue of 48: pointer 16, 32, 0, 16; the labels are the batch labels in order.
  assert int(state.queue_ptr) == (4 * 16) % 48
  labels = np.asarray(state.queue_labels)
  np.testing.assert_array_equal(labels[0:16], batches[3]["label"])
  np.testing.assert_array_equal(labels[16:32], batches[1]["label"])
  np.testing.assert_array_equal(labels[32:48], batches[2]["label"])
  norms = np.linalg.norm(np.asarray(state.queue), axis=1)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
  assert int(state.step) == 4


def test_queue_holds_the_target_keys():
  """The rows written in a step are the target's normalised embeddings of the key view."""
  config = small_config()
  config.model.key_bn_group_size = 0  # whole-batch BN: the permutation cannot change the keys
  state, step = _setup(config)
  online, target = build_models(config, get_method(config), 10)
  batch = next(random_batches(config, 1))
  m = config.moco.momentum
  target_params = jax.tree.map(lambda k, q: m * k + (1 - m) * q, state.target_params, state.params)
  out, _ = target.apply(
    {"params": target_params, "batch_stats": state.target_batch_stats},
    batch["key"],
    train=True,
    mutable=["batch_stats"],
  )
  keys = out["embedding"] / np.linalg.norm(out["embedding"], axis=1, keepdims=True)
  state, _ = step(state, batch)
  np.testing.assert_allclose(np.asarray(state.queue)[:16], keys, rtol=1e-4, atol=1e-5)


def test_warmup_cosine_schedule_values():
  schedule = optim.warmup_cosine_schedule(0.4, total_steps=110, warmup_steps=10)
  np.testing.assert_allclose(float(schedule(0)), 0.0)
  np.testing.assert_allclose(float(schedule(5)), 0.2, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.2, rtol=1e-5)  # half-way through the cosine
  np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-7)


def test_step_schedule_and_sgd_match_pytorch():
  schedule = optim.step_schedule(10.0, [20, 30])
  assert [float(schedule(s)) for s in (0, 19, 20, 29, 30)] == [10.0, 10.0, 1.0, 1.0, pytest.approx(0.1, rel=1e-6)]
  # PyTorch SGD: buf = mu * buf + (g + wd * p); p -= lr * buf
  tx = optim.sgd(optax.constant_schedule(0.5), 0.9, 0.1)
  p = jnp.array([1.0, -2.0])
  state = tx.init(p)
  buf = np.zeros(2)
  p_ref = np.array([1.0, -2.0])
  for g in ([0.3, 0.1], [-0.2, 0.4]):
    updates, state = tx.update(jnp.array(g), state, p)
    p = optax.apply_updates(p, updates)
    buf = 0.9 * buf + (np.array(g) + 0.1 * p_ref)
    p_ref = p_ref - 0.5 * buf
  np.testing.assert_allclose(np.asarray(p), p_ref, rtol=1e-6)
