"""Every method on Fashion-MNIST-LT (IF 100), seeds 0, 1, 2, on equal terms: one comparison built up over
several sittings.

  python benchmarks/compare_methods.py                       # run what is not recorded yet, then render
  python benchmarks/compare_methods.py --render-only         # table, figures and docs/results.md from the records
  python benchmarks/compare_methods.py --methods dscl,ce --seeds 0 --max-runs 1

Each run is `python -m dscl_jax.main` on the method's config with `--config.seed=<seed>`, one process per
job (pretrain, linear_probe, eval) so each job's wall time is its own. A finished run appends one record
(method, seed, overrides, commit, accuracy of every classifier overall / per group / per class, wall
times) to `benchmarks/results/compare_fashion_mnist_lt.json`; a (method, seed) already recorded is skipped.
An interrupted run resumes from its checkpoints in `--workdir-root` the next time. A seed-0 run whose trunk
benchmarks/investigate_dscl.py already pretrained (same config but the validation split, same training
code; `--trunks-from`) probes that trunk instead of training it again, and its record says so
(`pretrained_from`). Several copies of the command may run at once on one machine: each run is claimed by
the first copy that reaches it (`<run workdir>/compare.claim`, an flock the kernel drops when its holder
dies), the others skip it.

All eight configs share the backbone, the data, the epochs, the batch and the probe / eval settings; the
script refuses to start if they do not (`check_fair`), or if a method draws more images than the others
without saying so (`GIVEN_MORE`, which the tables print). Controls (`CONTROLS`: a method's config with one
declared change, measured first by benchmarks/investigate_dscl.py on the validation split) join as rows of
their own once promoted (`PROMOTED`), or when named in `--methods`. The long-tailed subset is the same for
every seed (`data.seed` stays 0): the seed moves the initialisation, the data order and the augmentations.

Rendering writes `compare_fashion_mnist_lt.md` (mean +- sample standard deviation over seeds), two PNG
figures beside it, and the same table into docs/results.md between the `compare_fashion_mnist_lt` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import functools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `data` and `dscl_jax` from this checkout
  sys.path.insert(0, str(REPO))

from data.long_tail import count_thirds, shot_classes  # noqa: E402
from dscl_jax.config.schema import load_config_file  # noqa: E402
from dscl_jax.runtime import files  # noqa: E402
from dscl_jax.runtime import workdir as workdir_guard  # noqa: E402

# The registry's methods, and the two DSCL variants the paper ablates, in the order of the table.
METHODS = {
  "ce": "configs/fashion_mnist_lt_ce.py",
  "supcon": "configs/fashion_mnist_lt_supcon.py",
  "dscl": "configs/fashion_mnist_lt_dscl.py",
  "dscl_pbsd": "configs/fashion_mnist_lt_dscl_pbsd.py",
  "dscl_multicrop": "configs/fashion_mnist_lt_dscl_multicrop.py",
  "paco": "configs/fashion_mnist_lt_paco.py",
  "gpaco": "configs/fashion_mnist_lt_gpaco.py",
  "iccl": "configs/fashion_mnist_lt_iccl.py",
}
LABELS = {
  "ce": "cross-entropy",
  "supcon": "SupCon",
  "dscl": "DSCL",
  "dscl_pbsd": "DSCL + PBSD",
  "dscl_multicrop": "DSCL + multi-crop",
  "paco": "PaCo",
  "gpaco": "GPaCo",
  "iccl": "ICCL",
}
# Controls (issue 26): a method's comparison config with one declared change, named for what it asks.
# benchmarks/investigate_dscl.py measures each on the validation split (seed 0); those in PROMOTED changed
# a conclusion there and run here for every seed on the test split, as rows of their own after the
# methods' (their records' "method" is the control's name). Overrides where they can, so that a record
# shows the change beside the method's config.
# name: (the method it controls, config file, overrides, label)
CONTROLS = {
  "iccl_no_centroid": ("iccl", METHODS["iccl"], {"iccl.weight_icc": 0.0}, "ICCL without the centroid term"),
  "iccl_instance_second_sample": (
    "iccl",
    METHODS["iccl"],
    {"iccl.class_aware_power": 1.0},
    "ICCL, instance-uniform second sample",
  ),
  "ce_equal_draws": ("ce", METHODS["ce"], {"train.epochs": 30}, "cross-entropy, 30 epochs"),
  "dscl_equal_draws": ("dscl", METHODS["dscl"], {"train.epochs": 30}, "DSCL, 30 epochs"),
  "ce_class_aware_mixup": (
    "ce",
    "configs/fashion_mnist_lt_ce_class_aware_mixup.py",
    {},
    "cross-entropy + class-aware mixup",
  ),
  "paco_scaled": ("paco", "configs/fashion_mnist_lt_paco_scaled.py", {}, "PaCo, rescaled recipe"),
  "gpaco_scaled": ("gpaco", "configs/fashion_mnist_lt_gpaco_scaled.py", {}, "GPaCo, rescaled recipe"),
}
LABELS.update({name: control[3] for name, control in CONTROLS.items()})
# The controls that join the comparison (chosen from the validation records, docs/results.md says why).
PROMOTED: tuple[str, ...] = (
  "iccl_no_centroid",
  "paco_scaled",
  "gpaco_scaled",
  "ce_equal_draws",
  "dscl_equal_draws",
  "ce_class_aware_mixup",
  "iccl_instance_second_sample",
)
SEEDS = (0, 1, 2)
JOBS = ("pretrain", "linear_probe", "eval")
# Fields that make the comparison fair: equal in every config (methods differ in their own groups only).
FAIR_FIELDS = (
  "data",
  "model.depth",
  "model.style",
  "model.width",
  "train.epochs",
  "train.batch_size",
  "probe",
  "eval",
  "mesh",
)
# What a method's pretraining is given beyond the others (dscl_jax/core/budget.py): check_fair accepts
# images drawn or rarest-class draws that differ from cross-entropy's only when declared here, and the
# tables print the declaration. The images a method embeds (small crops, a second online view, a momentum
# target) belong to its design: every table shows them, and they may differ.
GIVEN_MORE = {
  "iccl": "a second, class-aware sample at every position: 2x the images drawn and embedded, 25.8x the "
  "rarest class's draws",
  "iccl_no_centroid": "ICCL's two samples per position: 2x the images drawn and embedded, 25.8x the rarest "
  "class's draws",
  "iccl_instance_second_sample": "a second, instance-uniform sample at every position: 2x the images drawn "
  "and embedded, 2x the rarest class's draws",
  "ce_equal_draws": "30 pretrain epochs instead of 15: ICCL's 2x images drawn and embedded, 2x the rarest "
  "class's draws",
  "dscl_equal_draws": "30 pretrain epochs instead of 15: ICCL's 2x images drawn and embedded, 2x the rarest "
  "class's draws",
  "ce_class_aware_mixup": "ICCL's class-aware second sample and mixup: 2x the images drawn and embedded, "
  "25.8x the rarest class's draws",
}
# The FAIR_FIELDS a row may change: each also has its GIVEN_MORE entry, which the tables print.
GIVEN_MORE_FIELDS = {"ce_equal_draws": ("train.epochs",), "dscl_equal_draws": ("train.epochs",)}
# The training classes of Fashion-MNIST-LT (IF 100), for budgets computed before any data is read.
FASHION_LT_COUNTS = (6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60)
GROUPS = ("head", "middle", "tail", "many", "medium", "few")
CLASSIFIERS = {
  "linear_probe": "linear probe",
  "knn": "kNN (k 20, cosine)",
  "logistic_regression": "logistic regression",
  "model": "method's own classifier",
}

RESULTS = REPO / "benchmarks" / "results"
RECORDS = RESULTS / "compare_fashion_mnist_lt.json"
# benchmarks/reproduce_records.py's checks that older records still hold what the current code computes.
REPRODUCED = RESULTS / "compare_fashion_mnist_lt_reproduced.json"
TABLE = RESULTS / "compare_fashion_mnist_lt.md"
GROUPS_FIGURE = RESULTS / "compare_fashion_mnist_lt_groups.png"
PER_CLASS_FIGURE = RESULTS / "compare_fashion_mnist_lt_per_class.png"
# The document that shows every measured result; the scripts rewrite only what lies between their markers.
RESULTS_DOC = REPO / "docs" / "results.md"
BEGIN, END = "<!-- compare_fashion_mnist_lt: begin -->", "<!-- compare_fashion_mnist_lt: end -->"
COMMAND = "python benchmarks/compare_methods.py"


# ---------------------------------------------------------------------------------------------- configs
def row_source(row: str) -> tuple[str, dict]:
  """(config file, overrides) of a row of the comparison: a method's config, or a control's."""
  if row in METHODS:
    return METHODS[row], {}
  if row in CONTROLS:
    return CONTROLS[row][1], dict(CONTROLS[row][2])
  raise ValueError(f"{row!r} is neither a method ({', '.join(METHODS)}) nor a control ({', '.join(CONTROLS)})")


def default_rows() -> tuple[str, ...]:
  """What the comparison runs and tabulates: every method, then the promoted controls."""
  return (*METHODS, *PROMOTED)


def load_config(row: str):
  """A row's config with its overrides."""
  path, overrides = row_source(row)
  return with_overrides(load_config_file(REPO / path), overrides)


def _field(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value.to_dict() if hasattr(value, "to_dict") else value


def with_overrides(config, overrides: dict):
  """`config` with the dotted `overrides` ({"train.epochs": 30}) set, as `--config.<field>=` would."""
  config = config.copy_and_resolve_references()
  for dotted, value in overrides.items():
    *parents, name = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[name] = value
  return config


def budget_of(config, class_counts) -> dict:
  """The pretraining budget (dscl_jax/core/budget.py) of a config on training classes of `class_counts`."""
  from dscl_jax.core.budget import config_budget
  from dscl_jax.methods import get_method

  return config_budget(config, get_method(config), class_counts)


def record_budget(record: dict) -> dict:
  """The budget of the pretraining behind a record: its config with its overrides, on its training classes.
  A record whose trunk is another run's (`pretrained_from`) carries that run's pretraining overrides
  (a control's `train.epochs` 30) beside its own probe and eval ones, which leave the budget unchanged, so
  the same rule covers it."""
  overrides = {k: v for k, v in record["overrides"].items() if k != "pretrained"}
  return budget_of(with_overrides(load_config_file(REPO / record["config"]), overrides), record["train_class_counts"])


# The part of a budget that says what data a method is given: it must be equal unless declared.
DRAWN = ("images_drawn", "rarest_class_draws_per_image")


def check_fair(configs: dict, class_counts=FASHION_LT_COUNTS, given_more=None, given_more_fields=None) -> None:
  """Raises ValueError naming every FAIR_FIELDS entry on which the configs {row: ConfigDict} differ, and
  every row whose images drawn or rarest-class draws (`DRAWN`) differ from the first row's without a
  `given_more` entry (default GIVEN_MORE) that the tables print. A row may change the FAIR_FIELDS its
  `given_more_fields` entry names (default GIVEN_MORE_FIELDS), and only with a `given_more` entry."""
  given_more = GIVEN_MORE if given_more is None else given_more
  given_more_fields = GIVEN_MORE_FIELDS if given_more_fields is None else given_more_fields
  first = next(iter(configs))
  declared = lambda row, field: row in given_more and field in given_more_fields.get(row, ())
  problems = [
    f"{field}: {first}={_field(configs[first], field)!r} but {method}={_field(c, field)!r}"
    for field in FAIR_FIELDS
    for method, c in configs.items()
    if _field(c, field) != _field(configs[first], field) and not declared(method, field)
  ]
  drawn = lambda c: {k: budget_of(c, class_counts)[k] for k in DRAWN}
  reference = drawn(configs[first])
  for method, c in configs.items():
    if method not in given_more and drawn(c) != reference:
      problems.append(f"budget: {first}={reference} but {method}={drawn(c)}, and GIVEN_MORE does not say why")
  if problems:
    raise ValueError("the configs are not comparable:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------- records
def read_entries(path: Path, key: str = "records") -> list[dict]:
  """The list under `key` of a results file; [] when the file does not exist yet."""
  return json.loads(path.read_text())[key] if path.exists() else []


def append_entry(entry: dict, path: Path, description: str, key: str = "records") -> None:
  """Adds `entry` to the list under `key` of the results file `path`, written whole to a temporary file
  and renamed over the old one, so an interruption leaves either the old or the new file. The read and
  the write hold `<path>.lock`, so processes appending at once keep every entry."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with exclusive(path.with_name(path.name + ".lock"), wait=True):
    write_json(path, {"description": description, key: read_entries(path, key) + [entry]})


@contextlib.contextmanager
def exclusive(path: Path, wait: bool):
  """Holds an exclusive advisory lock (flock) on `path` for the `with` block and yields True; with
  `wait=False` it yields False at once when another process holds it. The kernel drops the lock when its
  holder exits, however it exits, so a killed queue leaves nothing stale. flock is per machine: several
  queues on one machine share a workdir root safely, queues on different hosts sharing a network file
  system may not."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def claimed(workdir: Path, recorded, what: str, script: str):
  """Claims one run of a queue for this process, for the `with` block: yields True, or yields False after
  printing "`what`: ... skipped" when another copy of `script` holds `<workdir>/compare.claim` or
  `recorded()` finds the run recorded meanwhile. Several queues may so run at once on one machine."""
  with exclusive(workdir / "compare.claim", wait=False) as mine:
    if mine and not recorded():
      yield True
      return
    print(
      f"{what}: " + ("recorded meanwhile" if mine else f"another {script} process is running it") + "; skipped",
      flush=True,
    )
    yield False


def write_json(path: Path, value) -> None:
  """Writes `value` (indent 1, final newline) through a temporary file renamed over `path`, so a kill
  mid-write leaves the old file, never half of one."""
  files.replace_text(path, json.dumps(value, indent=1) + "\n")


def read_records(path: Path = RECORDS) -> list[dict]:
  return read_entries(path)


DESCRIPTION = "benchmarks/compare_methods.py: one record per finished (method, seed) run"


def append_record(record: dict, path: Path = RECORDS) -> None:
  append_entry(record, path, DESCRIPTION)


def is_recorded(records: list[dict], method: str, seed: int) -> bool:
  return any(r["method"] == method and r["seed"] == seed for r in records)


def group_accuracy(per_class_accuracy, per_class_images, classes) -> float:
  """Top-1 (%) over the test images of `classes`: per-class accuracies [C] weighted by test images [C];
  NaN for an empty group."""
  classes = np.asarray(classes, np.int64)
  images = np.asarray(per_class_images, np.float64)[classes]
  if not images.sum():
    return float("nan")
  return float(np.sum(np.asarray(per_class_accuracy, np.float64)[classes] * images) / images.sum())


def summarise_report(report: dict) -> dict:
  """The eval report's numbers for the record: per classifier, overall, the head / middle / tail thirds
  and the many / medium / few shot groups (both schemes; a group without classes is left out, so the JSON
  holds no NaN), and the per-class accuracy."""
  counts = np.asarray(report["train_class_counts"])
  groups = {**count_thirds(counts), **shot_classes(counts)}
  summary = {}
  for name, r in report["classifiers"].items():
    summary[name] = {
      "overall": r["overall"],
      "groups": {
        g: group_accuracy(r["per_class_accuracy"], r["per_class_images"], groups[g]) for g in GROUPS if len(groups[g])
      },
      "per_class_accuracy": r["per_class_accuracy"],
    }
  return summary


# The code that trains and evaluates: two commits that agree on these paths compute the same records.
TRAINING_CODE = ("dscl_jax", "data", "configs", "pyproject.toml")
# What every run executes; of configs/ a run executes only its own config file and what that imports.
SHARED_TRAINING_CODE = ("dscl_jax", "data", "pyproject.toml", "configs/__init__.py")


def config_files(config: str, repo: Path = REPO) -> tuple[str, ...]:
  """The files of configs/ that the config file `config` (a path relative to `repo`) executes: itself and
  the configs/ modules it imports, transitively (`from configs.common import ...`), read from `repo`'s
  working tree. A config that no longer exists there stands for itself alone."""
  import ast

  seen, todo = set(), [config]
  while todo:
    path = todo.pop()
    if path in seen:
      continue
    seen.add(path)
    if not (repo / path).exists():
      continue
    for node in ast.walk(ast.parse((repo / path).read_text(), path)):
      if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        # `from .common import x` inside configs/ is `configs.common`; `from configs import common` may
        # name a module of the package, and is one when its file exists.
        package = "configs" if node.level else ""
        module = ".".join(p for p in (package, node.module) if p)
        modules = [module, *(f"{module}.{alias.name}" for alias in node.names)]
      else:
        continue
      for name in modules:
        if name.startswith("configs.") and (repo / (name.replace(".", "/") + ".py")).exists():
          todo.append(name.replace(".", "/") + ".py")
  return tuple(sorted(seen))


def record_code(config: str | None, repo: Path = REPO) -> tuple[str, ...]:
  """The paths whose content decides what a run of `config` computes (all of TRAINING_CODE for None): a
  config file added or changed elsewhere in configs/ leaves the records of the others current."""
  return TRAINING_CODE if config is None else (*SHARED_TRAINING_CODE, *config_files(config, repo))


def head_commit() -> str:
  """HEAD's full hash."""
  return subprocess.run(
    ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
  ).stdout.strip()


def git_commit() -> tuple[str, bool]:
  """(HEAD's hash, whether the code that trains - package, data, configs - has uncommitted changes)."""
  status = subprocess.run(
    ["git", "status", "--porcelain", "--", *TRAINING_CODE], cwd=REPO, capture_output=True, text=True, check=True
  )
  return head_commit(), bool(status.stdout.strip())


def training_code_commit() -> str:
  """The short hash of the newest commit that changed the training code (TRAINING_CODE)."""
  return subprocess.run(
    ["git", "log", "-1", "--format=%h", "--", *TRAINING_CODE], cwd=REPO, capture_output=True, text=True, check=True
  ).stdout.strip()


def against_training_code(code_commit: str) -> str:
  """The opening of a coverage line: which commit's training code the records are held against."""
  paths = f"{', '.join(TRAINING_CODE[:-1])} or {TRAINING_CODE[-1]}"
  return f"Against the training code of {code_commit} (the newest commit that changed {paths})"


def same_training_code(a: str, b: str, repo: Path = REPO, paths: tuple[str, ...] = TRAINING_CODE) -> bool:
  """Whether commits `a` and `b` (full or short hashes) hold identical files under `paths` (default all of
  TRAINING_CODE; `record_code(config)` for one config's runs)."""
  diff = subprocess.run(["git", "diff", "--quiet", a, b, "--", *paths], cwd=repo, capture_output=True, text=True)
  if diff.returncode not in (0, 1):
    raise RuntimeError(f"git diff {a} {b} failed: {diff.stderr.strip()}")
  return diff.returncode == 0


# ------------------------------------------------------------------------------------------------- runs
# How often a running job's time is added to its timing file: a parent killed without warning (the end of
# a sitting) loses at most this much of the attempt's wall time.
TIMING_EVERY_SECONDS = 30.0


TIMING = "compare_timing.json"


def read_timing(workdir: Path) -> dict:
  """{job: {"seconds", "attempts", "done", "commits"}} from `<workdir>/compare_timing.json` ({} before the
  run's first job)."""
  path = workdir / TIMING
  return json.loads(path.read_text()) if path.exists() else {}


def run_job(
  method: str, seed: int, job: str, workdir: Path, overrides: dict, commit: str = "", config: str | None = None
) -> dict:
  """Runs one job of one (method, seed) in its own process, its output shown and kept in
  `<workdir>/compare_<job>.log`; returns {"seconds": wall time, "commits": the commit of each attempt}.
  The job's time accumulates across interrupted attempts in `<workdir>/compare_timing.json`, and a job
  finished earlier is not run again. `config`: a config file other than the row's (row_source)."""
  timing_path, timing = workdir / TIMING, read_timing(workdir)
  entry = timing.setdefault(job, {"seconds": 0.0, "attempts": 0, "done": False})
  entry.setdefault("commits", [])
  if entry["done"]:
    return {"seconds": entry["seconds"], "commits": entry["commits"]}
  command = [
    sys.executable,
    "-m",
    "dscl_jax.main",
    f"--config={REPO / (config or row_source(method)[0])}",
    f"--workdir={workdir}",
    f"--config.seed={seed}",
    f"--config.mode={job}",
    *(f"--config.{key}={value}" for key, value in overrides.items()),
  ]
  # The workdir tells the investigation's variants of one method apart.
  print(f"[compare] {LABELS[method]}, seed {seed}: {job} in {workdir}", flush=True)
  workdir.mkdir(parents=True, exist_ok=True)
  code = run_timed(command, workdir / f"compare_{job}.log", timing_path, timing, job, commit)
  if code != 0:
    raise RuntimeError(
      f"{LABELS[method]} seed {seed}: `{' '.join(command)}` exited with {code}; its output "
      f"is in {workdir / f'compare_{job}.log'}"
    )
  entry["done"] = True
  write_json(timing_path, timing)
  return {"seconds": entry["seconds"], "commits": entry["commits"]}


def run_timed(
  command: list[str],
  log_path: Path,
  timing_path: Path,
  timing: dict,
  job: str,
  commit: str,
  every: float = TIMING_EVERY_SECONDS,
) -> int:
  """Runs `command` from the repository root, its output shown and appended to `log_path`; returns its exit
  code. The attempt is counted in `timing[job]` when it starts, and its wall time is added to
  `timing[job]["seconds"]` and written to `timing_path` every `every` seconds and at the end, so neither
  an interruption nor a kill of this process loses more than `every` seconds of it."""
  entry = timing[job]
  entry["attempts"] += 1
  entry["commits"].append(commit)
  write_json(timing_path, timing)
  lock, stop = threading.Lock(), threading.Event()
  counted = time.perf_counter()

  def account():
    nonlocal counted
    with lock:
      now = time.perf_counter()
      entry["seconds"] += now - counted
      counted = now
      write_json(timing_path, timing)

  def heartbeat():
    while not stop.wait(every):
      account()

  clock = threading.Thread(target=heartbeat, daemon=True)
  clock.start()
  with open(log_path, "a", buffering=1) as log:  # line-buffered: a kill loses no finished line
    process = subprocess.Popen(
      command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
      for line in process.stdout:
        sys.stdout.write(line)
        log.write(line)
      return process.wait()
    finally:
      # Interrupted or not, the time spent counts: the job resumes from its checkpoints next time.
      if process.poll() is None:
        process.terminate()
        process.wait()
      stop.set()
      clock.join()
      account()


# The instruction-set extensions XLA:CPU may compile for: two CPUs that differ in one of these can run the
# same program with different float results, so a record names its CPU's.
CPU_ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
           "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "asimd", "sve")  # fmt: skip


def cpu_description(cpuinfo: str) -> dict:
  """The CPU a run compiled for, from the text of /proc/cpuinfo (its first processor): model name, family /
  model / stepping (x86) and which of `CPU_ISA` it has. Fields the text lacks are left out."""
  fields = {}
  for line in cpuinfo.split("\n\n", 1)[0].splitlines():
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  described = {
    name: fields[key]
    for name, key in (
      ("model_name", "model name"),
      ("family", "cpu family"),
      ("model", "model"),
      ("stepping", "stepping"),
    )
    if key in fields
  }
  flags = set((fields.get("flags") or fields.get("Features") or "").split())
  described["isa"] = [f for f in CPU_ISA if f in flags]
  return described


def machine() -> dict:
  import jax

  try:
    with open("/proc/cpuinfo") as f:
      cpu = cpu_description(f.read())
  except OSError:  # not Linux: the processor string is what there is
    cpu = {"model_name": platform.processor()}
  return {
    "platform": platform.platform(),
    "processor": platform.processor() or platform.machine(),
    "cpu": cpu,
    "cpu_count": os.cpu_count(),
    "usable_cpus": len(os.sched_getaffinity(0)),
    "load_average_at_end": list(os.getloadavg()),
    "jax": jax.__version__,
    "devices": [str(d) for d in jax.devices()],
  }


# ------------------------------------------------------------------------------------------ reused trunks
# Where benchmarks/investigate_dscl.py pretrains its variants (its --workdir-root): a variant whose pretrain
# config is a row's (seed 0) trained that row's trunk, and the comparison probes it instead of training it again.
TRUNKS_FROM = REPO / "workdirs" / "investigate_dscl"
# Training fields (for the workdir guard) that leave the trunk as it is: the validation split is cut from the
# images the long-tailed train split leaves out, so the train split and its order do not move
# (tests/data/test_data.py; tests/benchmarks/test_compare_methods.py: the trunks are equal bit for bit).
TRUNK_NEUTRAL_FIELDS = ("data.val_per_class",)


def pretrain_config(row: str, seed: int, overrides: dict) -> dict:
  """The config a row's pretrain job runs with (row_source's overrides, then `overrides`), as the job saves
  it in `<workdir>/pretrain/config.json`."""
  return workdir_guard.config_dict(with_overrides(load_config(row), {**overrides, "seed": seed}))


def finished_trunk(row: str, seed: int, overrides: dict, commit: str, root: Path) -> tuple[Path, dict] | None:
  """(workdir, its pretrain timing entry) of a pretrain finished below `root` that trained what this row's
  pretrain would: a config equal but for fields free for pretraining and TRUNK_NEUTRAL_FIELDS, made by
  commits with this row's training code (record_code). None when there is none."""
  if not root.is_dir():
    return None
  wanted = pretrain_config(row, seed, overrides)
  paths = record_code(row_source(row)[0])
  for candidate in sorted(root.iterdir()):
    saved = candidate / "pretrain" / "config.json"
    entry = read_timing(candidate).get("pretrain", {}) if saved.is_file() else {}
    if not entry.get("done"):
      continue
    changes = workdir_guard.changed_fields(json.loads(saved.read_text()), wanted, "pretrain")
    if any(field not in TRUNK_NEUTRAL_FIELDS for field, _, _ in changes):
      continue
    if all(same_training_code(c, commit, paths=paths) for c in entry["commits"]):
      return candidate, entry
  return None


def run_one(
  method: str,
  seed: int,
  workdir_root: Path,
  overrides: dict,
  commit: str,
  dirty: bool,
  run_job=run_job,
  trunks_from: Path | None = None,
) -> dict:
  """Runs (or resumes) the three jobs of one row (a method, or a control: row_source) and seed; its record.
  Unless this run's own pretrain has finished, a trunk `finished_trunk` finds below `trunks_from` is probed
  instead of pretraining again; the record names it (`pretrained_from`) and takes its pretrain time."""
  workdir = workdir_root / f"{method}_seed{seed}"
  config, row_overrides = row_source(method)
  overrides = {**row_overrides, **overrides}
  own_done = read_timing(workdir).get("pretrain", {}).get("done", False)
  donor = None if own_done or trunks_from is None else finished_trunk(method, seed, overrides, commit, trunks_from)
  if donor is None:
    jobs = {job: run_job(method, seed, job, workdir, overrides, commit, config=config) for job in JOBS}
  else:
    trunk, entry = donor
    print(f"[compare] {LABELS[method]}, seed {seed}: pretrain reused from {trunk} (same trunk)", flush=True)
    jobs = {"pretrain": {"seconds": entry["seconds"], "commits": entry["commits"]}}
    probe_overrides = {**overrides, "pretrained": str(trunk)}
    jobs.update({job: run_job(method, seed, job, workdir, probe_overrides, commit, config=config) for job in JOBS[1:]})
  report = json.loads((workdir / "eval_test.json").read_text())
  record = {
    "method": method,
    "seed": seed,
    "config": config,
    "overrides": {"seed": seed, **overrides},
    "commit": commit,
    "uncommitted_changes": dirty,
    "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "train_class_counts": report["train_class_counts"],
    "test_images": report["num_images"],
    "classifiers": summarise_report(report),
    "wall_seconds": {j: r["seconds"] for j, r in jobs.items()},
    # A run resumed in a later sitting may span commits: each job's attempts, oldest first.
    "job_commits": {j: r["commits"] for j, r in jobs.items()},
    "machine": machine(),
    # The pretrain workdir of another script whose trunk this run probed (finished_trunk), or None.
    "pretrained_from": None if donor is None else f"{donor[0].parent.name}/{donor[0].name}",
  }
  record["budget"] = record_budget(record)
  return record


def pending(methods, seeds, records) -> list[tuple[str, int]]:
  """(method, seed) pairs without a record, seed-major: every method's seed 0 comes before any seed 1."""
  return [(m, s) for s in seeds for m in methods if not is_recorded(records, m, s)]


# ------------------------------------------------------------------------------------------- aggregates
def aggregate(records: list[dict]) -> dict:
  """{method: {"seeds": [...], classifier: {measure: (mean, std, n)}}}, measures "overall" and GROUPS; std
  is the sample standard deviation (n - 1), NaN for a single seed."""
  table = {}
  for method in [m for m in (*METHODS, *CONTROLS) if any(r["method"] == m for r in records)]:
    runs = sorted((r for r in records if r["method"] == method), key=lambda r: r["seed"])
    entry = {
      "seeds": [r["seed"] for r in runs],
      "pretrain_seconds": _stats([r["wall_seconds"]["pretrain"] for r in runs]),
      "budget": runs[0].get("budget"),
    }
    for classifier in CLASSIFIERS:
      values = [r["classifiers"][classifier] for r in runs if classifier in r["classifiers"]]
      if values:
        entry[classifier] = {
          "overall": _stats([v["overall"] for v in values]),
          **{g: _stats([v["groups"][g] for v in values]) for g in GROUPS if all(g in v["groups"] for v in values)},
        }
    table[method] = entry
  return table


def _stats(values) -> tuple[float, float, int]:
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
  return float(np.mean(values)), std, len(values)


def _cell(stat) -> str:
  mean, std, _ = stat
  if np.isnan(mean):
    return "-"
  return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def leaders(table: dict, classifier: str, measure: str) -> str:
  """One sentence: the best and second-best mean on `measure`, and their gap in units of the larger of the
  two seed standard deviations."""
  ranked = sorted(
    ((entry[classifier][measure], m) for m, entry in table.items() if classifier in entry), key=lambda item: -item[0][0]
  )
  if len(ranked) < 2:
    return ""
  (best, m1), (second, m2) = ranked[:2]
  gap = best[0] - second[0]
  spread = max(best[1], second[1])
  ratio = f" = {gap / spread:.1f} x the larger seed std ({spread:.2f})" if spread > 0 else ""
  return f"{measure}: {LABELS[m1]} {_cell(best)}, then {LABELS[m2]} {_cell(second)}; gap {gap:.2f} points{ratio}"


def paired_difference(records: list[dict], a: str, b: str, classifier: str, measure: str):
  """Method `a` minus method `b` on one measure, seed by seed over the seeds both have (a seed fixes the
  image order of every method's pretrain, so the pairs share it). Returns (mean, sample std, seeds where
  `a` is ahead, seeds), or None without a shared seed."""

  def values(method):
    out = {}
    for r in records:
      report = r["classifiers"].get(classifier) if r["method"] == method else None
      if report is not None:
        out[r["seed"]] = report["overall"] if measure == "overall" else report["groups"].get(measure)
    return out

  first, second = values(a), values(b)
  seeds = sorted(s for s in first.keys() & second.keys() if first[s] is not None and second[s] is not None)
  if not seeds:
    return None
  diffs = [first[s] - second[s] for s in seeds]
  mean, std, n = _stats(diffs)
  return mean, std, sum(d > 0 for d in diffs), n


def _difference_cell(diff) -> str:
  if diff is None:
    return "-"
  mean, std, ahead, n = diff
  spread = "" if np.isnan(std) else f" ± {std:.2f}"
  return f"{mean:+.2f}{spread} ({ahead}/{n})"


def budget_cells(budget: dict | None) -> str:
  """Images drawn, images embedded online / by the target, rarest-class draws per image: three table
  cells ("-" without a budget)."""
  if not budget:
    return "- | - | -"
  return (
    f"{budget['images_drawn']:,} | {budget['online_forward_images']:,} / {budget['target_forward_images']:,} | "
    f"{budget['rarest_class_draws_per_image']:.1f}"
  )


def add_budgets(path: Path, description: str) -> int:
  """Sets the budget block (`record_budget`, a function of the record's config, overrides and training
  classes) of every record of `path` that lacks one or holds another value; returns how many. Nothing else
  in a record changes."""
  with exclusive(path.with_name(path.name + ".lock"), wait=True):
    entries = read_entries(path)
    changed = [r for r in entries if r.get("budget") != record_budget(r)]
    for record in changed:
      record["budget"] = record_budget(record)
    if changed:
      write_json(path, {"description": description, "records": entries})
  return len(changed)


def add_maintenance_flags(parser: argparse.ArgumentParser, path: Path) -> None:
  """The flags that maintain a records file `path` instead of running: --add-budgets, --withdraw-stale."""
  parser.add_argument(
    "--add-budgets",
    action="store_true",
    help="add the budget block to the records that lack it and correct any that differ from what their config "
    "gives, then render",
  )
  parser.add_argument(
    "--withdraw-stale",
    action="store_true",
    help=f"move the records the current training code did not make (or reproduce) to "
    f"{path.stem}_withdrawn.json, so the next run remakes them; then render",
  )


def maintain(args, path: Path, description: str, tag: str) -> bool:
  """Carries out `add_maintenance_flags`' flag if one was given (and says what it did); returns whether."""
  if args.add_budgets:
    print(f"[{tag}] budget block added or corrected in {add_budgets(path, description)} record(s)", flush=True)
  elif args.withdraw_stale:
    keep, reason = current_code_predicate()
    print(f"[{tag}] {withdraw(path, description, keep, reason)} record(s) withdrawn: {reason}", flush=True)
  return args.add_budgets or args.withdraw_stale


def withdraw(path: Path, description: str, keep, reason: str) -> int:
  """Moves every record of `path` for which `keep(record)` is false to `<path stem>_withdrawn.json`
  beside it (with the date and `reason`), so that a rerun remakes it; returns how many moved. The
  withdrawn records stay committed: the tables they made are in the git history."""
  withdrawn_path = path.with_name(path.stem + "_withdrawn.json")
  with exclusive(path.with_name(path.name + ".lock"), wait=True):
    entries = read_entries(path)
    gone = [r for r in entries if not keep(r)]
    if not gone:
      return 0
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    old = read_entries(withdrawn_path)
    moved = [{**r, "withdrawn": when, "withdrawn_because": reason} for r in gone]
    write_json(withdrawn_path, {"description": f"withdrawn from {path.name}: {description}", "records": old + moved})
    write_json(path, {"description": description, "records": [r for r in entries if keep(r)]})
  return len(gone)


def same_code_as(commit: str, repo: Path = REPO):
  """A cached predicate `(other, config=None) -> bool`: whether commit `other` holds the training code of
  `commit`: all of it, or what runs of the config file `config` execute (`record_code`)."""

  @functools.lru_cache(maxsize=None)
  def same(other: str, config: str | None = None) -> bool:
    return same_training_code(other, commit, repo, record_code(config, repo))

  return same


def made_with(record: dict, same_as_now) -> bool:
  """Whether every job of `record` ran at a commit with the current training code of its config
  (`same_as_now(commit, config)`, `same_code_as`)."""
  return all(same_as_now(commit, record.get("config")) for commit in commits([record]))


def reproduced_runs(checks: list[dict], same_as_now) -> set:
  """(method, seed) of the comparison runs that `benchmarks/reproduce_records.py` reproduced bit for bit at
  a commit with the current training code."""
  return {(c["method"], c["seed"]) for c in checks if c["identical"] and same_as_now(c["commit"])}


def current_code_predicate():
  """(keep, reason): `keep(record)` is true for a record made with HEAD's training code (`made_with`), or a
  comparison record that `benchmarks/reproduce_records.py` reproduced bit for bit with it."""
  head = head_commit()
  same_as_head = same_code_as(head)
  reproduced = reproduced_runs(read_entries(REPRODUCED, "checks"), same_as_head)

  def keep(record: dict) -> bool:
    return made_with(record, same_as_head) or (
      "variant" not in record and (record["method"], record["seed"]) in reproduced
    )

  return keep, f"not made (or reproduced bit for bit) with the training code of {head[:7]}"


def commits(records: list[dict]) -> list[str]:
  """Short hashes of every commit that ran a job of these records."""
  found = {c for r in records for c in [r["commit"]] + sum(r.get("job_commits", {}).values(), []) if c}
  return sorted(c[:7] for c in found)


def markdown(records: list[dict]) -> str:
  table = aggregate(records)
  counts = records[0]["train_class_counts"]
  thirds, shots = count_thirds(counts), shot_classes(counts)
  rows = default_rows()
  done = {(r["method"], r["seed"]) for r in records if r["method"] in rows}
  controls = f" and {len(PROMOTED)} control{'s' if len(PROMOTED) > 1 else ''}" if PROMOTED else ""
  lines = [
    f"{len(done)} of {len(rows) * len(SEEDS)} runs recorded ({len(METHODS)} methods{controls} x seeds "
    f"{', '.join(map(str, SEEDS))}); top-1 % on the balanced test split, mean ± sample std over seeds. "
    f"Thirds of the class ranking: head {len(thirds['head'])}, middle {len(thirds['middle'])}, tail "
    f"{len(thirds['tail'])} classes; many-shot (> 100 training images) {len(shots['many'])}, medium "
    f"(20-100) {len(shots['medium'])} classes, no few-shot class. Commits: {', '.join(commits(records))}.",
    "",
    "Linear probe (class-balanced, frozen trunk), the comparison every method shares:",
    "",
    "| method | seeds | overall | head | middle | tail | many | medium | images drawn | embedded online / "
    "by the target | rarest-class draws per image | pretrain wall (s) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for method, entry in table.items():
    probe = entry.get("linear_probe")
    if probe is None:
      continue
    lines.append(
      f"| {LABELS[method]}{' *' if method in GIVEN_MORE else ''} | {len(entry['seeds'])} | "
      + " | ".join(_cell(probe[k]) for k in ("overall", "head", "middle", "tail", "many", "medium"))
      + f" | {budget_cells(entry['budget'])} | {entry['pretrain_seconds'][0]:.0f} |"
    )
  declared = [f"\\* {LABELS[m]} is given {GIVEN_MORE[m]}." for m in table if m in GIVEN_MORE]
  lines += ["", *declared] if declared else []
  lines += [
    "",
    "Probe-free measures on the same frozen features, and the methods' own classifiers:",
    "",
    "| method | classifier | overall | tail | medium |",
    "|---|---|---|---|---|",
  ]
  for method, entry in table.items():
    for classifier in ("knn", "logistic_regression", "model"):
      if classifier in entry:
        lines.append(
          f"| {LABELS[method]} | {CLASSIFIERS[classifier]} | "
          + " | ".join(_cell(entry[classifier][k]) for k in ("overall", "tail", "medium"))
          + " |"
        )
  leading = [
    f"- {leaders(table, 'linear_probe', m)}" for m in ("overall", "tail", "medium") if leaders(table, "linear_probe", m)
  ]
  if leading:
    lines += ["", "Leaders (linear probe):", "", *leading]
  # The paper's claim is that DSCL beats SupCon and cross-entropy: the per-seed difference says whether the
  # gap is larger than what the seed changes between two runs of the same pair.
  versus = []
  for other in ("supcon", "ce"):
    for classifier in [c for c in CLASSIFIERS if c != "model"]:
      diffs = [paired_difference(records, "dscl", other, classifier, m) for m in ("overall", "tail", "medium")]
      if diffs[0] is not None:
        versus.append(
          f"| {LABELS[other]} | {CLASSIFIERS[classifier]} | " + " | ".join(map(_difference_cell, diffs)) + " |"
        )
  if versus:
    lines += [
      "",
      "DSCL minus SupCon and cross-entropy, seed by seed: mean ± sample std of the per-seed "
      "difference (seeds where DSCL is ahead / seeds):",
      "",
      "| DSCL minus | classifier | overall | tail | medium |",
      "|---|---|---|---|---|",
      *versus,
    ]
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ figures
def colour(row: str):
  """A method's colour is its own in every figure (matplotlib's tab10, in METHODS order); a control's is the
  light shade of its method's (tab20's)."""
  from matplotlib import colormaps

  if row in METHODS:
    return f"C{list(METHODS).index(row)}"
  return colormaps["tab20"](2 * list(METHODS).index(CONTROLS[row][0]) + 1)


def figures(records: list[dict], groups_path: Path = GROUPS_FIGURE, per_class_path: Path = PER_CLASS_FIGURE):
  """Accuracy per group for every method (one panel per probe / kNN / logistic regression), and the linear
  probe's per-class accuracy against training images (mean over seeds, bars: min to max)."""
  from matplotlib.figure import Figure

  from dscl_jax.evaluation.figures import save_png

  table = aggregate(records)
  measures = ("overall", "head", "middle", "tail", "many", "medium")
  panels = [c for c in ("linear_probe", "knn", "logistic_regression") if any(c in e for e in table.values())]
  figure = Figure(figsize=(5.5 * len(panels), 4.5))
  width = 0.8 / max(len(table), 1)
  for i, classifier in enumerate(panels):
    axes = figure.add_subplot(1, len(panels), i + 1)
    for j, (method, entry) in enumerate(table.items()):
      if classifier not in entry:
        continue
      means = [entry[classifier][m][0] for m in measures]
      stds = [0.0 if np.isnan(entry[classifier][m][1]) else entry[classifier][m][1] for m in measures]
      axes.bar(
        np.arange(len(measures)) + (j - (len(table) - 1) / 2) * width,
        means,
        width,
        yerr=stds,
        capsize=2,
        label=LABELS[method],
        color=colour(method),
      )
    axes.set_xticks(np.arange(len(measures)), measures)
    axes.set_ylabel("top-1 accuracy (%)")
    low = min(entry[c][m][0] for entry in table.values() for c in panels if c in entry for m in measures)
    axes.set_ylim(max(0.0, low - 10.0), 100.0)
    axes.set_title(CLASSIFIERS[classifier])
    axes.grid(axis="y", alpha=0.3)
  # One legend below the panels: inside an axes it hides bars once there are eight methods.
  handles, labels = figure.axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8, frameon=False)
  figure.subplots_adjust(bottom=0.2)
  figure.suptitle("Fashion-MNIST-LT (IF 100), ResNet-20: mean ± std over seeds")
  save_png(figure, groups_path, dpi=110)

  figure = Figure(figsize=(7.5, 5))
  axes = figure.add_subplot()
  counts = np.asarray(records[0]["train_class_counts"], np.float64)
  order = np.argsort(-counts, kind="stable")
  for method in table:
    per_class = np.array(
      [
        r["classifiers"]["linear_probe"]["per_class_accuracy"]
        for r in records
        if r["method"] == method and "linear_probe" in r["classifiers"]
      ]
    )
    if not len(per_class):
      continue
    mean = per_class.mean(0)
    axes.errorbar(
      counts[order],
      mean[order],
      yerr=[mean[order] - per_class.min(0)[order], per_class.max(0)[order] - mean[order]],
      marker="o",
      markersize=3,
      capsize=2,
      label=LABELS[method],
      color=colour(method),
    )
  axes.set_xscale("log")
  axes.set_xlabel("training images of the class")
  axes.set_ylabel("top-1 accuracy (%), linear probe")
  axes.set_title("Per-class accuracy against training-set size (mean over seeds, bars: min-max)")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, loc="lower right", ncol=2)
  save_png(figure, per_class_path, dpi=110)


def update_block(text: str, document: Path = RESULTS_DOC, begin: str = BEGIN, end: str = END) -> bool:
  """Replaces what lies between the `begin` and `end` markers of `document` (docs/results.md) by `text`;
  False, and nothing written, if the document or a marker is missing."""
  if not document.exists():
    return False
  content = document.read_text()
  if begin not in content or end not in content:
    return False
  head, rest = content.split(begin, 1)
  _, tail = rest.split(end, 1)
  document.write_text(f"{head}{begin}\n{text}{end}{tail}")
  return True


def link(path: Path, document: Path = RESULTS_DOC) -> str:
  """`path` relative to the folder of `document`, as a Markdown link in it needs it."""
  return Path(os.path.relpath(path, document.parent)).as_posix()


def results_block(records: list[dict], document: Path = RESULTS_DOC) -> str:
  """What goes between the markers of `document`: where it comes from, the table and the two figures."""
  source = f"Made by `{COMMAND}` from `{RECORDS.relative_to(REPO)}`"
  if not records:
    return f"{source}: no runs recorded yet.\n"
  figure_links = (
    f"![accuracy per group]({link(GROUPS_FIGURE, document)})\n\n"
    f"![per-class accuracy]({link(PER_CLASS_FIGURE, document)})\n"
  )
  return f"{source}.\n\n{markdown(records)}\n{figure_links}"


def render(records: list[dict]) -> None:
  where = RESULTS_DOC.relative_to(REPO)
  if not records:
    # Say so where the table was rather than leave a table of records that are gone.
    text = results_block(records)
    TABLE.write_text(text)
    update_block(text)
    for figure in (GROUPS_FIGURE, PER_CLASS_FIGURE):
      figure.unlink(missing_ok=True)
    print("[compare] no records yet: the table says so; no figures", flush=True)
    return
  text = markdown(records)
  TABLE.write_text(text)
  figures(records)
  updated = update_block(results_block(records))
  print(text, flush=True)
  print(
    f"[compare] wrote {TABLE.relative_to(REPO)}, {GROUPS_FIGURE.relative_to(REPO)}, "
    f"{PER_CLASS_FIGURE.relative_to(REPO)}"
    + (f" and the table in {where}" if updated else f" ({where} has no {BEGIN} marker)"),
    flush=True,
  )


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--methods",
    default=",".join(default_rows()),
    help=f"comma-separated rows, from the methods: {', '.join(METHODS)}; and the controls: {', '.join(CONTROLS)}",
  )
  parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
  parser.add_argument(
    "--workdir-root",
    type=Path,
    default=REPO / "workdirs" / "compare_fashion_mnist_lt",
    help="one workdir per (method, seed) below it; interrupted runs resume from it",
  )
  parser.add_argument("--max-runs", type=int, default=-1, help="stop after this many new records (-1: all)")
  parser.add_argument(
    "--trunks-from",
    type=lambda value: Path(value) if value else None,
    default=TRUNKS_FROM,
    help="probe a trunk finished below it (benchmarks/investigate_dscl.py's workdirs) instead of pretraining "
    "the same config again; '' to pretrain every run",
  )
  parser.add_argument("--render-only", action="store_true", help="run nothing; render the records")
  add_maintenance_flags(parser, RECORDS)
  parser.add_argument(
    "--allow-uncommitted",
    action="store_true",
    help="run although dscl_jax/, data/ or configs/ have uncommitted changes (the records say so)",
  )
  args = parser.parse_args(argv)
  args.methods = [m for m in args.methods.split(",") if m]
  unknown = [m for m in args.methods if m not in METHODS and m not in CONTROLS]
  if unknown:
    parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)} or the controls {list(CONTROLS)}")
  args.seeds = [int(s) for s in args.seeds.split(",") if s]
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if not maintain(args, RECORDS, DESCRIPTION, "compare") and not args.render_only:
    check_fair({m: load_config(m) for m in dict.fromkeys((*METHODS, *args.methods))})
    commit, dirty = git_commit()
    todo = pending(args.methods, args.seeds, read_records())
    if todo and dirty and not args.allow_uncommitted:
      sys.exit(
        "error: dscl_jax/, data/ or configs/ have uncommitted changes, so a record's commit would not "
        "say what made it; commit them or pass --allow-uncommitted"
      )
    if args.max_runs >= 0:
      todo = todo[: args.max_runs]
    print(f"[compare] {len(todo)} run(s) to do: " + ", ".join(f"{m}/{s}" for m, s in todo), flush=True)
    for i, (method, seed) in enumerate(todo):
      start = time.perf_counter()
      with claimed(
        args.workdir_root / f"{method}_seed{seed}",
        lambda: is_recorded(read_records(), method, seed),
        f"[compare] {LABELS[method]} seed {seed}",
        "compare_methods",
      ) as mine:
        if not mine:
          continue
        record = run_one(method, seed, args.workdir_root, {}, commit, dirty, trunks_from=args.trunks_from)
        append_record(record)
      probe = record["classifiers"]["linear_probe"]
      print(
        f"[compare] recorded {i + 1}/{len(todo)}: {LABELS[method]} seed {seed}, linear probe "
        f"{probe['overall']:.2f}% (tail {probe['groups']['tail']:.2f}%), "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
      )
  render(read_records())


if __name__ == "__main__":
  main()
