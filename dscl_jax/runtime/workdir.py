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
import fcntl
import json
import os
import socket
import threading
import time

import jax
from etils import epath

from dscl_jax.runtime import checkpoint
from dscl_jax.runtime.files import is_local, replace_text
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
  stale, and taken over with a message, when its process is gone (same host), its heartbeat is older
  than `stale_seconds` (another host, e.g. a preempted TPU VM), or it has stayed unreadable for
  `UNREADABLE_SECONDS` (garbage; an empty or partly written file is never taken over before that).
  Otherwise the run is refused.

  On a local disk every version of the file appears whole: the record is written to a temporary file
  and then linked (created) or renamed (heartbeat, takeover) onto `.lock`. Creation by `os.link` fails
  if the lock exists, so of simultaneous starts exactly one wins (without hard links, O_EXCL creation
  wins instead, and the others refuse the file they may find empty); takeovers are serialised as
  explained in `_take_over`. Object stores have no such primitives, so two runs started within the same
  second on a `gs://` workdir could both pass: there the lock guards against the ordinary mistake (a
  second command on a running workdir), not against a race.
  """

  UNREADABLE_SECONDS = 10.0
  ATTEMPTS = 10  # a lock that changes under us this many times in a row is reported as busy

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

  def _refuse(self, holder: dict) -> WorkdirLocked:
    return WorkdirLocked(
      f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} (started "
      f"{holder.get('started')}); wait for it to finish, or use another --workdir. If that run is "
      f"dead, delete {self.path}."
    )

  def acquire(self) -> None:
    if jax.process_index() != 0:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._started = _now()
    if is_local(self.path):
      self._acquire_local(self._record(self._started))
    else:
      self._acquire_remote(self._record(self._started))
    self._held = True
    self._thread = threading.Thread(target=self._beat, daemon=True)
    self._thread.start()

  def _acquire_remote(self, record: str) -> None:
    if self.path.exists():
      try:
        holder = json.loads(self.path.read_text())
      except (json.JSONDecodeError, FileNotFoundError, ValueError):
        holder = {}
      reason = self._stale_reason(holder) if holder else "it is unreadable"
      if reason is None:
        raise self._refuse(holder)
      print(f"taking over the stale lock {self.path} ({reason})", flush=True)
    self.path.write_text(record)

  def _temporary(self, record: str) -> str:
    """A new file beside the lock holding `record`, named uniquely (host, pid, random suffix)."""
    tmp = os.fspath(self.path.parent / f"{LOCK_NAME}.{socket.gethostname()}.{os.getpid()}.{os.urandom(4).hex()}")
    with open(tmp, "w") as f:
      f.write(record)
    return tmp

  def _acquire_local(self, record: str) -> None:
    tmp = self._temporary(record)
    try:
      for _ in range(self.ATTEMPTS):
        try:
          os.link(tmp, os.fspath(self.path))  # atomic create-if-absent of a complete file
          return
        except FileExistsError:
          pass
        except OSError:  # a file system without hard links: create the lock, then write it
          if self._create_exclusive(record):
            return
        if self._take_over(tmp):
          return
      raise WorkdirLocked(f"{self.path}: kept changing while this run tried to take it; another run is starting")
    finally:
      try:
        os.unlink(tmp)
      except FileNotFoundError:  # renamed onto the lock by a takeover
        pass

  def _create_exclusive(self, record: str) -> bool:
    """Creates the lock with O_EXCL and writes `record` into it; False if it exists. Between the two, a
    reader sees an empty or partial file, which `_take_over` refuses rather than takes over."""
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(record)
    return True

  def _take_over(self, tmp: str) -> bool:
    """Replace the existing lock with `tmp` if it is stale; False if it changed meanwhile (retry).

    Why two runs cannot both take over one stale lock: the taker holds an exclusive flock on the lock's
    inode, then checks that `.lock` still names that inode, judges the content it reads from it, and only
    then renames `tmp` onto `.lock`. Every other writer of `.lock` either needs the same flock (another
    taker, who after getting it finds `.lock` names a new inode and retries), only creates a missing
    file (`os.link`; `.lock` exists), or is the holder itself (heartbeat, release), which for a stale
    lock is dead (same host) or silent for `stale_seconds` (another host). So between the check and the
    rename `.lock` is still the file judged stale, and the second taker then judges the first one's lock,
    which is live. The kernel drops a flock when its process dies, so a crashed taker blocks nobody.
    """
    try:
      fd = os.open(os.fspath(self.path), os.O_RDONLY)
    except FileNotFoundError:  # released meanwhile: try to create it again
      return False
    with os.fdopen(fd, "rb") as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX)
      except OSError:  # a file system without flock: takeover stays best effort, as on object stores
        pass
      mine = os.fstat(f.fileno())
      try:
        current = os.stat(os.fspath(self.path))
      except FileNotFoundError:
        return False
      if (mine.st_dev, mine.st_ino) != (current.st_dev, current.st_ino):
        return False  # another run took it over, or its holder beat, since we opened it
      content = f.read()
      try:
        holder = json.loads(content)
        if not isinstance(holder, dict):
          raise ValueError(holder)
      except ValueError:  # JSONDecodeError and bad UTF-8 included
        age = time.time() - mine.st_mtime
        if not content or age < self.UNREADABLE_SECONDS:
          # Empty or recent: possibly a run of an older version between creating the file and writing it.
          raise WorkdirLocked(
            f"{self.path}: is not readable ({len(content)} bytes, {age:.0f}s old); another run may be "
            f"writing it. Rerun in a few seconds; if it stays so and no run uses {self.path.parent}, delete it."
          ) from None
        reason = f"it is unreadable and {age:.0f}s old"
      else:
        reason = self._stale_reason(holder)
        if reason is None:
          raise self._refuse(holder)
      print(f"taking over the stale lock {self.path} ({reason})", flush=True)
      os.rename(tmp, os.fspath(self.path))
      return True

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      try:
        # Whole or not at all: a reader must never see the file empty while it is rewritten.
        replace_text(self.path, self._record(self._started))
      except OSError as error:  # a transient storage error must not kill training; the next beat retries
        print(f"warning: could not refresh {self.path}: {error}", flush=True)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._held:
      try:
        holder = json.loads(self.path.read_text())
      except (FileNotFoundError, ValueError):
        holder = {}
      mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": self._started}
      # A run that judged this one stale (a heartbeat held up past stale_seconds) now owns the file.
      if not holder or all(holder.get(k) == v for k, v in mine.items()):
        self.path.unlink(missing_ok=True)
      self._held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False
