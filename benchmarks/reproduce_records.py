"""Checks that the current code still computes what the comparison's records hold, bitwise, for a few
minutes of work per record instead of a whole rerun.

  python benchmarks/reproduce_records.py                       # every record made at another commit
  python benchmarks/reproduce_records.py --methods dscl --seeds 0

For one recorded (method, seed) of benchmarks/compare_methods.py it:
1. copies the run's second-newest pretrain checkpoint (and its config) into a scratch workdir;
2. resumes the pretrain there with the current code up to the last step;
3. compares the crc32 of every leaf of the state (parameters, BatchNorm statistics, optimiser state,
   queue, step) with the recorded run's last checkpoint;
4. runs the probe and eval in the scratch workdir on that trunk, and compares every accuracy of every
   classifier (overall, groups, per class) with the record.

Step 2 runs the whole pretrain path (input pipeline, augmentation, the jitted step, checkpointing) for the
last ~140 steps; steps 3-4 then say whether the record's commit and this one give the same bits. Each
check appends to `benchmarks/results/compare_fashion_mnist_lt_reproduced.json`; a (method, seed) already
checked at this commit is skipped.

Bits are equal only on one kind of CPU: XLA:CPU compiles for the CPU it finds, and another model (other
vector extensions) computes the same program with different last bits. Records and checks note the CPU
(`machine.cpu`, from compare_methods.machine), and a check says whether it ran on the record's
(`cpu_as_record`: true, false, or null for a record made before records noted it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import compare_methods as cm  # noqa: E402

from dscl_jax.runtime import checkpoint  # noqa: E402

RESULTS = cm.REPRODUCED
BEGIN, END = "<!-- reproduce_records: begin -->", "<!-- reproduce_records: end -->"


def checkpoint_steps(job_dir: Path) -> list[int]:
  """The finished checkpoint steps of a job, oldest first ([] without a checkpoints directory)."""
  directory = job_dir / "checkpoints"
  return checkpoint.Checkpoints(directory).steps() if directory.exists() else []


def leaf_checksums(job_dir: Path, step: int) -> dict:
  """{leaf path: {shape, dtype, crc32}} that `dscl_jax.runtime.checkpoint` saved with `step`."""
  return checkpoint.Checkpoints(job_dir / "checkpoints").stored_checksums(step)


def seed_scratch(run_dir: Path, scratch: Path) -> tuple[int, int]:
  """Copies the recorded run's pretrain config and second-newest checkpoint into `scratch`; returns
  (that step, the newest step). A scratch workdir left by an earlier attempt is started afresh."""
  steps = checkpoint_steps(run_dir / "pretrain")
  if len(steps) < 2:
    raise FileNotFoundError(
      f"{run_dir / 'pretrain' / 'checkpoints'} holds {len(steps)} finished checkpoint(s); "
      "reproducing needs two (the run's keep-two default)"
    )
  start, end = steps[-2], steps[-1]
  if scratch.exists():
    shutil.rmtree(scratch)
  (scratch / "pretrain" / "checkpoints").mkdir(parents=True)
  shutil.copy2(run_dir / "pretrain" / "config.json", scratch / "pretrain" / "config.json")
  shutil.copytree(run_dir / "pretrain" / "checkpoints" / str(start), scratch / "pretrain" / "checkpoints" / str(start))
  return start, end


def differences(recorded, reproduced, path: str = "") -> list[str]:
  """Paths where two JSON trees differ (numbers compared exactly)."""
  if isinstance(recorded, dict) and isinstance(reproduced, dict):
    out = [
      f"{path}/{k}: only in {'record' if k in recorded else 'rerun'}" for k in sorted(set(recorded) ^ set(reproduced))
    ]
    for key in sorted(set(recorded) & set(reproduced)):
      out += differences(recorded[key], reproduced[key], f"{path}/{key}")
    return out
  if isinstance(recorded, list) and isinstance(reproduced, list) and len(recorded) == len(reproduced):
    return [d for i, (a, b) in enumerate(zip(recorded, reproduced)) for d in differences(a, b, f"{path}[{i}]")]
  return [] if recorded == reproduced else [f"{path}: {recorded!r} -> {reproduced!r}"]


def reproduce(record: dict, compare_root: Path, scratch_root: Path, commit: str, run_job=cm.run_job) -> dict:
  method, seed = record["method"], record["seed"]
  run_dir, scratch = compare_root / f"{method}_seed{seed}", scratch_root / f"{method}_seed{seed}"
  start, end = seed_scratch(run_dir, scratch)
  began = time.perf_counter()
  config, overrides = cm.row_source(method)  # a method's config, or a promoted control's
  for job in cm.JOBS:
    run_job(method, seed, job, scratch, overrides, commit, config=config)
  leaves = differences(leaf_checksums(run_dir / "pretrain", end), leaf_checksums(scratch / "pretrain", end))
  report = json.loads((scratch / "eval_test.json").read_text())
  accuracies = differences(record["classifiers"], cm.summarise_report(report))
  here = cm.machine()
  return {
    "method": method,
    "seed": seed,
    "record_commits": cm.commits([record]),
    "commit": commit,
    "resumed_from_step": start,
    "to_step": end,
    "state_leaves": len(leaf_checksums(run_dir / "pretrain", end)),
    "state_differences": leaves,
    "accuracy_differences": accuracies,
    "identical": not leaves and not accuracies,
    "seconds": time.perf_counter() - began,
    "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": here,
    "cpu_as_record": same_cpu(record, here),
  }


def same_cpu(record: dict, machine: dict) -> bool | None:
  """Whether `machine` has the CPU the record was made on; None when the record does not say."""
  recorded = record.get("machine", {}).get("cpu")
  return None if recorded is None else recorded == machine.get("cpu")


def read_results() -> list[dict]:
  return cm.read_entries(RESULTS, "checks")


def append_result(result: dict) -> None:
  cm.append_entry(
    result,
    RESULTS,
    "benchmarks/reproduce_records.py: the last pretrain steps, probe and eval "
    "of recorded comparison runs redone at a later commit",
    "checks",
  )


def summary(checks: list[dict]) -> str:
  lines = [
    "| method | seed | record made at | checked at | steps redone | state leaves equal | accuracies equal |",
    "|---|---|---|---|---|---|---|",
  ]
  for c in checks:
    lines.append(
      f"| {cm.LABELS[c['method']]} | {c['seed']} | {', '.join(c['record_commits'])} | {c['commit'][:7]} "
      f"| {c['resumed_from_step']}-{c['to_step']} | {c['state_leaves'] - len(c['state_differences'])}"
      f"/{c['state_leaves']} | {'yes' if not c['accuracy_differences'] else 'no'} |"
    )
  return "\n".join(lines) + "\n"


def coverage(records: list[dict], checks: list[dict], same_as_now) -> tuple[list, list, list]:
  """Splits the records' (method, seed) into (made with the current training code, made earlier and
  reproduced bit for bit with it, neither). `same_as_now(commit)` says whether a commit holds the current
  training code (`compare_methods.same_training_code`)."""
  reproduced = cm.reproduced_runs(checks, same_as_now)
  made, checked, unchecked = [], [], []
  for r in records:
    key = (r["method"], r["seed"])
    (made if cm.made_with(r, same_as_now) else checked if key in reproduced else unchecked).append(key)
  return made, checked, unchecked


def coverage_line(made: list, checked: list, unchecked: list, code_commit: str) -> str:
  total = len(made) + len(checked) + len(unchecked)
  line = (
    f"{cm.against_training_code(code_commit)}: "
    f"{len(made)} of {total} records were made with it and {len(checked)} were made earlier and "
    "reproduced bit for bit with it"
  )
  if unchecked:
    return line + "; not checked yet: " + ", ".join(f"{cm.LABELS[m]} seed {s}" for m, s in unchecked) + "."
  return line + "."


def results_block(checks: list[dict]) -> str:
  """What goes between the `reproduce_records` markers of docs/results.md: the coverage line (which
  depends on the commit checked out) and the table of checks."""
  current = cm.same_code_as(cm.head_commit())
  made, checked, unchecked = coverage(cm.read_records(), checks, current)
  text = coverage_line(made, checked, unchecked, cm.training_code_commit()) + "\n\n" + summary(checks)
  return f"Made by `python benchmarks/reproduce_records.py` from `{RESULTS.relative_to(REPO)}`.\n\n{text}"


def render(checks: list[dict]) -> None:
  block = results_block(checks)
  updated = cm.update_block(block, begin=BEGIN, end=END)
  where = cm.RESULTS_DOC.relative_to(REPO)
  print(
    block.split("\n\n", 1)[1]
    + (f"[reproduce] wrote the table in {where}" if updated else f"[reproduce] {where} has no {BEGIN} marker"),
    flush=True,
  )


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--methods", default=",".join(cm.default_rows()), help="rows: methods and promoted controls")
  parser.add_argument("--seeds", default=",".join(map(str, cm.SEEDS)))
  parser.add_argument("--compare-workdir-root", type=Path, default=REPO / "workdirs" / "compare_fashion_mnist_lt")
  parser.add_argument("--scratch-root", type=Path, default=REPO / "workdirs" / "reproduce_records")
  parser.add_argument("--all", action="store_true", help="also records made at this very commit")
  parser.add_argument("--render-only", action="store_true", help="check nothing; put the table in docs/results.md")
  args = parser.parse_args(argv)
  if args.render_only:
    return render(read_results())
  methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
  commit, dirty = cm.git_commit()
  if dirty:
    sys.exit("error: dscl_jax/, data/ or configs/ have uncommitted changes: a check must name the commit it ran")
  current = cm.same_code_as(commit)
  done = {(c["method"], c["seed"]) for c in read_results() if current(c["commit"])}
  todo = [
    r
    for r in cm.read_records()
    if r["method"] in methods
    and r["seed"] in seeds
    and (r["method"], r["seed"]) not in done
    and (args.all or not cm.made_with(r, current))
  ]
  print(
    f"[reproduce] {len(todo)} record(s) to check at {commit[:7]}: "
    + ", ".join(f"{r['method']}/{r['seed']}" for r in todo),
    flush=True,
  )
  for record in todo:
    result = reproduce(record, args.compare_workdir_root, args.scratch_root, commit)
    append_result(result)
    print(
      f"[reproduce] {record['method']}/{record['seed']}: "
      + (
        "identical"
        if result["identical"]
        else f"{len(result['state_differences'])} state leaves and {len(result['accuracy_differences'])} "
        f"accuracies differ, first: {(result['state_differences'] + result['accuracy_differences'])[0]}"
      ),
      flush=True,
    )
  render(read_results())


if __name__ == "__main__":
  main()
