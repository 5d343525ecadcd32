"""Tests for robust_prompt.io_utils: atomic writes, JSON-lines append / torn-line reads."""

import json
import os
import stat

import numpy as np
import pytest

from robust_prompt import io_utils


def _no_temp_files(directory):
  return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_text_and_bytes(tmp_path):
  p = tmp_path / "a.txt"
  io_utils.atomic_write_text(p, "héllo\n")
  assert p.read_text(encoding="utf-8") == "héllo\n"
  assert stat.S_IMODE(p.stat().st_mode) == 0o644
  os.chmod(p, 0o600)
  io_utils.atomic_write_bytes(p, b"\x00\x01")
  assert p.read_bytes() == b"\x00\x01"
  assert stat.S_IMODE(p.stat().st_mode) == 0o600  # existing permissions are kept
  assert _no_temp_files(tmp_path)


def test_atomic_write_json_failure_leaves_old_file_and_no_temp(tmp_path):
  p = tmp_path / "summary.json"
  io_utils.atomic_write_json(p, {"a": 1})
  with pytest.raises(ValueError):  # NaN is not JSON
    io_utils.atomic_write_json(p, {"a": float("nan")})
  with pytest.raises(TypeError):
    io_utils.atomic_write_json(p, {"a": object()})
  assert json.loads(p.read_text()) == {"a": 1}
  fresh = tmp_path / "fresh.json"
  with pytest.raises(TypeError):
    io_utils.atomic_write_json(fresh, {"a": object()})
  assert not fresh.exists()
  assert _no_temp_files(tmp_path)


def test_atomic_write_bytes_cleans_up_when_replace_fails(tmp_path, monkeypatch):
  p = tmp_path / "x.bin"
  p.write_bytes(b"old")

  def boom(src, dst):
    raise OSError("disk gone")

  monkeypatch.setattr(io_utils.os, "replace", boom)
  with pytest.raises(OSError, match="disk gone"):
    io_utils.atomic_write_bytes(p, b"new")
  assert p.read_bytes() == b"old"
  assert _no_temp_files(tmp_path)


def test_json_clean():
  out = io_utils.json_clean(
    {"a": np.float32(0.5), "b": [np.nan, np.int64(3)], "c": np.array([1.0, np.inf]), 1: None}
  )
  assert out == {"a": 0.5, "b": [None, 3], "c": [1.0, None], "1": None}
  json.dumps(out, allow_nan=False)


def test_append_and_read_jsonl_roundtrip(tmp_path):
  p = tmp_path / "results.jsonl"
  assert io_utils.append_jsonl(p, [{"i": 0}, {"i": 1, "s": np.float64(0.25)}]) == 2
  assert io_utils.append_jsonl(p, iter([{"i": 2}])) == 1
  assert io_utils.append_jsonl(p, []) == 0
  assert io_utils.read_jsonl(p) == [{"i": 0}, {"i": 1, "s": 0.25}, {"i": 2}]


def test_append_jsonl_bad_row_writes_nothing(tmp_path):
  p = tmp_path / "r.jsonl"
  io_utils.append_jsonl(p, [{"i": 0}])
  with pytest.raises(TypeError):
    io_utils.append_jsonl(p, [{"i": 1}, {"i": object()}])
  assert io_utils.read_jsonl(p) == [{"i": 0}]


def test_read_jsonl_torn_last_line(tmp_path):
  p = tmp_path / "r.jsonl"
  p.write_text('{"i": 0}\n{"i": 1}\n{"i": 2, "opt')
  with pytest.warns(io_utils.TornLineWarning, match=r"r\.jsonl:3"):
    assert io_utils.read_jsonl(p) == [{"i": 0}, {"i": 1}]
  assert p.read_text().endswith('"opt')  # not truncated without truncate_torn
  with pytest.raises(ValueError, match="unterminated"):
    io_utils.append_jsonl(p, [{"i": 3}])
  with pytest.warns(io_utils.TornLineWarning):
    io_utils.read_jsonl(p, truncate_torn=True)
  assert p.read_text() == '{"i": 0}\n{"i": 1}\n'
  io_utils.append_jsonl(p, [{"i": 3}])
  assert io_utils.read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 3}]


def test_read_jsonl_complete_last_line_without_newline(tmp_path):
  p = tmp_path / "r.jsonl"
  p.write_text('{"i": 0}\n{"i": 1}')
  assert io_utils.read_jsonl(p, truncate_torn=True) == [{"i": 0}, {"i": 1}]
  io_utils.append_jsonl(p, [{"i": 2}])
  assert io_utils.read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_read_jsonl_corrupt_middle_line_raises_with_line_number(tmp_path):
  p = tmp_path / "r.jsonl"
  p.write_text('{"i": 0}\n{oops\n\n{"i": 2}\n')
  with pytest.raises(ValueError, match=r"r\.jsonl:2: not valid JSON"):
    io_utils.read_jsonl(p)
  p.write_text('{"i": 0}\n[1, 2]\n')
  with pytest.raises(ValueError, match=r"r\.jsonl:2: expected a JSON object"):
    io_utils.read_jsonl(p)


def test_check_writable_dir(tmp_path):
  d = io_utils.check_writable_dir(tmp_path / "new" / "nested")
  assert d.is_dir() and list(d.iterdir()) == []
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(io_utils.NotWritableError, match="not a directory"):
    io_utils.check_writable_dir(f)
  if os.geteuid() != 0:  # root can write anywhere
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
      with pytest.raises(OSError, match="not writable.*permissions"):
        io_utils.check_writable_dir(ro)
    finally:
      os.chmod(ro, 0o700)
