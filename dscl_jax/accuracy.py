"""Top-1 accuracy overall and per group of classes, from per-class counts; shared by eval and the probe's
validation-based model selection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from data.long_tail import shot_groups
from dscl_jax import input_pipeline, sharding


def make_count_step(trunk, num_classes: int):
  """`(trunk_variables, classifier, batch) -> (correct [C], seen [C])`, summed over the global batch."""

  def count_step(trunk_variables, classifier, batch):
    features = trunk.apply(trunk_variables, batch["image"], train=False)["pooled"]
    predictions = jnp.argmax(features @ classifier["kernel"] + classifier["bias"], axis=-1)
    valid = batch["mask"].astype(jnp.float32)
    correct = (predictions == batch["label"]).astype(jnp.float32) * valid
    seen = jnp.zeros((num_classes,), jnp.float32).at[batch["label"]].add(valid)
    return jnp.zeros((num_classes,), jnp.float32).at[batch["label"]].add(correct), seen

  return count_step


def accuracy_report(correct: np.ndarray, seen: np.ndarray, class_counts: np.ndarray) -> dict:
  """Top-1 (%) overall and per group from per-class `correct` and `seen` counts [C]."""
  groups, scheme = shot_groups(class_counts)
  report = {"overall": 100.0 * correct.sum() / seen.sum(), "group_scheme": scheme, "groups": {}}
  for name, classes in groups.items():
    classes = np.asarray(classes)
    n = seen[classes].sum()
    report["groups"][name] = {
        "accuracy": float(100.0 * correct[classes].sum() / n) if n else float("nan"),
        "num_classes": int(len(classes)), "num_images": int(n),
        "train_images_per_class": [int(class_counts[classes].min()), int(class_counts[classes].max())]
        if len(classes) else []}
  report["overall"] = float(report["overall"])
  with np.errstate(invalid="ignore", divide="ignore"):
    report["per_class_accuracy"] = [float(x) for x in 100.0 * correct / np.maximum(seen, 1)]
  return report


def format_report(reports: dict[str, dict]) -> str:
  """A Markdown table with one row per classifier (`{name: accuracy_report(...)}`) and the group legend."""
  first = next(iter(reports.values()))
  names = list(first["groups"])
  header = "| classifier | overall | " + " | ".join(names) + " |"
  rule = "|" + "---|" * (2 + len(names))
  rows = [f"| {classifier} | {report['overall']:.2f} | "
          + " | ".join(f"{report['groups'][n]['accuracy']:.2f}" for n in names) + " |"
          for classifier, report in reports.items()]
  note = ("groups: many (>100 train images), medium (20-100), few (<20)" if first["group_scheme"] == "shots"
          else "groups: head / middle / tail thirds of the class-count ranking "
               "(the many/medium/few thresholds leave a group empty for this dataset)")
  return "\n".join([header, rule, *rows, note])


def jit_count_step(trunk, num_classes: int, mesh):
  """`make_count_step` jitted for the mesh: variables replicated, the batch sharded along "data"."""
  replicated = sharding.replicated(mesh)
  return jax.jit(make_count_step(trunk, num_classes),
                 in_shardings=(replicated, replicated, sharding.data_sharded(mesh)),
                 out_shardings=(replicated, replicated))


def count_correct(count_step, trunk_variables, classifier, split, cfg_augment, batch_size: int, mesh):
  """Runs `count_step` over the whole `split`; returns per-class (correct [C], seen [C]) as numpy."""
  correct = seen = 0.0
  for batch in input_pipeline.eval_batches(split, cfg_augment, batch_size=batch_size,
                                           process_index=jax.process_index(), process_count=jax.process_count()):
    c, s = count_step(trunk_variables, classifier, sharding.to_global(batch, mesh))
    correct, seen = correct + np.asarray(c), seen + np.asarray(s)
  if int(seen.sum()) != len(split):
    raise RuntimeError(f"evaluated {int(seen.sum())} images but the {split.name} split has {len(split)}")
  return correct, seen
