"""Evaluation: top-1 overall and per group of classes (many / medium / few shot, or head / middle / tail
thirds where a shot group would be empty) for every classifier the run has, printed as a table and
written as JSON.

Classifiers: "linear_probe" (the class-balanced linear classifier on the frozen trunk, available for
every method once `linear_probe` has run) and, for methods that train their own classifier (cross-entropy,
PaCo, GPaCo), "model": the online encoder's own classifier / class-centre logits, without any prior term.
Both are linear maps of the same pooled trunk feature, so one counting step serves them. With
`eval.knn_k` > 0 and / or `eval.logistic_regression`, two probe-free measures on the trunk's features are
reported beside them: "knn" and "logistic_regression" (`dscl_jax/evaluation/feature_eval.py`).

Beside `eval_<split>.json`, each classifier gets a per-class accuracy against training images plot and a
confusion matrix (PNG; classes sorted head to tail, in at most 100 bins).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from etils import epath

from dscl_jax.core import build
from dscl_jax.evaluation.accuracy import accuracy_report, confusion_bins, count_correct, format_report, jit_count_step
from dscl_jax.evaluation.feature_eval import extract_features, knn_predict, logistic_regression_predict
from dscl_jax.evaluation.figures import confusion_matrix_plot, per_class_accuracy_plot
from dscl_jax.models import build_trunk
from dscl_jax.runtime.files import write_json
from dscl_jax.runtime.interrupt import StopAtOnce
from dscl_jax.runtime.metrics import log

EVAL_ADVICE = "rerun the same command to evaluate again"

DESCRIPTIONS = {
  "linear_probe": "class-balanced linear probe on the frozen trunk",
  "model": "the model's own classifier (class-centre logits for PaCo / GPaCo), no prior term",
  "knn": "cosine k-nearest neighbours on the frozen trunk's features, class-balanced votes",
  "logistic_regression": "logistic regression on the frozen trunk's features, class-balanced, to convergence",
}


def evaluate(config: ml_collections.ConfigDict, workdir, setup: build.JobSetup | None = None) -> dict:
  """Evaluate every classifier of the run on `eval.split`; writes `<workdir>/eval_<split>.json` and the
  figures. `setup`: the job preamble's result (`build.setup_job`), when the caller has one already.

  SIGTERM / Ctrl-C stop it at once in one line (there is nothing to save; the files are written last)."""
  with StopAtOnce("eval", EVAL_ADVICE):
    return _evaluate(config, workdir, setup)


def _evaluate(config: ml_collections.ConfigDict, workdir, setup: build.JobSetup | None) -> dict:
  setup = setup or build.setup_job(config)
  mesh, dataset = setup.mesh, setup.dataset
  split = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(config.eval.split)
  if split is None:
    raise ValueError(
      f"eval.split {config.eval.split!r} is not available for {dataset.name} "
      f"(test{', val' if dataset.val is not None else ''}, train)"
    )
  own_classifier = setup.method.requirements.classifier
  loaded, trunk_source = build.load_pretrained(config, setup, workdir, classifier=own_classifier)
  trunk_variables = loaded["trunk"]
  trunk_id = build.trunk_record(trunk_variables, trunk_source)
  trunk = build_trunk(config.model)

  classifiers, sources, variables = {}, {}, {}
  try:
    probe_state, sources["linear_probe"] = build.restore_probe(
      config, workdir, trunk.num_features, dataset.num_classes, len(dataset.train), mesh, trunk_variables["batch_stats"]
    )
    trained_on = build.probe_trunk(workdir)
    if trained_on is None or trained_on["digest"] != trunk_id["digest"]:
      raise build.StaleProbe(
        f"the probe in {epath.Path(workdir) / 'probe'} was trained on {build.describe_trunk(trained_on)}, but "
        f"eval restores {build.describe_trunk(trunk_id)}; train a probe for this trunk with --config.mode=all"
      )
    variables["linear_probe"] = build.probe_trunk_variables(trunk_variables, probe_state)
    feature_stats = build.probe_feature_stats(config, trunk, variables["linear_probe"], dataset.train, mesh)
    classifiers["linear_probe"] = build.probe_classifier(probe_state.params, feature_stats)
  except FileNotFoundError as missing:
    if not own_classifier:
      raise
    log("eval", f"no linear probe to report ({missing})")
  if own_classifier:
    classifiers["model"] = loaded["classifier"]
    sources["model"] = trunk_source
    variables["model"] = trunk_variables

  bins = confusion_bins(dataset.class_counts)
  count_step = jit_count_step(trunk, config.augment, dataset.num_classes, mesh, bins)
  reports, confusions = {}, {}
  for name, classifier in classifiers.items():
    correct, seen, confusions[name] = count_correct(
      count_step, variables[name], classifier, split, config.augment, config.eval.batch_size, mesh
    )
    reports[name] = accuracy_report(correct, seen, dataset.class_counts)
    reports[name].update(
      classifier=name,
      description=DESCRIPTIONS[name],
      checkpoint=sources[name],
      trunk=trunk_id,
      num_images=int(seen.sum()),
    )

  if config.eval.knn_k or config.eval.logistic_regression:
    feature_reports(
      config,
      dataset,
      split,
      trunk,
      variables.get("linear_probe", trunk_variables),
      mesh,
      bins,
      reports,
      confusions,
      sources.get("linear_probe", trunk_source),
    )

  for classifier_report in reports.values():  # every number names the trunk it was computed on
    classifier_report.setdefault("trunk", trunk_id)

  # The top level repeats the linear probe's numbers (the comparison every method shares) when there is
  # one; "classifiers" holds every classifier's report and says which produced each number.
  primary = "linear_probe" if "linear_probe" in reports else "model"
  report = {key: value for key, value in reports[primary].items() if key not in ("description", "checkpoint")}
  report.update(
    split=config.eval.split,
    dataset=dataset.name,
    method=config.method,
    num_images=len(split),
    train_class_counts=[int(n) for n in dataset.class_counts],
    trunk_checkpoint=trunk_source,
    trunk=trunk_id,
    probe_checkpoint=sources.get("linear_probe"),
    classifiers=reports,
  )
  log(
    "eval",
    f"{dataset.name}, {config.method}, split '{config.eval.split}' ({len(split)} images), "
    f"top-1 %:\n{format_report(reports)}",
  )
  if jax.process_index() == 0:
    report["figures"] = write_figures(workdir, config.eval.split, dataset, reports, confusions, bins, primary)
    path = epath.Path(workdir) / f"eval_{config.eval.split}.json"
    write_json(path, report, indent=2)
    log("eval", f"wrote {path} and {len(report['figures'])} figures beside it")
  return report


def feature_reports(
  config, dataset, split, trunk, trunk_variables, mesh, bins, reports: dict, confusions: dict, source: str
) -> None:
  """Adds "knn" and / or "logistic_regression" to `reports` and `confusions`: probe-free measures on the
  trunk's features of the training split (`dscl_jax/evaluation/feature_eval.py`)."""
  train_x, train_y = extract_features(
    trunk, trunk_variables, dataset.train, config.augment, config.eval.batch_size, mesh
  )
  test_x, test_y = extract_features(trunk, trunk_variables, split, config.augment, config.eval.batch_size, mesh)
  predictions = {}
  if config.eval.knn_k:
    predictions["knn"] = knn_predict(train_x, train_y, test_x, dataset.num_classes, config.eval.knn_k)
  if config.eval.logistic_regression:
    predictions["logistic_regression"], iterations = logistic_regression_predict(
      train_x, train_y, test_x, config.eval.logistic_max_iter
    )
    log("eval", f"logistic regression converged in {iterations} iterations")
  num_bins = int(bins.max()) + 1
  for name, predicted in predictions.items():
    seen = np.bincount(test_y, minlength=dataset.num_classes).astype(np.float64)
    correct = np.bincount(test_y, weights=predicted == test_y, minlength=dataset.num_classes)
    confusion = np.zeros((num_bins, num_bins))
    np.add.at(confusion, (bins[test_y], bins[predicted]), 1)
    reports[name] = accuracy_report(correct, seen, dataset.class_counts)
    reports[name].update(classifier=name, description=DESCRIPTIONS[name], checkpoint=source, num_images=int(seen.sum()))
    confusions[name] = confusion


def write_figures(workdir, split: str, dataset, reports: dict, confusions: dict, bins, primary: str) -> list[str]:
  """Per classifier: `eval_<split>[_<classifier>]_per_class.png` (accuracy against training images) and
  `..._confusion.png` (classes, or bins of classes, sorted head to tail); the primary classifier's
  files carry no classifier name. Returns the file names."""
  names = []
  num_bins = int(bins.max()) + 1
  unit = "class" if num_bins == dataset.num_classes else f"bin of ~{dataset.num_classes // num_bins} classes"
  labels = None
  if num_bins == dataset.num_classes and num_bins <= 30:
    order = np.argsort(bins)  # bin -> class
    labels = [f"{c} ({int(dataset.class_counts[c])})" for c in order]
  for name, report in reports.items():
    stem = f"eval_{split}" + ("" if name == primary else f"_{name}")
    title = f"{dataset.name}, {name}, split '{split}'"
    per_class, confusion = f"{stem}_per_class.png", f"{stem}_confusion.png"
    per_class_accuracy_plot(
      epath.Path(workdir) / per_class,
      report["per_class_accuracy"],
      dataset.class_counts,
      title=f"{title}: top-1 {report['overall']:.2f}%",
    )
    confusion_matrix_plot(
      epath.Path(workdir) / confusion,
      confusions[name],
      bin_labels=labels,
      title=f"{title}: confusion (one row per {unit})",
    )
    names += [per_class, confusion]
  return names
