"""Small file helpers over `etils.epath`, so that local and `gs://` workdirs behave the same.

Object stores cannot append to a file; `AppendFile` therefore appends in place on a local disk and, on a
remote path, keeps the file's bytes in memory and rewrites the whole object when flushed.
"""

from __future__ import annotations

import json
import os
import time

from etils import epath


def is_local(path) -> bool:
  return "://" not in str(path)


class AppendFile:
  """A file that only grows (metrics.jsonl, TensorBoard event files): `write(data)`, `flush()`, `close()`.

  `data` is `str` for a text file, `bytes` with `binary=True`. Local: appended and flushed at every
  write. Remote: rewritten whole at most every `flush_seconds` and on close (a log line per write would
  be one object rewrite per line).
  """

  def __init__(self, path, *, binary: bool = False, flush_seconds: float = 30.0):
    self.path = epath.Path(path)
    self.local = is_local(self.path)
    self.binary = binary
    self.flush_seconds = flush_seconds
    self._data = b"" if binary else ""
    if not self.local and self.path.exists():
      # A resumed run keeps what the earlier one wrote.
      self._data = self.path.read_bytes() if binary else self.path.read_text()
    self._dirty, self._last_flush = False, time.time()

  def write(self, data, *, flush: bool = False) -> None:
    if self.local:
      with self.path.open("ab" if self.binary else "a") as f:
        f.write(data)
      return
    self._data += data
    self._dirty = True
    if flush or time.time() - self._last_flush >= self.flush_seconds:
      self.flush()

  def flush(self) -> None:
    if self._dirty:
      if self.binary:
        self.path.write_bytes(self._data)
      else:
        self.path.write_text(self._data)
      self._dirty, self._last_flush = False, time.time()

  def close(self) -> None:
    self.flush()


def replace_text(path, text: str) -> None:
  """`text` as the whole of `path`, at once: locally through a temporary file renamed over it (a kill
  leaves the old file or the new one, never half of it); remotely as one object write, already whole."""
  path = epath.Path(path)
  if not is_local(path):
    path.write_text(text)
    return
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  except OSError:
    tmp.unlink(missing_ok=True)
    raise


def write_json(path, value, **kwargs) -> None:
  """`value` as JSON (`json.dumps` keyword arguments), written whole (`replace_text`)."""
  replace_text(path, json.dumps(value, **kwargs))


def read_json(path):
  return json.loads(epath.Path(path).read_text())
