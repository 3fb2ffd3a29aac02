"""benchmarks/investigate_dscl.py: every variant names real config fields, probe-only variants reuse the
comparison's trunk and everything is evaluated on the held-out validation split, records are skipped once
made, and the table reads the numbers of the records."""

import json

import pytest

from tests import benchmark_modules

inv = benchmark_modules.load("investigate_dscl")

FASHION_COUNTS = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


def test_every_variant_overrides_real_fields_and_a_typo_is_refused():
  inv.check_variants()
  with pytest.raises(
    ValueError, match="variant bad: loss.temprature is not a field of configs/fashion_mnist_lt_dscl.py"
  ):
    inv.check_variants({"bad": ("dscl", {"loss.temprature": 0.1}, False, "")})
  with pytest.raises(ValueError, match="variant bad: method 'simclr' is not one of"):
    inv.check_variants({"bad": ("simclr", {}, False, "")})


def test_probe_only_variants_probe_the_comparisons_trunk_on_the_validation_split(tmp_path):
  jobs = inv.variant_jobs("dscl_probe30", tmp_path / "inv", tmp_path / "cmp")
  assert [(job, workdir) for job, workdir, _ in jobs] == [
    ("pretrain", tmp_path / "cmp" / "dscl_seed0"),
    ("linear_probe", tmp_path / "inv" / "dscl_probe30"),
    ("eval", tmp_path / "inv" / "dscl_probe30"),
  ]
  assert jobs[0][2] == {}  # the comparison's own pretrain job, unchanged
  for _, _, overrides in jobs[1:]:
    assert overrides == {
      "data.val_per_class": 500,
      "eval.split": "val",
      "probe.epochs": 30,
      "pretrained": str(tmp_path / "cmp" / "dscl_seed0"),
    }
  # The baselines keep the 10-epoch probe they were measured with; the comparison's own probe is 30.
  assert inv.variant_jobs("dscl", tmp_path / "inv", tmp_path / "cmp")[1][2]["probe.epochs"] == 10
  assert inv.cm.load_config("dscl").probe.epochs == 30
  own = inv.variant_jobs("dscl_t0.2", tmp_path / "inv", tmp_path / "cmp")
  assert [job for job, _, _ in own] == ["pretrain", "linear_probe", "eval"]
  assert all(
    w == tmp_path / "inv" / "dscl_t0.2" and o["loss.temperature"] == 0.2 and o["eval.split"] == "val" for _, w, o in own
  )


def _report(overall, per_class):
  images = [0] + [500] * 9
  return {"overall": overall, "per_class_accuracy": per_class, "per_class_images": images}


def test_a_variant_becomes_a_record_and_a_table_row(tmp_path, monkeypatch):
  calls = []

  def fake_run_job(method, seed, job, workdir, overrides, commit="", config=None):
    calls.append((method, seed, job, workdir))
    if job == "eval":
      per_class = [0.0] + [50.0 + c for c in range(1, 10)]
      report = {
        "train_class_counts": FASHION_COUNTS,
        "num_images": 4500,
        "classifiers": {"linear_probe": _report(55.0, per_class), "knn": _report(54.0, per_class)},
      }
      (workdir / "eval_val.json").parent.mkdir(parents=True, exist_ok=True)
      (workdir / "eval_val.json").write_text(json.dumps(report))
    return {"seconds": 12.0, "commits": [commit]}

  record = inv.run_variant("ce_probe30", tmp_path / "inv", tmp_path / "cmp", "abc1234", False, fake_run_job)
  assert [c[2] for c in calls] == ["pretrain", "linear_probe", "eval"] and {c[1] for c in calls} == {0}
  assert record["pretrained_from"] == "cmp/ce_seed0" and record["val_images"] == 4500
  probe = record["classifiers"]["linear_probe"]
  # Tail third = classes 7, 8, 9 (500 images each): (57 + 58 + 59) / 3. Head third = classes 0-3, where
  # class 0 has no validation image, so it is (51 + 52 + 53) / 3.
  assert probe["groups"]["tail"] == pytest.approx(58.0)
  assert probe["groups"]["head"] == pytest.approx(52.0)
  path = tmp_path / "records.json"
  inv.append_record(record, path)
  assert [r["variant"] for r in inv.read_records(path)] == ["ce_probe30"]
  table = inv.markdown(inv.read_records(path))
  row = next(line for line in table.splitlines() if line.startswith("| ce_probe30 |"))
  # probe overall, tail, medium (classes 8, 9: 100 and 60 training images), kNN overall, tail, no LR.
  assert row == (
    "| ce_probe30 | the comparison's trunk, probe 30 epochs | 55.00 | 58.00 | 58.50 | 54.00 "
    "| 58.00 | - | - | - | 222,720 | 222,720 / 0 | 15.0 | reused |"
  )
  # The budget is the reused trunk's: the comparison's 15 epochs of cross-entropy.
  assert record["budget"] == {
    "images_drawn": 222_720,
    "online_forward_images": 222_720,
    "target_forward_images": 0,
    "rarest_class_draws_per_image": 14.96,
  }
  assert f"1 of {len(inv.VARIANTS)} variants recorded" in table and "abc1234"[:7] in table


def test_the_results_document_holds_what_rendering_writes():
  """docs/results.md (not the README) shows the investigation's tables exactly as `--render-only`
  renders the committed records. The coverage line names the commit of the training code, so it is
  compared in form only: a commit that changes the training code changes it until the next render."""
  content = inv.cm.RESULTS_DOC.read_text()
  assert content.count(inv.BEGIN) == 1 and content.count(inv.END) == 1
  assert inv.BEGIN not in (inv.REPO / "README.md").read_text()
  block = content.split(inv.BEGIN, 1)[1].split(inv.END, 1)[0]
  source, coverage, tables = block.strip("\n").split("\n\n", 2)
  assert source == f"Made by `{inv.COMMAND}` from `benchmarks/results/investigate_dscl_fashion_mnist_lt.json`."
  records = inv.read_records()
  assert coverage.startswith("Against the training code of ") and f"of {len(records)} records" in coverage
  assert tables + "\n" == inv.tables(records)


def test_the_coverage_line_counts_records_every_job_of_which_ran_with_todays_code():
  now = {"c" * 7, "d" * 7}  # commits with today's training code; commits() shortens hashes to 7
  records = [
    {"variant": "iccl", "commit": "c" * 40, "job_commits": {"pretrain": ["d" * 40], "eval": ["c" * 40]}},
    {"variant": "paco", "commit": "c" * 40, "job_commits": {"pretrain": ["a" * 40], "eval": ["c" * 40]}},
    {"variant": "gpaco", "commit": "a" * 40, "job_commits": {"pretrain": ["a" * 40]}},
  ]
  line = inv.coverage_line(records, lambda commit, config=None: commit in now, "ccccccc")
  assert line.startswith("Against the training code of ccccccc (the newest commit that changed dscl_jax, ")
  assert line.endswith(": 1 of 3 records were made with it; made with older code: paco, gpaco.")
  assert inv.coverage_line(records[:1], lambda commit, config=None: commit in now, "ccccccc").endswith(
    ": 1 of 1 records were made with it."
  )


def _scored(variant, **measures):
  """A record whose six promotion measures are 80 except those given, e.g. knn_tail=78.0."""
  classifiers = {}
  for classifier in ("linear_probe", "knn", "logistic_regression"):
    overall = measures.get(f"{classifier}_overall", 80.0)
    classifiers[classifier] = {"overall": overall, "groups": {"tail": measures.get(f"{classifier}_tail", 80.0)}}
  return {"variant": variant, "classifiers": classifiers}


def test_the_promotion_rule_by_hand_worked_cases():
  # Nothing recorded: every control waits.
  assert set(inv.promoted_rows([]).values()) == {"pending"}
  assert set(inv.promoted_rows([]).keys()) == set(inv.cm.CONTROLS)
  # Equal draws: 1.49 points below ICCL on one measure (kNN tail) is "within 1.5": both rows are promoted,
  # though dscl_equal_draws has no record yet and every other measure of ce_equal_draws is 5 points below.
  low = {f"{c}_{g}": 75.0 for c in ("linear_probe", "knn", "logistic_regression") for g in ("overall", "tail")}
  records = [_scored("iccl"), _scored("ce_equal_draws", **{**low, "knn_tail": 78.51})]
  verdicts = inv.promoted_rows(records)
  assert verdicts["ce_equal_draws"] == verdicts["dscl_equal_draws"] == "promoted"
  check = inv.promotion_checks(records)["ce_equal_draws"]
  assert check["met"] == ["kNN tail"] and check["differences"]["kNN tail"] == pytest.approx(-1.49)
  # 1.51 below on every measure fails; the partner still waits, so the pair is pending, then not promoted.
  records = [_scored("iccl"), _scored("ce_equal_draws", **{k: 78.49 for k in low})]
  assert inv.promoted_rows(records)["ce_equal_draws"] == "pending"
  records.append(_scored("dscl_equal_draws", **low))
  assert inv.promoted_rows(records)["dscl_equal_draws"] == "not promoted"
  # The rebalancing control is promoted only when it falls more than 1.5 below ICCL on some measure.
  below = [_scored("iccl"), _scored("iccl_instance_second_sample", logistic_regression_overall=78.4)]
  assert inv.promoted_rows(below)["iccl_instance_second_sample"] == "promoted"
  level = [_scored("iccl"), _scored("iccl_instance_second_sample", logistic_regression_overall=78.6)]
  assert inv.promoted_rows(level)["iccl_instance_second_sample"] == "not promoted"
  # PaCo rescaled: set against the `paco` row (not ICCL), promoted above +1.5.
  paco = [_scored("paco"), _scored("paco_scaled", linear_probe_tail=81.6), _scored("gpaco"), _scored("gpaco_scaled")]
  verdicts = inv.promoted_rows(paco)
  assert verdicts["paco_scaled"] == "promoted" and verdicts["gpaco_scaled"] == "not promoted"
  assert verdicts["iccl_no_centroid"] == "pending"
  table = inv.promotion_markdown(paco)
  assert "**probe tail +1.60**" in table and "waits for `iccl_no_centroid` and `iccl`" in table


def test_compare_methods_promotes_exactly_what_the_rule_says_of_the_committed_records():
  """A record that meets (or stops meeting) its condition must change compare_methods.PROMOTED with it."""
  assert set(inv.PROMOTION_RULES) == set(inv.cm.CONTROLS)
  for control, (reference, condition, rows, _) in inv.PROMOTION_RULES.items():
    assert reference in inv.VARIANTS and control in inv.VARIANTS and set(rows) <= set(inv.cm.CONTROLS)
    assert condition in inv.CONDITION_TEXT
  verdicts = inv.promoted_rows(inv.read_records())
  assert sorted(inv.cm.PROMOTED) == sorted(r for r, v in verdicts.items() if v == "promoted")
