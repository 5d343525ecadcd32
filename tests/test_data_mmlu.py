"""MMLU loaders (CSV release and the cais/mmlu parquet file) and data-directory resolution."""

import csv
import pathlib

import pytest

from robust_prompt.data import mmlu, sources
from robust_prompt.data.example import DataError

N_MMLU_TEST = 14042


def test_all_subjects_load(mmlu_dir):
  subjects = mmlu.list_subjects(mmlu_dir)
  assert subjects == sorted(mmlu.SUBJECTS)
  total = 0
  for subject in subjects:
    examples = mmlu.load_subject(mmlu_dir, subject)
    path = mmlu_dir / "test" / f"{subject}_test.csv"
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
    assert len(examples) == len(rows)
    for ex, row in zip(examples, rows):
      assert ex.task == f"mmlu:{subject}"
      assert ex.fields == {"question": row[0], "subject": subject.replace("_", " ")}
      assert ex.options == tuple(row[1:5]) and len(ex.options) == 4
      assert ex.answer == "ABCD".index(row[5]) and ex.correct == (ex.answer,)
      assert ex.targets == ()
    assert len({ex.id for ex in examples}) == len(examples)
    total += len(examples)
  assert total == N_MMLU_TEST


def test_quoted_fields_with_commas(mmlu_dir):
  ex = mmlu.load_subject(mmlu_dir, "abstract_algebra")
  assert ex[0].options == ("0", "4", "2", "6") and ex[0].answer == 1
  assert ex[2].options[2:] == ("0,1", "0,4") and ex[2].answer == 3
  assert ex[3].options[0] == "True, True"
  assert ex[0].id == "mmlu:abstract_algebra:0"
  assert ex[0].metadata["line"] == 1


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def test_line_numbers_count_embedded_newlines(tmp_path):
  path = _write(
    tmp_path / "test" / "toy_test.csv",
    '"two\nline question",a,b,c,d,A\nq2,"x,y",b,c,d,D\n\nq3,a,b,c,d,C\n',
  )
  ex = mmlu.load_csv(path)
  assert [e.metadata["line"] for e in ex] == [1, 3, 5]
  assert ex[0].fields["question"] == "two\nline question"
  assert ex[1].options[0] == "x,y" and ex[1].answer == 3
  assert ex[0].task == "mmlu:toy"


@pytest.mark.parametrize(
  "bad_row, message",
  [
    ("q3,a,b,c,D\n", "expected 6 columns"),
    ("q3,a,b,c,d,E\n", "answer must be one of A, B, C, D"),
    ("q3,a,b,c,d,e,f,A\n", "got 8"),
  ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_row, message):
  path = _write(tmp_path / "toy_test.csv", '"multi\nline",a,b,c,d,A\n' + bad_row)
  with pytest.raises(DataError, match=message) as e:
    mmlu.load_csv(path)
  assert str(e.value).startswith(f"{path}:3:")


def test_missing_subject_names_path_and_origin(mmlu_dir):
  with pytest.raises(DataError) as e:
    mmlu.load_subject(mmlu_dir, "astrology")
  text = str(e.value)
  assert str(mmlu_dir / "test" / "astrology_test.csv") in text
  assert "not one of the 57" in text and "hendrycks" in text and "cais/mmlu" in text


def _hf_cache(tmp_path, mmlu_dir, subjects):
  """A Hugging Face hub cache holding `cais/mmlu`'s all/test parquet (built from the CSVs)."""
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "hub" / "datasets--cais--mmlu"
  _write(repo / "refs" / "main", commit)
  rows = []
  for s in subjects:
    with open(mmlu_dir / "test" / f"{s}_test.csv", newline="", encoding="utf-8") as f:
      for r in csv.reader(f):
        rows.append(
          {"question": r[0], "subject": s, "choices": r[1:5], "answer": "ABCD".index(r[5])}
        )
  snapshot = repo / "snapshots" / commit / "all"
  snapshot.mkdir(parents=True)
  pq.write_table(pa.Table.from_pylist(rows), snapshot / "test-00000-of-00001.parquet")
  return tmp_path / "hub"


def test_hf_parquet_from_cache_matches_csv(tmp_path, mmlu_dir):
  cache = _hf_cache(tmp_path, mmlu_dir, ["anatomy", "virology"])
  loaded = mmlu.load_hf(cache_dir=cache, backend="hub")
  assert sorted(loaded) == ["anatomy", "virology"]
  for subject, examples in loaded.items():
    csv_examples = mmlu.load_subject(mmlu_dir, subject)
    assert [(e.id, e.fields, e.options, e.answer) for e in examples] == [
      (e.id, e.fields, e.options, e.answer) for e in csv_examples
    ]
  only = mmlu.load_hf(["virology"], cache_dir=cache, backend="hub")
  assert list(only) == ["virology"]
  with pytest.raises(DataError, match="no subjects"):
    mmlu.load_hf(["anatomy", "astrology"], cache_dir=cache, backend="hub")


def test_hf_offline_and_not_cached_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(DataError) as e:
    mmlu.load_hf(cache_dir=tmp_path / "empty", backend="hub")
  text = str(e.value)
  assert "not in the Hugging Face cache" in text and "huggingface-cli download" in text


# ----------------------------------------------------------------------------- sources


def test_data_dir_flag_env_and_errors(tmp_path, monkeypatch, shared_dir):
  data = shared_dir / "data"
  monkeypatch.delenv(sources.ENV_VAR, raising=False)
  with pytest.raises(DataError, match="no data directory: pass --data_dir"):
    sources.resolve_data_dir(None)
  with pytest.raises(DataError, match="does not exist"):
    sources.resolve_data_dir(tmp_path / "nope")
  monkeypatch.setenv(sources.ENV_VAR, str(data))
  assert sources.benchmark_dir("mmlu") == str(data / "mmlu")
  # The flag wins over the environment; a benchmark's own folder works as the data dir too.
  assert sources.benchmark_dir("mmlu", data / "mmlu") == str(data / "mmlu")
  assert len(sources.load_task("mmlu:anatomy")) == 135
  with pytest.raises(DataError, match="unknown benchmark 'mmlx'"):
    sources.list_tasks("mmlx", data)
  with pytest.raises(DataError) as e:
    sources.benchmark_dir("jsonl", data)
  assert str(data / "jsonl") in str(e.value) and "docs/tasks.md" in str(e.value)
  with pytest.raises(DataError, match="does not belong to benchmark"):
    sources.load_task("bigbench:strategyqa", data, benchmark="mmlu")


def test_list_and_load_benchmark(mmlu_dir):
  infos = sources.list_tasks("mmlu", mmlu_dir.parent)
  assert len(infos) == 57 and all(i.available for i in infos)
  assert infos[0].name == "mmlu:abstract_algebra"
  loaded = sources.load_benchmark("mmlu", mmlu_dir.parent)
  assert sum(map(len, loaded.values())) == N_MMLU_TEST
  assert sources.benchmark_of("mmlu:anatomy") == "mmlu"
  assert sources.benchmark_of("bigbench:winowhy") == "bigbench_lite"
  assert sources.benchmark_of("bigbench:gsm8k_understanding") == "bigbench"


def test_not_utf8_names_file_and_line(tmp_path):
  path = tmp_path / "test" / "toy_test.csv"
  path.parent.mkdir(parents=True)
  path.write_bytes("q1,a,b,c,d,A\nq2,caf\u00e9,b,c,d,B\n".encode("latin-1"))
  with pytest.raises(DataError, match=r"toy_test.csv:2: not UTF-8 \(byte 0xe9 at column 7\)"):
    mmlu.load_csv(path)


@pytest.mark.parametrize("body", ["", "\n\n"])
def test_empty_csv_is_blamed_on_the_csv(tmp_path, body):
  _write(tmp_path / "test" / "anatomy_test.csv", body)
  with pytest.raises(DataError, match=r"anatomy_test.csv: the MMLU CSV of mmlu:anatomy is empty"):
    mmlu.load_subject(tmp_path, "anatomy")
