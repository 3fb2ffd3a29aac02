"""Small file helpers over `etils.epath`, so that local and `gs://` workdirs behave the same.

Object stores cannot append to a file; `AppendFile` therefore appends in place on a local disk and, on a
remote path, keeps the file's bytes in memory and rewrites the whole object when flushed.
"""

from __future__ import annotations

import json
import time

from etils import epath


def is_local(path) -> bool:
  return "://" not in str(path)


class AppendFile:
  """A text file that only grows (metrics.jsonl): `write(text)`, `flush()`, `close()`.

  Local: appended and flushed at every write. Remote: rewritten whole at most every `flush_seconds`
  and on close (a log line per write would be one object rewrite per line).
  """

  def __init__(self, path, *, flush_seconds: float = 30.0):
    self.path = epath.Path(path)
    self.local = is_local(self.path)
    self.flush_seconds = flush_seconds
    self._text = ""
    if not self.local and self.path.exists():
      self._text = self.path.read_text()  # a resumed run keeps what the earlier one wrote
    self._dirty, self._last_flush = False, time.time()

  def write(self, text: str) -> None:
    if self.local:
      with self.path.open("a") as f:
        f.write(text)
      return
    self._text += text
    self._dirty = True
    if time.time() - self._last_flush >= self.flush_seconds:
      self.flush()

  def flush(self) -> None:
    if self._dirty:
      self.path.write_text(self._text)
      self._dirty, self._last_flush = False, time.time()

  def close(self) -> None:
    self.flush()


def write_json(path, value, **kwargs) -> None:
  epath.Path(path).write_text(json.dumps(value, **kwargs))


def read_json(path):
  return json.loads(epath.Path(path).read_text())
