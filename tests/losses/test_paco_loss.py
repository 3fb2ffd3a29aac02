"""Tests for the PaCo / GPaCo losses: float64 references, hand-worked cases
and the identities the equations imply."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dscl_jax import losses
from tests import reference_losses
from tests.reference_losses import unit_rows as _unit
from tests.reference_losses import vectors_at_angles as _angles


def _jit_with_traced_scalars(loss_fn, **defaults):
  """Jits loss_fn with every keyword scalar passed, and so traced.

  Each input shape then compiles once whatever the weights (a keyword left
  to its default would be a different signature). The Python-level scalar
  checks are exercised on the eager losses instead.
  """
  jitted = jax.jit(loss_fn)

  def call(*args, **kwargs):
    return jitted(*args, **{**defaults, **kwargs})

  return call


paco_loss = _jit_with_traced_scalars(losses.paco_loss, beta=1.0, gamma=1.0, sup_temperature=1.0)
gpaco_loss = _jit_with_traced_scalars(losses.gpaco_loss, beta=1.0, gamma=1.0, sup_temperature=1.0, label_smoothing=0.0)

RTOL = 1e-5
ATOL = 1e-6


def _inputs(seed, batch, queue_size, num_classes, dim=8, views=1):
  """Embeddings, labels, [views*B, C] class logits and a long-tailed prior."""
  rng = np.random.default_rng(seed)
  query = _unit(rng, batch, dim)
  key = _unit(rng, batch, dim) * 0.5 + query
  key = (key / np.linalg.norm(key, axis=1, keepdims=True)).astype(np.float32)
  queue = _unit(rng, queue_size, dim)
  labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
  queue_labels = rng.integers(0, num_classes, size=queue_size).astype(np.int32)
  class_logits = (rng.normal(size=(views * batch, num_classes)) * 2).astype(np.float32)
  counts = np.round(1000 * 0.6 ** np.arange(num_classes)) + 1
  if num_classes > 2:
    counts[-1] = 0  # A class absent from training: log(0 + 1e-9).
  prior = (counts / counts.sum()).astype(np.float32)
  return query, key, queue, labels, queue_labels, class_logits, prior


# (B, K, C, D): B = 1 (the own key is the only other feature), K = 0 and
# K > 0, C = 2, more classes than the batch, and the real D = 128.
SHAPES = [(1, 0, 2, 4), (2, 0, 3, 4), (8, 0, 10, 8), (4, 16, 5, 8), (8, 32, 10, 8), (5, 33, 4, 16), (32, 256, 100, 128)]
# (alpha, beta, gamma, T, T_sup, label smoothing for GPaCo): the ImageNet-LT
# and CIFAR settings, then off-default weights with gamma = 0 and T_sup != 1.
WEIGHTS = [
  (0.05, 1.0, 1.0, 0.2, 1.0, 0.0),
  (0.01, 1.0, 1.0, 0.05, 1.0, 0.1),
  (1.0, 0.5, 2.0, 0.07, 1.0, 0.3),
  (0.5, 2.0, 0.0, 0.5, 0.7, 0.0),
]


def _kwargs(alpha, beta, gamma, temperature, sup_temperature):
  return dict(alpha=alpha, beta=beta, gamma=gamma, temperature=temperature, sup_temperature=sup_temperature)


@pytest.mark.parametrize("batch,queue_size,num_classes,dim", SHAPES)
@pytest.mark.parametrize("weights", WEIGHTS)
def test_paco_matches_reference(batch, queue_size, num_classes, dim, weights):
  inputs = _inputs(batch + queue_size, batch, queue_size, num_classes, dim)
  kwargs = _kwargs(*weights[:5])
  got = paco_loss(*inputs, **kwargs)
  want = reference_losses.paco_reference(*inputs, **kwargs)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batch,queue_size,num_classes,dim", SHAPES)
@pytest.mark.parametrize("weights", WEIGHTS)
def test_gpaco_matches_reference(batch, queue_size, num_classes, dim, weights):
  inputs = _inputs(batch + queue_size, batch, queue_size, num_classes, dim, views=2)
  kwargs = _kwargs(*weights[:5])
  got = gpaco_loss(*inputs, **kwargs, label_smoothing=weights[5])
  want = reference_losses.gpaco_reference(*inputs, **kwargs, label_smoothing=weights[5])
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_without_prior_matches_reference_and_differs_from_with_prior():
  *inputs, prior = _inputs(1, 8, 32, 10, views=2)
  kwargs = _kwargs(0.05, 1.0, 1.0, 0.2, 1.0)
  for loss_fn, reference, logits in (
    (paco_loss, reference_losses.paco_reference, inputs[5][:8]),
    (gpaco_loss, reference_losses.gpaco_reference, inputs[5]),
  ):
    args = (*inputs[:5], logits)
    without = loss_fn(*args, None, **kwargs)
    np.testing.assert_allclose(without, reference(*args, None, **kwargs), rtol=RTOL)
    assert abs(float(without) - float(loss_fn(*args, prior, **kwargs))) > 0.1


def test_large_class_logits_need_the_shared_row_max():
  # exp(300) overflows float32: only a max over the class columns too keeps
  # this finite, and it must still equal the float64 value.
  inputs = list(_inputs(2, 8, 32, 10))
  inputs[5] = inputs[5] * 150.0
  kwargs = _kwargs(0.05, 1.0, 1.0, 0.05, 1.0)
  got = paco_loss(*inputs, **kwargs)
  assert np.isfinite(got)
  np.testing.assert_allclose(got, reference_losses.paco_reference(*inputs, **kwargs), rtol=RTOL)


@pytest.mark.parametrize("queue_label", [None, 0, 1])
def test_paco_one_sample_by_hand(queue_label):
  # q at 0 deg, k at 60 deg, optional queue entry at 90 deg; class 0.
  alpha, beta, gamma, temperature, sup_temperature = 0.5, 1.0, 2.0, 0.5, 2.0
  query, key = _angles(0.0), _angles(math.pi / 3)
  if queue_label is None:
    queue, queue_labels = np.zeros((0, 2), np.float32), np.zeros(0, np.int32)
  else:
    queue, queue_labels = _angles(math.pi / 2), np.array([queue_label], np.int32)
  labels = np.array([0], np.int32)
  class_logits = np.array([[0.3, 1.1]], np.float32)
  prior = np.array([0.8, 0.2], np.float32)

  s0 = (0.3 + math.log(0.8 + 1e-9)) / sup_temperature
  s1 = (1.1 + math.log(0.2 + 1e-9)) / sup_temperature
  a_key = 0.5 / temperature  # cos 60 deg
  a_queue = 0.0 / temperature  # cos 90 deg
  feature_exps = math.exp(a_key) + (0 if queue_label is None else math.exp(a_queue))
  log_d = math.log(math.exp(s0) + math.exp(s1) + gamma * feature_exps)
  positives = [a_key] + ([a_queue] if queue_label == 0 else [])
  want = -(beta * (s0 - log_d) + alpha * sum(a - log_d for a in positives)) / (beta + alpha * len(positives))

  got = paco_loss(
    query,
    key,
    queue,
    labels,
    queue_labels,
    class_logits,
    prior,
    alpha=alpha,
    beta=beta,
    gamma=gamma,
    temperature=temperature,
    sup_temperature=sup_temperature,
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize("same_label", [True, False])
def test_paco_two_samples_by_hand(same_label):
  # q0 at 0 deg, q1 at 90, k0 at 30, k1 at 60: each anchor sees its own key
  # at cos 30 deg, the other query at 0 and the other key at 1/2.
  temperature = 0.5
  query = _angles(0.0, math.pi / 2)
  key = _angles(math.pi / 6, math.pi / 3)
  labels = np.array([0, 0 if same_label else 1], np.int32)
  class_logits = np.array([[0.3, 1.1], [-0.4, 0.2]], np.float32)
  own_key, other_query, other_key = (s / temperature for s in (math.sqrt(3) / 2, 0.0, 0.5))

  per_anchor = []
  for i, y in enumerate(labels):
    s = class_logits[i].astype(float)
    log_d = math.log(math.exp(s[0]) + math.exp(s[1]) + math.exp(own_key) + math.exp(other_query) + math.exp(other_key))
    positives = [own_key, other_query, other_key] if same_label else [own_key]
    per_anchor.append(-((s[y] - log_d) + sum(a - log_d for a in positives)) / (1 + len(positives)))
  want = sum(per_anchor) / 2

  got = paco_loss(
    query,
    key,
    np.zeros((0, 2), np.float32),
    labels,
    np.zeros(0, np.int32),
    class_logits,
    None,
    alpha=1.0,
    temperature=temperature,
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize("queue_label", [0, 2])
def test_gpaco_one_sample_with_label_smoothing_by_hand(queue_label):
  # q at 0 deg, k at 60 deg, queue entry at 90 deg; class 0 of C = 3.
  alpha, beta, gamma, temperature, smoothing = 0.5, 1.5, 1.0, 0.5, 0.2
  query, key, queue = _angles(0.0), _angles(math.pi / 3), _angles(math.pi / 2)
  class_logits = np.array([[0.3, 1.1, -0.4], [-0.2, 0.9, 0.5]], np.float32)
  prior = np.array([0.5, 0.3, 0.2], np.float32)
  targets = [1 - smoothing, smoothing / 2, smoothing / 2]

  a_views = 0.5 / temperature  # q . k = cos 60 deg
  a_queue = {
    0: 0.0 / temperature,  # q . queue = cos 90 deg
    1: math.sqrt(3) / 2 / temperature,
  }  # k . queue = cos 30 deg
  per_anchor = []
  for anchor in (0, 1):  # the query, then the key
    s = [float(l) + math.log(p + 1e-9) for l, p in zip(class_logits[anchor], prior)]
    log_d = math.log(sum(math.exp(x) for x in s) + gamma * (math.exp(a_views) + math.exp(a_queue[anchor])))
    class_term = sum(w * (x - log_d) for w, x in zip(targets, s))
    positives = [a_views] + ([a_queue[anchor]] if queue_label == 0 else [])
    per_anchor.append(
      -(beta * class_term + alpha * sum(a - log_d for a in positives)) / (beta + alpha * len(positives))
    )
  want = sum(per_anchor) / 2

  got = gpaco_loss(
    query,
    key,
    queue,
    np.array([0], np.int32),
    np.array([queue_label], np.int32),
    class_logits,
    prior,
    alpha=alpha,
    beta=beta,
    gamma=gamma,
    temperature=temperature,
    label_smoothing=smoothing,
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


def _adjusted_scores(class_logits, prior):
  return np.asarray(class_logits, np.float64) + np.log(np.asarray(prior, np.float64) + 1e-9)


def _feature_logits(query, key, queue, num_anchors, temperature):
  """[A, 2B+K] float64 a_ij with the self column set to -inf."""
  features = np.concatenate([query, key, queue]).astype(np.float64)
  logits = features[:num_anchors] @ features.T / temperature
  logits[np.arange(num_anchors), np.arange(num_anchors)] = -np.inf
  return logits


@pytest.mark.parametrize("queue_size", [0, 32])
def test_alpha_and_gamma_zero_is_logit_adjusted_cross_entropy(queue_size):
  *inputs, class_logits, prior = _inputs(3, 8, queue_size, 10, views=2)
  for loss_fn, logits, labels in (
    (paco_loss, class_logits[:8], inputs[3]),
    (gpaco_loss, class_logits, np.tile(inputs[3], 2)),
  ):
    got = loss_fn(*inputs, logits, prior, alpha=0.0, gamma=0.0, temperature=0.2)
    want = reference_losses.cross_entropy_reference(_adjusted_scores(logits, prior), labels)
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_alpha_zero_with_gamma_keeps_features_in_the_denominator():
  # With alpha = 0 but gamma > 0 the loss is NOT the logit-adjusted CE: the
  # class target still competes with gamma * sum_{j != i} exp(a_ij).
  query, key, queue, labels, queue_labels, class_logits, prior = _inputs(4, 8, 32, 10)
  gamma, temperature = 1.5, 0.2
  s = _adjusted_scores(class_logits, prior)
  a = _feature_logits(query, key, queue, 8, temperature)
  log_d = np.log(np.exp(s).sum(axis=1) + gamma * np.exp(a).sum(axis=1))
  want = -(s[np.arange(8), labels] - log_d).mean()
  got = paco_loss(
    query, key, queue, labels, queue_labels, class_logits, prior, alpha=0.0, gamma=gamma, temperature=temperature
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)
  cross_entropy = reference_losses.cross_entropy_reference(s, labels)
  assert float(got) > cross_entropy + 0.1


@pytest.mark.parametrize("queue_size", [0, 32])
def test_no_same_class_sample_leaves_only_the_other_view(queue_size):
  # Distinct batch labels and a queue of other classes: P_i is just the
  # anchor's other view, which is always a positive, so
  # L_i = -[beta (s_iy - log D_i) + alpha (a_i,view - log D_i)] / (beta + alpha)
  # and only alpha = 0 leaves the class term alone.
  batch, num_classes, temperature, gamma = 8, 10, 0.2, 0.7
  query, key, queue, _, _, class_logits, prior = _inputs(5, batch, queue_size, num_classes, views=2)
  labels = np.arange(batch, dtype=np.int32)
  queue_labels = np.full(queue_size, num_classes - 1, np.int32)
  anchor_labels = np.tile(labels, 2)
  other_view = np.concatenate([np.arange(batch) + batch, np.arange(batch)])
  s = _adjusted_scores(class_logits, prior)
  a = _feature_logits(query, key, queue, 2 * batch, temperature)
  log_d = np.log(np.exp(s).sum(axis=1) + gamma * np.exp(a).sum(axis=1))
  class_term = s[np.arange(2 * batch), anchor_labels] - log_d
  view_term = a[np.arange(2 * batch), other_view] - log_d
  args = (query, key, queue, labels, queue_labels)
  for alpha, beta in ((0.3, 1.0), (0.0, 1.0), (1.0, 0.0)):
    want = -(beta * class_term + alpha * view_term) / (beta + alpha)
    np.testing.assert_allclose(
      paco_loss(*args, class_logits[:batch], prior, alpha=alpha, beta=beta, gamma=gamma, temperature=temperature),
      want[:batch].mean(),
      rtol=RTOL,
    )
    np.testing.assert_allclose(
      gpaco_loss(*args, class_logits, prior, alpha=alpha, beta=beta, gamma=gamma, temperature=temperature),
      want.mean(),
      rtol=RTOL,
    )


@pytest.mark.parametrize("queue_size", [0, 32])
def test_gpaco_is_mean_of_paco_over_both_views(queue_size):
  # Swapping query and key only permutes F, so the key anchors' losses are
  # PaCo's with the views' roles exchanged.
  query, key, queue, labels, queue_labels, class_logits, prior = _inputs(6, 8, queue_size, 10, views=2)
  kwargs = _kwargs(0.05, 1.0, 1.0, 0.2, 1.0)
  rest = (queue, labels, queue_labels)
  got = gpaco_loss(query, key, *rest, class_logits, prior, **kwargs)
  from_paco = (
    paco_loss(query, key, *rest, class_logits[:8], prior, **kwargs)
    + paco_loss(key, query, *rest, class_logits[8:], prior, **kwargs)
  ) / 2
  from_reference = (
    reference_losses.paco_reference(query, key, *rest, class_logits[:8], prior, **kwargs)
    + reference_losses.paco_reference(key, query, *rest, class_logits[8:], prior, **kwargs)
  ) / 2
  np.testing.assert_allclose(got, from_paco, rtol=RTOL)
  np.testing.assert_allclose(got, from_reference, rtol=RTOL)


def test_label_smoothing_is_affine_in_epsilon():
  # The targets w_i are affine in eps and the normaliser does not depend on
  # it, so L(eps) = (1 - eps) L(0) + eps L(1); L(0) is plain one-hot.
  inputs = _inputs(7, 8, 32, 10, views=2)
  kwargs = _kwargs(0.05, 1.0, 1.0, 0.2, 1.0)
  by_eps = {eps: float(gpaco_loss(*inputs, **kwargs, label_smoothing=eps)) for eps in (0.0, 0.3, 1.0)}
  np.testing.assert_allclose(by_eps[0.3], 0.7 * by_eps[0.0] + 0.3 * by_eps[1.0], rtol=RTOL)
  assert abs(by_eps[0.3] - by_eps[0.0]) > 1e-2
  # GPaCo has the PaCo class term: eps = 0 equals the one-hot reference.
  np.testing.assert_allclose(by_eps[0.0], reference_losses.gpaco_reference(*inputs, **kwargs), rtol=RTOL)


def test_row_shift_of_class_logits_only_cancels_without_features():
  # A per-row constant cancels in a softmax over the classes alone
  # (alpha = gamma = 0) but moves the classes against the features otherwise.
  inputs = list(_inputs(8, 8, 32, 10))
  shifted = list(inputs)
  shifted[5] = inputs[5] + np.linspace(-3, 3, 8, dtype=np.float32)[:, None]
  for alpha, gamma, shift_cancels in ((0.0, 0.0, True), (0.05, 1.0, False), (0.0, 1.0, False)):
    kwargs = dict(alpha=alpha, gamma=gamma, temperature=0.2)
    base, moved = paco_loss(*inputs, **kwargs), paco_loss(*shifted, **kwargs)
    if shift_cancels:
      np.testing.assert_allclose(moved, base, rtol=RTOL)
    else:
      assert abs(float(moved) - float(base)) > 1e-2


def test_permutation_and_rotation_invariance():
  query, key, queue, labels, queue_labels, class_logits, prior = _inputs(9, 8, 32, 10, views=2)
  kwargs = _kwargs(0.05, 1.0, 1.0, 0.2, 1.0)
  base = gpaco_loss(query, key, queue, labels, queue_labels, class_logits, prior, **kwargs)
  rng = np.random.default_rng(0)
  # Queue order, and batch order (rows of both views' logits with it).
  queue_order, batch_order = rng.permutation(32), rng.permutation(8)
  logits_order = np.concatenate([batch_order, batch_order + 8])
  np.testing.assert_allclose(
    gpaco_loss(
      query[batch_order],
      key[batch_order],
      queue[queue_order],
      labels[batch_order],
      queue_labels[queue_order],
      class_logits[logits_order],
      prior,
      **kwargs,
    ),
    base,
    rtol=RTOL,
  )
  # Renaming the classes (logit columns, prior and labels together).
  new_name = rng.permutation(10)
  columns = np.argsort(new_name)
  np.testing.assert_allclose(
    gpaco_loss(
      query,
      key,
      queue,
      new_name[labels].astype(np.int32),
      new_name[queue_labels].astype(np.int32),
      class_logits[:, columns],
      prior[columns],
      **kwargs,
    ),
    base,
    rtol=RTOL,
  )
  # A rotation of the embedding space keeps every dot product.
  rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  rotation = rotation.astype(np.float32)
  np.testing.assert_allclose(
    gpaco_loss(query @ rotation, key @ rotation, queue @ rotation, labels, queue_labels, class_logits, prior, **kwargs),
    base,
    rtol=RTOL,
  )


@pytest.mark.parametrize(
  "loss_fn,views", [pytest.param(paco_loss, 1, id="paco"), pytest.param(gpaco_loss, 2, id="gpaco")]
)
def test_gradients_reach_every_input_and_match_finite_differences(loss_fn, views):
  inputs = _inputs(10, 3, 5, 4, views=views)
  kwargs = _kwargs(0.5, 1.0, 1.0, 0.5, 1.0)
  grads = jax.grad(loss_fn, argnums=(0, 1, 2, 5))(*inputs, **kwargs)
  # Nothing is stopped inside the loss: the key (PaCo's step stops it
  # itself) and the queue (data, but it enters the logits) get gradients.
  for grad in grads:
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-3

  reference = reference_losses.paco_reference if views == 1 else reference_losses.gpaco_reference
  step = 1e-5
  for argnum, grad in zip((0, 5), (grads[0], grads[3])):
    numeric = np.zeros(grad.shape)
    for index in np.ndindex(grad.shape):
      values = []
      for sign in (1, -1):
        perturbed = list(inputs)
        perturbed[argnum] = inputs[argnum].astype(np.float64).copy()
        perturbed[argnum][index] += sign * step
        values.append(reference(*perturbed, **kwargs))
      numeric[index] = (values[0] - values[1]) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
  "loss_fn,views", [pytest.param(paco_loss, 1, id="paco"), pytest.param(gpaco_loss, 2, id="gpaco")]
)
def test_finite_at_low_temperature_with_orthogonal_features(loss_fn, views):
  # The row max is the self column 1/T = 200, so every kept exponential
  # underflows; the 1e-12 inside log D_i keeps value and gradients finite.
  eye = np.eye(32, dtype=np.float32)
  query, key, queue = eye[:4], eye[4:8], eye[8:]
  labels = np.arange(4, dtype=np.int32) % 3
  queue_labels = np.arange(24, dtype=np.int32) % 3
  class_logits = np.zeros((views * 4, 3), np.float32)
  value, grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 5))(
    query, key, queue, labels, queue_labels, class_logits, None, alpha=0.05, temperature=0.005
  )
  assert np.isfinite(value)
  for grad in grads:
    assert np.all(np.isfinite(grad))


def test_bfloat16_inputs_give_the_float32_loss_of_the_rounded_values():
  inputs = _inputs(11, 8, 32, 10)
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in inputs[:3]]
  got = paco_loss(*as_bf16, *inputs[3:], alpha=0.05, temperature=0.2)
  want = paco_loss(*[x.astype(jnp.float32) for x in as_bf16], *inputs[3:], alpha=0.05, temperature=0.2)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_errors_name_the_bad_value():
  query, key, queue, labels, queue_labels, class_logits, prior = _inputs(12, 4, 8, 5, views=2)
  args = (query, key, queue, labels, queue_labels)
  paco, gpaco = losses.paco_loss, losses.gpaco_loss
  kwargs = dict(alpha=0.05, temperature=0.2)
  with pytest.raises(
    ValueError,
    match=r"class_logits must be \[A, C\] with "
    r"A=8 anchors, got shape \(4, 5\)",
  ):
    gpaco(*args, class_logits[:4], prior, **kwargs)
  with pytest.raises(ValueError, match="A=4 anchors, got shape \\(8, 5\\)"):
    paco(*args, class_logits, prior, **kwargs)
  with pytest.raises(ValueError, match=r"class_prior shape \(4,\)"):
    paco(*args, class_logits[:4], prior[:4], **kwargs)
  with pytest.raises(ValueError, match="key shape"):
    paco(query, key[:3], *args[2:], class_logits[:4], prior, **kwargs)
  with pytest.raises(ValueError, match="queue_labels shape"):
    gpaco(*args[:4], queue_labels[:-1], class_logits, prior, **kwargs)
  with pytest.raises(ValueError, match="labels must be integers"):
    paco(*args[:3], labels.astype(np.float32), queue_labels, class_logits[:4], prior, **kwargs)
  with pytest.raises(ValueError, match="temperature=-0.2 must be > 0"):
    paco(*args, class_logits[:4], prior, alpha=0.05, temperature=-0.2)
  with pytest.raises(ValueError, match="sup_temperature=0 must be > 0"):
    gpaco(*args, class_logits, prior, **kwargs, sup_temperature=0)
  with pytest.raises(ValueError, match="alpha=-1 must be >= 0"):
    paco(*args, class_logits[:4], prior, alpha=-1, temperature=0.2)
  with pytest.raises(ValueError, match="gamma=-0.5 must be >= 0"):
    gpaco(*args, class_logits, prior, **kwargs, gamma=-0.5)
  with pytest.raises(ValueError, match="alpha=0 and beta=0"):
    paco(*args, class_logits[:4], prior, alpha=0, beta=0, temperature=0.2)
  with pytest.raises(ValueError, match=r"label_smoothing=1.5 must be in"):
    gpaco(*args, class_logits, prior, **kwargs, label_smoothing=1.5)
  with pytest.raises(ValueError, match="label_smoothing=0.1 needs C >= 2"):
    gpaco(
      *args[:3], np.zeros(4, np.int32), np.zeros(8, np.int32), class_logits[:, :1], None, **kwargs, label_smoothing=0.1
    )
