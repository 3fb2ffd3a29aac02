"""SIGTERM / Ctrl-C as a request to checkpoint and stop at the next step boundary."""

from __future__ import annotations

import signal


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
