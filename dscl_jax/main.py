"""Command line: `python -m dscl_jax.main --config configs/<name>.py --workdir <dir> [--config.field=value ...]`.

`--config.mode` picks the job: `pretrain`, `linear_probe`, `eval`, or `all` (the three in order).
Rerunning a command resumes from the latest checkpoint of its job in `--workdir`.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from dscl_jax import sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file from configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("pretrain", "linear_probe", "eval", "all")


def run(config, workdir: str) -> None:
  # Imported here so `--help` and flag errors come back without loading JAX models and data code.
  from dscl_jax.evaluate import evaluate
  from dscl_jax.probe import linear_probe
  from dscl_jax.train import pretrain

  if config.mode not in MODES:
    raise ValueError(f"--config.mode={config.mode!r} must be one of {MODES}")
  if config.mode in ("pretrain", "all"):
    pretrain(config, workdir)
  if config.mode in ("linear_probe", "all"):
    linear_probe(config, workdir)
  if config.mode in ("eval", "all"):
    evaluate(config, workdir)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; our own progress lines are printed, so keep absl at WARNING.
    logging.set_verbosity(logging.WARNING)
  sharding.maybe_initialize_distributed()
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
