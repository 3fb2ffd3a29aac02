"""benchmarks/compare_methods.py: the configs it compares are the registry's and comparable, group
accuracies against hand-worked values, records appended and skipped, the table's mean and sample std, the
figures and the docs/results.md block; and one real (tiny) run through `dscl_jax.main` into a record."""

import functools
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dscl_jax import methods
from dscl_jax.config.schema import flat_keys
from dscl_jax.runtime import checkpoint
from tests import benchmark_modules

cm = benchmark_modules.load("compare_methods")

# Fashion-MNIST-LT's training counts at IF 100, as data/fashion_mnist.py builds them.
FASHION_COUNTS = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


def test_every_registry_method_is_compared_and_the_configs_are_comparable():
  configs = {m: cm.load_config(m) for m in cm.METHODS}
  assert {c.method for c in configs.values()} == set(methods.available())
  assert configs["dscl_pbsd"].pbsd.enabled and configs["dscl_multicrop"].pbsd.multicrop
  cm.check_fair(configs)
  configs["iccl"].train.epochs = 30
  configs["paco"].probe.epochs = 3
  with pytest.raises(ValueError) as error:
    cm.check_fair(configs)
  assert "train.epochs: ce=15 but iccl=30" in str(error.value) and "probe:" in str(error.value)


def test_group_accuracy_weights_classes_by_their_test_images():
  # (100 * 10 + 50 * 30) / 40 images
  assert cm.group_accuracy([100.0, 50.0, 0.0], [10, 30, 60], [0, 1]) == pytest.approx(62.5)
  assert math.isnan(cm.group_accuracy([100.0, 50.0, 0.0], [10, 30, 60], []))


def report(per_class_by_classifier):
  return {
    "train_class_counts": FASHION_COUNTS,
    "num_images": 10000,
    "classifiers": {
      name: {"overall": float(np.mean(acc)), "per_class_accuracy": list(acc), "per_class_images": [1000] * 10}
      for name, acc in per_class_by_classifier.items()
    },
  }


def test_summary_has_both_group_schemes():
  acc = [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0]
  summary = cm.summarise_report(report({"linear_probe": acc}))["linear_probe"]
  groups = summary["groups"]
  # head: the 4 largest classes, middle the next 3, tail the last 3; many: > 100 images (8 classes), medium
  # 20..100 (100 and 60), no few-shot class.
  assert groups["head"] == pytest.approx(75.0) and groups["middle"] == pytest.approx(40.0)
  assert groups["tail"] == pytest.approx(10.0)
  assert groups["many"] == pytest.approx(55.0) and groups["medium"] == pytest.approx(5.0)
  assert "few" not in groups  # left out rather than NaN
  assert summary["per_class_accuracy"] == acc


def record(method, seed, probe, knn=None):
  classifiers = {"linear_probe": probe, **({"knn": knn} if knn is not None else {})}
  summary = cm.summarise_report(report(classifiers))
  return {
    "method": method,
    "seed": seed,
    "commit": "abcdef1234",
    "train_class_counts": FASHION_COUNTS,
    "classifiers": summary,
    "wall_seconds": {"pretrain": 100.0 + seed, "linear_probe": 10.0, "eval": 5.0},
  }


def test_pending_is_seed_major_and_skips_what_is_recorded():
  records = [record("dscl", 0, [50.0] * 10)]
  assert cm.is_recorded(records, "dscl", 0) and not cm.is_recorded(records, "dscl", 1)
  assert cm.pending(["ce", "dscl"], [0, 1], records) == [("ce", 0), ("ce", 1), ("dscl", 1)]


def test_records_are_appended(tmp_path):
  path = tmp_path / "results.json"
  assert cm.read_records(path) == []
  cm.append_record(record("ce", 0, [1.0] * 10), path)
  cm.append_record(record("ce", 1, [2.0] * 10), path)
  assert [(r["method"], r["seed"]) for r in cm.read_records(path)] == [("ce", 0), ("ce", 1)]
  assert not list(tmp_path.glob("*.tmp"))


_APPENDER = """
import sys
from tests import benchmark_modules
cm = benchmark_modules.load("compare_methods")
for i in range(int(sys.argv[3])):
  cm.append_entry({"writer": int(sys.argv[2]), "i": i}, cm.Path(sys.argv[1]), "test")
"""


def test_processes_appending_at_once_keep_every_entry(tmp_path):
  # Read, append and write are one step under <path>.lock; without it the writers overwrite each other.
  path, writers, each = tmp_path / "results.json", 4, 30
  procs = [
    subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), str(w), str(each)], cwd=cm.REPO)
    for w in range(writers)
  ]
  assert [p.wait(timeout=120) for p in procs] == [0] * writers
  entries = cm.read_entries(path)
  assert sorted((e["writer"], e["i"]) for e in entries) == [(w, i) for w in range(writers) for i in range(each)]
  assert not list(tmp_path.glob("*.tmp"))


def test_a_claim_is_refused_while_held_and_freed_when_its_holder_is_killed(tmp_path):
  claim = tmp_path / "dscl_seed0" / "compare.claim"
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      f"""
import time
from tests import benchmark_modules
cm = benchmark_modules.load("compare_methods")
with cm.exclusive(cm.Path({str(claim)!r}), wait=False) as mine:
  assert mine
  print("held", flush=True)
  time.sleep(600)
""",
    ],
    cwd=cm.REPO,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline() == "held\n"
    with cm.exclusive(claim, wait=False) as mine:
      assert not mine
  finally:
    holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
    holder.wait()
  with cm.exclusive(claim, wait=False) as mine:
    assert mine


def test_queues_running_at_once_split_the_runs(tmp_path, monkeypatch, capsys):
  store, ran = [], []
  monkeypatch.setattr(cm, "read_records", lambda path=None: list(store))
  monkeypatch.setattr(cm, "append_record", lambda r, path=None: store.append(r))
  monkeypatch.setattr(cm, "render", lambda records: None)

  def fake_run_one(method, seed, workdir_root, overrides, commit, dirty, trunks_from=None):
    ran.append((method, seed))
    store.append(record("supcon", 0, [60.0] * 10))  # meanwhile, another queue records SupCon seed 0
    return record(method, seed, [50.0] * 10)

  monkeypatch.setattr(cm, "run_one", fake_run_one)
  # Another queue is running DSCL seed 0 (it holds the claim).
  with cm.exclusive(tmp_path / "dscl_seed0" / "compare.claim", wait=False) as held:
    assert held
    cm.main(["--methods=dscl,ce,supcon", "--seeds=0", f"--workdir-root={tmp_path}", "--allow-uncommitted"])
  out = capsys.readouterr().out
  assert ran == [("ce", 0)] and [(r["method"], r["seed"]) for r in store] == [("supcon", 0), ("ce", 0)]
  assert "DSCL seed 0: another compare_methods process is running it; skipped" in out
  assert "SupCon seed 0: recorded meanwhile; skipped" in out


def test_run_one_records_what_the_jobs_left(tmp_path):
  calls = []

  def fake_job(method, seed, job, workdir, overrides, commit, config=None):
    calls.append((job, config))
    workdir.mkdir(parents=True, exist_ok=True)
    if job == "eval":
      (workdir / "eval_test.json").write_text(json.dumps(report({"linear_probe": [40.0] * 10})))
    return {"seconds": {"pretrain": 30.0, "linear_probe": 4.0, "eval": 2.0}[job], "commits": ["old", commit]}

  r = cm.run_one("iccl", 2, tmp_path, {}, "0123abc", False, run_job=fake_job)
  assert calls == [(job, "configs/fashion_mnist_lt_iccl.py") for job in ("pretrain", "linear_probe", "eval")]
  assert r["method"] == "iccl" and r["seed"] == 2 and r["overrides"] == {"seed": 2}
  assert r["wall_seconds"] == {"pretrain": 30.0, "linear_probe": 4.0, "eval": 2.0}
  assert r["job_commits"]["eval"] == ["old", "0123abc"]
  assert r["classifiers"]["linear_probe"]["groups"]["tail"] == pytest.approx(40.0)
  # ICCL's whole pretraining: 1740 steps of 128 positions, two samples each (tests/core/test_budget.py).
  assert r["budget"] == {
    "images_drawn": 445_440,
    "online_forward_images": 445_440,
    "target_forward_images": 222_720,
    "rarest_class_draws_per_image": 386.16,
  }


def donor_workdir(root, row, seed, commits, changes):
  """A finished pretrain of `row` below `root`, as benchmarks/investigate_dscl.py leaves one: its saved
  config (the row's, seed `seed`, with `changes` such as {"data.val_per_class": 500}) and its timing file."""
  config = cm.pretrain_config(row, seed, cm.row_source(row)[1])
  for dotted, value in changes.items():
    group, name = dotted.split(".")
    config[group][name] = value
  workdir = root / f"{row}_donor_{seed}"
  (workdir / "pretrain").mkdir(parents=True)
  (workdir / "pretrain" / "config.json").write_text(json.dumps(config))
  timing = {"pretrain": {"seconds": 7000.0, "attempts": 1, "done": True, "commits": commits}}
  (workdir / "compare_timing.json").write_text(json.dumps(timing))
  return workdir


def test_a_trunk_pretrained_on_the_validation_split_is_probed_not_trained_again(tmp_path, monkeypatch):
  calls = []

  def fake_job(method, seed, job, workdir, overrides, commit, config=None):
    calls.append((job, workdir.name, overrides.get("pretrained")))
    workdir.mkdir(parents=True, exist_ok=True)
    if job == "eval":
      (workdir / "eval_test.json").write_text(json.dumps(report({"linear_probe": [60.0] * 10})))
    return {"seconds": 5.0, "commits": [commit]}

  # Commits "new*" hold this run's training code, "old*" another (git is asked in the real test below).
  monkeypatch.setattr(cm, "same_training_code", lambda a, b, paths=None: a[:3] == b[:3] == "new")
  donors = tmp_path / "investigate"
  iccl = donor_workdir(donors, "iccl", 0, ["new1", "new2"], {"data.val_per_class": 500})
  donor_workdir(donors, "iccl_no_centroid", 0, ["new1"], {"data.val_per_class": 500})
  run = functools.partial(cm.run_one, workdir_root=tmp_path / "compare", overrides={}, dirty=False, run_job=fake_job)
  r = run("iccl", 0, commit="new3", trunks_from=donors)
  assert calls == [("linear_probe", "iccl_seed0", str(iccl)), ("eval", "iccl_seed0", str(iccl))]
  assert r["pretrained_from"] == "investigate/iccl_donor_0" and r["wall_seconds"]["pretrain"] == 7000.0
  assert r["job_commits"]["pretrain"] == ["new1", "new2"] and r["overrides"] == {"seed": 0}
  # Another seed, a config that differs in a training field (iccl_no_centroid's centroid weight is 0 where
  # iccl's is 1), other training code, or no donors: the run pretrains its own trunk.
  for seed, commit, trunks_from in ((1, "new3", donors), (0, "old3", donors), (0, "new3", None)):
    calls.clear()
    r = run("iccl", seed, commit=commit, trunks_from=trunks_from, workdir_root=tmp_path / f"own{seed}{commit}")
    assert [c[0] for c in calls] == list(cm.JOBS) and all(c[2] is None for c in calls)
    assert r["pretrained_from"] is None and r["wall_seconds"]["pretrain"] == 5.0
  calls.clear()
  ce = run("ce", 0, commit="new3", trunks_from=donors)
  assert [c[0] for c in calls] == list(cm.JOBS) and ce["pretrained_from"] is None
  # A run whose own pretrain has finished keeps its own trunk.
  mine = tmp_path / "mine" / "iccl_seed0"
  mine.mkdir(parents=True)
  (mine / "compare_timing.json").write_text(json.dumps({"pretrain": {"done": True}}))
  calls.clear()
  r = run("iccl", 0, commit="new3", trunks_from=donors, workdir_root=mine.parent)
  assert [c[0] for c in calls] == list(cm.JOBS) and r["pretrained_from"] is None
  # A donor that differs only in one field that alters training (the temperature) is refused.
  other = tmp_path / "other"
  donor_workdir(other, "iccl", 0, ["new1"], {"loss.temperature": 0.5})
  assert cm.finished_trunk("iccl", 0, {}, "new3", other) is None
  timing = json.loads((iccl / "compare_timing.json").read_text())["pretrain"]
  assert cm.finished_trunk("iccl", 0, {}, "new3", donors) == (iccl, timing)


def test_a_control_is_its_method_config_with_its_overrides_and_nothing_else():
  def leaves(config) -> dict:  # dotted field -> value, for the fields that are not groups
    values = {key: cm._field(config, key) for key in flat_keys(config.to_dict())}
    return {key: value for key, value in values.items() if not isinstance(value, dict)}

  for name, (method, path, overrides, _) in cm.CONTROLS.items():
    assert method in cm.METHODS and name in cm.LABELS and cm.row_source(name) == (path, overrides)
    control, base = leaves(cm.load_config(name)), leaves(cm.load_config(method))
    assert control.keys() == base.keys(), name
    changed = {k: control[k] for k in control if control[k] != base[k]}
    if path == cm.METHODS[method]:  # an override control changes exactly its overrides
      assert changed == overrides, (name, changed)
    else:  # a control with its own config file still runs its method, and changes something
      assert control["method"] == base["method"] and changed, name
  with pytest.raises(ValueError, match="'ce_typo' is neither a method .* nor a control"):
    cm.row_source("ce_typo")


def test_check_fair_lets_a_control_change_only_its_declared_fields():
  configs = {m: cm.load_config(m) for m in ("ce", "iccl", "ce_equal_draws", "ce_class_aware_mixup")}
  cm.check_fair(configs)  # 30 epochs and ICCL's draws are declared (GIVEN_MORE, GIVEN_MORE_FIELDS)
  with pytest.raises(ValueError, match=r"train.epochs: ce=15 but ce_equal_draws=30"):
    cm.check_fair(configs, given_more_fields={})
  # A declared field is not a licence for the others: the probe still has to match.
  configs["ce_equal_draws"].probe.epochs = 3
  with pytest.raises(ValueError, match=r"probe: .* but ce_equal_draws="):
    cm.check_fair(configs)
  # Equal epochs but more draws, undeclared: refused on the budget.
  with pytest.raises(ValueError, match=r"budget: ce=.* but ce_class_aware_mixup=.*'images_drawn': 445440"):
    cm.check_fair({m: cm.load_config(m) for m in ("ce", "ce_class_aware_mixup")}, given_more={})


def test_a_control_row_runs_its_config_and_overrides_and_is_tabulated(tmp_path, monkeypatch):
  calls = []

  def fake_job(method, seed, job, workdir, overrides, commit, config=None):
    calls.append((method, job, config, dict(overrides)))
    workdir.mkdir(parents=True, exist_ok=True)
    if job == "eval":
      (workdir / "eval_test.json").write_text(json.dumps(report({"linear_probe": [70.0] * 10})))
    return {"seconds": 1.0, "commits": [commit]}

  r = cm.run_one("ce_equal_draws", 1, tmp_path, {}, "0123abc", False, run_job=fake_job)
  assert calls == [("ce_equal_draws", job, "configs/fashion_mnist_lt_ce.py", {"train.epochs": 30}) for job in cm.JOBS]
  assert (tmp_path / "ce_equal_draws_seed1").is_dir()
  assert r["config"] == "configs/fashion_mnist_lt_ce.py" and r["overrides"] == {"seed": 1, "train.epochs": 30}
  # The budget is that of 30 epochs: twice cross-entropy's 222,720 images.
  assert r["budget"]["images_drawn"] == 445_440 and r["budget"]["rarest_class_draws_per_image"] == 29.92
  monkeypatch.setattr(cm, "PROMOTED", ("ce_equal_draws",))
  table = cm.markdown([record("ce", 1, [50.0] * 10), {**r, "wall_seconds": {"pretrain": 7.0}}])
  assert "2 of 27 runs recorded (8 methods and 1 control x seeds 0, 1, 2)" in table
  assert "| cross-entropy, 30 epochs * | 1 | 70.00 |" in table
  assert "\\* cross-entropy, 30 epochs is given 30 pretrain epochs instead of 15" in table
  assert cm.parse_args([]).methods == [*cm.METHODS, "ce_equal_draws"]


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile

processor\t: 1
model name\t: another
flags\t\t: fpu
"""


def test_the_machine_names_the_cpu_xla_compiled_for():
  assert cm.cpu_description(CPUINFO) == {
    "model_name": "Intel(R) Xeon(R) Processor",
    "family": "6",
    "model": "167",
    "stepping": "1",
    "isa": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"],
  }
  # An ARM cpuinfo: "Features", no model name.
  assert cm.cpu_description("processor : 0\nFeatures : fp asimd sve\n") == {"isa": ["asimd", "sve"]}
  if os.path.exists("/proc/cpuinfo"):
    assert cm.machine()["cpu"]["isa"]  # every x86-64 has sse4_2 or better, every arm64 asimd


def test_check_fair_refuses_more_draws_unless_declared():
  configs = {m: cm.load_config(m) for m in ("ce", "dscl", "iccl")}
  cm.check_fair(configs)  # ICCL's extra draws are declared in GIVEN_MORE; DSCL's target forwards are its design
  with pytest.raises(ValueError, match=r"budget: ce=.*'images_drawn': 222720.* but iccl=.*'images_drawn': 445440"):
    cm.check_fair(configs, given_more={})
  # The table marks the declared method and says what it is given.
  table = cm.markdown([record("ce", 0, [50.0] * 10), record("iccl", 0, [50.0] * 10)])
  assert "| ICCL * | 1 |" in table and "\\* ICCL is given a second, class-aware sample" in table


def test_add_budgets_fills_in_missing_and_corrects_wrong_blocks(tmp_path):
  path = tmp_path / "records.json"
  old = {**record("iccl", 0, [50.0] * 10), "config": cm.METHODS["iccl"], "overrides": {"seed": 0}}
  old.pop("budget", None)
  wrong = {**record("ce", 1, [50.0] * 10), "config": cm.METHODS["ce"], "overrides": {"seed": 1}, "budget": {"x": 1}}
  right = {**record("ce", 2, [50.0] * 10), "config": cm.METHODS["ce"], "overrides": {"seed": 2}}
  right["budget"] = cm.record_budget(right)
  cm.write_json(path, {"description": "d", "records": [old, wrong, right]})
  assert cm.add_budgets(path, "d") == 2
  records = cm.read_entries(path)
  assert records[0]["budget"]["images_drawn"] == 445_440 and records[1]["budget"]["images_drawn"] == 222_720
  assert cm.add_budgets(path, "d") == 0


def test_a_reused_trunk_keeps_its_pretraining_overrides_in_the_budget():
  """A control recorded on its investigation trunk (`pretrained_from`) with `train.epochs` 30 was given
  30 epochs: 2 x 116 x 15 x 128 images, not the 15-epoch count."""
  reused = {
    **record("ce_equal_draws", 0, [50.0] * 10),
    "config": cm.METHODS["ce"],
    "overrides": {"seed": 0, "train.epochs": 30, "pretrained": "/x/pretrain"},
    "pretrained_from": "investigate_dscl/ce_equal_draws",
  }
  assert cm.record_budget(reused)["images_drawn"] == 2 * 116 * 15 * 128 == 445_440


def test_every_committed_record_has_the_budget_of_its_row():
  """Recomputed another way: from the row's declared config (`load_config`), not the record's own config
  and overrides. A record whose budget differs was made from something other than its row."""
  for rec in cm.read_entries(cm.RECORDS):
    row_config = cm.with_overrides(cm.load_config(rec["method"]), {"seed": rec["seed"]})
    expected = cm.budget_of(row_config, rec["train_class_counts"])
    assert rec["budget"] == expected, f"{rec['method']} seed {rec['seed']}: {rec['budget']} != {expected}"


PARENT = """
import sys
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
import compare_methods as cm
timing = {{"pretrain": {{"seconds": 5.0, "attempts": 1, "done": False, "commits": ["old"]}}}}
cm.run_timed([sys.executable, "-c", "import time; time.sleep(60)"], Path({log!r}), Path({timing!r}), timing,
             "pretrain", "new", every=0.2)
"""


def test_a_killed_comparison_keeps_the_attempt_and_the_time_its_job_ran(tmp_path):
  """The end of a sitting kills the comparison without warning. Its job's attempt and running time (all but
  the last heartbeat) must already be in the timing file, added to the 5 s of an earlier attempt."""
  timing_path = tmp_path / "compare_timing.json"
  script = tmp_path / "parent.py"
  script.write_text(
    PARENT.format(benchmarks=str(benchmark_modules.BENCHMARKS), log=str(tmp_path / "job.log"), timing=str(timing_path))
  )
  parent = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
  try:
    deadline = time.monotonic() + 120
    while not (timing_path.exists() and json.loads(timing_path.read_text())["pretrain"]["attempts"] == 2):
      assert parent.poll() is None and time.monotonic() < deadline, "the attempt was never written"
      time.sleep(0.05)
    started = time.monotonic()
    time.sleep(1.5)
    os.killpg(parent.pid, signal.SIGKILL)  # the parent and its job, as when a session is stopped
    ran = time.monotonic() - started
  finally:
    if parent.poll() is None:
      os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
  entry = json.loads(timing_path.read_text())["pretrain"]
  assert entry["attempts"] == 2 and entry["commits"] == ["old", "new"] and not entry["done"]
  assert 5.0 + ran - 0.5 <= entry["seconds"] <= 5.0 + ran + 0.5
  assert not list(tmp_path.glob("*.tmp"))


def test_table_figures_and_results_block(tmp_path, monkeypatch):
  monkeypatch.setattr(cm, "PROMOTED", ())  # the 8 methods alone; a promoted control adds 3 runs (below)
  ramp = np.linspace(90.0, 60.0, 10)
  records = [
    record("ce", 0, ramp),
    record("ce", 1, ramp + 2.0),
    record("dscl", 0, ramp + 1.0, knn=ramp),
    record("dscl", 1, ramp + 5.0, knn=ramp),
  ]
  table = cm.aggregate(records)
  mean, std, n = table["ce"]["linear_probe"]["overall"]
  assert (mean, n) == (pytest.approx(76.0), 2) and std == pytest.approx(math.sqrt(2.0))  # 75, 77
  assert table["dscl"]["knn"]["tail"][1] == 0.0 and "knn" not in table["ce"]
  text = cm.markdown(records)
  assert "4 of 24 runs recorded (8 methods x seeds 0, 1, 2)" in text and "Commits: abcdef1." in text
  monkeypatch.setattr(cm, "PROMOTED", ("iccl_no_centroid",))
  assert "4 of 27 runs recorded (8 methods and 1 control x seeds 0, 1, 2)" in cm.markdown(records)
  monkeypatch.setattr(cm, "PROMOTED", ())
  records[0]["job_commits"] = {"pretrain": ["9876543210"], "eval": ["abcdef1234"]}
  assert cm.commits(records) == ["9876543", "abcdef1"]
  assert "| cross-entropy | 2 | 76.00 ± 1.41 |" in text and "| DSCL | 2 | 78.00 ± 2.83 |" in text
  assert "| DSCL | kNN (k 20, cosine) |" in text
  assert "overall: DSCL 78.00 ± 2.83, then cross-entropy 76.00 ± 1.41; gap 2.00 points = 0.7 x" in text
  # DSCL minus CE per seed: +1 (seed 0), +3 (seed 1): mean 2, std sqrt(2), ahead on both; no SupCon, and
  # the kNN row is absent because CE has no kNN.
  assert cm.paired_difference(records, "dscl", "ce", "linear_probe", "tail") == (
    pytest.approx(2.0),
    pytest.approx(math.sqrt(2.0)),
    2,
    2,
  )
  assert cm.paired_difference(records, "dscl", "supcon", "linear_probe", "overall") is None
  assert "| cross-entropy | linear probe | +2.00 ± 1.41 (2/2) | +2.00 ± 1.41 (2/2) | +2.00 ± 1.41 (2/2) |" in text
  assert "| cross-entropy | kNN" not in text and "| SupCon |" not in text
  behind = [record("ce", 0, ramp + 2.0), record("dscl", 0, ramp), record("dscl", 1, ramp + 9.0)]
  mean, std, ahead, n = cm.paired_difference(behind, "dscl", "ce", "linear_probe", "overall")
  assert (mean, ahead, n) == (pytest.approx(-2.0), 0, 1) and math.isnan(std)  # seed 1 has no CE to pair
  assert "| cross-entropy | linear probe | -2.00 (0/1) |" in cm.markdown(behind)

  groups, per_class = tmp_path / "groups.png", tmp_path / "per_class.png"
  cm.figures(records, groups, per_class)
  for path in (groups, per_class):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000

  document = tmp_path / "results.md"
  document.write_text(f"intro\n{cm.BEGIN}\nold\n{cm.END}\nrest\n")
  assert cm.update_block("new table\n", document) and cm.update_block("new table\n", document)
  assert document.read_text() == f"intro\n{cm.BEGIN}\nnew table\n{cm.END}\nrest\n"
  other = tmp_path / "other.md"
  other.write_text("no markers\n")
  assert not cm.update_block("x", other) and other.read_text() == "no markers\n"
  assert not cm.update_block("x", tmp_path / "missing.md") and not (tmp_path / "missing.md").exists()
  # The figures are linked relative to the document that shows them.
  block = cm.results_block(records, tmp_path / "docs" / "results.md")
  assert block.startswith(f"Made by `{cm.COMMAND}` from `benchmarks/results/compare_fashion_mnist_lt.json`.\n\n")
  assert f"![accuracy per group]({os.path.relpath(cm.GROUPS_FIGURE, tmp_path / 'docs')})" in block
  assert cm.results_block([]).endswith(": no runs recorded yet.\n")


def _block(document, begin, end) -> str:
  """What lies between the markers of `document`."""
  content = document.read_text()
  assert content.count(begin) == 1 and content.count(end) == 1, f"{document} needs one {begin} and one {end}"
  return content.split(begin, 1)[1].split(end, 1)[0]


def test_the_results_document_holds_what_rendering_writes():
  """docs/results.md (not the README) shows the comparison, exactly as `--render-only` renders the
  committed records, and its figure links resolve."""
  assert cm.RESULTS_DOC == cm.REPO / "docs" / "results.md"
  assert cm.BEGIN not in (cm.REPO / "README.md").read_text()
  block = _block(cm.RESULTS_DOC, cm.BEGIN, cm.END)
  assert block == "\n" + cm.results_block(cm.read_records())
  for figure in (cm.GROUPS_FIGURE, cm.PER_CLASS_FIGURE):
    assert f"]({cm.link(figure)})" in block and (cm.RESULTS_DOC.parent / cm.link(figure)).resolve() == figure


FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.mark.skipif(not os.path.exists(FASHION), reason="needs the Debian package dataset-fashion-mnist")
def test_a_real_tiny_run_becomes_a_record(tmp_path):
  overrides = {
    "train.max_steps": 2,
    "probe.max_steps": 2,
    "probe.reestimate_bn_batches": 1,
    "eval.batch_size": 1000,
    "model.depth": 8,
  }
  r = cm.run_one("ce", 0, tmp_path, overrides, "0123abc", False)
  timing = json.loads((tmp_path / "ce_seed0" / "compare_timing.json").read_text())
  assert all(timing[job]["done"] and timing[job]["attempts"] == 1 for job in cm.JOBS)
  assert r["job_commits"] == {job: ["0123abc"] for job in cm.JOBS}
  assert r["test_images"] == 10000 and r["train_class_counts"] == FASHION_COUNTS
  # Cross-entropy's own classifier is reported too ("model").
  assert set(r["classifiers"]) == {"linear_probe", "knn", "logistic_regression", "model"}
  for summary in r["classifiers"].values():
    per_class = np.asarray(summary["per_class_accuracy"])
    assert summary["overall"] == pytest.approx(per_class.mean())  # 1000 test images per class
    assert summary["groups"]["tail"] == pytest.approx(per_class[7:].mean())
  # A finished job is not run again: the second call only reads the record back.
  again = cm.run_one("ce", 0, tmp_path, overrides, "0123abc", False)
  assert again["classifiers"] == r["classifiers"]
  assert json.loads((tmp_path / "ce_seed0" / "compare_timing.json").read_text()) == timing
  # The trunk pretrained with a validation split held out (as benchmarks/investigate_dscl.py runs it) is
  # this run's trunk bit for bit: every array's CRC-32 in the last checkpoint is equal, so a comparison run
  # may probe it instead (finished_trunk; test_a_trunk_pretrained_on_the_validation_split_is_probed_...).
  head = cm.head_commit()
  donors = tmp_path / "investigate"
  validation = {"data.val_per_class": 500, "eval.split": "val"}
  cm.run_job("ce", 0, "pretrain", donors / "ce", {**overrides, **validation}, head)

  def last_checksums(workdir):
    checkpoints = checkpoint.manager(workdir / "pretrain" / "checkpoints")
    return checkpoints.stored_checksums(checkpoints.steps()[-1])

  assert last_checksums(donors / "ce") == last_checksums(tmp_path / "ce_seed0")
  assert cm.finished_trunk("ce", 0, overrides, head, donors)[0] == donors / "ce"


def test_withdrawn_records_move_aside_and_are_remade(tmp_path):
  path = tmp_path / "records.json"
  old, new = record("ce", 0, [50.0] * 10), {**record("dscl", 0, [60.0] * 10), "commit": "new1234"}
  cm.write_json(path, {"description": "d", "records": [old, new]})
  assert cm.withdraw(path, "d", lambda r: r["commit"] == "new1234", "older code") == 1
  assert [r["method"] for r in cm.read_entries(path)] == ["dscl"]
  aside = cm.read_entries(tmp_path / "records_withdrawn.json")
  assert [(r["method"], r["withdrawn_because"]) for r in aside] == [("ce", "older code")]
  assert {k: v for k, v in aside[0].items() if not k.startswith("withdrawn")} == old  # kept whole
  # The run is pending again; a second withdrawal appends to the same file and leaves the kept one.
  assert cm.pending(["ce", "dscl"], [0], cm.read_entries(path)) == [("ce", 0)]
  assert cm.withdraw(path, "d", lambda r: False, "again") == 1
  assert cm.read_entries(path) == [] and len(cm.read_entries(tmp_path / "records_withdrawn.json")) == 2
  assert cm.withdraw(path, "d", lambda r: False, "again") == 0
