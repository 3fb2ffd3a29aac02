"""The grain input pipeline: shapes, the determinism contract, sharding over processes, samplers, eval."""

import itertools

import numpy as np
import pytest

from data import base
from dscl_jax.input import augment, pipeline

NUM_EXAMPLES = 40
SIZE = 12


def _split(num_examples=NUM_EXAMPLES, num_classes=4, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_examples, 14, 14, 1), dtype=np.uint8)
  labels = (np.arange(num_examples) % num_classes).astype(np.int32)
  return base.Split("train", base.ArraySource(images, labels), labels)


def _configs(pbsd=True):
  cfg_augment = augment.default_augment_config(SIZE, 1)
  cfg_pbsd = augment.default_pbsd_config()
  cfg_pbsd.enabled, cfg_pbsd.num_crops, cfg_pbsd.crop_size = pbsd, 3, 6
  return cfg_augment, cfg_pbsd


def _take(iterator, steps):
  batches = list(itertools.islice(iterator, steps))
  if hasattr(iterator, "close"):
    iterator.close()
  return batches


def _assert_same_batches(actual, expected):
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    assert set(a) == set(e)
    for name in e:
      np.testing.assert_array_equal(a[name], e[name], err_msg=name)


def _pretrain(steps, pbsd=True, **kwargs):
  cfg_augment, cfg_pbsd = _configs(pbsd)
  kwargs.setdefault("global_batch_size", 16)
  kwargs.setdefault("seed", 3)
  return _take(pipeline.pretrain_iterator(_split(), cfg_augment, cfg_pbsd, **kwargs), steps)


def test_pretrain_batch_shapes_and_dtypes():
  batch = _pretrain(1)[0]
  assert batch["query"].shape == batch["key"].shape == (16, SIZE, SIZE, 1)
  assert batch["query"].dtype == batch["key"].dtype == np.uint8  # normalised on the device (dscl_jax.input.pixels)
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["small_crops"].shape == (16, 3, 6, 6, 1) and batch["small_crops"].dtype == np.uint8
  assert batch["boxes"].shape == (16, 3, 4) and batch["boxes"].dtype == np.float32
  assert set(_pretrain(1, pbsd=False)[0]) == {"query", "key", "label"}


def test_sample_is_a_function_of_seed_and_global_position():
  """Global position p reads image permutation_e[p % N] of epoch e = p // N, augmented by rng(seed, p)."""
  cfg_augment, cfg_pbsd = _configs()
  split = _split()
  batches = _pretrain(6)  # 96 positions: 2.4 epochs of 40
  for p in (0, 17, 39, 40, 77, 95):
    step, row = divmod(p, 16)
    index = pipeline.epoch_permutation(3, p // NUM_EXAMPLES, NUM_EXAMPLES)[p % NUM_EXAMPLES]
    views = augment.pretrain_views(split.source.images[index], pipeline.sample_rng(3, p), cfg_augment, cfg_pbsd)
    for name, value in views.items():
      got = batches[step][name][row]
      if got.dtype == np.uint8:  # image views: the host-normalised recipe is their normalisation
        got = augment.normalize(got, cfg_augment.mean, cfg_augment.std)
      np.testing.assert_array_equal(got, value, err_msg=f"{name} at {p}")
    assert batches[step]["label"][row] == split.labels[index]


def test_epochs_are_permutations_and_differ():
  first = pipeline.epoch_permutation(3, 0, NUM_EXAMPLES)
  second = pipeline.epoch_permutation(3, 1, NUM_EXAMPLES)
  np.testing.assert_array_equal(np.sort(first), np.arange(NUM_EXAMPLES))
  np.testing.assert_array_equal(np.sort(second), np.arange(NUM_EXAMPLES))
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, pipeline.epoch_permutation(4, 0, NUM_EXAMPLES))
  # Labels over one epoch of instance-uniform sampling are the class counts exactly.
  labels = np.concatenate([b["label"] for b in _pretrain(5, pbsd=False, global_batch_size=8)])
  np.testing.assert_array_equal(np.bincount(labels), np.bincount(_split().labels))


def test_restart_replays_the_uninterrupted_run():
  uninterrupted = _pretrain(7)
  _assert_same_batches(_pretrain(3, start_step=4), uninterrupted[4:])
  assert not np.array_equal(_pretrain(1, seed=4)[0]["query"], uninterrupted[0]["query"])


def test_process_shards_concatenate_to_the_single_process_batch():
  single = _pretrain(4)
  shards = [_pretrain(4, process_index=k, process_count=2) for k in range(2)]
  for step, batch in enumerate(single):
    assert shards[0][step]["query"].shape[0] == 8
    for name in batch:
      np.testing.assert_array_equal(np.concatenate([s[step][name] for s in shards]), batch[name])


@pytest.mark.parametrize("num_workers", [1, 2])
def test_worker_processes_do_not_change_the_batches(num_workers):
  _assert_same_batches(_pretrain(5, num_workers=num_workers), _pretrain(5, num_workers=0))


def test_batch_and_process_arguments_are_checked():
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    _pretrain(1, process_count=3)
  with pytest.raises(ValueError, match="process_index 2"):
    _pretrain(1, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="need 1 entries for a 1-channel image"):
    cfg_augment, cfg_pbsd = _configs()
    cfg_augment.mean = cfg_augment.std = (0.5, 0.5, 0.5)
    pipeline.pretrain_iterator(_split(), cfg_augment, cfg_pbsd, global_batch_size=8, seed=0)


def test_steps_per_epoch():
  assert pipeline.steps_per_epoch(40, 16) == 2
  assert pipeline.steps_per_epoch(14886, 256) == 58
  with pytest.raises(ValueError, match="global batch 64 is larger than the 40 examples"):
    pipeline.steps_per_epoch(40, 64)


# ------------------------------------------------------------------------------------------- probe


def _long_tailed_split(counts=(200, 100, 50, 20, 10, 5, 2, 1)):
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  images = np.zeros((labels.size, 4, 4, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(labels.size) % 256  # lets the test see which image was drawn
  return base.Split("train", base.ArraySource(images, labels), labels)


def test_class_balanced_sampler_is_uniform_over_classes():
  split = _long_tailed_split()
  index_of = pipeline.ClassWeightedIndex(split.labels)
  draws = [index_of(pipeline.sample_rng(0, p)) for p in range(8000)]
  observed = np.bincount(split.labels[draws], minlength=8)
  expected = 8000 / 8
  chi_square = ((observed - expected) ** 2 / expected).sum()
  assert chi_square < 26.1  # 7 degrees of freedom: P(chi2 > 26.1) = 0.0005
  # Within the 200-image head class, images are drawn uniformly too.
  head_draws = np.bincount(np.asarray(draws)[split.labels[draws] == 0], minlength=200)
  assert head_draws.max() < 5 * head_draws.mean()


def test_probe_iterator_balanced_and_uniform():
  split = _long_tailed_split()
  cfg_augment = augment.default_augment_config(4, 1)
  balanced = _take(pipeline.probe_iterator(split, cfg_augment, global_batch_size=64, seed=1), 8)
  assert balanced[0]["image"].shape == (64, 4, 4, 1) and balanced[0]["label"].dtype == np.int32
  labels = np.concatenate([b["label"] for b in balanced])
  counts = np.bincount(labels, minlength=8)
  chi_square = ((counts - 64) ** 2 / 64).sum()
  assert chi_square < 26.1
  # Instance-uniform: one epoch of 388 images reproduces the long-tailed counts.
  uniform = _take(pipeline.probe_iterator(split, cfg_augment, global_batch_size=97, seed=1, class_balanced=False), 4)
  np.testing.assert_array_equal(
    np.bincount(np.concatenate([b["label"] for b in uniform])), [200, 100, 50, 20, 10, 5, 2, 1]
  )
  restarted = _take(pipeline.probe_iterator(split, cfg_augment, global_batch_size=64, seed=1, start_step=5), 3)
  _assert_same_batches(restarted, balanced[5:])


# -------------------------------------------------------------------------------------------- eval


def test_eval_batches_cover_the_split_in_order_with_padding():
  split = _split()
  cfg_augment = augment.default_augment_config(14, 1)
  batches = list(pipeline.eval_batches(split, cfg_augment, batch_size=16))
  assert len(batches) == 3
  assert all(b["image"].shape == (16, 14, 14, 1) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(mask, np.arange(48) < NUM_EXAMPLES)
  images = np.concatenate([b["image"] for b in batches])[:NUM_EXAMPLES]
  expected = np.stack([augment.eval_view(im, cfg_augment) for im in split.source.images])
  assert images.dtype == np.uint8
  np.testing.assert_array_equal(augment.normalize(images, cfg_augment.mean, cfg_augment.std), expected)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:NUM_EXAMPLES], split.labels)
  assert not batches[-1]["image"][8:].any() and not batches[-1]["label"][8:].any()
  shards = [
    list(pipeline.eval_batches(split, cfg_augment, batch_size=16, process_index=k, process_count=2)) for k in range(2)
  ]
  for step, batch in enumerate(batches):
    for name in batch:
      np.testing.assert_array_equal(np.concatenate([s[step][name] for s in shards]), batch[name])
