"""Command line: `python -m dscl_jax.main --config configs/<name>.py --workdir <dir> [--config.field=value ...]`.

`--config.mode` picks the job: `pretrain`, `linear_probe`, `eval`, or `all` (the three in order).
`--config.dry_run=True` instead compiles the pretrain step on abstract inputs and prints its size.
Rerunning a command resumes from the latest checkpoint of its job in `--workdir`. The whole config is
validated before any data is read or anything compiled; the workdir is locked for the run's duration.
`--workdir` may be any path etils.epath and orbax understand (a local directory, `gs://bucket/dir`).
"""

from __future__ import annotations

import contextlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dscl_jax.core import sharding

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
  from dscl_jax.runtime.interrupt import StopAtOnce
  from dscl_jax.runtime.workdir import WorkdirLock

  validation.validate(config, len(jax.devices()), jax.process_count())
  if config.dry_run:
    from dscl_jax.jobs.dry_run import dry_run

    dry_run(config)  # touches neither the data nor the workdir
    return
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
  from dscl_jax.runtime.checkpoint import DamagedCheckpoint, ShapeMismatch
  from dscl_jax.runtime.workdir import ConfigChanged, WorkdirLocked

  return (
    ConfigError,
    ConfigChanged,
    WorkdirLocked,
    Diverged,
    DamagedCheckpoint,
    ShapeMismatch,
    StaleProbe,
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


def parse_flags(argv):
  """absl's parser, with an unknown `--config.<field>` reported in one line of our own (ml_collections
  raises a KeyError / AttributeError deep inside its override code)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    sys.exit(f"error: {unknown_override(argv) or error}")
  except flags.Error as error:
    sys.exit(f"error: {error}\nPass --help for the flags.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; our own progress lines are printed, so keep absl at WARNING.
    logging.set_verbosity(logging.WARNING)
  sharding.maybe_initialize_distributed()
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except user_errors() as error:
    # A bad value, a changed config, a locked workdir, a diverged run, a damaged checkpoint: the message
    # says what to change, a traceback would only bury it.
    sys.exit(f"error: {error}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
