"""A checkpoint that cannot be written fails at once, in one line, with the last intact step kept: a full or
unwritable folder is refused before anything is compiled, a save that fails mid-run (disk full, folder
made immutable) stops the run at the next step, and the command line prints one line and no traceback."""

import errno
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from dscl_jax.core import loop, sharding
from dscl_jax.runtime import checkpoint
from dscl_jax.runtime.metrics import Progress
from tests import REPO_ROOT


@struct.dataclass
class TinyState:
  step: jax.Array
  weights: jax.Array
  skipped_total: jax.Array


def tiny_state():
  return TinyState(step=jnp.int32(0), weights=jnp.zeros((256,), jnp.float32), skipped_total=jnp.int32(0))


def tiny_step(state, batch):
  loss = jnp.mean(batch["x"])
  new = state.replace(step=state.step + 1, weights=state.weights + 1.0)
  return new, {"loss": loss, "skipped": jnp.int32(0), "skipped_in_a_row": jnp.int32(0)}


def batches():
  while True:
    yield {"x": np.ones((8, 1), np.float32)}


def run_tiny(tmp_path, mgr, total_steps=12, checkpoint_every=3, step_fn=tiny_step):
  state = loop.resume(mgr, tiny_state(), "test")
  start = int(state.step)
  progress = Progress("test", tmp_path / "job", total_steps, 4, 8, start)
  return loop.run(
    "test",
    state,
    step_fn,
    batches(),
    mesh=sharding.make_mesh(),
    mgr=mgr,
    progress=progress,
    start_step=start,
    total_steps=total_steps,
    log_every=100,
    checkpoint_every=checkpoint_every,
  )


def assert_steps_intact(directory, expected_last):
  restored = checkpoint.Checkpoints(directory).restore_latest(checkpoint.abstract_like(tiny_state()))
  assert restored is not None
  state, step = restored
  assert step == expected_last and int(state.step) == expected_last
  np.testing.assert_array_equal(np.asarray(state.weights), np.full((256,), expected_last, np.float32))


def immutable(path):
  """`chattr +i` on `path` (refuses writes even to root), or skip where the filesystem cannot."""
  if shutil.which("chattr") is None:
    pytest.skip("chattr is not installed")
  done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
  if done.returncode != 0:
    pytest.skip(f"chattr +i not supported here: {done.stderr.strip()}")


def mutable(path):
  subprocess.run(["chattr", "-i", str(path)], check=False)


def test_a_save_refused_for_space_stops_the_run_at_that_step_and_keeps_the_earlier_ones(tmp_path, monkeypatch):
  mgr = checkpoint.Checkpoints(tmp_path / "ckpt", job="test")
  save = mgr._mgr.save

  def full_at_9(step, *args, **kwargs):
    if step == 9:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "ckpt" / "9.orbax-checkpoint-tmp"))
    return save(step, *args, **kwargs)

  monkeypatch.setattr(mgr._mgr, "save", full_at_9)
  with pytest.raises(checkpoint.CheckpointWriteError) as raised:
    run_tiny(tmp_path, mgr)
  assert str(raised.value) == (
    f"saving step 9 to {tmp_path / 'ckpt'} failed: [Errno 28] No space left on device; steps up to 6 are "
    f"intact in {tmp_path / 'ckpt'}"
  )
  assert_steps_intact(tmp_path / "ckpt", 6)


def test_an_asynchronous_save_that_fails_stops_the_run_at_the_next_step(tmp_path, monkeypatch):
  """tensorstore reports a full disk from the background as a ValueError carrying the OS error code;
  the run must stop at the step after that save, not at the next save three steps later."""
  mgr = checkpoint.Checkpoints(tmp_path / "ckpt", job="test")
  save, wait = mgr._mgr.save, mgr._mgr.wait_until_finished
  saved, steps_run = [], []

  def recorded(step, *args, **kwargs):
    done = save(step, *args, **kwargs)  # orbax's save waits for the previous one itself: record after
    saved.append(step)
    return done

  def failed_after_6():
    wait()
    if saved[-1:] == [6]:
      saved.append(None)  # orbax raises a background error once
      raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device [os_error_code='28']")

  def counted(state, batch):
    steps_run.append(int(state.step) + 1)
    return tiny_step(state, batch)

  monkeypatch.setattr(mgr._mgr, "save", recorded)
  monkeypatch.setattr(mgr._mgr, "wait_until_finished", failed_after_6)
  monkeypatch.setattr(mgr._mgr, "is_saving_in_progress", lambda: False)
  with pytest.raises(checkpoint.CheckpointWriteError) as raised:
    run_tiny(tmp_path, mgr, step_fn=counted)
  assert str(raised.value) == (
    f"saving step 6 to {tmp_path / 'ckpt'} failed: [Errno 28] No space left on device; steps up to 3 are "
    f"intact in {tmp_path / 'ckpt'}"
  )
  assert steps_run[-1] == 7  # stopped one step after the failed save


def test_a_folder_made_unwritable_mid_run_fails_at_the_next_save_without_hanging(tmp_path):
  directory = tmp_path / "ckpt"
  mgr = checkpoint.Checkpoints(directory, job="test")
  original = mgr.save

  def lock_after_first(step, state):
    original(step, state)
    if step == 3:
      mgr.wait_until_finished()
      immutable(directory)

  mgr.save = lock_after_first
  start = time.monotonic()
  try:
    with pytest.raises(checkpoint.CheckpointWriteError) as raised:
      run_tiny(tmp_path, mgr)
  finally:
    mutable(directory)
  assert time.monotonic() - start < 60  # orbax's background directory creation would wait 300 s
  message = str(raised.value)
  assert message.startswith(f"saving step 6 to {directory} failed: [Errno 1] Operation not permitted"), message
  assert message.endswith(f"steps up to 3 are intact in {directory}")
  assert_steps_intact(directory, 3)


def test_preflight_refuses_an_unwritable_folder_and_a_full_disk(tmp_path, monkeypatch):
  state = tiny_state()
  directory = tmp_path / "job" / "checkpoints"
  checkpoint.preflight(directory, state, job="pretrain")  # creates it, leaves no probe behind
  assert list(directory.iterdir()) == []

  needed = 256 * 4 + 4 + 4 + checkpoint.METADATA_MARGIN
  usage = shutil.disk_usage(directory)
  monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=needed - 1))
  with pytest.raises(checkpoint.CheckpointWriteError) as raised:
    checkpoint.preflight(directory, state, job="pretrain")
  assert str(raised.value).startswith(
    f"{directory} has {needed - 1} bytes free but one pretrain checkpoint needs about {needed} "
  )
  monkeypatch.undo()

  immutable(directory)
  try:
    with pytest.raises(checkpoint.CheckpointWriteError) as raised:
      checkpoint.preflight(directory, state, job="pretrain")
  finally:
    mutable(directory)
  assert str(raised.value) == (
    f"cannot write to {directory}: [Errno 1] Operation not permitted: '{directory / '.write_probe_0'}'"
  )


def run_main(workdir, *overrides, timeout=300):
  command = [sys.executable, "-m", "dscl_jax.main", "--config", "configs/digits_lt_dscl.py", "--workdir", str(workdir)]
  start = time.monotonic()
  out = subprocess.run(
    [*command, "--config.mode=pretrain", *overrides],
    cwd=REPO_ROOT,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return out, time.monotonic() - start


def test_an_immutable_workdir_fails_in_one_line_before_any_work(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  immutable(workdir)
  try:
    out, seconds = run_main(workdir)
  finally:
    mutable(workdir)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines() == [
    f"error: cannot write to {workdir}: [Errno 1] Operation not permitted: '{workdir / '.write_probe_0'}'"
  ], out.stderr[-3000:]
  assert seconds < 60


def test_an_immutable_checkpoints_folder_is_refused_before_compiling(tmp_path):
  directory = tmp_path / "run" / "pretrain" / "checkpoints"
  directory.mkdir(parents=True)
  immutable(directory)
  try:
    out, seconds = run_main(tmp_path / "run", timeout=120)
  finally:
    mutable(directory)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines() == [
    f"error: cannot write to {directory}: [Errno 1] Operation not permitted: '{directory / '.write_probe_0'}'"
  ], out.stderr[-3000:]
  assert "first step" not in out.stdout  # nothing compiled
  assert seconds < 60


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 3.7 MB tmpfs: room for two checkpoints of the digits model, not three.

  A checkpoint of the digits model takes 1.46 MB (orbax's data files vary by a few kB between steps): two
  take 2.93 MB and three 4.39 MB, so 3.7 MB leaves about 0.7 MB either side. (3 MB left 0.2 MB, and a
  run on CI filled it at the second save.)
  """
  mount = tmp_path / "tmpfs"
  mount.mkdir()
  done = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=3700k", "tmpfs", str(mount)], capture_output=True, text=True
  )
  if done.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
  yield mount
  subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_mid_run_fails_in_one_line_and_keeps_the_last_step(small_tmpfs, tmp_path):
  workdir = small_tmpfs / "run"
  out, seconds = run_main(workdir, "--config.train.checkpoint_every=20", "--config.train.log_every=1000")
  directory = workdir / "pretrain" / "checkpoints"
  assert out.returncode != 0
  assert out.stderr.strip().splitlines() == [
    f"error: saving step 60 to {directory} failed: [Errno 28] No space left on device; steps up to 40 are intact "
    f"in {directory}"
  ], out.stderr[-3000:]
  assert seconds < 120
  assert sorted(os.listdir(directory)) == ["20", "40"]  # the half-written step 60 is removed
  # Step 40 restores and verifies (its files and checksums) into the shapes it was saved with.
  mgr = checkpoint.Checkpoints(directory)
  template = {}
  for name, entry in mgr.stored_checksums(40).items():
    if not (name == "step" or name.startswith("params/")):
      continue  # dict templates cannot stand for the optimiser state's tuples
    *parents, leaf = name.split("/")
    node = template
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = np.zeros(entry["shape"], entry["dtype"])
  restored = mgr.restore_step(40, template, partial=True)
  assert int(restored["step"]) == 40 and restored["params"]
