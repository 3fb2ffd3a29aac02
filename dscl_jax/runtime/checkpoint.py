"""Checkpoints that survive damage: orbax steps carrying checksums, verified on restore, with fallback.

Each step directory holds two orbax items: "state" (the state pytree) and "checksums" (JSON: per leaf
path, its shape, dtype and CRC-32 of its bytes), and, once the asynchronous save has finished,
`files.json`: the size of every file of the step. Saving refuses a state with a non-finite value.
Restoring goes newest step first; a step with a missing or resized file, that cannot be read, or whose
arrays do not match their checksums, is reported in one line (step directory and cause) and the next
older step is tried. The file check comes first because a read that fails inside orbax leaves
tensorstore callbacks behind that print asyncio tracebacks long after the error was handled.
Retention keeps the newest `keep` steps and never deletes the newest step that has been read back and
verified, so a damaged latest step always has an intact predecessor.

Every path goes through `etils.epath`: a `gs://` directory stays a `gs://` directory for orbax.

A checkpoint that cannot be written (disk full, read-only or unwritable folder) fails fast, in one line
(`CheckpointWriteError`): `preflight` refuses such a folder before anything is compiled, a step directory
is created synchronously (orbax's background creation would leave the writers waiting 300 s for a signal
that never comes), and `check` surfaces a failed asynchronous save at the next training step instead of
at the next save. orbax's own error logs of such a failure are silenced: the one line says it all.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
import time
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from dscl_jax.runtime.files import is_local
from dscl_jax.runtime.metrics import log

STATE, CHECKSUMS, FILES = "state", "checksums", "files.json"
MODE_OF_JOB = {"probe": "linear_probe"}

# Which config fields set the shape of a state leaf, by the first matching key on its path.
SHAPE_FIELDS = (
  ("trunk", "model.depth, model.style, model.width and the dataset's image channels (data.name)"),
  ("head", "model.embed_dim and model.head_hidden_dim"),
  ("classifier", "the dataset's number of classes (data.name)"),
  ("queue_labels", "moco.queue_size"),
  ("queue", "moco.queue_size and model.embed_dim"),
  ("class_prior", "the dataset's number of classes (data.name)"),
  ("centroids", "the dataset's number of classes (data.name) and model.embed_dim"),
)


class DamagedCheckpoint(Exception):
  """A step directory that cannot be read or whose arrays do not match their checksums."""


class CheckpointWriteError(OSError):
  """A checkpoint folder that cannot be written (full, read-only, no permission), named with its path."""


# The causes a user fixes by freeing space or changing permissions / the workdir.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
# Room for the metadata next to the arrays (orbax's _sharding, manifests, checksums): measured at about
# 100 kB for the digits model; generous so that a preflight that passes means the first save fits.
METADATA_MARGIN = 1 << 20


class ShapeMismatch(ValueError):
  """A checkpoint leaf whose shape differs from what the current config builds (not damage: a config
  change), named with its path and the config fields that set it."""


def leaf_name(path) -> str:
  """ "params/trunk/stem_conv/kernel" for a jax key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def host_array(x) -> np.ndarray:
  """This process's copy of a replicated leaf (jax.Array or numpy) as numpy."""
  if isinstance(x, jax.Array):
    x = x.addressable_data(0)
  return np.asarray(x)


def leaf_checksum(array: np.ndarray) -> dict:
  # tobytes() is C-ordered whatever the layout (np.ascontiguousarray would turn a 0-d array into 1-d).
  return {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": zlib.crc32(array.tobytes())}


def checksums(state) -> dict[str, dict]:
  """{leaf path: {shape, dtype, crc32}} of every array in `state`."""
  return {leaf_name(path): leaf_checksum(host_array(x)) for path, x in jax.tree_util.tree_leaves_with_path(state)}


def non_finite_leaves(state) -> list[str]:
  """Paths of the floating-point leaves of `state` that hold a NaN or an infinity."""
  bad = []
  for path, x in jax.tree_util.tree_leaves_with_path(state):
    array = host_array(x)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
      bad.append(leaf_name(path))
  return bad


def shape_fields(name: str) -> str:
  for key, fields in SHAPE_FIELDS:
    if f"/{key}/" in f"/{name}/" or name.endswith(key):
      return fields
  return "the model and dataset settings"


def _files_under(directory: epath.Path) -> list[epath.Path]:
  """Every file below `directory` (epath has no recursive glob: on GCS it would be one listing per level
  anyway)."""
  found = []
  for child in directory.iterdir():
    found.extend(_files_under(child) if child.is_dir() else [child])
  return found


def _first_line(error: BaseException) -> str:
  text = str(error).strip().split("\n")[0].split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {text[:240]}"


def write_failure(error: BaseException) -> str | None:
  """ "[Errno 28] No space left on device" when `error` or one of its causes is a write refused for lack
  of space or permission (an OSError, or tensorstore's ValueError carrying `os_error_code`); else None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    code = error.errno if isinstance(error, OSError) else None
    match = re.search(r"os_error_code='(\d+)'", str(error))
    code = code if code in WRITE_ERRNOS else int(match[1]) if match else None
    if code in WRITE_ERRNOS:
      return f"[Errno {code}] {os.strerror(code)}"
    error = error.__cause__ or error.__context__
  return None


def state_bytes(state) -> int:
  """Bytes of the arrays of `state` (arrays, numpy or jax.ShapeDtypeStruct leaves): a checkpoint's size
  before compression."""
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state))


def check_writable(directory) -> None:
  """CheckpointWriteError unless a file can be created in `directory` (made if missing) and deleted."""
  directory = epath.Path(directory)
  probe = directory / f".write_probe_{jax.process_index()}"
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text("probe")
    probe.unlink()
  except OSError as error:
    raise CheckpointWriteError(f"cannot write to {directory}: {error}") from None


def preflight(directory, state, *, job: str) -> None:
  """Refuse, before anything is compiled, a checkpoint folder that cannot be written or (local paths) has
  less free space than one checkpoint of `state`; a remote store's free space is not known."""
  check_writable(directory)
  if not is_local(directory):
    return
  arrays = state_bytes(state)
  needed = arrays + METADATA_MARGIN
  free = shutil.disk_usage(os.fspath(directory)).free
  if free < needed:
    raise CheckpointWriteError(
      f"{directory} has {free} bytes free but one {job} checkpoint needs about {needed} ({arrays} of arrays "
      f"and {METADATA_MARGIN} of metadata); free some space or pass another --workdir"
    )


class _QuietOrbaxFailures(logging.Filter):
  """Drops the error logs (with tracebacks, hundreds of lines per failed save) that orbax and the asyncio
  tasks it leaves behind write when a save fails: `Checkpoints` raises the failure in one line itself."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if "orbax" in record.pathname:
      return False
    return not (record.name == "asyncio" and "orbax" in record.getMessage())


_QUIET = _QuietOrbaxFailures()


def _closed_loop_callback(exc_type, value, tb) -> bool:
  """Whether an exception is a tensorstore write completing after orbax closed the event loop of a failed
  save (asyncio's "Event loop is closed" from `call_soon_threadsafe`): noise once the failure is raised."""
  if exc_type is not RuntimeError or str(value) != "Event loop is closed":
    return False
  frames = []
  while tb is not None:
    frames.append(tb.tb_frame.f_code.co_name)
    tb = tb.tb_next
  return "call_soon_threadsafe" in frames


def quiet_orbax_failures() -> None:
  """Install `_QuietOrbaxFailures`, and sys.unraisablehook / sys.excepthook wrappers that drop
  `_closed_loop_callback`s (tensorstore reports each pending write's as an unraisable exception, a 6-line
  traceback apiece); idempotent."""
  for name in ("absl", "asyncio"):
    if _QUIET not in logging.getLogger(name).filters:
      logging.getLogger(name).addFilter(_QUIET)
  if not getattr(sys.unraisablehook, "quiet_orbax", False):
    previous_unraisable = sys.unraisablehook

    def unraisablehook(unraisable):
      if not _closed_loop_callback(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
        previous_unraisable(unraisable)

    unraisablehook.quiet_orbax = True
    sys.unraisablehook = unraisablehook
  if not getattr(sys.excepthook, "quiet_orbax", False):
    previous_except = sys.excepthook

    def excepthook(exc_type, value, tb):
      if not _closed_loop_callback(exc_type, value, tb):
        previous_except(exc_type, value, tb)

    excepthook.quiet_orbax = True
    sys.excepthook = excepthook


class Checkpoints:
  """The checkpoints of one job in `directory`: asynchronous saves with checksums, verified restores."""

  def __init__(self, directory, *, keep: int = 2, job: str = "checkpoint"):
    if keep < 1:
      raise ValueError(f"keep {keep} must be >= 1")
    self.directory = epath.Path(directory)
    self.keep, self.job = keep, job
    quiet_orbax_failures()
    # Retention is ours (max_to_keep=None): orbax would delete old steps before the new one is verified.
    # Step directories are created in save() itself: a failure there raises at once rather than leaving
    # the background writers waiting for the creation signal until orbax's 300 s timeout.
    options = ocp.CheckpointManagerOptions(
      max_to_keep=None, create=True, async_options=ocp.AsyncOptions(create_directories_asynchronously=False)
    )
    try:
      self._mgr = ocp.CheckpointManager(self.directory, options=options)
    except OSError as error:
      if write_failure(error) is None:
        raise
      raise CheckpointWriteError(f"cannot create {self.directory}: {write_failure(error)}") from None
    self._verified: set[int] = set()
    self._listed: set[int] = set()  # steps whose files.json is written
    self._layout = None  # numpy restore template of the last saved state, for read-back verification
    self._saving: int | None = None  # the step of the asynchronous save not yet known to have finished

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def _raise_write_failure(self, step: int, error: BaseException) -> None:
    """CheckpointWriteError naming the step, the path, the cause and the newest intact step, if `error` is
    a refused write; returns otherwise (the caller re-raises `error`)."""
    if isinstance(error, CheckpointWriteError):
      raise error
    cause = write_failure(error)
    if cause is None:
      return
    try:
      self._mgr.reload()
      intact = [s for s in self.steps() if s != step]
    except Exception:  # the folder may be unreadable too; the cause is what matters
      intact = []
    if jax.process_index() == 0:
      # The half-written step frees its space for the rerun (orbax would remove it only when saving that
      # step again, after the preflight has counted it as used).
      try:
        for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
          partial.rmtree(missing_ok=True)
      except OSError:
        pass  # unwritable: the rerun's preflight names the folder
    kept = f"steps up to {intact[-1]} are intact in {self.directory}" if intact else "no earlier step was saved"
    raise CheckpointWriteError(f"saving step {step} to {self.directory} failed: {cause}; {kept}") from None

  def save(self, step: int, state) -> None:
    """Start an asynchronous save of `state` at `step`. Refuses a state with a non-finite value; raises
    CheckpointWriteError if this save or the previous one could not be written."""
    bad = non_finite_leaves(state)
    if bad:
      raise FloatingPointError(f"refusing to checkpoint step {step}: non-finite values in {', '.join(bad[:5])}")
    self.wait_until_finished()
    sums = checksums(state)
    self._layout = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state)
    try:
      self._mgr.save(
        step,
        args=ocp.args.Composite(**{STATE: ocp.args.PyTreeSave(state), CHECKSUMS: ocp.args.JsonSave(sums)}),
        force=True,
      )
    except Exception as error:  # orbax / tensorstore raise many types
      self._raise_write_failure(step, error)
      raise
    self._saving = step

  def check(self) -> None:
    """Raise CheckpointWriteError if the last asynchronous save has finished and failed; never waits for a
    save still in progress (called after every training step)."""
    if self._saving is None or self._mgr.is_saving_in_progress():
      return
    # Only orbax's own wait here (a join of a finished thread, no barrier): retention and read-back stay at
    # the next save, where every process reaches them at the same step.
    step, self._saving = self._saving, None
    try:
      self._mgr.wait_until_finished()
    except Exception as error:  # orbax / tensorstore raise many types
      self._raise_write_failure(step, error)
      raise

  def wait_until_finished(self) -> None:
    """Block until the last save is on disk, then verify it and apply retention. CheckpointWriteError if
    it could not be written."""
    step, self._saving = self._saving, None
    try:
      self._mgr.wait_until_finished()
      self._prune()
    except Exception as error:  # orbax / tensorstore raise many types
      self._raise_write_failure(step if step is not None else max(self.steps(), default=0), error)
      raise

  def _list_files(self) -> None:
    """Write `files.json` (relative path -> size) into every finished step that lacks one."""
    if jax.process_index() != 0:
      return
    for step in self.steps():
      if step in self._listed:
        continue
      step_dir = self.directory / str(step)
      if not (step_dir / FILES).exists():
        sizes = {str(p.relative_to(step_dir)): p.stat().length for p in _files_under(step_dir)}
        (step_dir / FILES).write_text(json.dumps(sizes, sort_keys=True))
      self._listed.add(step)

  def _check_files(self, step: int) -> None:
    """DamagedCheckpoint if a file listed in the step's files.json is missing or has another size."""
    step_dir = self.directory / str(step)
    listing = step_dir / FILES
    if not listing.exists():
      return  # killed between the save and the listing: the array checksums still guard the restore
    try:
      sizes = json.loads(listing.read_text())
    except ValueError as error:
      raise DamagedCheckpoint(f"{FILES} unreadable: {_first_line(error)}") from None
    for name, size in sorted(sizes.items()):
      path = step_dir / name
      if not path.exists():
        raise DamagedCheckpoint(f"missing file {name}")
      actual = path.stat().length
      if actual != size:
        raise DamagedCheckpoint(f"file {name} has {actual} bytes, {size} when saved")

  def _prune(self) -> None:
    """Delete steps older than the newest `keep`, but only once a step newer than them is verified."""
    self._list_files()
    steps = self.steps()
    if len(steps) <= self.keep:
      return
    newest = steps[-1]
    if newest not in self._verified and self._layout is not None:
      try:
        self.restore_step(newest, self._layout)
        self._verified.add(newest)
      except (DamagedCheckpoint, ShapeMismatch) as error:
        log(self.job, f"WARNING: {self.directory / str(newest)} did not verify ({error}); keeping the older steps")
        return
    if newest not in self._verified:
      return
    for step in steps[: -self.keep]:
      self._mgr.delete(step)

  def stored_checksums(self, step: int) -> dict:
    """{leaf path: {shape, dtype, crc32}} saved with `step`; DamagedCheckpoint when unreadable."""
    try:
      restored = self._mgr.restore(step, args=ocp.args.Composite(**{CHECKSUMS: ocp.args.JsonRestore()}))
    except Exception as error:  # orbax / tensorstore raise many types; all mean "unreadable"
      raise DamagedCheckpoint(f"checksums unreadable: {_first_line(error)}") from None
    sums = restored[CHECKSUMS]
    if not isinstance(sums, dict) or not sums:
      raise DamagedCheckpoint("no checksums")
    return sums

  def restore_step(self, step: int, template, *, partial: bool = False):
    """Restore `step` into `template` (leaves: jax.ShapeDtypeStruct with sharding, or numpy arrays for
    host copies). `partial`: `template` may be a sub-tree of the saved state (e.g. the trunk only).
    Raises DamagedCheckpoint (unreadable / checksum mismatch) or ShapeMismatch (a config change)."""
    self._check_files(step)
    sums = self.stored_checksums(step)
    expected = {leaf_name(path): x for path, x in jax.tree_util.tree_leaves_with_path(template)}
    missing = [name for name in expected if name not in sums]
    if missing:
      # The checksums list every leaf the step was saved with, so a leaf missing from them was never
      # saved: another model, method, or a weights-only checkpoint (tools/import_dscl_checkpoint.py).
      raise ShapeMismatch(
        f"{self.directory / str(step)} has no '{missing[0]}' ({len(missing)} leaves this "
        f"config builds are absent; '{missing[0]}' is set by {shape_fields(missing[0])}); was "
        f"it written by another model or method, or is it a weights-only checkpoint?"
      )
    for name, x in expected.items():
      stored = tuple(sums[name]["shape"])
      if stored != tuple(x.shape):
        raise ShapeMismatch(
          f"'{name}' is {stored} in {self.directory / str(step)} but this config builds "
          f"{tuple(x.shape)}; it is set by {shape_fields(name)}"
        )
    if partial:
      # A partial restore reads sub-trees (the trunk, the classifier). Within each of them the step must
      # hold exactly the leaves this config builds: a deeper or wider trunk has more, and reading only the
      # shallower model's share of it would assemble a network that was never trained.
      roots = {"/".join(name.split("/")[:2]) for name in expected}
      extra = sorted(n for n in set(sums) - set(expected) if "/".join(n.split("/")[:2]) in roots)
      if extra:
        raise ShapeMismatch(
          f"{self.directory / str(step)} holds '{extra[0]}' ({len(extra)} leaves that this config does not "
          f"build under {', '.join(sorted(roots))}); it is set by {shape_fields(extra[0])}: the checkpoint "
          f"is of a deeper or wider model"
        )
    if not partial and set(sums) != set(expected):
      extra = sorted(set(sums) - set(expected))
      raise ShapeMismatch(
        f"{self.directory / str(step)} holds leaves this config does not build "
        f"({', '.join(extra[:5])}); was it written by another method or config?"
      )

    def restore_args(x):
      if isinstance(x, np.ndarray):
        return ocp.RestoreArgs(restore_type=np.ndarray)
      return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)

    args = ocp.args.PyTreeRestore(template, restore_args=jax.tree.map(restore_args, template), partial_restore=partial)
    try:
      state = self._mgr.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE]
    except Exception as error:  # orbax / tensorstore raise many types; all mean "unreadable"
      raise DamagedCheckpoint(_first_line(error)) from None
    for path, x in jax.tree_util.tree_leaves_with_path(state):
      name = leaf_name(path)
      if leaf_checksum(host_array(x)) != sums[name]:
        raise DamagedCheckpoint(f"checksum mismatch in '{name}'")
    return state

  def _set_aside(self, step: int) -> epath.Path:
    """Rename a damaged step to `damaged_<step>_<time>`: kept for inspection, invisible to orbax, and out of
    the way of the resumed run, which will save that step again."""
    aside = self.directory / f"damaged_{step}_{int(time.time())}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(aside)
    self._mgr.reload()
    return aside

  def restore_latest(self, template, *, partial: bool = False):
    """(state, step) from the newest intact step, or None when there is no step at all.

    Damaged steps are reported in one line each and skipped; if every step is damaged, raises naming each
    one's cause. A ShapeMismatch (the config changed) is raised at once: an older step would not fit
    either, and falling back would hide the change.
    """
    steps = self.steps()
    causes = []
    for step in reversed(steps):
      try:
        state = self.restore_step(step, template, partial=partial)
      except DamagedCheckpoint as error:
        causes.append(f"{self.directory / str(step)}: {error}")
        older = [s for s in steps if s < step]
        then = f"falling back to step {older[-1]}" if older else "no older step"
        aside = self._set_aside(step)
        log(self.job, f"damaged checkpoint {self.directory / str(step)} ({error}); moved to {aside.name}; {then}")
        continue
      self._verified.add(step)
      return state, step
    if causes:
      raise DamagedCheckpoint(f"every checkpoint in {self.directory} is damaged: " + "; ".join(causes))
    return None


def manager(directory, *, keep: int = 2, job: str = "checkpoint") -> Checkpoints:
  """The checkpoints in `directory` (created if missing)."""
  return Checkpoints(directory, keep=keep, job=job)


def abstract_like(state, sharding=None):
  """Shapes, dtypes and shardings of `state` (or `sharding` for every leaf): the target a restore fills.
  Numpy leaves stay numpy (restored as host arrays) unless `sharding` is given."""

  def abstract(x):
    if sharding is None and isinstance(x, np.ndarray):
      return np.zeros(x.shape, x.dtype)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding)

  return jax.tree.map(abstract, state)


def restore_latest(mgr: Checkpoints, template):
  """The newest intact checkpoint restored into `template`'s structure and shardings, or None."""
  restored = mgr.restore_latest(abstract_like(template))
  return None if restored is None else restored[0]


def has_checkpoint(directory) -> bool:
  """True when `directory` holds a finished orbax step (a sub-directory named by an integer)."""
  directory = epath.Path(directory)
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def find_checkpoint_dir(path, job: str = "pretrain") -> epath.Path:
  """Accept a workdir, `<workdir>/<job>` or `<workdir>/<job>/checkpoints`; return the checkpoints dir."""
  path = epath.Path(path)
  candidates = (path / job / "checkpoints", path / "checkpoints", path)
  for candidate in candidates:
    if has_checkpoint(candidate):
      return candidate
  raise FileNotFoundError(
    f"no {job} checkpoint under {str(path)!r} (looked in "
    f"{', '.join(str(c) for c in candidates)}); run --config.mode={MODE_OF_JOB.get(job, job)} first or point "
    f"to a directory that has one"
  )


def restore_from(directory, abstract_state, sharding, *, partial: bool = False, job: str = "checkpoint"):
  """Restore the newest intact step of `directory` into `abstract_state` (shapes, e.g. from
  `jax.eval_shape`), every leaf placed with `sharding`. Returns (state, "<directory>/<step>")."""
  mgr = Checkpoints(directory, job=job)
  restored = mgr.restore_latest(abstract_like(abstract_state, sharding), partial=partial)
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  state, step = restored
  return state, str(epath.Path(directory) / str(step))
