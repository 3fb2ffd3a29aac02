"""Guards of a workdir: one run at a time (a lock file), and no silent config change on resume.

A rerun on a workdir resumes its checkpoints, so it must train the same thing: `check_config` compares
the config with the one saved by the run that wrote the checkpoints and refuses a change to any field
that alters training, listing them, unless `allow_config_change` is set (e.g. to lower the learning rate
after a divergence). Fields that do not alter the result (log and checkpoint intervals, worker count,
data locations, step limits, the device count: results do not depend on it) may always change.

Every path goes through `etils.epath`, so a `gs://` workdir works the same.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time

import jax
from etils import epath

from dscl_jax.runtime import checkpoint
from dscl_jax.runtime.files import is_local
from dscl_jax.runtime.metrics import log

LOCK_NAME = ".lock"

# Fields that never change what a job computes, by job. A prefix ending in "." covers a whole group.
ALWAYS_FREE = (
  "mode",
  "pretrained",
  "allow_config_change",
  "dry_run",
  "dry_run_memory_gib",
  "data.root",
  "data.split_dir",
  "data.tfds_data_dir",
  "train.num_workers",
  "mesh.",
  "eval.",
)
FREE = {
  "pretrain": ALWAYS_FREE
  + ("train.log_every", "train.checkpoint_every", "train.max_steps", "train.max_skipped_steps", "probe."),
  "probe": ALWAYS_FREE
  + (
    "train.",
    "moco.",
    "loss.",
    "paco.",
    "iccl.",
    "pbsd.",
    "probe.log_every",
    "probe.checkpoint_every",
    "probe.max_steps",
  ),
}

# Fields added after runs may have saved their config, each with the value that computes what those runs
# computed: a saved config without the field is read as holding that value, so such runs still resume.
ADDED_FIELDS = {"data.val_per_class": 0}


class ConfigChanged(ValueError):
  """A rerun's config differs from the saved one in fields that alter training."""


class WorkdirLocked(RuntimeError):
  """Another live run holds the workdir's lock file."""


def flatten(tree, prefix: str = "") -> dict:
  """{"train.base_lr": 0.1, ...} from a nested dict, values JSON-normalised (tuples become lists)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, name + "."))
    else:
      flat[name] = json.loads(json.dumps(value, default=str))
  return flat


def config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def is_free(field: str, job: str) -> bool:
  return any(field == p or (p.endswith(".") and field.startswith(p)) for p in FREE[job])


def changed_fields(saved: dict, current: dict, job: str) -> list[tuple[str, object, object]]:
  """[(field, saved value, current value)] for fields that alter `job` and differ (or exist in one only)."""
  a, b = {**ADDED_FIELDS, **flatten(saved)}, flatten(current)
  missing = object()
  changes = []
  for field in sorted(set(a) | set(b)):
    if is_free(field, job):
      continue
    old, new = a.get(field, missing), b.get(field, missing)
    if old != new:
      changes.append((field, "(absent)" if old is missing else old, "(absent)" if new is missing else new))
  return changes


def check_config(config, job_dir, job: str) -> None:
  """Save `config` as `<job_dir>/config.json`, after comparing it with the saved one when `job_dir` has
  checkpoints (a resume). A change to a field that alters training raises ConfigChanged listing them,
  unless `config.allow_config_change`; allowed changes are printed and appended to config_changes.jsonl."""
  job_dir = epath.Path(job_dir)
  path = job_dir / "config.json"
  current = config_dict(config)
  resuming = checkpoint.has_checkpoint(job_dir / "checkpoints")
  if resuming and path.exists():
    changes = changed_fields(json.loads(path.read_text()), current, job)
    if changes:
      listing = "; ".join(f"{field}: {old!r} -> {new!r}" for field, old, new in changes)
      if not config.get("allow_config_change", False):
        raise ConfigChanged(
          f"{job_dir} holds checkpoints of a run with another config; changed: {listing}. Resuming would "
          f"mix two trainings. Use another --workdir, restore the old values, or pass "
          f"--config.allow_config_change=True to resume with the new ones."
        )
      log(job, f"resuming with a changed config (allow_config_change): {listing}")
      if jax.process_index() == 0:
        record = {"time": _now(), "changes": [{"field": f, "old": o, "new": n} for f, o, n in changes]}
        changes_file = job_dir / "config_changes.jsonl"
        previous = changes_file.read_text() if changes_file.exists() else ""
        changes_file.write_text(previous + json.dumps(record, default=str) + "\n")
  if jax.process_index() == 0:
    job_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2))


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """`<workdir>/.lock` held for the whole run (process 0 of a multi-process job takes it).

  The file records host, pid, start time and a heartbeat rewritten every `heartbeat_seconds`. A lock is
  stale, and taken over with a message, when its process is gone (same host) or its heartbeat is older
  than `stale_seconds` (another host, e.g. a preempted TPU VM). Otherwise the run is refused.
  On a local disk the file is created atomically (O_EXCL); object stores have no such primitive, so two
  runs started within the same second on a `gs://` workdir could both pass: the lock guards against
  the ordinary mistake (a second command on a running workdir), not against a race.
  """

  def __init__(self, workdir, *, heartbeat_seconds: float = 60.0, stale_seconds: float = 600.0):
    self.path = epath.Path(workdir) / LOCK_NAME
    self.heartbeat_seconds, self.stale_seconds = heartbeat_seconds, stale_seconds
    self._stop = threading.Event()
    self._thread = None
    self._held = False

  def _record(self, started: str) -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started, "heartbeat": time.time()})

  def _stale_reason(self, holder: dict) -> str | None:
    if holder.get("host") == socket.gethostname():
      return None if _pid_alive(int(holder.get("pid", -1))) else f"process {holder.get('pid')} is gone"
    age = time.time() - float(holder.get("heartbeat", 0))
    return f"its heartbeat is {age:.0f}s old" if age > self.stale_seconds else None

  def acquire(self) -> None:
    if jax.process_index() != 0:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._started = _now()
    record = self._record(self._started)
    if self._create(record):
      self._held = True
    else:
      try:
        holder = json.loads(self.path.read_text())
      except (json.JSONDecodeError, FileNotFoundError, ValueError):
        holder = {}
      reason = self._stale_reason(holder) if holder else "it is unreadable"
      if reason is None:
        raise WorkdirLocked(
          f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} (started "
          f"{holder.get('started')}); wait for it to finish, or use another --workdir. If that run is "
          f"dead, delete {self.path}."
        )
      print(f"taking over the stale lock {self.path} ({reason})", flush=True)
      self.path.write_text(record)
      self._held = True
    self._thread = threading.Thread(target=self._beat, daemon=True)
    self._thread.start()

  def _create(self, record: str) -> bool:
    if is_local(self.path):
      try:
        fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        f.write(record)
      return True
    if self.path.exists():
      return False
    self.path.write_text(record)
    return True

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      try:
        self.path.write_text(self._record(self._started))
      except OSError as error:  # a transient storage error must not kill training; the next beat retries
        print(f"warning: could not refresh {self.path}: {error}", flush=True)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._held:
      self.path.unlink(missing_ok=True)
      self._held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False
