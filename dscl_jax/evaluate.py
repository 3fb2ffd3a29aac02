"""Evaluation: top-1 overall and per group of classes (many / medium / few shot, or head / middle / tail
thirds where a shot group would be empty) for every classifier the run has, printed as a table and
written as JSON.

Classifiers: "linear_probe" (the class-balanced linear classifier on the frozen trunk, available for
every method once `linear_probe` has run) and, for methods that train their own classifier (cross-entropy,
PaCo, GPaCo), "model": the online encoder's own classifier / class-centre logits, without any prior term.
Both are linear maps of the same pooled trunk feature, so one counting step serves them.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from data.registry import get_dataset
from dscl_jax import methods, sharding
from dscl_jax.accuracy import accuracy_report, count_correct, format_report, jit_count_step
from dscl_jax.models import build_trunk
from dscl_jax.probe import load_pretrained_trunk, restore_probe

DESCRIPTIONS = {
    "linear_probe": "class-balanced linear probe on the frozen trunk",
    "model": "the model's own classifier (class-centre logits for PaCo / GPaCo), no prior term",
}


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  sharding.check_batch_size(config.eval.batch_size, mesh)
  dataset = get_dataset(config.data)
  split = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(config.eval.split)
  if split is None:
    raise ValueError(f"eval.split {config.eval.split!r} is not available for {dataset.name} "
                     f"(test{', val' if dataset.val is not None else ''}, train)")
  trunk_variables, pretrain_state, trunk_source = load_pretrained_trunk(config, dataset, mesh, workdir)
  trunk = build_trunk(config.model)
  own_classifier = methods.get_method(config).requirements.classifier

  classifiers, sources = {}, {}
  try:
    probe_state, sources["linear_probe"] = restore_probe(config, workdir, trunk.num_features,
                                                         dataset.num_classes, len(dataset.train), mesh)
    classifiers["linear_probe"] = probe_state.params
  except FileNotFoundError as missing:
    if not own_classifier:
      raise
    print(f"[eval] no linear probe to report ({missing})", flush=True)
  if own_classifier:
    classifiers["model"] = pretrain_state.params["classifier"]
    sources["model"] = trunk_source

  count_step = jit_count_step(trunk, dataset.num_classes, mesh)
  reports = {}
  for name, classifier in classifiers.items():
    correct, seen = count_correct(count_step, trunk_variables, classifier, split, config.augment,
                                  config.eval.batch_size, mesh)
    reports[name] = accuracy_report(correct, seen, dataset.class_counts)
    reports[name].update(classifier=name, description=DESCRIPTIONS[name], checkpoint=sources[name])

  # The top level repeats the linear probe's numbers (the comparison every method shares) when there is
  # one; "classifiers" holds every classifier's report and says which produced each number.
  primary = "linear_probe" if "linear_probe" in reports else "model"
  report = {key: value for key, value in reports[primary].items() if key not in ("description", "checkpoint")}
  report.update(split=config.eval.split, dataset=dataset.name, method=config.method,
                num_images=int(seen.sum()), trunk_checkpoint=trunk_source,
                probe_checkpoint=sources.get("linear_probe"), classifiers=reports)
  print(f"[eval] {dataset.name}, {config.method}, split '{config.eval.split}' ({int(seen.sum())} images), "
        f"top-1 %:\n{format_report(reports)}", flush=True)
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_{config.eval.split}.json")
    with open(path, "w") as f:
      json.dump(report, f, indent=2)
    print(f"[eval] wrote {path}", flush=True)
  return report
