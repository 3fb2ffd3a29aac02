"""A workdir holds one run at a time, and a rerun may not silently change what it trains."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dscl_jax.config.schema import base_config
from dscl_jax.runtime import workdir
from tests import TESTS_DIR


def config():
  return base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")


def fake_checkpoint(job_dir):
  (job_dir / "checkpoints" / "10").mkdir(parents=True)


def test_changed_training_fields_are_refused_then_allowed(tmp_path, capsys):
  job_dir = tmp_path / "pretrain"
  first = config()
  workdir.check_config(first, job_dir, "pretrain")
  fake_checkpoint(job_dir)

  again = config()
  again.train.log_every = 7  # does not change the result: always allowed
  again.train.checkpoint_every = 9
  again.data.root = "/elsewhere"
  again.mesh.num_devices = 8
  workdir.check_config(again, job_dir, "pretrain")

  changed = config()
  changed.train.base_lr = 0.05
  changed.moco.queue_size = 1024
  with pytest.raises(workdir.ConfigChanged) as error:
    workdir.check_config(changed, job_dir, "pretrain")
  message = str(error.value)
  assert "changed: moco.queue_size: 65536 -> 1024; train.base_lr: 0.1 -> 0.05." in message
  assert "--config.allow_config_change=True" in message
  assert json.loads((job_dir / "config.json").read_text())["train"]["base_lr"] == 0.1  # not overwritten

  changed.allow_config_change = True
  workdir.check_config(changed, job_dir, "pretrain")
  assert "resuming with a changed config (allow_config_change): moco.queue_size" in capsys.readouterr().out
  assert json.loads((job_dir / "config.json").read_text())["train"]["base_lr"] == 0.05
  log = [json.loads(line) for line in (job_dir / "config_changes.jsonl").read_text().splitlines()]
  assert log[0]["changes"][1] == {"field": "train.base_lr", "old": 0.1, "new": 0.05}


def test_a_field_added_later_reads_as_its_old_behaviour_in_older_saved_configs(tmp_path):
  job_dir = tmp_path / "pretrain"
  workdir.check_config(config(), job_dir, "pretrain")
  fake_checkpoint(job_dir)
  saved = json.loads((job_dir / "config.json").read_text())
  del saved["data"]["val_per_class"]  # a run saved before the field existed
  (job_dir / "config.json").write_text(json.dumps(saved))
  workdir.check_config(config(), job_dir, "pretrain")  # 0 is what that run computed: it resumes

  (job_dir / "config.json").write_text(json.dumps(saved))
  changed = config()
  changed.data.val_per_class = 50
  with pytest.raises(workdir.ConfigChanged, match=r"data.val_per_class: 0 -> 50"):
    workdir.check_config(changed, job_dir, "pretrain")


def test_without_checkpoints_the_config_is_simply_replaced(tmp_path):
  job_dir = tmp_path / "pretrain"
  workdir.check_config(config(), job_dir, "pretrain")
  changed = config()
  changed.train.base_lr = 0.05  # the earlier run never checkpointed: nothing to mix with
  workdir.check_config(changed, job_dir, "pretrain")
  assert json.loads((job_dir / "config.json").read_text())["train"]["base_lr"] == 0.05


def test_the_probe_ignores_pretraining_fields_but_not_its_own(tmp_path):
  job_dir = tmp_path / "probe"
  workdir.check_config(config(), job_dir, "probe")
  fake_checkpoint(job_dir)
  other = config()
  other.moco.queue_size = 4096
  other.train.base_lr = 0.3
  workdir.check_config(other, job_dir, "probe")
  other.probe.lr = 1.0
  with pytest.raises(workdir.ConfigChanged, match=r"probe.lr: 10.0 -> 1.0"):
    workdir.check_config(other, job_dir, "probe")


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path):
  with workdir.WorkdirLock(tmp_path):
    holder = json.loads((tmp_path / ".lock").read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(workdir.WorkdirLocked, match=rf"in use by pid {os.getpid()} on .*delete {tmp_path}/.lock"):
      workdir.WorkdirLock(tmp_path).acquire()
  assert not (tmp_path / ".lock").exists()  # released


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  pid = int(dead.stdout)  # that process has exited
  (tmp_path / ".lock").write_text(
    json.dumps({"host": socket.gethostname(), "pid": pid, "started": "x", "heartbeat": 0})
  )
  with workdir.WorkdirLock(tmp_path):
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  assert f"taking over the stale lock {tmp_path}/.lock (process {pid} is gone)" in capsys.readouterr().out


def test_a_lock_from_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path):
  (tmp_path / ".lock").write_text(
    json.dumps({"host": "another-host", "pid": 1, "started": "x", "heartbeat": time.time()})
  )
  with pytest.raises(workdir.WorkdirLocked):
    workdir.WorkdirLock(tmp_path, stale_seconds=600).acquire()
  (tmp_path / ".lock").write_text(
    json.dumps({"host": "another-host", "pid": 1, "started": "x", "heartbeat": time.time() - 3600})
  )
  lock = workdir.WorkdirLock(tmp_path, stale_seconds=600)
  lock.acquire()
  lock.release()


def contention(directory, *args):
  """The rounds of tests/runtime/lock_contention.py that did not have exactly one holder."""
  out = subprocess.run(
    [sys.executable, os.path.join(TESTS_DIR, "runtime", "lock_contention.py"), str(directory), *args],
    capture_output=True,
    text=True,
    timeout=600,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
def test_simultaneous_starts_give_the_lock_to_exactly_one(tmp_path, stale):
  """100 rounds of 2-4 processes starting together on one workdir, empty or holding a dead run's lock that
  they all find stale: each round exactly one holds the lock (the code before issue 25 let two hold it
  in about 10 rounds of 100, the fresh case). The rounds run in tests/runtime/lock_contention.py."""
  wrong = contention(tmp_path, "--rounds", "100", *(["--stale"] if stale else []))
  assert not wrong, f"{len(wrong)} of 100 rounds did not have exactly one holder: {wrong[:5]}"


def test_an_empty_lock_is_not_taken_over_but_lasting_garbage_is(tmp_path, capsys):
  lock = tmp_path / ".lock"
  lock.write_text("")  # another run between creating the file and writing its record (older versions)
  with pytest.raises(workdir.WorkdirLocked, match=rf"{tmp_path}/.lock: is not readable \(0 bytes, 0s old\)"):
    workdir.WorkdirLock(tmp_path).acquire()
  lock.write_text('{"host": "h", "pi')
  old = time.time() - 3600
  os.utime(lock, (old, old))
  with workdir.WorkdirLock(tmp_path):
    assert json.loads(lock.read_text())["pid"] == os.getpid()
  assert f"taking over the stale lock {lock} (it is unreadable and 3600s old)" in capsys.readouterr().out


def test_without_hard_links_simultaneous_starts_still_give_the_lock_to_one(tmp_path):
  """As on some FUSE or SMB mounts, where os.link fails: the lock falls back to an exclusive create, and 30
  rounds of 2-4 simultaneous starts still have exactly one holder each."""
  wrong = contention(tmp_path, "--rounds", "30", "--no-link")
  assert not wrong, f"{len(wrong)} of 30 rounds did not have exactly one holder: {wrong[:5]}"
