"""Command line: `python -m dscl_jax.main --config configs/<name>.py --workdir <dir> [--config.field=value ...]`.

`--config.mode` picks the job: `pretrain`, `linear_probe`, `eval`, or `all` (the three in order).
`--config.dry_run=True` instead compiles the pretrain step on abstract inputs and prints its size.
Rerunning a command resumes from the latest checkpoint of its job in `--workdir`. The whole config is
validated before any data is read or anything compiled; the workdir is locked for the run's duration.
`--workdir` may be any path etils.epath and orbax understand (a local directory, `gs://bucket/dir`).
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file from configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir) -> None:
  # Imported here so `--help` and flag errors come back without loading JAX models and data code.
  import jax

  from dscl_jax.config import validation
  from dscl_jax.core import build
  from dscl_jax.jobs.evaluate import EVAL_ADVICE, evaluate
  from dscl_jax.jobs.linear_probe import linear_probe
  from dscl_jax.jobs.pretrain import pretrain
  from dscl_jax.runtime import checkpoint
  from dscl_jax.runtime.interrupt import StopAtOnce
  from dscl_jax.runtime.workdir import WorkdirLock

  validation.validate(config, len(jax.devices()), jax.process_count())
  if config.dry_run:
    from dscl_jax.jobs.dry_run import dry_run

    dry_run(config)  # touches neither the data nor the workdir
    return
  checkpoint.check_writable(workdir)  # a read-only workdir in one line, not a traceback from the lock file
  # An eval-only command stops in one line on SIGTERM / Ctrl-C from the start, its setup included (the
  # training jobs handle the signals in their step loop, where a checkpoint is worth saving).
  signals = StopAtOnce("eval", EVAL_ADVICE) if config.mode == "eval" else contextlib.nullcontext()
  with WorkdirLock(workdir), signals:
    setup = build.setup_job(config)  # the mesh, the method and the dataset, shared by the jobs below
    if config.mode in ("pretrain", "all"):
      pretrain(config, workdir, setup)
    if config.mode in ("linear_probe", "all"):
      linear_probe(config, workdir, setup)
    if config.mode in ("eval", "all"):
      evaluate(config, workdir, setup)


def user_errors() -> tuple[type[Exception], ...]:
  """The errors a user fixes by changing a config, a flag or a file: printed in one line, no traceback."""
  from dscl_jax.config.validation import ConfigError
  from dscl_jax.core.build import StaleProbe
  from dscl_jax.core.loop import Diverged
  from dscl_jax.runtime.checkpoint import CheckpointWriteError, DamagedCheckpoint, ShapeMismatch
  from dscl_jax.runtime.workdir import ConfigChanged, WorkdirLocked

  return (
    ConfigError,
    ConfigChanged,
    WorkdirLocked,
    Diverged,
    DamagedCheckpoint,
    ShapeMismatch,
    StaleProbe,
    CheckpointWriteError,
    FileNotFoundError,
  )


def unknown_override(argv) -> str | None:
  """The first `--config.<field>` of `argv` whose field the config schema does not have, described in one
  line with the closest known names; None if every overridden field exists."""
  from dscl_jax.config import schema

  known = schema.known_fields()
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    field = arg[len("--config.") :].split("=", 1)[0]
    if field not in known:
      close = schema.closest_fields(field)
      hint = f"; did you mean {' or '.join(close)}?" if close else ""
      return f"{arg}: the config has no field {field!r}{hint}"
  return None


# The package fsspec needs for each remote scheme etils.epath routes to it (without TensorFlow installed).
FSSPEC_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}


def config_argument(argv) -> str | None:
  """The value of `--config` in `argv` (either `--config=x` or `--config x`), None if absent."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      return arg[len("--config=") :]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _binds_get_config(tree: ast.Module) -> bool:
  """Whether a module's top level defines, assigns or imports the name `get_config` (or star-imports)."""
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "get_config":
      return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      if any(isinstance(t, ast.Name) and t.id == "get_config" for t in targets):
        return True
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      if any(a.name == "*" or (a.asname or a.name) == "get_config" for a in node.names):
        return True
  return False


def config_file_problem(value: str) -> str | None:
  """What is wrong with the `--config` file, in one line, found without running it: missing, unreadable,
  a syntax error (file, line, text) or no `get_config`. None if it looks loadable.

  ml_collections would report the first two as a 40-line "Failed loading" list or a 50-line traceback,
  and only once the config is first read, after JAX has started."""
  path = value.split(":", 1)[0]  # ml_collections passes what follows a colon to get_config
  if not os.path.isfile(path):
    cause = "is a directory, not a config file" if os.path.isdir(path) else "no such file"
    return f"--config {path}: {cause} (working directory {os.getcwd()})"
  try:
    with open(path, "rb") as f:
      source = f.read()
    tree = ast.parse(source, filename=path)
  except SyntaxError as error:
    text = (error.text or "").strip()
    return f"--config {path}: syntax error at line {error.lineno}: {error.msg}: {text!r}"
  except (OSError, ValueError) as error:  # unreadable, or a NUL byte / bad encoding
    return f"--config {path}: cannot be read: {error}"
  if not _binds_get_config(tree):
    return f"--config {path}: defines no get_config(); a config file's get_config() returns its ConfigDict"
  return None


def config_value_problem(value: str, config) -> str | None:
  """One line if `config`, what `get_config()` of the `--config` file returned, is not a ConfigDict."""
  import ml_collections

  if config is None or isinstance(config, ml_collections.ConfigDict):
    return None
  shown = repr(config)
  shown = shown if len(shown) <= 80 else shown[:77] + "..."
  return (
    f"--config {value.split(':', 1)[0]}: get_config() returned a {type(config).__name__} ({shown}), "
    f"not an ml_collections.ConfigDict"
  )


def loaded_config_problem(value: str) -> str | None:
  """`config_value_problem` for the `--config` file loaded again, when absl failed before holding it."""
  from dscl_jax.config import schema

  try:
    config = schema.load_config_file(value.split(":", 1)[0])
  except Exception:  # the file's own error: absl's message stands
    return None
  return config_value_problem(value, config)


def workdir_problem(workdir: str) -> str | None:
  """One line if etils.epath cannot reach `workdir`'s scheme (`gs://` without gcsfs, ...), before anything
  is computed: else the first write, after compiling, fails in a 50-line traceback."""
  if "://" not in workdir:
    return None
  from etils import epath
  from etils.epath import backend

  try:
    chosen = epath.Path(workdir)._backend  # TensorFlow's gfile when installed, else fsspec
  except NotImplementedError as error:
    return f"--workdir {workdir}: {error}"
  if chosen is not backend.fsspec_backend:
    return None
  import fsspec

  scheme = workdir.split("://", 1)[0]
  try:
    fsspec.get_filesystem_class(scheme)  # imports the implementation without connecting
  except ImportError:
    package = FSSPEC_PACKAGES.get(scheme, f"the fsspec implementation for {scheme}://")
    return f"--workdir {workdir}: {scheme}:// paths need {package}, which is not installed; pip install {package}"
  except ValueError as error:
    return f"--workdir {workdir}: {error}"
  return None


def parse_flags(argv):
  """absl's parser, with the `--config` file checked first and an unknown `--config.<field>` reported in
  one line of our own (ml_collections raises a KeyError / AttributeError deep inside its override code)."""
  value = config_argument(argv)
  problem = value and config_file_problem(value)
  if problem:
    sys.exit(f"error: {problem}")
  try:
    parsed = flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    # An override of a config that is not a ConfigDict fails here too (before the flag holds it): name the
    # config, not the field.
    sys.exit(f"error: {(value and loaded_config_problem(value)) or unknown_override(argv) or error}")
  except flags.Error as error:
    sys.exit(f"error: {error}\nPass --help for the flags.")
  problem = (value and config_value_problem(value, flags.FLAGS["config"].value)) or (
    _WORKDIR.value and workdir_problem(_WORKDIR.value)
  )
  if problem:
    sys.exit(f"error: {problem}")
  return parsed


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; our own progress lines are printed, so keep absl at WARNING.
    logging.set_verbosity(logging.WARNING)
  # Imported here, after parse_flags has checked the config file and the workdir: it imports JAX.
  from dscl_jax.core import sharding

  sharding.maybe_initialize_distributed()
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except user_errors() as error:
    # A bad value, a changed config, a locked workdir, a diverged run, a damaged checkpoint, a full disk:
    # the message says what to change, a traceback would only bury it.
    print(f"error: {error}", file=sys.stderr, flush=True)
    if isinstance(error, OSError):
      # After a failed save, tensorstore callbacks still queued print "Event loop is closed" tracebacks
      # while the interpreter shuts down; the line above is the whole story.
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, sys.stderr.fileno())
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
