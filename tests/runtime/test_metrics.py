"""metrics.jsonl holds one record per logged step, in order, across a kill and resume."""

import json

import numpy as np

from dscl_jax.runtime.metrics import Progress, drop_records_after


def log_steps(directory, start_step, steps):
  progress = Progress("pretrain", directory, total_steps=6, steps_per_epoch=3, batch_size=8, start_step=start_step)
  for step in steps:
    progress.log(step, {"loss": np.float32(step)})
  progress.close()


def records(directory):
  return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_a_resumed_run_replaces_the_records_logged_after_its_checkpoint(tmp_path):
  log_steps(tmp_path, 0, [1, 2, 3, 4, 5])  # killed after step 5, last checkpoint at step 3
  log_steps(tmp_path, 3, [4, 5, 6])
  assert [(r["step"], r["loss"]) for r in records(tmp_path)] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]


def test_a_fresh_start_over_an_uncheckpointed_run_drops_all_of_it(tmp_path):
  log_steps(tmp_path, 0, [1, 2])
  log_steps(tmp_path, 0, [1])
  assert [r["step"] for r in records(tmp_path)] == [1]


def test_a_line_cut_by_a_kill_is_dropped_and_nothing_else(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "lo')
  assert drop_records_after(path, 2) == 1
  assert path.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n'
  assert drop_records_after(path, 2) == 0
  assert drop_records_after(tmp_path / "absent.jsonl", 2) == 0
