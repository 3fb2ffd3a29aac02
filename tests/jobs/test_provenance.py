"""Numbers that cannot be stale: a probe belongs to the trunk it was trained on, eval says which trunk and
which probe produced every number, and a checkpoint of a deeper model does not restore into a shallower
one."""

import json

import pytest

from tests import run_main

pytestmark = pytest.mark.slow
# The digits demo, shortened: 4 pretrain epochs (28 steps of 64) and a 3-epoch probe (21 steps).
SHORT = [
  "--config.train.epochs=4",
  "--config.train.warmup_epochs=1",
  "--config.probe.epochs=3",
  "--config.eval.logistic_regression=False",
]


def main(workdir, *overrides):
  return run_main("--config", "configs/digits_lt_dscl.py", "--workdir", str(workdir), *SHORT, *overrides)


def numbers(report):
  """Every accuracy of an eval report, per classifier."""
  return {name: (r["overall"], r["per_class_accuracy"], r["groups"]) for name, r in report["classifiers"].items()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A workdir where the shortened demo ran to the end (pretrain, probe, eval)."""
  workdir = tmp_path_factory.mktemp("provenance") / "finished"
  out = main(workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def test_a_probe_of_an_older_trunk_is_retrained_not_reused(tmp_path, finished):
  early = main(tmp_path / "resumed", "--config.train.max_steps=15")
  assert early.returncode == 0, early.stderr[-3000:]
  early_report = json.loads((tmp_path / "resumed" / "eval_test.json").read_text())
  assert early_report["trunk"]["step"] == 15

  # The same command without the step limit: pretraining continues to 28, and the probe of the step-15
  # trunk is set aside and trained again instead of being reported as "already finished".
  full = main(tmp_path / "resumed")
  assert full.returncode == 0, full.stderr[-3000:]
  assert "moved it to probe.replaced_" in full.stdout
  assert "already finished" not in full.stdout.split("[probe]", 1)[1]
  resumed = json.loads((tmp_path / "resumed" / "eval_test.json").read_text())
  reference = json.loads((finished / "eval_test.json").read_text())
  assert numbers(resumed) == numbers(reference)
  # The JSON says which trunk and which probe produced every number.
  assert resumed["trunk"]["step"] == 28 and resumed["trunk"]["digest"] == reference["trunk"]["digest"]
  assert resumed["trunk"]["digest"] != early_report["trunk"]["digest"]
  for report in resumed["classifiers"].values():
    assert report["trunk"] == resumed["trunk"]
  assert resumed["classifiers"]["linear_probe"]["checkpoint"].endswith("probe/checkpoints/21")
  recorded = json.loads((tmp_path / "resumed" / "probe" / "trunk.json").read_text())
  assert recorded == resumed["trunk"]


def test_a_probe_of_another_trunk_is_refused_in_one_line(tmp_path, finished):
  other = main(tmp_path / "b", "--config.seed=1", "--config.mode=pretrain")
  assert other.returncode == 0, other.stderr[-3000:]
  digest_a = json.loads((finished / "probe" / "trunk.json").read_text())["digest"]

  for mode in ("linear_probe", "eval"):
    refused = main(finished, f"--config.mode={mode}", f"--config.pretrained={tmp_path / 'b'}")
    assert refused.returncode != 0, mode
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr[-3000:]
    assert digest_a in lines[0] and str(tmp_path / "b" / "pretrain" / "checkpoints" / "28") in lines[0]
  # Nothing was overwritten: the probe still records trunk a.
  assert json.loads((finished / "probe" / "trunk.json").read_text())["digest"] == digest_a


def test_a_deeper_trunk_does_not_restore_into_a_shallower_model(tmp_path):
  deep = main(tmp_path / "deep", "--config.model.depth=14", "--config.mode=pretrain", "--config.train.max_steps=2")
  assert deep.returncode == 0, deep.stderr[-3000:]
  probe = main(tmp_path / "shallow", "--config.mode=linear_probe", f"--config.pretrained={tmp_path / 'deep'}")
  assert probe.returncode != 0
  lines = probe.stderr.strip().splitlines()
  assert len(lines) == 1 and "model.depth" in lines[0] and "deeper or wider" in lines[0], probe.stderr[-3000:]
  assert not (tmp_path / "shallow" / "probe" / "checkpoints").exists()
