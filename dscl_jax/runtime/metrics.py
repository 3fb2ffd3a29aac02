"""What a run reports: log lines on stdout (process 0 only), one line per log interval with throughput
and ETA, the same record appended to `metrics.jsonl`, and TensorBoard scalars (event files beside it,
written without TensorFlow)."""

from __future__ import annotations

import json
import math
import time

import jax
import numpy as np
from etils import epath

from dscl_jax.runtime.files import AppendFile, replace_text
from dscl_jax.runtime.tensorboard import EventWriter


def log(job: str, message: str) -> None:
  """`[job] message` on stdout, from process 0 only: a multi-process run prints each line once. Errors
  are not logged through here; every process raises its own."""
  if jax.process_index() == 0:
    print(f"[{job}] {message}", flush=True)


def drop_records_after(path, step: int) -> int:
  """Rewrites the JSON-lines file `path` without its records of steps after `step`; returns how many
  lines it dropped. A line that does not parse (cut by a kill mid-write) goes too."""
  path = epath.Path(path)
  if not path.exists():
    return 0
  lines = path.read_text().splitlines(keepends=True)
  kept = [line for line in lines if _step(line) <= step]
  if len(kept) != len(lines):
    replace_text(path, "".join(kept))
  return len(lines) - len(kept)


def _step(line: str) -> float:
  """The record's step; infinity for a line that is no record, so that it is dropped."""
  try:
    record = json.loads(line)
  except ValueError:
    return math.inf
  return record["step"] if isinstance(record, dict) and isinstance(record.get("step"), int) else math.inf


class Progress:
  """Prints `job step/total (epoch) metrics, img/s, ETA`, appends the same record to `<dir>/metrics.jsonl`
  and writes its numbers as TensorBoard scalars into `<dir>` (process 0 only).

  A run resumed at `start_step` logs again the steps its predecessor logged after that checkpoint, so
  those records are dropped from metrics.jsonl first: it holds one record per step across resumes.
  TensorBoard is left alone: each run writes its own event file, and TensorBoard handles a repeated step."""

  def __init__(self, job: str, directory, total_steps: int, steps_per_epoch: int, batch_size: int, start_step: int):
    self.job, self.total, self.steps_per_epoch, self.batch_size = job, total_steps, steps_per_epoch, batch_size
    self.path = epath.Path(directory) / "metrics.jsonl"
    self.last_step, self.last_time = start_step, None
    self.start_time = time.time()
    self._jsonl = self._events = None
    if jax.process_index() == 0:
      drop_records_after(self.path, start_step)  # before AppendFile, which reads a remote file's lines
      self._jsonl = AppendFile(self.path)
      self._events = EventWriter(directory)

  def start_timing(self, step: int) -> None:
    """Call after the first (compiling) step so throughput excludes compile time."""
    self.last_step, self.last_time = step, time.time()

  def log(self, step: int, metrics: dict) -> dict:
    values = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
    now = time.time()
    record = {"step": step, "epoch": round(step / self.steps_per_epoch, 3), **values}
    line = f"step {step}/{self.total} (epoch {step / self.steps_per_epoch:.2f})"
    line += "".join(f" {k} {v:.4g}" for k, v in values.items())
    if self.last_time is not None and step > self.last_step:
      rate = (step - self.last_step) / (now - self.last_time)
      record["images_per_second"] = rate * self.batch_size
      line += f" | {rate * self.batch_size:.0f} img/s, ETA {format_seconds((self.total - step) / rate)}"
      self.last_step, self.last_time = step, now
    log(self.job, line)
    if self._jsonl is not None:
      self._jsonl.write(json.dumps(record) + "\n")
      self._events.scalars(step, {k: v for k, v in record.items() if k != "step"})
    return record

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._events.close()

  def elapsed(self) -> float:
    return time.time() - self.start_time


def format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
