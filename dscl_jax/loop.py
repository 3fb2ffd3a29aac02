"""The loop every training job runs: resume, step, log, checkpoint, stop cleanly on a signal."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np

from dscl_jax import checkpoint, sharding
from dscl_jax.progress import Progress, StopRequest


def resume(mgr, state, job: str):
  """The latest checkpoint of `mgr` restored into `state`'s structure, or `state` itself if there is none."""
  restored = checkpoint.restore_latest(mgr, state)
  if restored is None:
    return state
  print(f"[{job}] resuming from step {int(restored.step)} ({mgr.directory})", flush=True)
  return restored


def run(job: str, state, step_fn: Callable, batches: Iterator[dict[str, np.ndarray]], *, mesh, mgr,
        progress: Progress, start_step: int, total_steps: int, log_every: int, checkpoint_every: int,
        after_step: Callable[[int, Any], None] | None = None):
  """Steps `state` from `start_step` to `total_steps` with `step_fn(state, global_batch)`.

  Logs every `log_every` steps (and fails on a non-finite loss), checkpoints every `checkpoint_every`
  steps and at the end, calls `after_step(done, state)` after each step, and on SIGTERM / Ctrl-C
  checkpoints the finished step and exits; rerunning the same command resumes there.
  """
  with StopRequest() as stop:
    for step in range(start_step, total_steps):
      state, metrics = step_fn(state, sharding.to_global(next(batches), mesh))
      done = step + 1
      if step == start_step:
        jax.block_until_ready(metrics)
        print(f"[{job}] first step (with compilation) took {progress.elapsed():.1f}s", flush=True)
        progress.start_timing(done)
      if done % log_every == 0 or done == total_steps:
        record = progress.log(done, metrics)
        if not np.isfinite(record["loss"]):
          raise FloatingPointError(f"[{job}] loss is {record['loss']} at step {done}; lower the learning rate")
      if after_step is not None:
        after_step(done, state)
      if done % checkpoint_every == 0 or done == total_steps or stop.requested:
        checkpoint.save(mgr, done, state, force=True)
      if stop.requested:
        mgr.wait_until_finished()
        raise SystemExit(f"[{job}] stopped at step {done}; rerun the same command to resume")
  mgr.wait_until_finished()
  print(f"[{job}] done: {total_steps} steps in {progress.elapsed():.0f}s; checkpoints in {mgr.directory}",
        flush=True)
  return state
