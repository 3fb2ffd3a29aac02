"""Top-1 accuracy overall and per group of classes, from per-class counts; shared by eval and the probe's
validation-based model selection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from data.long_tail import shot_groups
from dscl_jax.core import sharding
from dscl_jax.input import pipeline, pixels


def make_count_step(trunk, cfg_augment, num_classes: int, bins: np.ndarray | None = None):
  """`(trunk_variables, classifier, batch) -> (correct [C], seen [C])`, summed over the global batch
  (batch "image" uint8 pixels, normalised with `cfg_augment`'s mean / std); with
  `bins` [C] (class -> bin, see `confusion_bins`) also the confusion matrix over bins [nb, nb] (rows:
  true bin, columns: predicted bin). Everything is a sum over the sharded batch, so the replicated
  outputs are complete on every host without gathering predictions."""
  num_bins = None if bins is None else int(np.max(bins)) + 1
  bins = None if bins is None else jnp.asarray(bins, jnp.int32)

  def count_step(trunk_variables, classifier, batch):
    features = trunk.apply(trunk_variables, pixels.to_float(batch["image"], cfg_augment), train=False)["pooled"]
    predictions = jnp.argmax(features @ classifier["kernel"] + classifier["bias"], axis=-1)
    valid = batch["mask"].astype(jnp.float32)
    correct = (predictions == batch["label"]).astype(jnp.float32) * valid
    seen = jnp.zeros((num_classes,), jnp.float32).at[batch["label"]].add(valid)
    correct = jnp.zeros((num_classes,), jnp.float32).at[batch["label"]].add(correct)
    if bins is None:
      return correct, seen
    confusion = jnp.zeros((num_bins, num_bins), jnp.float32).at[bins[batch["label"]], bins[predictions]].add(valid)
    return correct, seen, confusion

  return count_step


def confusion_bins(class_counts: np.ndarray, max_bins: int = 100) -> np.ndarray:
  """[C] int32: each class's bin of the confusion matrix. Classes are ranked by training images
  (descending, ties by index); with C <= max_bins each class is its own bin in rank order, otherwise the
  ranking is cut into `max_bins` contiguous bins whose sizes differ by at most one (iNaturalist's 8142
  classes would make a [C, C] matrix of 265 MB and an unreadable figure)."""
  class_counts = np.asarray(class_counts)
  order = np.lexsort((np.arange(len(class_counts)), -class_counts))  # rank -> class
  num_bins = min(len(class_counts), max_bins)
  bins = np.empty(len(class_counts), np.int32)
  bins[order] = np.arange(len(class_counts)) * num_bins // len(class_counts)
  return bins


def accuracy_report(correct: np.ndarray, seen: np.ndarray, class_counts: np.ndarray) -> dict:
  """Top-1 (%) overall and per group from per-class `correct` and `seen` counts [C]."""
  groups, scheme = shot_groups(class_counts)
  report = {"overall": 100.0 * correct.sum() / seen.sum(), "group_scheme": scheme, "groups": {}}
  for name, classes in groups.items():
    classes = np.asarray(classes)
    n = seen[classes].sum()
    report["groups"][name] = {
      "accuracy": float(100.0 * correct[classes].sum() / n) if n else float("nan"),
      "num_classes": int(len(classes)),
      "num_images": int(n),
      "train_images_per_class": [int(class_counts[classes].min()), int(class_counts[classes].max())]
      if len(classes)
      else [],
    }
  report["overall"] = float(report["overall"])
  with np.errstate(invalid="ignore", divide="ignore"):
    report["per_class_accuracy"] = [float(x) for x in 100.0 * correct / np.maximum(seen, 1)]
  report["per_class_images"] = [int(x) for x in seen]
  return report


def format_report(reports: dict[str, dict]) -> str:
  """A Markdown table with one row per classifier (`{name: accuracy_report(...)}`) and the group legend."""
  first = next(iter(reports.values()))
  names = list(first["groups"])
  header = "| classifier | overall | " + " | ".join(names) + " |"
  rule = "|" + "---|" * (2 + len(names))
  rows = [
    f"| {classifier} | {report['overall']:.2f} | "
    + " | ".join(f"{report['groups'][n]['accuracy']:.2f}" for n in names)
    + " |"
    for classifier, report in reports.items()
  ]
  note = (
    "groups: many (>100 train images), medium (20-100), few (<20)"
    if first["group_scheme"] == "shots"
    else "groups: head / middle / tail thirds of the class-count ranking "
    "(the many/medium/few thresholds leave a group empty for this dataset)"
  )
  return "\n".join([header, rule, *rows, note])


def jit_count_step(trunk, cfg_augment, num_classes: int, mesh, bins: np.ndarray | None = None):
  """`make_count_step` jitted for the mesh: variables replicated, the batch sharded along "data"."""
  replicated = sharding.replicated(mesh)
  outputs = 2 if bins is None else 3
  return jax.jit(
    make_count_step(trunk, cfg_augment, num_classes, bins),
    in_shardings=(replicated, replicated, sharding.data_sharded(mesh)),
    out_shardings=(replicated,) * outputs,
  )


def count_correct(count_step, trunk_variables, classifier, split, cfg_augment, batch_size: int, mesh):
  """Runs `count_step` over the whole `split`; returns its per-class (correct [C], seen [C]) and, for a
  step built with bins, the confusion matrix [nb, nb], as numpy sums."""
  totals = None
  for batch in pipeline.eval_batches(
    split, cfg_augment, batch_size=batch_size, process_index=jax.process_index(), process_count=jax.process_count()
  ):
    counts = [np.asarray(x) for x in count_step(trunk_variables, classifier, sharding.to_global(batch, mesh))]
    totals = counts if totals is None else [a + b for a, b in zip(totals, counts)]
  seen = totals[1]
  if int(seen.sum()) != len(split):
    raise RuntimeError(f"evaluated {int(seen.sum())} images but the {split.name} split has {len(split)}")
  return tuple(totals)
