"""SIGTERM / Ctrl-C: for a training job, a request to checkpoint and stop at the next step boundary
(`StopRequest`); for a job with nothing to save, a prompt stop in one line (`StopAtOnce`)."""

from __future__ import annotations

import signal
import threading


class StopRequest:
  """Turns the first SIGTERM / SIGINT into a request to checkpoint and stop at the next step boundary.

  A second signal falls back to the default behaviour (immediate exit).
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested:
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      raise KeyboardInterrupt
    self.requested = True
    print(f"received signal {signum}: saving a checkpoint at the end of this step, then stopping", flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


class StopAtOnce:
  """Turns the first SIGTERM / SIGINT into `SystemExit("[job] stopped by signal N before finishing;
  <advice>")` raised where the job is, so context managers unwind (the workdir lock is released) and the
  command ends with that line and no traceback. SIGTERM's default action would end the process without
  unwinding, and Ctrl-C's KeyboardInterrupt prints a traceback.

  A second signal, while unwinding, falls back to the default behaviour (immediate exit). Outside the main
  thread, where Python cannot install signal handlers, this does nothing.
  """

  def __init__(self, job: str, advice: str):
    self.job, self.advice = job, advice
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    for sig in self._previous:
      signal.signal(sig, signal.SIG_DFL)
    raise SystemExit(f"[{self.job}] stopped by signal {signum} before finishing; {self.advice}")

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False
