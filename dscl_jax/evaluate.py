"""Evaluation: top-1 overall and per group of classes (many / medium / few shot, or head / middle / tail
thirds where a shot group would be empty), printed as a table and written as JSON.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from data.registry import get_dataset
from dscl_jax import sharding
from dscl_jax.accuracy import accuracy_report, count_correct, format_report, jit_count_step
from dscl_jax.models import build_trunk
from dscl_jax.probe import load_pretrained_trunk, restore_probe


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  sharding.check_batch_size(config.eval.batch_size, mesh)
  dataset = get_dataset(config.data)
  split = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(config.eval.split)
  if split is None:
    raise ValueError(f"eval.split {config.eval.split!r} is not available for {dataset.name} "
                     f"(test{', val' if dataset.val is not None else ''}, train)")
  trunk_variables, _, trunk_source = load_pretrained_trunk(config, dataset, mesh, workdir)
  trunk = build_trunk(config.model)
  probe_state, probe_source = restore_probe(config, workdir, trunk.num_features, dataset.num_classes,
                                            len(dataset.train), mesh)
  classifier = probe_state.params

  count_step = jit_count_step(trunk, dataset.num_classes, mesh)
  correct, seen = count_correct(count_step, trunk_variables, classifier, split, config.augment,
                                config.eval.batch_size, mesh)

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
