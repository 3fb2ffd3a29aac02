"""TensorBoard scalar event files, written without TensorFlow, tensorboardX or protobuf, through etils.epath.

An event file is a sequence of TFRecords (uint64 length, masked CRC-32C of the length, the bytes, masked
CRC-32C of the bytes), each an `Event` protobuf. Scalars need three messages, encoded here by hand:
  Event   {1: wall_time (double), 2: step (int64), 3: file_version (string), 5: summary (Summary)}
  Summary {1: value (repeated Value)}
  Value   {1: tag (string), 2: simple_value (float)}
TensorBoard reads these files from a local or `gs://` directory (`tensorboard --logdir <workdir>`).
"""

from __future__ import annotations

import os
import socket
import struct
import time

from etils import epath

from dscl_jax.runtime.files import AppendFile


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
  return _varint(number << 3 | wire_type)


def _bytes_field(number: int, payload: bytes) -> bytes:
  return _field(number, 2) + _varint(len(payload)) + payload


def encode_event(
  wall_time: float, step: int, *, file_version: str | None = None, scalars: dict[str, float] | None = None
) -> bytes:
  """One serialised `Event` (see the module docstring for the fields)."""
  event = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step & (2**64 - 1))
  if file_version is not None:
    event += _bytes_field(3, file_version.encode())
  if scalars:
    values = b"".join(
      _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value))
      for tag, value in scalars.items()
    )
    event += _bytes_field(5, values)
  return event


def tf_record(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class EventWriter:
  """Scalars into `<directory>/events.out.tfevents.<time>.<host>.<pid>.0` (process 0 writes), through
  `files.AppendFile`: appended at once on a local disk, rewritten at most every `flush_seconds` and on
  close on an object store (one record per log line, tens of bytes each, so the rewrite stays small)."""

  def __init__(self, directory, *, flush_seconds: float = 30.0):
    self.directory = epath.Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
    self.path = self.directory / name
    self._file = AppendFile(self.path, binary=True, flush_seconds=flush_seconds)
    self._file.write(tf_record(encode_event(time.time(), 0, file_version="brain.Event:2")), flush=True)

  def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
    """One event holding every value of `values` as a scalar summary at `step`."""
    event = encode_event(
      time.time() if wall_time is None else wall_time,
      int(step),
      scalars={tag: float(value) for tag, value in values.items()},
    )
    self._file.write(tf_record(event))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self.flush()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
