"""The loop every training job runs: resume, step, log, checkpoint, stop cleanly on a signal or divergence."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np

from dscl_jax.core import sharding
from dscl_jax.runtime import checkpoint
from dscl_jax.runtime.interrupt import StopRequest
from dscl_jax.runtime.metrics import Progress, log

GUARD_METRICS = ("skipped", "skipped_in_a_row")


class Diverged(FloatingPointError):
  """Too many consecutive steps had a non-finite loss, gradient or state and were skipped."""


def resume(mgr: checkpoint.Checkpoints, state, job: str):
  """The newest intact checkpoint of `mgr` restored into `state`'s structure, or `state` itself if there
  is none. Damaged steps are reported and skipped (`Checkpoints.restore_latest`)."""
  restored = checkpoint.restore_latest(mgr, state)
  if restored is None:
    return state
  log(job, f"resuming from step {int(restored.step)} ({mgr.directory})")
  return restored


def run(
  job: str,
  state,
  step_fn: Callable,
  batches: Iterator[dict[str, np.ndarray]],
  *,
  mesh,
  mgr,
  progress: Progress,
  start_step: int,
  total_steps: int,
  log_every: int,
  checkpoint_every: int,
  max_skipped_steps: int = 20,
  after_step: Callable[[int, Any], None] | None = None,
):
  """Steps `state` from `start_step` to `total_steps` with `step_fn(state, global_batch)`.

  Logs every `log_every` steps, checkpoints every `checkpoint_every` steps and at the end (a save that
  cannot be written stops the run in one line, CheckpointWriteError, at the next step), calls
  `after_step(done, state)` after each step, and on SIGTERM / Ctrl-C checkpoints the finished step and
  exits; rerunning the same command resumes there. A step the numerical guard skipped is reported; after
  `max_skipped_steps` in a row the run stops (Diverged) without saving, naming the last good checkpoint.

  The guard's counter is read one step late, so the host never waits for the step it just dispatched.
  """
  pending = None  # (step number, its skipped_in_a_row counter) not yet read
  with StopRequest() as stop:
    for step in range(start_step, total_steps):
      state, metrics = step_fn(state, sharding.to_global(next(batches), mesh))
      done = step + 1
      mgr.check()  # a failed asynchronous save stops the run now, not at the next save
      if pending is not None:
        check_skips(job, *pending, max_skipped_steps, mgr)
      pending = (done, metrics["skipped_in_a_row"])
      if step == start_step:
        jax.block_until_ready(metrics)
        log(job, f"first step (with compilation) took {progress.elapsed():.1f}s")
        progress.start_timing(done)
      if done % log_every == 0 or done == total_steps:
        logged = {k: v for k, v in metrics.items() if k not in GUARD_METRICS}
        progress.log(done, {**logged, "skipped_steps": state.skipped_total})
      if after_step is not None:
        after_step(done, state)
      if done == total_steps:
        check_skips(job, *pending, max_skipped_steps, mgr)
      if done % checkpoint_every == 0 or done == total_steps or stop.requested:
        mgr.save(done, state)
      if stop.requested:
        mgr.wait_until_finished()
        progress.close()
        raise SystemExit(f"[{job}] stopped at step {done}; rerun the same command to resume")
  mgr.wait_until_finished()
  progress.close()
  log(job, f"done: {total_steps} steps in {progress.elapsed():.0f}s; checkpoints in {mgr.directory}")
  return state


def check_skips(job: str, step: int, in_a_row, max_skipped_steps: int, mgr: checkpoint.Checkpoints) -> None:
  """Report a skipped `step`; raise Diverged when `in_a_row` reaches `max_skipped_steps`."""
  in_a_row = int(in_a_row)
  if not in_a_row:
    return
  log(job, f"step {step}: non-finite loss, gradient or state; update skipped ({in_a_row} in a row)")
  if in_a_row < max_skipped_steps:
    return
  mgr.wait_until_finished()
  steps = mgr.steps()
  if steps:
    advice = (
      f"the last good checkpoint is {mgr.directory / str(steps[-1])} (no checkpoint holds a non-finite "
      f"value). Lower the learning rate and rerun with --config.allow_config_change=True to resume "
      f"from it."
    )
  else:
    advice = "there is no checkpoint yet. Lower the learning rate and rerun."
  raise Diverged(
    f"[{job}] stopped at step {step}: {in_a_row} steps in a row (from step {step - in_a_row + 1}) "
    f"had a non-finite loss, gradient or state and were skipped; {advice}"
  )
