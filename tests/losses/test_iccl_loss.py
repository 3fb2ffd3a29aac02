"""Tests for the ICCL interpolative centroid contrastive loss: a float64
reference, hand-worked cases and the identities the equation implies."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dscl_jax import losses
from tests import reference_losses
from tests.reference_losses import unit_rows as _unit
from tests.reference_losses import vectors_at_angles as _angles

# Jitted, so lam and temperature are traced and each input shape compiles
# once; the Python-level checks are exercised on the eager loss instead.
iccl_loss = jax.jit(losses.iccl_loss)

RTOL = 1e-5
ATOL = 1e-6


def _inputs(seed, batch, num_classes, dim):
  """Unit embeddings and centroids, two label vectors and a [B] lam."""
  rng = np.random.default_rng(seed)
  embedding = _unit(rng, batch, dim)
  centroids = _unit(rng, num_classes, dim)
  labels_a = rng.integers(0, num_classes, size=batch).astype(np.int32)
  labels_b = rng.integers(0, num_classes, size=batch).astype(np.int32)
  lam = rng.uniform(size=batch).astype(np.float32)
  lam[:2] = [0.0, 1.0][:batch]  # The end points, exactly.
  return embedding, centroids, labels_a, labels_b, lam


def _centroid_cross_entropy(embedding, centroids, labels, temperature):
  """Plain centroid-retrieval CE, mean_b -log softmax(z_b . c / T)[y_b]."""
  logits = np.asarray(embedding, np.float64) @ np.asarray(centroids, np.float64).T / temperature
  return float(
    jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)))
  )


# (B, C, D): one sample and two classes, C = 1 (the loss is exactly 0), more
# classes than samples, and a long-tailed-sized C with the real D = 128.
SHAPES = [(1, 2, 2), (3, 1, 4), (4, 3, 8), (16, 10, 16), (64, 1000, 128)]
TEMPERATURES = [0.05, 0.1, 0.5, 1.0]


@pytest.mark.parametrize("batch,num_classes,dim", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar_lam", "per_sample_lam"])
def test_matches_reference(batch, num_classes, dim, temperature, per_sample):
  embedding, centroids, labels_a, labels_b, lam = _inputs(batch + num_classes + dim, batch, num_classes, dim)
  lam = lam if per_sample else 0.3
  got = iccl_loss(embedding, centroids, labels_a, labels_b, lam, temperature=temperature)
  want = reference_losses.iccl_reference(embedding, centroids, labels_a, labels_b, lam, temperature)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_eager_scalar_lam_equals_broadcast_vector():
  embedding, centroids, labels_a, labels_b, _ = _inputs(0, 8, 5, 8)
  args = (embedding, centroids, labels_a, labels_b)
  eager = losses.iccl_loss(*args, 0.3, temperature=0.2)
  np.testing.assert_allclose(eager, iccl_loss(*args, np.full(8, 0.3, np.float32), temperature=0.2), rtol=RTOL)
  np.testing.assert_allclose(eager, iccl_loss(*args, 0.3, temperature=0.2), rtol=RTOL)
  np.testing.assert_allclose(eager, reference_losses.iccl_reference(*args, 0.3, 0.2), rtol=RTOL)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_one_sample_two_classes_by_hand(lam):
  # z at 0 deg; c_0 at 0 deg (cos 1), c_1 at 60 deg (cos 1/2); y_a=0, y_b=1.
  temperature = 0.5
  logit_0, logit_1 = 1.0 / temperature, 0.5 / temperature
  log_z = math.log(math.exp(logit_0) + math.exp(logit_1))
  want = -lam * (logit_0 - log_z) - (1 - lam) * (logit_1 - log_z)
  got = iccl_loss(
    _angles(0.0),
    _angles(0.0, math.pi / 3),
    np.array([0], np.int32),
    np.array([1], np.int32),
    lam,
    temperature=temperature,
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_two_samples_three_classes_per_sample_lam_by_hand():
  # Centroids at 0, 120 and 240 deg; z_0 at 0 deg (cosines 1, -1/2, -1/2),
  # z_1 at 90 deg (cosines 0, sqrt(3)/2, -sqrt(3)/2).
  temperature = 0.2
  centroids = _angles(0.0, 2 * math.pi / 3, 4 * math.pi / 3)
  embedding = _angles(0.0, math.pi / 2)
  cosines = [[1.0, -0.5, -0.5], [0.0, math.sqrt(3) / 2, -math.sqrt(3) / 2]]
  labels_a, labels_b = [2, 1], [0, 0]
  lam = [0.25, 0.8]
  per_sample = []
  for b in range(2):
    logits = [c / temperature for c in cosines[b]]
    log_z = math.log(sum(math.exp(l) for l in logits))
    per_sample.append(-lam[b] * (logits[labels_a[b]] - log_z) - (1 - lam[b]) * (logits[labels_b[b]] - log_z))
  want = sum(per_sample) / 2
  got = iccl_loss(
    embedding,
    centroids,
    np.array(labels_a, np.int32),
    np.array(labels_b, np.int32),
    np.array(lam, np.float32),
    temperature=temperature,
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar_lam", "per_sample_lam"])
def test_lam_end_points_are_centroid_cross_entropy(per_sample):
  embedding, centroids, labels_a, labels_b, _ = _inputs(1, 16, 10, 16)
  temperature = 0.1
  ce_a = _centroid_cross_entropy(embedding, centroids, labels_a, temperature)
  ce_b = _centroid_cross_entropy(embedding, centroids, labels_b, temperature)
  assert abs(ce_a - ce_b) > 0.1  # Else the test could not tell a from b.
  args = (embedding, centroids, labels_a, labels_b)
  one, zero = ((np.full(16, v, np.float32) if per_sample else v) for v in (1.0, 0.0))
  np.testing.assert_allclose(iccl_loss(*args, one, temperature=temperature), ce_a, rtol=RTOL)
  np.testing.assert_allclose(iccl_loss(*args, zero, temperature=temperature), ce_b, rtol=RTOL)


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar_lam", "per_sample_lam"])
def test_symmetric_under_swapping_the_two_sources(per_sample):
  embedding, centroids, labels_a, labels_b, lam = _inputs(2, 16, 10, 16)
  lam = lam if per_sample else np.float32(0.3)
  base = iccl_loss(embedding, centroids, labels_a, labels_b, lam, temperature=0.1)
  swapped = iccl_loss(embedding, centroids, labels_b, labels_a, 1 - lam, temperature=0.1)
  np.testing.assert_allclose(swapped, base, rtol=RTOL)
  # Swapping the labels alone (lam kept) does change the loss.
  labels_only = iccl_loss(embedding, centroids, labels_b, labels_a, lam, temperature=0.1)
  assert abs(float(labels_only) - float(base)) > 1e-2


def test_same_source_class_does_not_depend_on_lam():
  embedding, centroids, labels, _, lam = _inputs(3, 16, 10, 16)
  want = _centroid_cross_entropy(embedding, centroids, labels, 0.2)
  for value in (0.0, 0.3, 1.0, lam):
    np.testing.assert_allclose(iccl_loss(embedding, centroids, labels, labels, value, temperature=0.2), want, rtol=RTOL)


def test_affine_in_lam():
  embedding, centroids, labels_a, labels_b, lam = _inputs(4, 16, 10, 16)
  args = (embedding, centroids, labels_a, labels_b)
  at_one = float(iccl_loss(*args, 1.0, temperature=0.1))
  at_zero = float(iccl_loss(*args, 0.0, temperature=0.1))
  assert abs(at_one - at_zero) > 0.1
  for value in (0.25, 0.7):
    np.testing.assert_allclose(
      iccl_loss(*args, value, temperature=0.1), value * at_one + (1 - value) * at_zero, rtol=RTOL
    )
  # Per sample: each row mixes its own two end points with its own lam_b.
  rows_at = {
    v: np.array(
      [
        float(iccl_loss(embedding[b : b + 1], centroids, labels_a[b : b + 1], labels_b[b : b + 1], v, temperature=0.1))
        for b in range(16)
      ]
    )
    for v in (0.0, 1.0)
  }
  np.testing.assert_allclose(
    iccl_loss(*args, lam, temperature=0.1), np.mean(lam * rows_at[1.0] + (1 - lam) * rows_at[0.0]), rtol=RTOL
  )
  # A reversed lam vector is a different loss: lam_b is tied to sample b.
  assert abs(float(iccl_loss(*args, lam[::-1], temperature=0.1)) - float(iccl_loss(*args, lam, temperature=0.1))) > 1e-3


def test_inputs_are_not_renormalised():
  # Scaling z by s is the same as dividing T by s only if nothing inside
  # renormalises z (or the centroids).
  embedding, centroids, labels_a, labels_b, lam = _inputs(5, 8, 5, 8)
  args = (labels_a, labels_b, lam)
  base = iccl_loss(embedding, centroids, *args, temperature=0.2)
  np.testing.assert_allclose(iccl_loss(2 * embedding, centroids, *args, temperature=0.4), base, rtol=RTOL)
  np.testing.assert_allclose(iccl_loss(embedding, 2 * centroids, *args, temperature=0.4), base, rtol=RTOL)
  assert abs(float(iccl_loss(2 * embedding, centroids, *args, temperature=0.2)) - float(base)) > 1e-2


def test_permutation_renaming_and_rotation_invariance():
  embedding, centroids, labels_a, labels_b, lam = _inputs(6, 16, 10, 16)
  base = iccl_loss(embedding, centroids, labels_a, labels_b, lam, temperature=0.1)
  rng = np.random.default_rng(0)
  order = rng.permutation(16)  # Batch order, lam with it.
  np.testing.assert_allclose(
    iccl_loss(embedding[order], centroids, labels_a[order], labels_b[order], lam[order], temperature=0.1),
    base,
    rtol=RTOL,
  )
  new_name = rng.permutation(10)  # Centroid rows and labels together.
  np.testing.assert_allclose(
    iccl_loss(
      embedding,
      centroids[np.argsort(new_name)],
      new_name[labels_a].astype(np.int32),
      new_name[labels_b].astype(np.int32),
      lam,
      temperature=0.1,
    ),
    base,
    rtol=RTOL,
  )
  rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  rotation = rotation.astype(np.float32)
  np.testing.assert_allclose(
    iccl_loss(embedding @ rotation, centroids @ rotation, labels_a, labels_b, lam, temperature=0.1), base, rtol=RTOL
  )


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar_lam", "per_sample_lam"])
def test_gradients_match_finite_differences(per_sample):
  embedding, centroids, labels_a, labels_b, lam = _inputs(7, 4, 3, 5)
  lam = lam if per_sample else 0.3
  temperature = 0.5
  grads = jax.grad(iccl_loss, argnums=(0, 1))(embedding, centroids, labels_a, labels_b, lam, temperature=temperature)
  for grad in grads:
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-3

  step = 1e-5
  for argnum, grad in zip((0, 1), grads):
    inputs = [embedding, centroids]
    numeric = np.zeros(grad.shape)
    for index in np.ndindex(grad.shape):
      values = []
      for sign in (1, -1):
        perturbed = [x.astype(np.float64) for x in inputs]
        perturbed[argnum][index] += sign * step
        values.append(reference_losses.iccl_reference(*perturbed, labels_a, labels_b, lam, temperature))
      numeric[index] = (values[0] - values[1]) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_finite_at_low_temperature():
  # Logits reach 1/T = 200 > log(float32 max) ~ 88.7: only a stable
  # log-softmax keeps value and gradients finite.
  embedding, centroids, labels_a, labels_b, lam = _inputs(8, 8, 10, 16)
  centroids[:8] = embedding  # Sample b sits on centroid b: logit 1/T.
  temperature = 0.005
  value, grads = jax.value_and_grad(iccl_loss, argnums=(0, 1))(
    embedding, centroids, labels_a, labels_b, lam, temperature=temperature
  )
  np.testing.assert_allclose(
    value, reference_losses.iccl_reference(embedding, centroids, labels_a, labels_b, lam, temperature), rtol=1e-4
  )
  for grad in grads:
    assert np.all(np.isfinite(grad))


def test_bfloat16_inputs_give_the_float32_loss_of_the_rounded_values():
  embedding, centroids, labels_a, labels_b, lam = _inputs(9, 8, 5, 8)
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (embedding, centroids)]
  got = iccl_loss(*as_bf16, labels_a, labels_b, lam, temperature=0.2)
  want = iccl_loss(*[x.astype(jnp.float32) for x in as_bf16], labels_a, labels_b, lam, temperature=0.2)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_errors_name_the_bad_value():
  embedding, centroids, labels_a, labels_b, lam = _inputs(10, 4, 3, 5)
  loss = losses.iccl_loss
  with pytest.raises(
    ValueError,
    match=r"embedding must be \[B, D\], got "
    r"shape \(20,\)",
  ):
    loss(embedding.ravel(), centroids, labels_a, labels_b, 0.5, temperature=0.1)
  with pytest.raises(
    ValueError,
    match=r"centroids must be \[C, D\] with "
    r"D=5, got shape \(3, 4\)",
  ):
    loss(embedding, centroids[:, :4], labels_a, labels_b, 0.5, temperature=0.1)
  with pytest.raises(ValueError, match=r"D=5, got shape \(5,\)"):
    loss(embedding, centroids[0], labels_a, labels_b, 0.5, temperature=0.1)
  with pytest.raises(ValueError, match="got C=0"):
    loss(embedding, centroids[:0], labels_a, labels_b, 0.5, temperature=0.1)
  with pytest.raises(
    ValueError,
    match=r"labels_a shape \(3,\) must be "
    r"\[B\]=\(4,\)",
  ):
    loss(embedding, centroids, labels_a[:3], labels_b, 0.5, temperature=0.1)
  with pytest.raises(ValueError, match=r"labels_b shape \(4, 1\)"):
    loss(embedding, centroids, labels_a, labels_b[:, None], 0.5, temperature=0.1)
  with pytest.raises(ValueError, match="labels_b must be integers, got dtype float32"):
    loss(embedding, centroids, labels_a, labels_b.astype(np.float32), 0.5, temperature=0.1)
  with pytest.raises(
    ValueError,
    match=r"lam must be a scalar or \[B\]="
    r"\(4,\), got shape \(5,\)",
  ):
    loss(embedding, centroids, labels_a, labels_b, np.zeros(5, np.float32), temperature=0.1)
  with pytest.raises(ValueError, match=r"got shape \(4, 1\)"):
    loss(embedding, centroids, labels_a, labels_b, lam[:, None], temperature=0.1)
  with pytest.raises(ValueError, match=r"lam=1.5 must be in \[0, 1\]"):
    loss(embedding, centroids, labels_a, labels_b, 1.5, temperature=0.1)
  with pytest.raises(ValueError, match=r"lam=-0.1 must be in \[0, 1\]"):
    loss(embedding, centroids, labels_a, labels_b, -0.1, temperature=0.1)
  with pytest.raises(
    ValueError,
    match=r"lam must be in \[0, 1\], got 1.25 "
    r"\(first of 1 out of range\)",
  ):
    loss(embedding, centroids, labels_a, labels_b, np.array([0.5, 1.25, 0.0, 1.0], np.float32), temperature=0.1)
  with pytest.raises(ValueError, match="temperature=0 must be > 0"):
    loss(embedding, centroids, labels_a, labels_b, 0.5, temperature=0)
  with pytest.raises(ValueError, match="temperature=-0.1 must be > 0"):
    loss(embedding, centroids, labels_a, labels_b, 0.5, temperature=-0.1)
  # The end points themselves are valid.
  for value in (0, 1, 0.0, 1.0):
    assert np.isfinite(loss(embedding, centroids, labels_a, labels_b, value, temperature=0.1))
