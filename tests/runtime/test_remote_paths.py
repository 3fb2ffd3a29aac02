"""A remote workdir stays remote: every file the jobs write goes through etils.epath, and the checkpoint
directory reaches orbax as the same URI, never as a local path like `./s3:/bucket/run`.

The remote filesystem is fsspec's in-memory one registered for the `s3` protocol, which epath routes to
fsspec (offline: nothing leaves the process). orbax writes array data with tensorstore, which would go to
the network for `s3://`, so its CheckpointManager is replaced by a recorder of the directory it receives.
"""

import json
import os

import fsspec
import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from dscl_jax.config.schema import base_config
from dscl_jax.runtime import checkpoint, files, workdir
from dscl_jax.runtime.metrics import Progress


class FakeS3(MemoryFileSystem):
  """An in-memory filesystem answering to s3:// (its own store, emptied per test)."""

  protocol = ("s3",)
  store = {}
  pseudo_dirs = [""]

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    return MemoryFileSystem._strip_protocol(path[len("s3://") :] if path.startswith("s3://") else path)


@pytest.fixture
def remote(monkeypatch, tmp_path):
  FakeS3.store.clear()
  FakeS3.pseudo_dirs[:] = [""]
  fsspec.register_implementation("s3", FakeS3, clobber=True)
  monkeypatch.chdir(tmp_path)  # a path turned local would appear here as ./s3:
  yield epath.Path("s3://bucket/run")
  assert not any(name.startswith("s3") for name in os.listdir(tmp_path)), os.listdir(tmp_path)


def read(path):
  return fsspec.filesystem("s3").cat_file(str(path))


def test_epath_routes_s3_to_the_in_memory_filesystem(remote):
  (remote / "probe.txt").write_text("hello")
  assert read(remote / "probe.txt") == b"hello"
  assert not files.is_local(remote)


def test_config_lock_metrics_and_json_go_to_the_remote_workdir(remote):
  config = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")
  with workdir.WorkdirLock(remote):
    holder = json.loads(read(remote / ".lock"))
    assert holder["pid"] == os.getpid()
    with pytest.raises(workdir.WorkdirLocked):
      workdir.WorkdirLock(remote).acquire()
    workdir.check_config(config, remote / "pretrain", "pretrain")
    assert json.loads(read(remote / "pretrain" / "config.json"))["train"]["base_lr"] == 0.1

    progress = Progress("pretrain", remote / "pretrain", total_steps=10, steps_per_epoch=5, batch_size=8, start_step=0)
    progress.log(5, {"loss": np.float32(1.5), "lr": np.float32(0.1)})
    progress.log(10, {"loss": np.float32(1.25), "lr": np.float32(0.05)})
    progress.close()
    lines = [json.loads(line) for line in read(remote / "pretrain" / "metrics.jsonl").decode().splitlines()]
    assert [(r["step"], r["loss"]) for r in lines] == [(5, 1.5), (10, 1.25)]
    events = [p for p in (remote / "pretrain").iterdir() if "tfevents" in p.name]
    assert len(events) == 1 and len(read(events[0])) > 100

    files.write_json(remote / "eval_test.json", {"overall": 42.0})
    assert json.loads(read(remote / "eval_test.json")) == {"overall": 42.0}
  assert not (remote / ".lock").exists()  # released


def test_a_resumed_remote_metrics_file_keeps_its_earlier_lines(remote):
  first = files.AppendFile(remote / "metrics.jsonl")
  first.write("a\n")
  first.close()
  second = files.AppendFile(remote / "metrics.jsonl")
  second.write("b\n")
  second.close()
  assert read(remote / "metrics.jsonl") == b"a\nb\n"


def test_a_resumed_remote_run_replaces_the_records_logged_after_its_checkpoint(remote):
  for start_step, steps in ((0, [1, 2, 3, 4, 5]), (3, [4, 5, 6])):  # killed at 5, checkpoint at 3
    progress = Progress("probe", remote, total_steps=6, steps_per_epoch=3, batch_size=8, start_step=start_step)
    for step in steps:
      progress.log(step, {"loss": np.float32(step)})
    progress.close()
  lines = [json.loads(line) for line in read(remote / "metrics.jsonl").decode().splitlines()]
  assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]


def test_the_checkpoint_directory_reaches_orbax_unchanged(remote, monkeypatch):
  received = []

  class Recorder:
    def __init__(self, directory, options=None, **kwargs):
      received.append(directory)

    def all_steps(self):
      return []

  monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", Recorder)
  mgr = checkpoint.manager(remote / "pretrain" / "checkpoints")
  assert mgr.restore_latest({"x": np.zeros(2)}) is None
  assert len(received) == 1
  assert isinstance(received[0], epath.Path) and os.fspath(received[0]) == "s3://bucket/run/pretrain/checkpoints"
  with pytest.raises(FileNotFoundError, match="s3://bucket/run/pretrain/checkpoints"):
    checkpoint.find_checkpoint_dir(remote, "pretrain")
