"""Splits -> host-local numpy batches with grain: pretrain views, linear-probe views, evaluation.

Image views leave the pipeline as uint8 pixels; the jitted steps normalise them on the device
(`dscl_jax.input.pixels`), so a batch crosses to the device in a quarter of float32's bytes.

Determinism contract. Training streams are indexed by the global position `p = step * global_batch + j`
of a sample, and the sample at `p` is a pure function of `(seed, p)`:
  - epoch `p // N` shuffles the `N` images with its own fixed-seed permutation and position `p` reads
    image `permutation[p % N]` (the class-balanced probe sampler instead draws a class uniformly, then
    an image of that class, from the sample's generator);
  - the augmentation generator is seeded from `(seed, p)`.
Process `k` of `n` reads rows `[k * b, (k + 1) * b)` of every global batch (`b = global_batch / n`), so
the concatenation over processes is the single-process batch, restarting at `start_step = s` replays
exactly what an uninterrupted run sees from step `s` on, and `num_workers` only changes the speed.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any, Callable, Iterator

import grain
import numpy as np
from absl import flags

from dscl_jax.input import augment, batch_spec

# Domain tags that keep the shuffling streams and the per-sample streams apart.
_PERMUTATION_STREAM = 0
_SAMPLE_STREAM = 1
_CLASS_AWARE_STREAM = 2
# Background batches prepared per process; they overlap the augmentation with the device step.
_READ_OPTIONS = dict(num_threads=1, prefetch_buffer_size=2)


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full global batches in one pass over `num_examples` (the remainder is dropped)."""
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ValueError(
      f"global batch {global_batch_size} is larger than the {num_examples} examples; lower the batch size"
    )
  return steps


def sample_rng(seed: int, position: int, stream: int = _SAMPLE_STREAM) -> np.random.Generator:
  """The augmentation generator of the sample at global `position` (`stream` keeps a second sample drawn at
  the same position independent of the first)."""
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream, position])))


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order `[N]` in which epoch `epoch` visits the images (cached: one per epoch in use)."""
  rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _PERMUTATION_STREAM, epoch])))
  permutation = rng.permutation(num_examples)
  permutation.flags.writeable = False
  return permutation


def epoch_index(seed: int, position: int, num_examples: int) -> int:
  """Image index read at global `position` by instance-uniform epochs."""
  epoch, offset = divmod(position, num_examples)
  return int(epoch_permutation(seed, epoch, num_examples)[offset])


def _snapshot(config: Any) -> Any:
  """A ConfigDict (or dict) as nested namespaces: same attribute access, much faster per sample."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if isinstance(config, dict):
    return types.SimpleNamespace(**{key: _snapshot(value) for key, value in config.items()})
  return config


class ClassWeightedIndex:
  """A class drawn with probability proportional to `n_c ** power` over the classes present (`power` 0:
  class-uniform, the class-balanced sampler), then an image uniform within it, from the sample's rng."""

  def __init__(self, labels: np.ndarray, power: float = 0.0):
    labels = np.asarray(labels)
    self.classes, counts = np.unique(labels, return_counts=True)
    self.members = [np.flatnonzero(labels == c) for c in self.classes]
    weights = counts.astype(np.float64) ** power
    self.probabilities = weights / weights.sum()
    self.uniform = power == 0

  def __call__(self, rng: np.random.Generator) -> int:
    if self.uniform:  # kept separate so the class-balanced probe's draws stay what they were
      members = self.members[rng.integers(len(self.classes))]
    else:
      members = self.members[rng.choice(len(self.classes), p=self.probabilities)]
    return int(members[rng.integers(len(members))])


class _PretrainSample:
  """Global position -> {'label', and the `views` asked for} (picklable for workers).

  With `sampler="instance_and_class_aware"` each position also draws a class-aware sample (class c with
  probability proportional to n_c ** `class_aware_power`, from its own random stream): its query-recipe
  view is 'class_aware' and its label 'class_aware_label' (ICCL's second sampler).
  """

  def __init__(
    self, split, cfg_augment, cfg_pbsd, seed: int, views, sampler: str = "instance", class_aware_power: float = 0.0
  ):
    views = tuple(views)
    batch_spec.check_request(views, sampler)
    self.source, self.num_examples = split.source, len(split)
    self.cfg_augment, self.cfg_pbsd, self.seed = _snapshot(cfg_augment), _snapshot(cfg_pbsd), seed
    self.views = tuple(v for v in views if v != "class_aware")
    self.class_aware_index = ClassWeightedIndex(split.labels, class_aware_power) if "class_aware" in views else None

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    record = self.source[epoch_index(self.seed, position, self.num_examples)]
    on_device = self.cfg_augment.on_device
    views = augment.pretrain_views(
      record["image"],
      sample_rng(self.seed, position),
      self.cfg_augment,
      self.cfg_pbsd,
      self.views,
      normalized=False,
      on_device=on_device,
    )
    views["label"] = np.int32(record["label"])
    if self.class_aware_index is not None:
      rng = sample_rng(self.seed, position, _CLASS_AWARE_STREAM)
      other = self.source[self.class_aware_index(rng)]
      second = augment.pretrain_views(
        other["image"], rng, self.cfg_augment, self.cfg_pbsd, ("query",), normalized=False, on_device=on_device
      )
      # The second sample's query-recipe view under the 'class_aware' names (its canvas has its own name).
      renamed = {"query": "class_aware", augment.CANVAS_OF["query"]: augment.CANVAS_OF["class_aware"]}
      for name, value in second.items():
        views[renamed.get(name) or name.replace("query", "class_aware", 1)] = value
      views["class_aware_label"] = np.int32(other["label"])
    return views


class _ProbeSample:
  """Global position -> {'image', 'label'}, class-balanced or instance-uniform."""

  def __init__(self, split, cfg_augment, seed: int, class_balanced: bool):
    self.source, self.num_examples = split.source, len(split)
    self.cfg_augment, self.seed = _snapshot(cfg_augment), seed
    self.balanced_index = ClassWeightedIndex(split.labels) if class_balanced else None

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    rng = sample_rng(self.seed, position)
    if self.balanced_index is not None:
      index = self.balanced_index(rng)
    else:
      index = epoch_index(self.seed, position, self.num_examples)
    record = self.source[index]
    if self.cfg_augment.on_device:
      return {
        **augment.probe_view_for_device(record["image"], rng, self.cfg_augment),
        "label": np.int32(record["label"]),
      }
    return {
      "image": augment.probe_view(record["image"], rng, self.cfg_augment, normalized=False),
      "label": np.int32(record["label"]),
    }


class _LocalToGlobal:
  """This process's element `e` -> global position: `(start + e // b) * global_batch + k * b + e % b`."""

  def __init__(
    self, start_step: int, local_batch: int, global_batch: int, process_index: int, sample: Callable[[int], Any]
  ):
    self.start_step, self.local_batch, self.global_batch = start_step, local_batch, global_batch
    self.process_index, self.sample = process_index, sample

  def position(self, element: int) -> int:
    step, row = divmod(element, self.local_batch)
    return (self.start_step + step) * self.global_batch + self.process_index * self.local_batch + row

  def __call__(self, element: int):
    return self.sample(self.position(element))

  def batch_samples(self, local_step: int) -> list:
    """The `b` samples of this process's batch `local_step`, in row order."""
    first = local_step * self.local_batch
    return [self(element) for element in range(first, first + self.local_batch)]


class _Unbatch(grain.experimental.FlatMapTransform):
  """A list of samples -> the samples one by one."""

  def __init__(self, batch_size: int):
    self.max_fan_out = batch_size

  def flat_map(self, samples: list) -> list:
    return samples


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
      f"global batch {global_batch_size} must be a positive multiple of the process count {process_count}"
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} must be in [0, {process_count})")
  return global_batch_size // process_count


def _training_stream(
  split,
  sample,
  *,
  global_batch_size: int,
  seed: int,
  start_step: int,
  process_index: int,
  process_count: int,
  num_workers: int,
) -> Iterator[dict]:
  """Endless batches of `sample(position)` for this process's rows, through grain."""
  if seed < 0 or start_step < 0 or num_workers < 0:
    raise ValueError(f"seed, start_step and num_workers must be >= 0, got {seed}, {start_step}, {num_workers}")
  if len(split) == 0:
    raise ValueError(f"split {split.name!r} is empty")
  local_batch = _local_batch_size(global_batch_size, process_index, process_count)
  to_global = _LocalToGlobal(start_step, local_batch, global_batch_size, process_index, sample)
  to_global(0)  # a bad config fails here, in this process, rather than inside a worker
  num_steps = sys.maxsize // 4 // local_batch  # endless in practice
  # Workers split the stream by whole batches (grain slices the first MapDataset: batches here), so
  # a batch never depends on the worker count. The samples are then flattened and stacked again so that
  # the batch is each worker's last operation: grain can stack it straight into the shared memory that
  # carries it to this process, instead of stacking and then copying (1.5 MB per sample for the
  # ImageNet DSCL + PBSD views).
  dataset = (
    grain.MapDataset.range(num_steps).map(to_global.batch_samples).to_iter_dataset(grain.ReadOptions(**_READ_OPTIONS))
  )
  dataset = grain.experimental.FlatMapIterDataset(dataset, _Unbatch(local_batch))
  dataset = dataset.batch(local_batch, drop_remainder=True)
  if num_workers > 0:
    # grain's worker processes read absl flags; outside `app.run` (tests, notebooks) use their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    # mp_prefetch turns shared-memory stacking on for 2+ workers only; a single worker gains as much.
    # Never without workers: nothing would release the shared memory.
    dataset.enable_shared_memory_output()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(dataset)


def pretrain_iterator(
  split,
  cfg_augment,
  cfg_pbsd,
  *,
  views=None,
  sampler: str = "instance",
  class_aware_power: float = 0.0,
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless pretraining batches for this process, `b = global_batch_size // process_count`.

  Each batch: 'label' int32 `[b]` and the `views` the method requires (default
  `augment.pbsd_views(cfg_pbsd)`): 'query', 'key' uint8 `[b, S, S, C]`, 'small_crops' uint8
  `[b, n, s, s, C]` with 'boxes' float32 `[b, n, 4]` (`[x1, y1, x2, y2]` in pixels of the query's
  `S x S` crop), and with `sampler="instance_and_class_aware"` 'class_aware' `[b, S, S, C]` and
  'class_aware_label' int32 `[b]` (see `_PretrainSample`). Instance-uniform epochs; see the module
  docstring for the determinism contract. With `cfg_augment.on_device` the image views are uncoloured,
  unflipped crops, each with its parameters '<view>_augment' float32 `[b, 11]`, and 'small_crops' is
  replaced by 'small_crops_augment' `[b, n, 11]` (`augment.pretrain_views`).
  """
  views = augment.pbsd_views(cfg_pbsd) if views is None else views
  sample = _PretrainSample(split, cfg_augment, cfg_pbsd, seed, views, sampler, class_aware_power)
  return _training_stream(
    split,
    sample,
    global_batch_size=global_batch_size,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
    num_workers=num_workers,
  )


def probe_iterator(
  split,
  cfg_augment,
  *,
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  num_workers: int = 0,
  class_balanced: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless linear-probe batches: 'image' uint8 `[b, S, S, C]`, 'label' int32 `[b]` (and with
  `cfg_augment.on_device` 'image_augment' float32 `[b, 11]`, the flip the device applies).

  `class_balanced` draws every sample's class uniformly (over the classes present in `split`), then an
  image of that class; otherwise instance-uniform epochs as in pretraining.
  """
  return _training_stream(
    split,
    _ProbeSample(split, cfg_augment, seed, class_balanced),
    global_batch_size=global_batch_size,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
    num_workers=num_workers,
  )


class _EvalSample:
  """Index -> {'image', 'label', 'mask'}; indices past the end are zero padding with mask False."""

  def __init__(self, split, cfg_augment):
    self.source, self.num_examples, self.cfg_augment = split.source, len(split), _snapshot(cfg_augment)
    first = augment.eval_view(self.source[0]["image"], self.cfg_augment, normalized=False)
    self.padding = {"image": np.zeros_like(first), "label": np.int32(0), "mask": np.bool_(False)}

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    if index >= self.num_examples:
      return self.padding
    record = self.source[index]
    return {
      "image": augment.eval_view(record["image"], self.cfg_augment, normalized=False),
      "label": np.int32(record["label"]),
      "mask": np.bool_(True),
    }


def eval_batches(
  split, cfg_augment, *, batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """The whole split once, in order: 'image' uint8 `[b, S, S, C]`, 'label' int32 `[b]`, 'mask' bool `[b]`.

  `batch_size` is global; this process gets rows `[k * b, (k + 1) * b)` of each global batch. The last
  global batch is padded to full size with `mask` False, so every batch shards evenly over devices.
  """
  if len(split) == 0:
    raise ValueError(f"split {split.name!r} is empty")
  local_batch = _local_batch_size(batch_size, process_index, process_count)
  num_batches = -(-len(split) // batch_size)
  to_global = _LocalToGlobal(0, local_batch, batch_size, process_index, _EvalSample(split, cfg_augment))
  dataset = (
    grain.MapDataset.range(num_batches * local_batch)
    .map(to_global)
    .batch(local_batch, drop_remainder=True)
    .to_iter_dataset(grain.ReadOptions(**_READ_OPTIONS))
  )
  return iter(dataset)
