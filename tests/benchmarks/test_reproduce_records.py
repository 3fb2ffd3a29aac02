"""benchmarks/reproduce_records.py: JSON trees compared exactly, the scratch workdir seeded with the
run's config and second-newest finished checkpoint, and a check that finds the same bits says so while
one flipped bit is named."""

import json
import subprocess
import zlib

import numpy as np
import pytest

from dscl_jax.runtime import checkpoint
from tests import benchmark_modules

rr = benchmark_modules.load("reproduce_records")

FASHION_COUNTS = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


def test_differences_are_exact_and_name_their_path():
  a = {"probe": {"overall": 80.0, "per_class": [1.0, 2.0]}, "knn": {"overall": 3.0}}
  assert rr.differences(a, json.loads(json.dumps(a))) == []
  b = {"probe": {"overall": 80.00000000000001, "per_class": [1.0, 2.5]}, "lr": {}}
  assert rr.differences(a, b) == [
    "/knn: only in record",
    "/lr: only in rerun",
    "/probe/overall: 80.0 -> 80.00000000000001",
    "/probe/per_class[1]: 2.0 -> 2.5",
  ]


def _checkpoint(job_dir, step, w):
  """A real dscl_jax checkpoint of a two-leaf state at `step`."""
  manager = checkpoint.Checkpoints(job_dir / "checkpoints")
  manager.save(step, {"params": {"w": np.asarray(w, np.float32)}, "step": np.int32(step)})
  manager.wait_until_finished()


def _crc(w) -> int:
  return zlib.crc32(np.asarray(w, np.float32).tobytes())


def _fake_run(tmp_path, final_w, per_class):
  """A recorded run (finished checkpoints 1600 and 1740, and an orbax temporary directory of an unfinished
  1800) and a `run_job` that 'resumes' by saving `final_w` at 1740 and an eval report with the given
  per-class accuracies."""
  run_dir = tmp_path / "cmp" / "dscl_seed0"
  _checkpoint(run_dir / "pretrain", 1600, [1.0, 2.0])
  _checkpoint(run_dir / "pretrain", 1740, [1.5, 2.5])
  (run_dir / "pretrain" / "checkpoints" / "1800.orbax-checkpoint-tmp-1").mkdir()
  (run_dir / "pretrain" / "config.json").write_text('{"seed": 0}')
  jobs = []

  def run_job(method, seed, job, workdir, overrides, commit="", config=None):
    jobs.append(job)
    if job == "pretrain":
      assert rr.checkpoint_steps(workdir / "pretrain") == [1600]  # it resumes from the second-newest
      assert (workdir / "pretrain" / "config.json").read_text() == '{"seed": 0}'
      _checkpoint(workdir / "pretrain", 1740, final_w)
    if job == "eval":
      report = {
        "train_class_counts": FASHION_COUNTS,
        "num_images": 10000,
        "classifiers": {
          "linear_probe": {"overall": 70.0, "per_class_accuracy": per_class, "per_class_images": [1000] * 10}
        },
      }
      (workdir / "eval_test.json").write_text(json.dumps(report))
    return {"seconds": 1.0, "commits": [commit]}

  return run_job, jobs


def test_a_faithful_rerun_is_identical_and_a_flipped_bit_is_named(tmp_path):
  per_class = [70.0] * 10
  report = {
    "train_class_counts": FASHION_COUNTS,
    "classifiers": {
      "linear_probe": {"overall": 70.0, "per_class_accuracy": per_class, "per_class_images": [1000] * 10}
    },
  }
  record = {"method": "dscl", "seed": 0, "commit": "a" * 40, "classifiers": rr.cm.summarise_report(report)}
  run_job, jobs = _fake_run(tmp_path, [1.5, 2.5], per_class)
  result = rr.reproduce(record, tmp_path / "cmp", tmp_path / "scratch", "b" * 40, run_job)
  assert jobs == ["pretrain", "linear_probe", "eval"]
  assert result["identical"] and (result["resumed_from_step"], result["to_step"], result["state_leaves"]) == (
    1600,
    1740,
    2,
  )

  run_job, _ = _fake_run(tmp_path / "again", [1.5, 2.5000002], [70.0] * 9 + [70.1])
  result = rr.reproduce(record, tmp_path / "again" / "cmp", tmp_path / "scratch", "b" * 40, run_job)
  assert not result["identical"]
  assert result["state_differences"] == [f"/params/w/crc32: {_crc([1.5, 2.5])} -> {_crc([1.5, 2.5000002])}"]
  assert "/linear_probe/per_class_accuracy[9]: 70.0 -> 70.1" in result["accuracy_differences"]
  assert "| DSCL | 0 | aaaaaaa | bbbbbbb | 1600-1740 | 1/2 | no |" in rr.summary([result])


def test_a_run_without_two_finished_checkpoints_is_refused(tmp_path):
  run_dir = tmp_path / "cmp" / "ce_seed0"
  _checkpoint(run_dir / "pretrain", 1740, [0.0])
  with pytest.raises(FileNotFoundError, match="holds 1 finished checkpoint"):
    rr.seed_scratch(run_dir, tmp_path / "scratch")


def _git(repo, *args) -> str:
  return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_commits_are_compared_on_the_training_code_only(tmp_path):
  _git(tmp_path, "init", "-q")
  for name in ("user.name", "user.email"):
    _git(tmp_path, "config", name, "test")

  def commit(path, text):
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text(text)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", path)
    return _git(tmp_path, "rev-parse", "HEAD")

  a = commit("dscl_jax/loss.py", "x = 1\n")
  b = commit("benchmarks/compare_methods.py", "# a table\n")  # outside the training code
  c = commit("configs/small.py", "epochs = 30\n")
  d = commit("README.md", "words\n")
  assert rr.cm.same_training_code(a, b, tmp_path) and rr.cm.same_training_code(c[:7], d, tmp_path)
  assert not rr.cm.same_training_code(b, c, tmp_path) and not rr.cm.same_training_code(a, d, tmp_path)
  with pytest.raises(RuntimeError, match="git diff"):
    rr.cm.same_training_code(a, "0" * 40, tmp_path)


def test_a_record_is_stale_only_when_the_code_its_config_runs_changed(tmp_path):
  _git(tmp_path, "init", "-q")
  for name in ("user.name", "user.email"):
    _git(tmp_path, "config", name, "test")

  def commit(files):
    for path, text in files.items():
      (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / path).write_text(text)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "x")
    return _git(tmp_path, "rev-parse", "HEAD")

  first = commit(
    {
      "dscl_jax/loss.py": "x = 1\n",
      "configs/__init__.py": "",
      "configs/common.py": "EPOCHS = 15\n",
      "configs/base_ce.py": "from configs.common import EPOCHS\n",
      "configs/ce.py": "import ml_collections\nfrom configs.base_ce import EPOCHS\n",
      "configs/dscl.py": "EPOCHS = 15\n",
      "configs/forms.py": "from configs import common\nfrom .base_ce import EPOCHS\nimport configs.dscl\n",
    }
  )
  assert rr.cm.config_files("configs/forms.py", tmp_path) == (
    "configs/base_ce.py",
    "configs/common.py",
    "configs/dscl.py",
    "configs/forms.py",
  )
  assert rr.cm.config_files("configs/ce.py", tmp_path) == (
    "configs/base_ce.py",
    "configs/ce.py",
    "configs/common.py",
  )
  assert rr.cm.config_files("configs/gone.py", tmp_path) == ("configs/gone.py",)
  ce = {"commit": first, "config": "configs/ce.py"}
  dscl = {"commit": first, "config": "configs/dscl.py"}

  def current(records):
    same_as_now = rr.cm.same_code_as(_git(tmp_path, "rev-parse", "HEAD"), tmp_path)
    return [rr.cm.made_with(r, same_as_now) for r in records]

  second = commit({"configs/ce_control.py": "from configs.common import EPOCHS\n"})  # a new config
  assert current([ce, dscl]) == [True, True]
  # A record without a config is checked against all of the training code: there the new file counts.
  assert not rr.cm.made_with({"commit": first}, rr.cm.same_code_as(second, tmp_path))
  commit({"configs/common.py": "EPOCHS = 30\n"})  # imported by ce.py through base_ce.py
  assert current([ce, dscl]) == [False, True]
  commit({"dscl_jax/loss.py": "x = 2\n"})  # the package: every record
  assert current([ce, dscl]) == [False, False]


def test_a_check_says_whether_it_ran_on_the_record_cpu():
  cpu = {"model_name": "x", "isa": ["avx2"]}
  assert rr.same_cpu({"machine": {"cpu": cpu}}, {"cpu": dict(cpu)}) is True
  assert rr.same_cpu({"machine": {"cpu": cpu}}, {"cpu": {**cpu, "isa": ["avx2", "avx512f"]}}) is False
  assert rr.same_cpu({"machine": {"processor": "x86_64"}}, {"cpu": cpu}) is None  # made before records said


def test_coverage_sorts_records_into_made_reproduced_and_unchecked():
  now = {"c" * 40, "d" * 40}  # two commits with today's training code
  records = [
    {"method": "ce", "seed": 0, "commit": "c" * 40, "job_commits": {"pretrain": ["d" * 40]}},
    {"method": "dscl", "seed": 0, "commit": "c" * 40, "job_commits": {"pretrain": ["a" * 40]}},
    {"method": "dscl", "seed": 1, "commit": "c" * 40, "job_commits": {"pretrain": ["a" * 40, "c" * 40]}},
    {"method": "paco", "seed": 0, "commit": "c" * 40, "job_commits": {"pretrain": ["a" * 40]}},
  ]
  checks = [
    {"method": "dscl", "seed": 0, "commit": "d" * 40, "identical": True},
    {"method": "dscl", "seed": 1, "commit": "d" * 40, "identical": False},  # differs: not reproduced
    {"method": "paco", "seed": 0, "commit": "a" * 40, "identical": True},
  ]  # checked at old code
  # commits() shortens hashes to 7 characters; the predicate sees those
  made, checked, unchecked = rr.coverage(records, checks, lambda c, config=None: c[:7] in {h[:7] for h in now})
  assert (made, checked, unchecked) == ([("ce", 0)], [("dscl", 0)], [("dscl", 1), ("paco", 0)])
  line = rr.coverage_line(made, checked, unchecked, "ccccccc")
  assert "1 of 4 records were made with it and 1 were made earlier and reproduced" in line
  assert line.endswith("not checked yet: DSCL seed 1, PaCo seed 0.")


def test_the_results_document_holds_the_checks_and_a_coverage_line():
  """docs/results.md (not the README) holds the table of the committed checks. Its coverage line names
  the commit of the training code, so it is compared in form only: a commit that changes the training
  code changes that line until `--render-only` is run again."""
  content = rr.cm.RESULTS_DOC.read_text()
  assert content.count(rr.BEGIN) == 1 and content.count(rr.END) == 1
  assert rr.BEGIN not in (rr.REPO / "README.md").read_text()
  block = content.split(rr.BEGIN, 1)[1].split(rr.END, 1)[0]
  source, coverage, table = block.strip("\n").split("\n\n", 2)
  assert source == (
    "Made by `python benchmarks/reproduce_records.py` from "
    "`benchmarks/results/compare_fashion_mnist_lt_reproduced.json`."
  )
  assert coverage.startswith("Against the training code of ") and f"of {len(rr.cm.read_records())} records" in coverage
  assert table + "\n" == rr.summary(rr.read_results())
