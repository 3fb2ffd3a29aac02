"""Questions about the Fashion-MNIST-LT comparison, measured on a validation split held out from the
training images; the test split is never looked at.

- Why DSCL trails cross-entropy: temperature, epochs and probe.
- What each method is given (issue 26): ICCL draws and embeds twice the images of the others, and its
  second sample is class-uniform; PaCo / GPaCo ran a recipe made for 1000 classes. The controls take
  ICCL's parts away one at a time, give cross-entropy and DSCL ICCL's draws, and rescale PaCo / GPaCo.

  python benchmarks/investigate_dscl.py                      # run what is not recorded yet, then render
  python benchmarks/investigate_dscl.py --render-only        # table and docs/results.md from the records
  python benchmarks/investigate_dscl.py --variants dscl,ce --max-runs 1

Each variant is one method's comparison config (benchmarks/compare_methods.py), or a control's config and
overrides (`compare_methods.CONTROLS`), at seed 0 with a few overrides. Every variant adds
`data.val_per_class=500` (500 training images per class that the long-tailed profile left out; class 0
has none, it keeps all 6,000 for training) and evaluates on that split; the probe keeps its best epoch on
it. Variants that change only the probe reuse the comparison's seed-0 pretrain checkpoint
(`--compare-workdir-root`), running that pretrain first if it is missing, exactly as the comparison
would. Records go to `benchmarks/results/investigate_dscl_fashion_mnist_lt.json`, one per variant; a
recorded variant is skipped. Nothing here changes the comparison's configs; a control that changes one of
its conclusions here joins it as a row of its own, for every seed on the test split
(`compare_methods.PROMOTED`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import compare_methods as cm  # noqa: E402

RECORDS = cm.RESULTS / "investigate_dscl_fashion_mnist_lt.json"
TABLE = cm.RESULTS / "investigate_dscl_fashion_mnist_lt.md"
BEGIN, END = "<!-- investigate_dscl: begin -->", "<!-- investigate_dscl: end -->"
COMMAND = "python benchmarks/investigate_dscl.py"
DESCRIPTION = "benchmarks/investigate_dscl.py: one record per variant, measured on the held-out validation split"
SEED = 0
VAL_PER_CLASS = 500
# Every variant: the held-out validation split, and eval on it.
VALIDATION = {"data.val_per_class": VAL_PER_CLASS, "eval.split": "val"}


def control(name: str, question: str) -> tuple[str, dict, bool, str]:
  """The variant of a control of the comparison (compare_methods.CONTROLS): its method and overrides."""
  method, _, overrides, _ = cm.CONTROLS[name]
  return method, dict(overrides), False, question


# name: (method, overrides, reuse the comparison's seed-0 pretrain, what it asks). The first six are the
# comparison's own trunks probed for 10 epochs (its probe until the 30 epochs this study led to) and 30;
# the others change one thing each against the comparison's config (probe 30 epochs).
VARIANTS = {
  "ce": ("ce", {"probe.epochs": 10}, True, "the comparison's trunk, probe 10 epochs"),
  "supcon": ("supcon", {"probe.epochs": 10}, True, "the comparison's trunk, probe 10 epochs"),
  "dscl": ("dscl", {"probe.epochs": 10}, True, "the comparison's trunk, probe 10 epochs"),
  "ce_probe30": ("ce", {"probe.epochs": 30}, True, "the comparison's trunk, probe 30 epochs"),
  "supcon_probe30": ("supcon", {"probe.epochs": 30}, True, "the comparison's trunk, probe 30 epochs"),
  "dscl_probe30": ("dscl", {"probe.epochs": 30}, True, "the comparison's trunk, probe 30 epochs"),
  "dscl_t0.1": ("dscl", {"loss.temperature": 0.1}, False, "temperature 0.1 instead of 0.07"),
  "dscl_t0.2": ("dscl", {"loss.temperature": 0.2}, False, "temperature 0.2 instead of 0.07"),
  "ce_45ep": ("ce", {"train.epochs": 45}, False, "pretrain 45 epochs instead of 15"),
  "dscl_45ep": ("dscl", {"train.epochs": 45}, False, "pretrain 45 epochs instead of 15"),
  # What each method is given. Equal draws: twice the epochs at the same batch, so cross-entropy and DSCL
  # draw and embed online ICCL's 445,440 images (ICCL: 2 per position x 1740 steps; here 1 x 3480).
  "iccl": ("iccl", {}, False, "ICCL as compared: the reference row for its controls"),
  # PaCo's and GPaCo's reference rows for paco_scaled / gpaco_scaled: the comparison's own seed-0 trunks
  # (pretrained once, for both scripts), probed and evaluated on the validation split.
  "paco": ("paco", {}, True, "PaCo as compared (the comparison's trunk): the reference row for paco_scaled"),
  "gpaco": ("gpaco", {}, True, "GPaCo as compared (the comparison's trunk): the reference row for gpaco_scaled"),
  # The controls (compare_methods.CONTROLS holds what each runs: its method, config and overrides).
  "iccl_no_centroid": control("iccl_no_centroid", "ICCL with the centroid term's weight 0"),
  "iccl_instance_second_sample": control(
    "iccl_instance_second_sample", "ICCL whose second sample is instance-uniform (same draws, no rebalancing)"
  ),
  "ce_equal_draws": control("ce_equal_draws", "cross-entropy, 30 epochs: ICCL's images drawn and embedded"),
  "dscl_equal_draws": control("dscl_equal_draws", "DSCL, 30 epochs: ICCL's images drawn and embedded"),
  "ce_class_aware_mixup": control(
    "ce_class_aware_mixup", "cross-entropy with ICCL's class-aware second sample and mixup (no target, no centroids)"
  ),
  # The accelerator path (augment.on_device): the same run as dscl_probe30's trunk with the crops and the
  # per-pixel augmentation in the jitted step (torchvision's float ops) instead of PIL's; the host sends
  # each 28 px image on a 28 px canvas with the crop boxes, as an ImageNet run would on a 512 px one.
  "dscl_device_augment": (
    "dscl",
    {"augment.on_device": True, "augment.device_canvas": 28},
    False,
    "DSCL with the augmentation (crops included) on the device",
  ),
  "paco_scaled": control("paco_scaled", "PaCo, class-term ratio of the CIFAR-100-LT recipe, the others' recipe"),
  "gpaco_scaled": control("gpaco_scaled", "GPaCo, class-term ratio of the CIFAR-100-LT recipe, the others' recipe"),
}


# The promotion rule (docs/results.md), fixed before the controls' records at the current training code came
# in. A control is set against a reference variant on six validation measures (linear probe, kNN, logistic
# regression; overall and tail third); when its condition holds on any one, the rows it names join the
# comparison (compare_methods.PROMOTED, which tests/benchmarks/test_investigate_dscl.py holds to this rule).
# 1.5 points is about the three-seed range of the comparison's runs.
PROMOTION_MARGIN = 1.5
PROMOTION_MEASURES = tuple(
  (classifier, group) for classifier in ("linear_probe", "knn", "logistic_regression") for group in ("overall", "tail")
)
# control: (reference variant, condition, the rows promoted when it holds, what that says).
# Conditions: "near" = at most PROMOTION_MARGIN below the reference or above it; "below" = more than the
# margin below; "above" = more than the margin above.
PROMOTION_RULES = {
  "ce_equal_draws": ("iccl", "near", ("ce_equal_draws", "dscl_equal_draws"), "ICCL's lead is a budget effect"),
  "dscl_equal_draws": ("iccl", "near", ("ce_equal_draws", "dscl_equal_draws"), "ICCL's lead is a budget effect"),
  "iccl_no_centroid": ("iccl", "near", ("iccl_no_centroid",), "the centroid loss explains none of ICCL's lead"),
  "ce_class_aware_mixup": ("iccl", "near", ("ce_class_aware_mixup",), "the sampler and mixup explain ICCL's lead"),
  "iccl_instance_second_sample": (
    "iccl",
    "below",
    ("iccl_instance_second_sample",),
    "the class-aware rebalancing carries ICCL's lead",
  ),
  "paco_scaled": ("paco", "above", ("paco_scaled",), "the official recipe, not the method, made PaCo's row"),
  "gpaco_scaled": ("gpaco", "above", ("gpaco_scaled",), "the official recipe, not the method, made GPaCo's row"),
}
CONDITION_TEXT = {
  "near": f"at most {PROMOTION_MARGIN} points below it, or above",
  "below": f"more than {PROMOTION_MARGIN} points below it",
  "above": f"more than {PROMOTION_MARGIN} points above it",
}
MEASURE_LABELS = {"linear_probe": "probe", "knn": "kNN", "logistic_regression": "LR"}


def _measure(record: dict, classifier: str, group: str) -> float:
  report = record["classifiers"][classifier]
  return report["overall"] if group == "overall" else report["groups"][group]


def _holds(condition: str, difference: float) -> bool:
  if condition == "near":
    return difference >= -PROMOTION_MARGIN
  if condition == "below":
    return difference < -PROMOTION_MARGIN
  if condition == "above":
    return difference > PROMOTION_MARGIN
  raise ValueError(f"unknown promotion condition {condition!r}; use one of {list(CONDITION_TEXT)}")


def promotion_checks(records: list[dict]) -> dict[str, dict]:
  """Each rule of PROMOTION_RULES applied to the records: {control: {"state": "pending" | "holds" | "fails",
  "differences": {"probe overall": control - reference, ...}, "met": [measures where the condition holds]}}.
  Pending: the control's or the reference's record is missing."""
  by_name = {r["variant"]: r for r in records}
  checks = {}
  for control_name, (reference, condition, _, _) in PROMOTION_RULES.items():
    if control_name not in by_name or reference not in by_name:
      checks[control_name] = {"state": "pending", "differences": {}, "met": []}
      continue
    differences = {
      f"{MEASURE_LABELS[c]} {g}": _measure(by_name[control_name], c, g) - _measure(by_name[reference], c, g)
      for c, g in PROMOTION_MEASURES
    }
    met = [m for m, d in differences.items() if _holds(condition, d)]
    checks[control_name] = {"state": "holds" if met else "fails", "differences": differences, "met": met}
  return checks


def promoted_rows(records: list[dict]) -> dict[str, str]:
  """{control row: "promoted" | "pending" | "not promoted"} by PROMOTION_RULES: promoted when any rule
  naming the row holds; pending while none holds and one still waits for a record."""
  return _verdicts(promotion_checks(records))


def _verdicts(checks: dict[str, dict]) -> dict[str, str]:
  verdicts = {}
  for row in cm.CONTROLS:
    states = [checks[c]["state"] for c, rule in PROMOTION_RULES.items() if row in rule[2]]
    verdicts[row] = "promoted" if "holds" in states else "pending" if "pending" in states else "not promoted"
  return verdicts


def promotion_markdown(records: list[dict]) -> str:
  """The rule's table: each control against its reference, the measure that decides, the verdict."""
  checks = promotion_checks(records)
  verdicts, recorded = _verdicts(checks), {r["variant"] for r in records}
  lines = [
    "The promotion rule applied to these records (control minus reference, points; a condition that holds on "
    "any of the six measures promotes; `compare_methods.PROMOTED` must list exactly the promoted rows):",
    "",
    "| control | set against | condition | if it holds | differences | rows | verdict |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, (reference, condition, rows, meaning) in PROMOTION_RULES.items():
    check = checks[name]
    if check["state"] == "pending":
      shown = "waits for " + " and ".join(f"`{n}`" for n in (name, reference) if n not in recorded)
    else:
      shown = ", ".join(
        f"{'**' if m in check['met'] else ''}{m} {d:+.2f}{'**' if m in check['met'] else ''}"
        for m, d in check["differences"].items()
      )
    row_names = ", ".join(f"`{r}`" for r in rows)
    verdict = "; ".join(f"{r}: {verdicts[r]}" for r in rows)
    lines.append(
      f"| `{name}` | `{reference}` | {CONDITION_TEXT[condition]} | {meaning} | {shown} | {row_names} | {verdict} |"
    )
  return "\n".join(lines) + "\n"


def variant_config(name: str, variants=VARIANTS) -> str:
  """The config file a variant runs (before its overrides)."""
  return cm.row_source(name)[0] if name in cm.CONTROLS else cm.METHODS[variants[name][0]]


def check_variants(variants=VARIANTS) -> None:
  """Raises ValueError naming a variant whose method is not compared or whose override is not a field of
  its method's config (a typo would otherwise run the baseline under another name)."""
  for name, (method, overrides, _, _) in variants.items():
    if method not in cm.METHODS:
      raise ValueError(f"variant {name}: method {method!r} is not one of {list(cm.METHODS)}")
    config = cm.load_config_file(REPO / variant_config(name, variants))
    for field in {**VALIDATION, **overrides}:
      try:
        cm._field(config, field)
      except KeyError:
        raise ValueError(f"variant {name}: {field} is not a field of {variant_config(name, variants)}") from None


def variant_jobs(name: str, workdir_root: Path, compare_root: Path) -> list[tuple[str, Path, dict]]:
  """[(job, workdir, overrides)] of one variant, in order. A variant that reuses the comparison's trunk
  runs the comparison's pretrain job (a no-op when it is done) and probes it from its own workdir."""
  method, overrides, reuse, _ = VARIANTS[name]
  workdir = workdir_root / name
  overrides = {**VALIDATION, **overrides}
  if reuse:
    pretrained = compare_root / f"{method}_seed{SEED}"
    return [
      ("pretrain", pretrained, {}),
      ("linear_probe", workdir, {**overrides, "pretrained": str(pretrained)}),
      ("eval", workdir, {**overrides, "pretrained": str(pretrained)}),
    ]
  return [(job, workdir, overrides) for job in cm.JOBS]


def run_variant(
  name: str, workdir_root: Path, compare_root: Path, commit: str, dirty: bool, run_job=cm.run_job
) -> dict:
  method, overrides, reuse, question = VARIANTS[name]
  seconds, job_commits = {}, {}
  for job, workdir, job_overrides in variant_jobs(name, workdir_root, compare_root):
    result = run_job(method, SEED, job, workdir, job_overrides, commit, config=variant_config(name))
    seconds[job], job_commits[job] = result["seconds"], result["commits"]
  report = json.loads((workdir_root / name / "eval_val.json").read_text())
  record = {
    "variant": name,
    "method": method,
    "seed": SEED,
    "config": variant_config(name),
    "overrides": {"seed": SEED, **VALIDATION, **overrides},
    "question": question,
    "pretrained_from": f"{compare_root.name}/{method}_seed{SEED}" if reuse else None,
    "commit": commit,
    "uncommitted_changes": dirty,
    "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "train_class_counts": report["train_class_counts"],
    "val_images": report["num_images"],
    "classifiers": cm.summarise_report(report),
    "wall_seconds": seconds,
    "job_commits": job_commits,
    "machine": cm.machine(),
  }
  record["budget"] = cm.record_budget(record)
  return record


def read_records(path: Path = RECORDS) -> list[dict]:
  return cm.read_entries(path)


def append_record(record: dict, path: Path = RECORDS) -> None:
  cm.append_entry(record, path, DESCRIPTION)


def _cell(report: dict, measure: str) -> str:
  value = report["overall"] if measure == "overall" else report["groups"].get(measure, float("nan"))
  return "-" if value != value else f"{value:.2f}"


def markdown(records: list[dict]) -> str:
  by_name = {r["variant"]: r for r in records}
  lines = [
    f"{len(by_name)} of {len(VARIANTS)} variants recorded, seed {SEED}; top-1 % on the validation "
    f"split ({VAL_PER_CLASS} held-out training images of each of classes 1-9; class 0 has none), "
    "never the test split. Linear probe / kNN / logistic regression, overall, tail third and "
    f"medium-shot classes. Commits: {', '.join(cm.commits(records)) or '-'}.",
    "",
    "| variant | changes | probe overall | probe tail | probe medium | kNN overall | kNN tail | LR overall "
    "| LR tail | LR medium | images drawn | embedded online / by the target | rarest-class draws per image "
    "| pretrain (s) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name in [n for n in VARIANTS if n in by_name]:
    record = by_name[name]
    reports = record["classifiers"]
    cells = []
    for classifier, measures in (
      ("linear_probe", ("overall", "tail", "medium")),
      ("knn", ("overall", "tail")),
      ("logistic_regression", ("overall", "tail", "medium")),
    ):
      cells += [_cell(reports[classifier], m) if classifier in reports else "-" for m in measures]
    pretrain = "reused" if record["pretrained_from"] else f"{record['wall_seconds']['pretrain']:.0f}"
    lines.append(
      f"| {name} | {record['question']} | "
      + " | ".join(cells)
      + f" | {cm.budget_cells(record.get('budget'))} | {pretrain} |"
    )
  return "\n".join(lines) + "\n"


def coverage_line(records: list[dict], same_as_now, code_commit: str) -> str:
  """Says how many records every job of which ran with the training code of `code_commit`
  (`same_as_now(commit, config)`, `compare_methods.same_code_as`); names the others."""
  stale = [r["variant"] for r in records if not cm.made_with(r, same_as_now)]
  line = (
    f"{cm.against_training_code(code_commit)}: {len(records) - len(stale)} of {len(records)} records were made with it"
  )
  return line + (f"; made with older code: {', '.join(stale)}." if stale else ".")


def results_block(records: list[dict], tables_text: str) -> str:
  """What goes between the `investigate_dscl` markers of docs/results.md: where it comes from, the
  coverage line of `records` (which depends on the commit checked out), then `tables_text`, the caller's
  `tables(records)`."""
  coverage = coverage_line(records, cm.same_code_as(cm.head_commit()), cm.training_code_commit())
  return f"Made by `{COMMAND}` from `{RECORDS.relative_to(REPO)}`.\n\n{coverage}\n\n{tables_text}"


def tables(records: list[dict]) -> str:
  """The variants' table, then the promotion rule's."""
  return f"{markdown(records)}\n{promotion_markdown(records)}"


def render(records: list[dict]) -> None:
  # With no records (all withdrawn) the table still says so: 0 of N variants recorded.
  text = tables(records)
  TABLE.write_text(text)
  updated = cm.update_block(results_block(records, text), begin=BEGIN, end=END)
  where = cm.RESULTS_DOC.relative_to(REPO)
  print(text, flush=True)
  print(
    f"[investigate] wrote {TABLE.relative_to(REPO)}"
    + (f" and the table in {where}" if updated else f" ({where} has no {BEGIN} marker)"),
    flush=True,
  )


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
  parser.add_argument("--workdir-root", type=Path, default=REPO / "workdirs" / "investigate_dscl")
  parser.add_argument(
    "--compare-workdir-root",
    type=Path,
    default=REPO / "workdirs" / "compare_fashion_mnist_lt",
    help="where benchmarks/compare_methods.py keeps its runs; probe-only variants reuse "
    "its seed-0 pretrain checkpoints",
  )
  parser.add_argument("--max-runs", type=int, default=-1, help="stop after this many new records (-1: all)")
  parser.add_argument("--render-only", action="store_true")
  cm.add_maintenance_flags(parser, RECORDS)
  parser.add_argument("--allow-uncommitted", action="store_true")
  args = parser.parse_args(argv)
  args.variants = [v for v in args.variants.split(",") if v]
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if not cm.maintain(args, RECORDS, DESCRIPTION, "investigate") and not args.render_only:
    check_variants()
    commit, dirty = cm.git_commit()
    recorded = {r["variant"] for r in read_records()}
    todo = [v for v in args.variants if v not in recorded]
    if todo and dirty and not args.allow_uncommitted:
      sys.exit(
        "error: dscl_jax/, data/ or configs/ have uncommitted changes, so a record's commit would not "
        "say what made it; commit them or pass --allow-uncommitted"
      )
    if args.max_runs >= 0:
      todo = todo[: args.max_runs]
    print(f"[investigate] {len(todo)} variant(s) to do: {', '.join(todo)}", flush=True)
    for i, name in enumerate(todo):
      start = time.perf_counter()
      with cm.claimed(
        args.workdir_root / name,
        lambda: name in {r["variant"] for r in read_records()},
        f"[investigate] {name}",
        "investigate_dscl",
      ) as mine:
        if not mine:
          continue
        record = run_variant(name, args.workdir_root, args.compare_workdir_root, commit, dirty)
        append_record(record)
      probe = record["classifiers"]["linear_probe"]
      print(
        f"[investigate] recorded {i + 1}/{len(todo)}: {name}, val linear probe {probe['overall']:.2f}% "
        f"(tail {probe['groups']['tail']:.2f}%), {time.perf_counter() - start:.0f} s",
        flush=True,
      )
  records = read_records()
  render(records)
  promoted = sorted(r for r, verdict in promoted_rows(records).items() if verdict == "promoted")
  if promoted != sorted(cm.PROMOTED):
    print(
      f"[investigate] the promotion rule promotes {promoted or 'nothing'} but compare_methods.PROMOTED is "
      f"{list(cm.PROMOTED) or 'empty'}: update PROMOTED (docs/results.md says what it changes)",
      flush=True,
    )


if __name__ == "__main__":
  main()
