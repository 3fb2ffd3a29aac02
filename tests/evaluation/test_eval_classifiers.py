"""`eval` reports every classifier a run has: a PaCo run on digits-LT through the command line, then its
two numbers recomputed here from the checkpoints with NumPy (the class centres without the prior, and the
linear probe), image by image."""

import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from data.registry import get_dataset
from dscl_jax.input import augment
from dscl_jax.models import build_trunk
from tests import REPO_ROOT
from tests.config.test_configs import load_config

pytestmark = pytest.mark.slow
ROOT = REPO_ROOT
OVERRIDES = [
  "--config.method=paco",
  "--config.loss.temperature=0.2",
  "--config.augment.query.randaugment_ops=2",
  "--config.train.max_steps=60",
  "--config.train.log_every=20",
  "--config.probe.max_steps=40",
  "--config.probe.log_every=20",
]


def restore(path):
  return ocp.PyTreeCheckpointer().restore(os.path.abspath(path))


def latest_step_dir(directory):
  return os.path.join(directory, str(max(int(d) for d in os.listdir(directory) if d.isdigit())), "state")


def test_eval_reports_the_class_centres_and_the_linear_probe(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "dscl_jax.main",
      "--config",
      "configs/digits_lt_dscl.py",
      "--workdir",
      str(tmp_path),
      *OVERRIDES,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "| linear_probe |" in out.stdout and "| model |" in out.stdout
  report = json.loads((tmp_path / "eval_test.json").read_text())
  assert report["method"] == "paco" and report["classifier"] == "linear_probe"
  assert set(report["classifiers"]) == {"linear_probe", "model", "knn", "logistic_regression"}
  assert report["classifiers"]["model"]["classifier"] == "model"
  assert "no prior" in report["classifiers"]["model"]["description"]
  assert report["overall"] == report["classifiers"]["linear_probe"]["overall"]
  # Every classifier counts the whole test split, and the top level says how large it is: the count is
  # the split's, not whichever classifier's loop ran last.
  assert report["num_images"] == 500
  assert {name: r["num_images"] for name, r in report["classifiers"].items()} == dict.fromkeys(
    report["classifiers"], 500
  )

  # Recompute both accuracies: trunk features in inference mode, then the two linear maps, in NumPy.
  config = load_config(os.path.join(ROOT, "configs", "digits_lt_dscl.py"))
  dataset = get_dataset(config.data)
  pretrain = restore(latest_step_dir(tmp_path / "pretrain" / "checkpoints"))
  probe = restore(latest_step_dir(tmp_path / "probe" / "checkpoints"))
  images = np.stack(
    [augment.eval_view(dataset.test.source[i]["image"], config.augment) for i in range(len(dataset.test))]
  )
  labels = np.asarray(dataset.test.labels)
  trunk = build_trunk(config.model)
  features = np.asarray(
    trunk.apply(
      {"params": pretrain["params"]["trunk"], "batch_stats": pretrain["batch_stats"]["trunk"]}, images, train=False
    )["pooled"],
    np.float64,
  )
  centres = pretrain["params"]["classifier"]
  logits = features @ np.asarray(centres["kernel"], np.float64) + np.asarray(centres["bias"], np.float64)
  model_accuracy = 100.0 * np.mean(logits.argmax(1) == labels)
  prior = np.asarray(pretrain["method_state"]["class_prior"], np.float64)
  np.testing.assert_allclose(prior, dataset.class_counts / dataset.class_counts.sum(), rtol=1e-6)
  # The digits config standardises the probe's input with the training split's feature statistics
  # (probe.standardize_features): recomputed here from the training images' evaluation views.
  assert config.probe.standardize_features
  train_images = np.stack(
    [augment.eval_view(dataset.train.source[i]["image"], config.augment) for i in range(len(dataset.train))]
  )
  train_features = np.asarray(
    trunk.apply(
      {"params": pretrain["params"]["trunk"], "batch_stats": pretrain["batch_stats"]["trunk"]},
      train_images,
      train=False,
    )["pooled"],
    np.float64,
  )
  standardised = (features - train_features.mean(0)) / np.sqrt(train_features.var(0) + 1e-5)
  probe_logits = standardised @ np.asarray(probe["params"]["kernel"]) + np.asarray(probe["params"]["bias"])
  probe_accuracy = 100.0 * np.mean(probe_logits.argmax(1) == labels)

  assert report["classifiers"]["model"]["overall"] == pytest.approx(model_accuracy, abs=1e-6)
  # float32 percentages (64.4 is 64.40000153): far below one test image (0.2 points).
  assert report["classifiers"]["linear_probe"]["overall"] == pytest.approx(probe_accuracy, abs=1e-4)
  per_class = [100.0 * np.mean(logits.argmax(1)[labels == c] == c) for c in range(dataset.num_classes)]
  np.testing.assert_allclose(report["classifiers"]["model"]["per_class_accuracy"], per_class, atol=1e-6)
