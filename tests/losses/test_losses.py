"""Tests for dscl_jax.losses against float64 references and closed forms."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dscl_jax import losses
from tests import reference_losses
from tests.reference_losses import unit_rows as _unit
from tests.reference_losses import vectors_at_angles as _angles

# Jitted once per shape: the whole suite compiles far less than eager
# op-by-op dispatch would. Python-level checks still run while tracing.
dscl_loss = jax.jit(losses.dscl_loss, static_argnames=("beta", "temperature"))
supcon_loss = jax.jit(losses.supcon_loss, static_argnames=("temperature",))
pbsd_loss = jax.jit(losses.pbsd_loss, static_argnames=("temperature",))
cross_entropy_loss = jax.jit(losses.cross_entropy_loss)
mixup_cross_entropy_loss = jax.jit(losses.mixup_cross_entropy_loss)

RTOL = 1e-5
ATOL = 1e-6
# A label used by exactly one batch row and never by the queue: that row has
# no positives besides its own key.
LONELY_LABEL = 99


def _contrastive_inputs(seed, batch, queue_size, dim=8, num_classes=3):
  """Normalised embeddings with repeated labels and one lonely label."""
  rng = np.random.default_rng(seed)
  query = _unit(rng, batch, dim)
  # Keys near their queries, as two views of one image would be.
  key = _unit(rng, batch, dim) * 0.5 + query
  key = (key / np.linalg.norm(key, axis=1, keepdims=True)).astype(np.float32)
  queue = _unit(rng, queue_size, dim)
  labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
  labels[0] = LONELY_LABEL
  queue_labels = rng.integers(0, num_classes + 2, size=queue_size)
  return query, key, queue, labels, queue_labels.astype(np.int32)


# (B, K, D): K = 0 and K > 0, B = 1 (only the own key is a candidate), a
# batch larger than the class count, and the real D at T = 0.07.
SHAPES = [(1, 0, 4), (2, 0, 4), (6, 0, 8), (4, 16, 8), (16, 64, 8), (5, 33, 16), (32, 256, 128)]


@pytest.mark.parametrize("batch,queue_size,dim", SHAPES)
@pytest.mark.parametrize("beta", [8.0, 0.5])
def test_dscl_matches_reference(batch, queue_size, dim, beta):
  inputs = _contrastive_inputs(batch * 100 + queue_size, batch, queue_size, dim)
  got = dscl_loss(*inputs, beta=beta, temperature=0.07)
  want = reference_losses.dscl_reference(*inputs, beta=beta, temperature=0.07)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batch,queue_size,dim", SHAPES)
def test_supcon_matches_reference(batch, queue_size, dim):
  inputs = _contrastive_inputs(batch * 100 + queue_size, batch, queue_size, dim)
  got = supcon_loss(*inputs, temperature=0.2)
  want = reference_losses.supcon_reference(*inputs, temperature=0.2)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_reference_inputs_cover_empty_and_nonempty_positives():
  _, _, _, labels, queue_labels = _contrastive_inputs(0, 16, 64)
  all_labels = np.concatenate([labels, labels, queue_labels])
  others = [np.sum(all_labels == y) - 2 for y in labels]
  assert others[0] == 0 and max(others) > 1


def _two_sample_inputs(same_label):
  # Anchor 0 at angle 0, anchor 1 at 90 degrees, keys 30 degrees from their
  # own query; every anchor sees the same three similarities:
  # own key cos 30 deg, other query 0, other key 1/2.
  query = _angles(0.0, math.pi / 2)
  key = _angles(math.pi / 6, math.pi / 3)
  labels = np.array([3, 3 if same_label else 4], np.int32)
  return query, key, np.zeros((0, 2), np.float32), labels, np.zeros(0, np.int32)


def _two_sample_log_probs(temperature):
  own_key, other_query, other_key = math.sqrt(3) / 2, 0.0, 0.5
  log_z = math.log(sum(math.exp(s / temperature) for s in (own_key, other_query, other_key)))
  return (own_key / temperature - log_z, other_query / temperature - log_z, other_key / temperature - log_z)


@pytest.mark.parametrize("temperature", [0.5, 0.07])
def test_two_sample_same_class_by_hand(temperature):
  inputs = _two_sample_inputs(same_label=True)
  own_key, other_query, other_key = _two_sample_log_probs(temperature)
  beta = 8.0
  # P_i = {other query, other key}: they share beta, the own key has 1.
  dscl_by_hand = -(own_key + beta / 2 * (other_query + other_key)) / (1 + beta)
  supcon_by_hand = -(own_key + other_query + other_key) / 3
  np.testing.assert_allclose(dscl_loss(*inputs, beta=beta, temperature=temperature), dscl_by_hand, rtol=RTOL)
  np.testing.assert_allclose(supcon_loss(*inputs, temperature=temperature), supcon_by_hand, rtol=RTOL)
  # -log p(own key) is ~0.005 at T 0.07: the difference of two logits of ~12, whose float32 rounding
  # (~1e-6) no relative tolerance of the small result can absorb.
  float32_logits = 8 * np.finfo(np.float32).eps / temperature
  np.testing.assert_allclose(
    dscl_loss(*inputs, beta=0.0, temperature=temperature), -own_key, rtol=RTOL, atol=float32_logits
  )


def test_two_sample_different_classes_by_hand():
  inputs = _two_sample_inputs(same_label=False)
  own_key, _, _ = _two_sample_log_probs(0.5)
  np.testing.assert_allclose(dscl_loss(*inputs, beta=8.0, temperature=0.5), -own_key, rtol=RTOL)
  np.testing.assert_allclose(supcon_loss(*inputs, temperature=0.5), -own_key, rtol=RTOL)


def _own_key_log_prob(query, key, queue, temperature):
  """[B] float64 log p_i(k_i), computed without any max subtraction."""
  query, key, queue = (np.asarray(x, np.float64) for x in (query, key, queue))
  logits = query @ np.concatenate([query, key, queue]).T / temperature
  np.fill_diagonal(logits, -np.inf)
  log_z = np.log(np.exp(logits).sum(axis=1))
  return np.diag(logits[:, len(query) :]) - log_z


def test_dscl_with_zero_beta_is_own_key_cross_entropy():
  query, key, queue, labels, queue_labels = _contrastive_inputs(1, 16, 64)
  want = -_own_key_log_prob(query, key, queue, 0.07).mean()
  got = dscl_loss(query, key, queue, labels, queue_labels, beta=0.0, temperature=0.07)
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_dscl_equals_supcon_when_no_other_positives():
  query, key, queue, _, _ = _contrastive_inputs(2, 12, 40)
  labels = np.arange(12, dtype=np.int32)
  queue_labels = np.arange(100, 140, dtype=np.int32)
  supcon = supcon_loss(query, key, queue, labels, queue_labels)
  for beta in (0.0, 8.0):
    dscl = dscl_loss(query, key, queue, labels, queue_labels, beta=beta)
    np.testing.assert_allclose(dscl, supcon, rtol=1e-6)
  want = -_own_key_log_prob(query, key, queue, 0.07).mean()
  np.testing.assert_allclose(supcon, want, rtol=RTOL)


@pytest.mark.parametrize("loss_fn", [functools.partial(dscl_loss, beta=8.0), supcon_loss])
def test_permutation_invariance(loss_fn):
  query, key, queue, labels, queue_labels = _contrastive_inputs(3, 16, 64)
  base = loss_fn(query, key, queue, labels, queue_labels)
  rng = np.random.default_rng(0)
  queue_order = rng.permutation(len(queue))
  np.testing.assert_allclose(
    loss_fn(query, key, queue[queue_order], labels, queue_labels[queue_order]), base, rtol=RTOL
  )
  # Reordering the batch (queries with their keys and labels) is also a no-op.
  batch_order = rng.permutation(len(query))
  np.testing.assert_allclose(
    loss_fn(query[batch_order], key[batch_order], queue, labels[batch_order], queue_labels), base, rtol=RTOL
  )


@pytest.mark.parametrize("loss_fn", [functools.partial(dscl_loss, beta=8.0), supcon_loss])
def test_identical_vectors_at_low_temperature(loss_fn):
  # Every logit ties, so every candidate has probability 1 / (2B + K - 1)
  # and any normalised weighting gives log(2B + K - 1).
  batch, queue_size = 8, 24
  vector = _unit(np.random.default_rng(4), 1, 16)
  query = np.repeat(vector, batch, axis=0)
  queue = np.repeat(vector, queue_size, axis=0)
  labels = np.array([0, 0, 1, 1, 1, 2, 3, 0], np.int32)
  queue_labels = np.arange(queue_size, dtype=np.int32) % 5
  value, grad = jax.value_and_grad(lambda q: loss_fn(q, query, queue, labels, queue_labels, temperature=0.01))(query)
  np.testing.assert_allclose(value, math.log(2 * batch + queue_size - 1), rtol=RTOL)
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("loss_fn", [functools.partial(dscl_loss, beta=8.0), supcon_loss])
def test_finite_for_nearly_orthogonal_vectors_at_low_temperature(loss_fn):
  # All non-self exponentials underflow in float32 here; the 1e-12 inside the
  # log keeps the loss and gradient finite, as in the reference.
  dim = 64
  eye = np.eye(dim, dtype=np.float32)
  query, key, queue = eye[:8], eye[8:16], eye[16:]
  labels = np.arange(8, dtype=np.int32) % 3
  queue_labels = np.arange(len(queue), dtype=np.int32) % 3
  value, grad = jax.value_and_grad(lambda q: loss_fn(q, key, queue, labels, queue_labels, temperature=0.01))(query)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_dscl_eager_matches_jit_and_takes_bfloat16_inputs():
  inputs = _contrastive_inputs(5, 16, 64, dim=32)
  loss_fn = functools.partial(dscl_loss, beta=8.0, temperature=0.07)
  np.testing.assert_allclose(losses.dscl_loss(*inputs), loss_fn(*inputs), rtol=1e-6)
  # The cast happens inside: bf16 embeddings give exactly the float32 loss of
  # the same (rounded) values.
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in inputs[:3]]
  got = loss_fn(*as_bf16, *inputs[3:])
  want = loss_fn(*[x.astype(jnp.float32) for x in as_bf16], *inputs[3:])
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dscl_gradient_reaches_query_key_and_queue():
  inputs = _contrastive_inputs(6, 8, 16)
  grads = jax.grad(dscl_loss, argnums=(0, 1, 2))(*inputs)
  for grad in grads:
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-4


def test_contrastive_shape_errors_name_the_problem():
  query, key, queue, labels, queue_labels = _contrastive_inputs(7, 4, 8)
  with pytest.raises(ValueError, match="queue_labels shape"):
    dscl_loss(query, key, queue, labels, queue_labels[:-1])
  with pytest.raises(ValueError, match="key shape"):
    supcon_loss(query, key[:-1], queue, labels, queue_labels)
  with pytest.raises(ValueError, match="labels must be integers"):
    dscl_loss(query, key, queue, labels.astype(np.float32), queue_labels)
  with pytest.raises(ValueError, match="temperature=0"):
    dscl_loss(query, key, queue, labels, queue_labels, temperature=0)


def _pbsd_inputs(seed, crops, batch, queue_size, dim=16):
  rng = np.random.default_rng(seed)
  return (
    _unit(rng, crops, batch, dim),
    _unit(rng, crops, batch, dim),
    _unit(rng, batch, dim),
    _unit(rng, queue_size, dim),
  )


@pytest.mark.parametrize("crops,batch,queue_size", [(1, 1, 1), (5, 4, 0), (5, 8, 32), (2, 16, 200)])
@pytest.mark.parametrize("temperature", [0.07, 0.2])
def test_pbsd_matches_reference(crops, batch, queue_size, temperature):
  inputs = _pbsd_inputs(crops + batch + queue_size, crops, batch, queue_size)
  got = pbsd_loss(*inputs, temperature=temperature)
  want = reference_losses.pbsd_reference(*inputs, temperature=temperature)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  if queue_size == 0:
    assert float(got) == 0.0  # One candidate: both distributions are [1].


def test_pbsd_gradient_only_reaches_student():
  inputs = _pbsd_inputs(8, 5, 8, 32)
  grads = jax.grad(pbsd_loss, argnums=(0, 1, 2, 3))(*inputs)
  teacher_grad, student_grad, key_grad, queue_grad = map(np.asarray, grads)
  assert np.all(teacher_grad == 0.0)
  assert np.all(key_grad == 0.0)
  assert np.all(queue_grad == 0.0)
  assert np.all(np.isfinite(student_grad))
  assert np.abs(student_grad).max() > 1e-3


def test_pbsd_is_cross_entropy_bounded_by_teacher_entropy():
  teacher, student, key, queue = _pbsd_inputs(9, 5, 8, 32)
  probs = reference_losses.pbsd_teacher_probs(teacher, key, queue, 0.2)
  teacher_entropy = -(probs * np.log(probs)).sum(axis=-1).mean()
  # H(t, t) = H(t); any other student pays the KL divergence on top.
  np.testing.assert_allclose(pbsd_loss(teacher, teacher, key, queue, temperature=0.2), teacher_entropy, rtol=RTOL)
  assert pbsd_loss(teacher, student, key, queue, temperature=0.2) > teacher_entropy + 1e-3


def test_pbsd_eager_matches_jit_and_takes_bfloat16_inputs():
  inputs = _pbsd_inputs(10, 5, 8, 32)
  loss_fn = functools.partial(pbsd_loss, temperature=0.07)
  np.testing.assert_allclose(losses.pbsd_loss(*inputs), loss_fn(*inputs), rtol=1e-6)
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in inputs]
  got = loss_fn(*as_bf16)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, loss_fn(*[x.astype(jnp.float32) for x in as_bf16]), rtol=1e-6)


def test_pbsd_shape_errors_name_the_problem():
  teacher, student, key, queue = _pbsd_inputs(11, 2, 4, 8)
  with pytest.raises(ValueError, match="must both be"):
    pbsd_loss(teacher, student[:, :-1], key, queue)
  with pytest.raises(ValueError, match="queue must be"):
    pbsd_loss(teacher, student, key, queue[:, :-1])


def test_cross_entropy_matches_reference():
  rng = np.random.default_rng(12)
  logits = (rng.normal(size=(32, 10)) * 5).astype(np.float32)
  labels = rng.integers(0, 10, size=32).astype(np.int32)
  np.testing.assert_allclose(
    cross_entropy_loss(logits, labels), reference_losses.cross_entropy_reference(logits, labels), rtol=RTOL
  )
  np.testing.assert_allclose(
    cross_entropy_loss(jnp.asarray(logits, jnp.bfloat16), labels),
    reference_losses.cross_entropy_reference(np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float32), labels),
    rtol=RTOL,
  )


def test_cross_entropy_of_uniform_logits_is_log_classes():
  logits = np.full((4, 7), 3.0, np.float32)
  labels = np.array([0, 6, 2, 2], np.int32)
  np.testing.assert_allclose(cross_entropy_loss(logits, labels), math.log(7), rtol=1e-6)


def test_mixup_cross_entropy_by_hand():
  """lam * CE(y_a) + (1 - lam) * CE(y_b), per row, from the log-softmax written out in NumPy."""
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(5, 4)).astype(np.float32) * 3
  labels_a, labels_b = np.array([0, 1, 2, 3, 0]), np.array([1, 1, 0, 2, 3])
  lam = np.array([0.0, 0.3, 0.5, 1.0, 0.9], np.float32)
  log_p = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum(1, keepdims=True))
  rows = np.arange(5)
  expected = np.mean(-lam * log_p[rows, labels_a] - (1 - lam) * log_p[rows, labels_b])
  np.testing.assert_allclose(mixup_cross_entropy_loss(logits, labels_a, labels_b, lam), expected, rtol=RTOL)
  # lam = 1 everywhere is the plain cross-entropy on y_a.
  np.testing.assert_allclose(
    mixup_cross_entropy_loss(logits, labels_a, labels_b, np.ones(5, np.float32)),
    cross_entropy_loss(logits, labels_a),
    rtol=RTOL,
  )
