"""Step-level checks: the loss terms a jitted step reports are recomputed outside it, from the model's own
forward outputs, with the float64 NumPy references (roi_align included) and the key BatchNorm in groups.

Only the networks are shared with the step (flax `apply` of the same modules); the momentum update, the
shuffle, the normalisation, roi_align, the box pooling and every loss are recomputed here in NumPy.
"""

import jax
import numpy as np
import pytest

from dscl_jax import methods
from dscl_jax.core.build import build_models
from dscl_jax.methods import get_method
from tests import reference_losses as ref
from tests.ops.test_roi_align import reference_roi_align
from tests.step_runner import CLASS_COUNTS, case_config, random_batches, setup

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def crop_major(x):
  return np.swapaxes(np.asarray(x), 0, 1).reshape((-1,) + np.shape(x)[2:])


def momentum_keys(config, state, batch, online, target):
  """The target's EMA step, then its grouped-BatchNorm embedding of the permuted key batch, un-permuted."""
  m = config.moco.momentum
  params = jax.device_get(state.params)
  target_params = jax.tree.map(
    lambda k, q: m * np.asarray(k) + (1 - m) * np.asarray(q), jax.device_get(state.target_params), params
  )
  # The shuffle is drawn from the state's key folded with the step (resume-exact); reproduce the draw.
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(state.rng, state.step), len(batch["label"])))
  out, _ = target.apply(
    {"params": target_params, "batch_stats": jax.device_get(state.target_batch_stats)},
    batch["key"][perm],
    train=True,
    mutable=["batch_stats"],
  )
  keys = np.zeros(out["embedding"].shape)
  keys[perm] = normalize(out["embedding"])
  return keys


def online_outputs(state, images, online):
  out, _ = online.apply(
    {"params": state.params, "batch_stats": state.batch_stats}, images, train=True, mutable=["batch_stats"]
  )
  return jax.device_get(out)


def first_step(case):
  config = case_config(case)
  assert config.model.key_bn_group_size and config.model.key_bn_group_size < config.train.batch_size
  state, step, _ = setup(config)
  batch = next(random_batches(config, 1))
  before = jax.device_get(state)  # the step donates its input state
  _, metrics = step(state, batch)
  online, target = build_models(config, get_method(config), 10)
  return config, before, batch, jax.device_get(metrics), online, target


def test_dscl_pbsd_terms_match_numpy():
  config, state, batch, metrics, online, target = first_step("dscl_pbsd")
  keys = momentum_keys(config, state, batch, online, target)
  out = online_outputs(state, batch["query"], online)
  query = normalize(out["embedding"])
  queue, queue_labels = np.asarray(state.queue), np.asarray(state.queue_labels)
  labels = batch["label"]
  expected_dscl = ref.dscl_reference(
    query, keys, queue, labels, queue_labels, config.loss.beta, config.loss.temperature
  )
  np.testing.assert_allclose(metrics["dscl"], expected_dscl, **TOLERANCE)

  b, n = batch["small_crops"].shape[:2]
  # The reference's student: one encoder call per crop, so BatchNorm statistics per crop batch.
  student = np.stack(
    [normalize(online_outputs(state, batch["small_crops"][:, i], online)["embedding"]) for i in range(n)]
  )
  feature_map = out["feature_map"]
  boxes = crop_major(batch["boxes"])
  pooled = reference_roi_align(
    feature_map, boxes, np.tile(np.arange(b), n), (2, 2), feature_map.shape[1] / batch["query"].shape[1], -1, False
  )
  teacher_in = pooled.mean(axis=(1, 2)).astype(np.float32)
  projected = online.apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    teacher_in,
    train=True,
    method="project",
    mutable=["batch_stats"],
  )[0]
  teacher = normalize(projected).reshape(n, b, -1)
  expected_pbsd = ref.pbsd_reference(teacher, student, keys, queue, config.loss.temperature)
  np.testing.assert_allclose(metrics["pbsd"], expected_pbsd, **TOLERANCE)
  np.testing.assert_allclose(metrics["loss"], expected_dscl + config.pbsd.weight * expected_pbsd, **TOLERANCE)


def test_paco_loss_in_the_step_matches_numpy():
  config, state, batch, metrics, online, target = first_step("paco")
  keys = momentum_keys(config, state, batch, online, target)
  out = online_outputs(state, batch["query"], online)
  prior = CLASS_COUNTS / CLASS_COUNTS.sum()
  np.testing.assert_allclose(np.asarray(state.method_state["class_prior"]), prior, rtol=1e-6)
  p = config.paco
  expected = ref.paco_reference(
    normalize(out["embedding"]),
    keys,
    np.asarray(state.queue),
    batch["label"],
    np.asarray(state.queue_labels),
    out["logits"],
    prior,
    p.alpha,
    p.beta,
    p.gamma,
    config.loss.temperature,
    p.sup_temperature,
  )
  np.testing.assert_allclose(metrics["paco"], expected, **TOLERANCE)
  np.testing.assert_allclose(metrics["loss"], expected, **TOLERANCE)


def test_gpaco_loss_in_the_step_matches_numpy():
  """No target: both views through the online encoder, each call with its own BatchNorm statistics."""
  config, state, batch, metrics, online, _ = first_step("gpaco")
  assert state.target_params is None
  out_q = online_outputs(state, batch["query"], online)
  out_k = online_outputs(state, batch["key"], online)
  prior = CLASS_COUNTS / CLASS_COUNTS.sum()
  p = config.paco
  expected = ref.gpaco_reference(
    normalize(out_q["embedding"]),
    normalize(out_k["embedding"]),
    np.asarray(state.queue),
    batch["label"],
    np.asarray(state.queue_labels),
    np.concatenate([out_q["logits"], out_k["logits"]]),
    prior,
    p.alpha,
    p.beta,
    p.gamma,
    config.loss.temperature,
    p.sup_temperature,
    p.label_smoothing,
  )
  np.testing.assert_allclose(metrics["gpaco"], expected, **TOLERANCE)


def test_gpaco_queue_holds_the_online_keys():
  config = case_config("gpaco")
  state, step, _ = setup(config)
  online, _ = build_models(config, get_method(config), 10)
  batch = next(random_batches(config, 1))
  before = jax.device_get(state)
  state, _ = step(state, batch)
  keys = normalize(online_outputs(before, batch["key"], online)["embedding"])
  np.testing.assert_allclose(np.asarray(state.queue)[:16], keys, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(state.queue_labels)[:16], batch["label"])


@pytest.mark.parametrize(
  "case,views,target,queue,head,classifier",
  [
    ("ce", ("query",), False, False, None, True),
    ("dscl", ("query", "key"), True, True, "mlp", False),
    ("dscl_pbsd", ("query", "key", "small_crops"), True, True, "mlp", False),
    ("paco", ("query", "key"), True, True, "mlp_bn", True),
    ("gpaco", ("query", "key"), False, True, "mlp3", True),
    ("iccl", ("query", "key", "class_aware"), True, False, "mlp", True),
  ],
)
def test_requirements_shape_the_models_and_batches(case, views, target, queue, head, classifier):
  config = case_config(case)
  needs = methods.get_method(config).requirements
  assert (needs.views, needs.momentum_target, needs.queue) == (views, target, queue)
  assert (needs.projection_head, needs.classifier) == (head, classifier)
  batch = next(random_batches(config, 1))
  extra = {"small_crops": {"boxes"}, "class_aware": {"class_aware_label"}}
  assert set(batch) == set(views) | {"label"} | set().union(*(extra.get(v, set()) for v in views))
  online, target_model = build_models(config, get_method(config), 10)
  assert (target_model is None) == (not target)
  variables = online.init(jax.random.PRNGKey(0), batch["query"][:2], train=False)
  assert ("classifier" in variables["params"]) == classifier
  assert ("head" in variables["params"]) == (head is not None)
  if head == "mlp_bn":
    assert "hidden_bn" in variables["batch_stats"]["head"]
  if head == "mlp3":
    assert "hidden2" in variables["params"]["head"]


def test_unknown_method_names_the_choices():
  config = case_config("dscl")
  config.method = "moco"
  with pytest.raises(
    ValueError, match=r"method 'moco' is not one of \('ce', 'dscl', 'gpaco', 'iccl', 'paco', 'supcon'\)"
  ):
    methods.get_method(config)


def test_paco_needs_class_counts():
  with pytest.raises(ValueError, match="class counts"):
    methods.get_method(case_config("paco")).init_state(jax.random.PRNGKey(0), None)


def test_iccl_terms_in_the_step_match_numpy():
  """After a few steps (so the centroids are set), one step's three ICCL terms and its centroid update,
  recomputed from the model outputs: lambda is the step's draw (the state's key folded with the step and
  the method's stream), everything else is NumPy."""
  config = case_config("iccl")
  state, step, _ = setup(config)
  batches = list(random_batches(config, 4))
  for batch in batches[:3]:
    state, _ = step(state, batch)
  before, batch = jax.device_get(state), batches[3]
  after, metrics = step(state, batch)
  online, target = build_models(config, get_method(config), 10)
  step_rng = jax.random.fold_in(before.rng, before.step)
  lam = np.asarray(
    jax.random.beta(
      jax.random.fold_in(step_rng, 1), config.iccl.beta_a, config.iccl.beta_a, (len(batch["label"]),), np.float32
    ),
    np.float64,
  )
  mixed = lam[:, None, None, None] * batch["query"] + (1 - lam[:, None, None, None]) * batch["class_aware"]
  out_mixed = online_outputs(before, mixed.astype(np.float32), online)
  out_a = online_outputs(before, batch["query"], online)
  centroids = np.asarray(before.method_state["centroids"])
  assert np.asarray(before.method_state["seen"]).any()
  labels_a, labels_b = batch["label"], batch["class_aware_label"]
  np.testing.assert_allclose(
    metrics["icc"],
    ref.iccl_reference(normalize(out_mixed["embedding"]), centroids, labels_a, labels_b, lam, config.iccl.temperature),
    **TOLERANCE,
  )
  np.testing.assert_allclose(metrics["ce"], ref.cross_entropy_reference(out_a["logits"], labels_a), **TOLERANCE)
  log_p = out_mixed["logits"] - out_mixed["logits"].max(1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
  rows = np.arange(len(lam))
  expected_mix = np.mean(-lam * log_p[rows, labels_a] - (1 - lam) * log_p[rows, labels_b])
  np.testing.assert_allclose(metrics["mix_ce"], expected_mix, **TOLERANCE)
  w = config.iccl
  np.testing.assert_allclose(
    metrics["loss"],
    w.weight_icc * metrics["icc"] + w.weight_ce * metrics["ce"] + w.weight_mix * metrics["mix_ce"],
    **TOLERANCE,
  )
  # The centroids then move towards the target's embeddings of the class-agnostic key views (EMA).
  keys = momentum_keys(config, before, batch, online, target)
  expected = centroids.astype(np.float64).copy()
  seen = np.asarray(before.method_state["seen"])
  for c in np.unique(labels_a):
    mean = keys[labels_a == c].mean(0)
    moved = w.centroid_momentum * centroids[c] + (1 - w.centroid_momentum) * mean if seen[c] else mean
    expected[c] = moved / np.linalg.norm(moved)
  np.testing.assert_allclose(np.asarray(after.method_state["centroids"]), expected, rtol=1e-4, atol=1e-5)
