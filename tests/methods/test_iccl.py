"""ICCL's two samplers, its centroid update, and its pipeline contract (resume, processes, workers)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import base
from dscl_jax import methods
from dscl_jax.input import augment, pipeline
from dscl_jax.methods.iccl import class_means, ema_centroids
from tests.step_runner import case_config

COUNTS = (200, 100, 50, 20, 10, 5, 2, 1)


def _long_tailed_split(counts=COUNTS):
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (labels.size, 10, 10, 1), dtype=np.uint8)
  return base.Split("train", base.ArraySource(images, labels), labels)


def _iccl_batches(steps, power=0.0, **kwargs):
  cfg_augment = augment.default_augment_config(8, 1)
  cfg_pbsd = augment.default_pbsd_config()
  cfg_pbsd.enabled = False
  kwargs.setdefault("global_batch_size", 32)
  kwargs.setdefault("seed", 5)
  iterator = pipeline.pretrain_iterator(
    _long_tailed_split(),
    cfg_augment,
    cfg_pbsd,
    views=("query", "key", "class_aware"),
    sampler="instance_and_class_aware",
    class_aware_power=power,
    **kwargs,
  )
  batches = list(itertools.islice(iterator, steps))
  if hasattr(iterator, "close"):
    iterator.close()
  return batches


def _chi_square(observed, probabilities):
  expected = observed.sum() * np.asarray(probabilities)
  return ((observed - expected) ** 2 / expected).sum()


# 7 degrees of freedom: P(chi2 > 24.3) = 0.001.
CHI2_7_DOF = 24.3


def test_class_agnostic_sampler_follows_the_training_frequencies():
  labels = np.concatenate([b["label"] for b in _iccl_batches(24)])  # 768 draws, ~2 epochs of 388
  frequencies = np.asarray(COUNTS) / sum(COUNTS)
  assert _chi_square(np.bincount(labels, minlength=8), frequencies) < CHI2_7_DOF
  # ... and a class-uniform law is rejected for it (the test can tell the two samplers apart).
  assert _chi_square(np.bincount(labels, minlength=8), np.full(8, 1 / 8)) > 10 * CHI2_7_DOF


def test_class_aware_sampler_is_uniform_over_classes():
  labels = np.concatenate([b["class_aware_label"] for b in _iccl_batches(24)])
  assert _chi_square(np.bincount(labels, minlength=8), np.full(8, 1 / 8)) < CHI2_7_DOF
  assert _chi_square(np.bincount(labels, minlength=8), np.asarray(COUNTS) / sum(COUNTS)) > 10 * CHI2_7_DOF


def test_class_aware_sampler_with_a_power_follows_n_to_the_q():
  index_of = pipeline.ClassWeightedIndex(_long_tailed_split().labels, power=0.5)
  draws = [index_of(pipeline.sample_rng(0, p, 2)) for p in range(8000)]
  observed = np.bincount(_long_tailed_split().labels[draws], minlength=8)
  weights = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
  assert _chi_square(observed, weights) < CHI2_7_DOF
  assert _chi_square(observed, np.full(8, 1 / 8)) > 10 * CHI2_7_DOF


def test_the_two_samples_are_independent_draws():
  batch = _iccl_batches(1)[0]
  assert batch["class_aware"].shape == batch["query"].shape == (32, 8, 8, 1)
  assert batch["class_aware_label"].dtype == np.int32
  assert not np.array_equal(batch["class_aware"], batch["query"])


def test_restart_processes_and_workers_replay_the_same_batches():
  uninterrupted = _iccl_batches(6)
  for a, b in zip(_iccl_batches(3, start_step=3), uninterrupted[3:]):
    for name in b:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  shards = [_iccl_batches(3, process_index=k, process_count=2) for k in range(2)]
  for step in range(3):
    for name in uninterrupted[step]:
      np.testing.assert_array_equal(np.concatenate([s[step][name] for s in shards]), uninterrupted[step][name])
  for a, b in zip(_iccl_batches(4, num_workers=2), uninterrupted[:4]):
    for name in b:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_sampler_and_views_must_agree():
  cfg_augment, cfg_pbsd = augment.default_augment_config(8, 1), augment.default_pbsd_config()
  with pytest.raises(ValueError, match="'class_aware' view comes with the 'instance_and_class_aware' sampler"):
    pipeline.pretrain_iterator(
      _long_tailed_split(), cfg_augment, cfg_pbsd, views=("query", "class_aware"), global_batch_size=8, seed=0
    )
  with pytest.raises(ValueError, match="sampler 'tail' must be one of"):
    pipeline.pretrain_iterator(
      _long_tailed_split(), cfg_augment, cfg_pbsd, views=("query",), sampler="tail", global_batch_size=8, seed=0
    )


# ---------------------------------------------------------------------------------------- centroids


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_ema_centroid_update_matches_a_direct_computation():
  rng = np.random.default_rng(0)
  centroids = _unit(rng, 5, 4).astype(np.float32)
  seen = np.array([True, True, False, False, True])
  keys = _unit(rng, 6, 4).astype(np.float32)
  labels = np.array([0, 2, 0, 3, 3, 3], np.int32)
  m = 0.9
  new, new_seen = ema_centroids(jnp.asarray(centroids), jnp.asarray(seen), jnp.asarray(keys), jnp.asarray(labels), m)
  expected = centroids.astype(np.float64).copy()
  mean0 = keys[[0, 2]].astype(np.float64).mean(0)
  expected[0] = m * centroids[0] + (1 - m) * mean0  # seen before: EMA
  expected[2] = keys[1]  # first time: its (single) embedding
  expected[3] = keys[[3, 4, 5]].astype(np.float64).mean(0)  # first time: the batch mean
  expected[[0, 2, 3]] /= np.linalg.norm(expected[[0, 2, 3]], axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-6)  # 1 and 4 unchanged
  np.testing.assert_array_equal(np.asarray(new_seen), [True, True, True, True, True])


def test_epoch_centroids_refresh_at_the_end_of_each_epoch():
  config = case_config("iccl")
  config.iccl.centroid_update = "epoch"
  method = methods.get_method(config)
  counts = np.array([20, 12])  # 32 images: 2 steps of 16 per epoch
  state = method.init_state(jax.random.PRNGKey(0), counts)
  assert int(state["steps_per_epoch"]) == 2 and not np.asarray(state["centroids"]).any()
  rng = np.random.default_rng(1)
  keys = [_unit(rng, 16, config.model.embed_dim).astype(np.float32) for _ in range(2)]
  labels = [rng.integers(0, 2, 16).astype(np.int32) for _ in range(2)]
  state = method.update_centroids(state, jnp.asarray(keys[0]), jnp.asarray(labels[0]), 0)
  assert not np.asarray(state["centroids"]).any()  # mid-epoch: nothing replaced yet
  state = method.update_centroids(state, jnp.asarray(keys[1]), jnp.asarray(labels[1]), 1)
  all_keys, all_labels = np.concatenate(keys).astype(np.float64), np.concatenate(labels)
  for c in range(2):
    mean = all_keys[all_labels == c].mean(0)
    np.testing.assert_allclose(np.asarray(state["centroids"])[c], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
  assert not np.asarray(state["sums"]).any() and not np.asarray(state["counts"]).any()


def test_class_means_sums_by_label():
  sums, counts = class_means(jnp.eye(3), jnp.array([2, 0, 2]), 4)
  np.testing.assert_array_equal(np.asarray(sums), [[0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(counts), [1, 0, 2, 0])


def test_iccl_config_errors_name_the_field():
  config = case_config("iccl")
  config.iccl.centroid_update = "batch"
  with pytest.raises(ValueError, match="iccl.centroid_update 'batch'"):
    methods.get_method(config).validate(config)
  config = case_config("iccl")
  config.iccl.class_aware_power = 1.5
  with pytest.raises(ValueError, match=r"iccl.class_aware_power 1.5 must be in \[0, 1\]"):
    methods.get_method(config).validate(config)
  config.iccl.class_aware_power = 1.0  # an instance-uniform second sample: a control, allowed
  methods.get_method(config).validate(config)
