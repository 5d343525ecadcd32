"""Users' own JSONL tasks: both kinds of example, fields, and file:line errors."""

import json

import pytest

from robust_prompt.data import jsonl, sources
from robust_prompt.data.example import DataError


def _write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
    "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
  )
  return path


def test_multiple_choice_and_generative(tmp_path):
  path = _write(
    tmp_path / "mine.jsonl",
    [
      "# a comment line",
      {"id": "q1", "question": "2+2?", "context": "math", "options": ["3", "4"], "answer": 1},
      "",
      {"question": "Sky?", "options": ["blue", "green", "azure"], "answer": "blue"},
      {"id": 7, "question": "Both?", "options": ["x", "y", "z"], "answer": ["z", 0]},
      {"id": "g1", "input": "Say hi", "target": "hi", "metadata": {"level": 2}},
      {"id": "g2", "input": "Greet", "targets": ["hello", "hey"]},
    ],
  )
  ex = jsonl.load_jsonl(path)
  assert [e.id for e in ex] == [
    "jsonl:mine:q1",
    "jsonl:mine:1",
    "jsonl:mine:7",
    "jsonl:mine:g1",
    "jsonl:mine:g2",
  ]
  assert all(e.task == "jsonl:mine" for e in ex)
  assert ex[0].fields == {"question": "2+2?", "context": "math"} and ex[0].answer == 1
  assert ex[0].metadata["line"] == 2 and ex[0].metadata["file"] == str(path)
  assert ex[1].answer == 0 and ex[1].correct == (0,) and ex[1].metadata["line"] == 4
  assert ex[2].answer == 2 and ex[2].correct == (0, 2)
  assert ex[3].options == () and ex[3].targets == ("hi",) and ex[3].metadata["level"] == 2
  assert ex[4].targets == ("hello", "hey") and ex[4].fields == {"input": "Greet"}


@pytest.mark.parametrize(
  "line, message",
  [
    ('{"question": "q", "options": ["a", "b"], "answer": 2', "invalid JSON"),
    ({"question": "q", "options": ["a", "b"], "answer": 2}, "out of range for 2 options"),
    ({"question": "q", "options": ["a", "b"], "answer": "c"}, "'c' is not one of the options"),
    ({"question": "q", "options": ["a", "b"], "answer": True}, "must be an option index"),
    ({"question": "q", "options": ["a", "b"]}, "needs 'answer'"),
    ({"question": "q", "options": ["a", "a"], "answer": 0}, "duplicates"),
    ({"question": "q", "options": ["a"], "answer": 0}, "at least 2 strings"),
    ({"question": "q", "answer": 0}, "'answer' needs 'options'"),
    ({"input": "q"}, "needs 'options' \\+ 'answer'"),
    ({"input": "q", "target": "a", "targets": ["b"]}, "not both"),
    ({"input": "q", "targets": []}, "non-empty list"),
    ({"input": 3, "target": "a"}, "field 'input' must be a string"),
    ([1, 2], "must be a JSON object"),
  ],
)
def test_errors_name_file_and_line(tmp_path, line, message):
  good = {"id": "ok", "input": "x", "target": "y"}
  path = _write(tmp_path / "bad.jsonl", [good, "", line])
  with pytest.raises(DataError, match=message) as e:
    jsonl.load_jsonl(path)
  assert str(e.value).startswith(f"{path}:3:")


def test_duplicate_ids_and_empty_file(tmp_path):
  path = _write(tmp_path / "dup.jsonl", [{"id": "a", "input": "x", "target": "y"}] * 2)
  with pytest.raises(
    DataError, match=r"dup.jsonl:2: duplicate id 'jsonl:dup:a' \(first on line 1\)"
  ):
    jsonl.load_jsonl(path)
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n# nothing\n")
  with pytest.raises(DataError, match="no examples"):
    jsonl.load_jsonl(empty)


def test_not_utf8_names_file_and_line(tmp_path):
  path = tmp_path / "latin.jsonl"
  path.write_bytes(b'{"input": "x", "target": "y"}\r\n\r\n{"input": "na\xefve", "target": "y"}\r\n')
  with pytest.raises(DataError) as e:
    jsonl.load_jsonl(path)
  assert str(e.value).startswith(f"{path}:3: not UTF-8 (byte 0xef at column 14)")
  # CRLF files still number their lines as before (and load).
  path.write_bytes(b'{"input": "x", "target": "y"}\r\n\r\n{"input": 3, "target": "y"}\r\n')
  with pytest.raises(DataError, match=r"latin.jsonl:3: field 'input' must be a string"):
    jsonl.load_jsonl(path)


def test_jsonl_benchmark_through_sources(tmp_path):
  _write(tmp_path / "jsonl" / "alpha.jsonl", [{"input": "x", "target": "y"}])
  _write(tmp_path / "jsonl" / "beta.jsonl", [{"question": "q", "options": ["a", "b"], "answer": 0}])
  infos = sources.list_tasks("jsonl", tmp_path)
  assert [i.name for i in infos] == ["jsonl:alpha", "jsonl:beta"]
  assert sources.load_task("jsonl:beta", tmp_path)[0].options == ("a", "b")
  with pytest.raises(DataError, match="jsonl:gamma not found at .*gamma.jsonl"):
    sources.load_task("jsonl:gamma", tmp_path)
