"""Rounds of 2-4 forked processes starting `WorkdirLock.acquire` together on one workdir; prints the
rounds that did not have exactly one holder, as JSON. Run by tests/runtime/test_workdir.py in its own
small interpreter: forking the test worker (JAX's runtime loaded, gigabytes mapped) costs ten times more.

  python tests/runtime/lock_contention.py DIR [--stale] [--no-link] [--rounds N]
"""

import argparse
import json
import multiprocessing
import os
import pathlib
import socket
import subprocess
import sys
import warnings

from dscl_jax.runtime import workdir

# JAX warns at every fork; the children never touch the XLA runtime (process_index is patched).
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
workdir.jax.process_index = lambda: 0  # forked children are process 0


def contend(path, tried, results, index):
  lock = workdir.WorkdirLock(path)
  tried.wait()  # all start together
  try:
    lock.acquire()
    results.put((index, "held"))
  except workdir.WorkdirLocked:
    results.put((index, "locked"))
  except Exception as error:  # reported to the parent, which names it
    results.put((index, f"{type(error).__name__}: {error}"))
  tried.wait()  # the holder keeps the lock until every contender has tried
  lock.release()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("directory")
  parser.add_argument("--stale", action="store_true", help="every round starts from a dead run's lock")
  parser.add_argument("--rounds", type=int, default=100)
  parser.add_argument("--no-link", action="store_true", help="os.link fails, as on some FUSE or SMB mounts")
  args = parser.parse_args()
  if args.no_link:

    def no_link(source, target):
      raise PermissionError(1, "Operation not permitted", source)

    workdir.os.link = no_link
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  stale_record = json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "x", "heartbeat": 0})
  context = multiprocessing.get_context("fork")
  results = context.Queue()
  wrong = []
  for round_ in range(args.rounds):
    n = 2 + round_ % 3
    path = pathlib.Path(args.directory) / f"round{round_}"
    if args.stale:
      path.mkdir(parents=True)
      (path / ".lock").write_text(stale_record)
    tried = context.Barrier(n)
    children = [context.Process(target=contend, args=(path, tried, results, i)) for i in range(n)]
    for child in children:
      child.start()
    outcomes = [o for _, o in sorted(results.get(timeout=60) for _ in children)]
    for child in children:
      child.join(timeout=60)
    if outcomes.count("held") != 1 or any(o not in ("held", "locked") for o in outcomes):
      wrong.append([round_, outcomes])
    elif os.path.exists(path / ".lock"):
      wrong.append([round_, "the holder did not release the lock"])
  print(json.dumps(wrong))


if __name__ == "__main__":
  main()
