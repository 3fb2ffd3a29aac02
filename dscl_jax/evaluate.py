"""Evaluation: top-1 overall and per group of classes (many / medium / few shot, or head / middle / tail
thirds where a shot group would be empty), printed as a table and written as JSON.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data.long_tail import shot_groups
from data.registry import get_dataset
from dscl_jax import checkpoint, input_pipeline, sharding
from dscl_jax.probe import build_trunk, load_pretrained_trunk, restore_probe


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


def format_report(report: dict) -> str:
  names = list(report["groups"])
  header = "| split | overall | " + " | ".join(names) + " |"
  rule = "|" + "---|" * (2 + len(names))
  row = (f"| {report['split']} | {report['overall']:.2f} | "
         + " | ".join(f"{report['groups'][n]['accuracy']:.2f}" for n in names) + " |")
  note = ("groups: many (>100 train images), medium (20-100), few (<20)" if report["group_scheme"] == "shots"
          else "groups: head / middle / tail thirds of the class-count ranking "
               "(the many/medium/few thresholds leave a group empty for this dataset)")
  return "\n".join([header, rule, row, note])


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  sharding.check_batch_size(config.eval.batch_size, mesh)
  dataset = get_dataset(config.data)
  split = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(config.eval.split)
  if split is None:
    raise ValueError(f"eval.split {config.eval.split!r} is not available for {dataset.name} "
                     f"(test{', val' if dataset.val is not None else ''}, train)")
  trunk_variables, _, trunk_source = load_pretrained_trunk(config, dataset, mesh, workdir)
  trunk = build_trunk(config)
  replicated = sharding.replicated(mesh)
  probe_state, probe_source = restore_probe(config, workdir, trunk.num_features, dataset.num_classes,
                                            len(dataset.train), mesh)
  classifier = probe_state.params

  count_step = jax.jit(make_count_step(trunk, dataset.num_classes),
                       in_shardings=(replicated, replicated, sharding.data_sharded(mesh)),
                       out_shardings=(replicated, replicated))
  correct = np.zeros(dataset.num_classes)
  seen = np.zeros(dataset.num_classes)
  for batch in input_pipeline.eval_batches(split, config.augment, batch_size=config.eval.batch_size,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
    c, s = count_step(trunk_variables, classifier, sharding.to_global(batch, mesh))
    correct += np.asarray(c)
    seen += np.asarray(s)
  if int(seen.sum()) != len(split):
    raise RuntimeError(f"evaluated {int(seen.sum())} images but the {config.eval.split} split has {len(split)}")

  report = accuracy_report(correct, seen, dataset.class_counts)
  report.update(split=config.eval.split, dataset=dataset.name, method=config.method,
                num_images=int(seen.sum()), trunk_checkpoint=trunk_source,
                probe_checkpoint=probe_source)
  print(f"[eval] {dataset.name}, {config.method}, split '{config.eval.split}' ({int(seen.sum())} images), "
        f"top-1 %:\n{format_report(report)}", flush=True)
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_{config.eval.split}.json")
    with open(path, "w") as f:
      json.dump(report, f, indent=2)
    print(f"[eval] wrote {path}", flush=True)
  return report
