"""Reading UTF-8 text files (and their CSV records) with errors that say where: `file:line: ...`.

Python's own `UnicodeDecodeError` gives a byte offset into the whole file ("position 48213"),
which is useless for a 10,000-line CSV; the loaders and report readers use `read_text` instead.
"""

from __future__ import annotations

import csv
import os
import pathlib
from collections.abc import Iterator
from typing import Any


def location(data: bytes, offset: int) -> tuple[int, int]:
  """1-based (line, column) of byte `offset` in `data` (columns count bytes)."""
  line_start = data.rfind(b"\n", 0, offset) + 1
  return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def decode(
  data: bytes, where: str, *, error: type[Exception] = ValueError, bom: bool = False
) -> str:
  """`data` decoded as UTF-8 (a leading BOM dropped when `bom`).

  Raises:
    error: `where:line: not UTF-8 (byte 0x.. at column c); ...` for the first invalid byte.
  """
  try:
    return data.decode("utf-8-sig" if bom else "utf-8")
  except UnicodeDecodeError as e:
    line, column = location(data, e.start)
    raise error(
      f"{where}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); re-save the "
      "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE`; spreadsheets: save as 'CSV UTF-8')"
    ) from None


def read_text(
  path: str | os.PathLike, *, error: type[Exception] = ValueError, bom: bool = False
) -> str:
  """The whole file at `path` decoded as UTF-8 (see `decode`); newlines are left as they are."""
  path = pathlib.Path(path)
  return decode(path.read_bytes(), str(path), error=error, bom=bom)


def csv_records(
  reader: Any, path: str | os.PathLike, *, error: type[Exception] = ValueError
) -> Iterator:
  """The records of `reader`, a `csv.reader` or `csv.DictReader` over the text of `path`.

  `reader.line_num` is the line a record ends on while it is being handled.

  Raises:
    error: `path:line: malformed CSV (...)` at the line where the csv module gave up.
  """
  while True:
    try:
      record = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      raise error(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    yield record
