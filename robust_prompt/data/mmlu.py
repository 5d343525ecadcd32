"""MMLU (Hendrycks et al., 2021) as `Example`s: the original CSV release or `cais/mmlu` on the hub.

The CSV release has one file per subject, `<dir>/<split>/<subject>_<split>.csv`, no header, and the
columns `question, A, B, C, D, answer-letter` (quoted CSV: fields may hold commas and newlines).
Task names are `mmlu:<subject>`; fields are `question` and `subject` (human readable, e.g.
"abstract algebra"); the four option texts are kept verbatim.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
from collections.abc import Iterable, Sequence

from robust_prompt import text_files
from robust_prompt.data.example import DataError, Example

SUBJECTS: tuple[str, ...] = (
  "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
  "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
  "college_medicine", "college_physics", "computer_security", "conceptual_physics", "econometrics",
  "electrical_engineering", "elementary_mathematics", "formal_logic", "global_facts",
  "high_school_biology", "high_school_chemistry", "high_school_computer_science",
  "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
  "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics",
  "high_school_physics", "high_school_psychology", "high_school_statistics",
  "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
  "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management",
  "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios",
  "nutrition", "philosophy", "prehistory", "professional_accounting", "professional_law",
  "professional_medicine", "professional_psychology", "public_relations", "security_studies",
  "sociology", "us_foreign_policy", "virology", "world_religions",
)  # fmt: skip
LETTERS = "ABCD"
HF_REPO_ID = "cais/mmlu"
SOURCE_HINT = (
  "MMLU comes from https://people.eecs.berkeley.edu/~hendrycks/data.tar (the CSV release: "
  "unpack it so that <data_dir>/mmlu/test/<subject>_test.csv exist) or from the Hugging Face "
  "dataset cais/mmlu (--data_dir hf://cais/mmlu)"
)


def task_name(subject: str) -> str:
  return f"mmlu:{subject}"


def subject_name(subject: str) -> str:
  """The human-readable subject used in prompts: "high_school_us_history" -> "high school us history"."""
  return subject.replace("_", " ")


def split_dir(mmlu_dir: str | os.PathLike, split: str = "test") -> pathlib.Path:
  """`<mmlu_dir>/<split>`, or `mmlu_dir` itself when it already holds the `*_<split>.csv` files."""
  root = pathlib.Path(mmlu_dir)
  if (root / split).is_dir():
    return root / split
  if any(root.glob(f"*_{split}.csv")):
    return root
  raise DataError(
    f"MMLU {split} split not found: expected {root / split}/<subject>_{split}.csv. {SOURCE_HINT}"
  )


def list_subjects(mmlu_dir: str | os.PathLike, split: str = "test") -> list[str]:
  """Subjects with a CSV file in `mmlu_dir` (sorted)."""
  suffix = f"_{split}.csv"
  return sorted(p.name[: -len(suffix)] for p in split_dir(mmlu_dir, split).glob(f"*{suffix}"))


def _example(subject: str, index: int, question: str, options: Sequence[str], answer: int, **meta):
  return Example(
    id=f"{task_name(subject)}:{index}",
    task=task_name(subject),
    fields={"question": question, "subject": subject_name(subject)},
    options=tuple(options),
    answer=answer,
    correct=(answer,),
    metadata={"subject": subject, **meta},
  )


def load_csv(path: str | os.PathLike, subject: str | None = None) -> list[Example]:
  """Reads one MMLU CSV file (no header; `question, A, B, C, D, answer-letter`).

  Args:
    path: e.g. `.../test/anatomy_test.csv`.
    subject: defaults to the file name without its `_<split>.csv` suffix.

  Raises:
    DataError: `file:line: ...` for a file that is not UTF-8, a row with the wrong number of
      columns or a bad answer; `file: ...` for a file without any question row (an empty CSV
      would otherwise look like a task that no instruction could be scored on).
  """
  path = pathlib.Path(path)
  if subject is None:
    subject = path.stem.rsplit("_", 1)[0] if "_" in path.stem else path.stem
  out: list[Example] = []
  text = text_files.read_text(path, error=DataError)
  reader = csv.reader(io.StringIO(text, newline=""))
  start = 1
  for row in text_files.csv_records(reader, path, error=DataError):
    line, start = start, reader.line_num + 1  # a quoted field may span several lines
    if not row or (len(row) == 1 and not row[0].strip()):
      continue
    if len(row) != 6:
      raise DataError(
        f"{path}:{line}: expected 6 columns (question, A, B, C, D, answer letter), got "
        f"{len(row)}; quote fields that contain commas or newlines"
      )
    letter = row[5].strip().upper()
    if len(letter) != 1 or letter not in LETTERS:
      raise DataError(f"{path}:{line}: answer must be one of A, B, C, D, got {row[5]!r}")
    out.append(
      _example(
        subject, len(out), row[0], row[1:5], LETTERS.index(letter), file=str(path), line=line
      )
    )
  if not out:
    raise DataError(
      f"{path}: the MMLU CSV of mmlu:{subject} is empty (no question rows; "
      f"{'0 bytes' if not text else 'blank lines only'}); a truncated download or unpack? "
      f"{SOURCE_HINT}"
    )
  return out


def load_subject(mmlu_dir: str | os.PathLike, subject: str, split: str = "test") -> list[Example]:
  """Loads `mmlu:<subject>` from the CSV release."""
  path = split_dir(mmlu_dir, split) / f"{subject}_{split}.csv"
  if not path.is_file():
    known = "" if subject in SUBJECTS else f" ({subject!r} is not one of the 57 MMLU subjects)"
    raise DataError(f"MMLU task mmlu:{subject} not found at {path}{known}. {SOURCE_HINT}")
  return load_csv(path, subject)


def load_hf(
  subjects: Iterable[str] | None = None,
  split: str = "test",
  *,
  repo_id: str = HF_REPO_ID,
  revision: str | None = None,
  cache_dir: str | os.PathLike | None = None,
  backend: str = "auto",
) -> dict[str, list[Example]]:
  """Loads MMLU from the Hugging Face dataset `cais/mmlu` (online, or from the local HF cache).

  With the `datasets` package installed this goes through `datasets.load_dataset(repo_id, "all")`;
  otherwise it reads the parquet file `all/<split>-00000-of-00001.parquet` with `huggingface_hub`
  and pyarrow (with `HF_HUB_OFFLINE=1` only the cache is used). Columns: `question`, `subject`,
  `choices` (4 strings) and `answer` (0-3). `backend` forces "datasets" or "hub" ("auto": datasets
  when installed).

  Returns:
    subject -> examples, in the dataset's order within each subject.

  Raises:
    DataError: when the data is neither cached nor downloadable, or has unexpected columns.
  """
  filename = f"all/{split}-00000-of-00001.parquet"
  offline_help = (
    "Run once with network access (or `huggingface-cli download "
    f"{repo_id} --repo-type dataset`), or use the CSV release: {SOURCE_HINT}"
  )
  datasets = None
  if backend in ("auto", "datasets"):
    try:
      import datasets
    except ImportError:
      if backend == "datasets":
        raise DataError("backend='datasets' needs `pip install datasets`") from None
  if datasets is not None:
    try:
      ds = datasets.load_dataset(
        repo_id, "all", split=split, revision=revision, cache_dir=cache_dir
      )
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
      raise DataError(
        f"{repo_id} ({split}) could not be loaded with `datasets` ({e}). {offline_help}"
      ) from None
    rows, origin = list(ds), f"hf://{repo_id} (datasets, {split})"
  else:
    rows, origin = _hub_parquet_rows(repo_id, filename, revision, cache_dir, offline_help)
  wanted = None if subjects is None else set(subjects)
  out: dict[str, list[Example]] = {}
  for row_index, row in enumerate(rows):
    subject = row["subject"]
    if wanted is not None and subject not in wanted:
      continue
    examples = out.setdefault(subject, [])
    if len(row["choices"]) != 4 or not 0 <= int(row["answer"]) < 4:
      raise DataError(f"{origin}: row {row_index} needs 4 choices and an answer in 0-3: {row}")
    examples.append(
      _example(
        subject,
        len(examples),
        row["question"],
        row["choices"],
        int(row["answer"]),
        file=origin,
        row=row_index,
      )
    )
  if wanted is not None and (absent := wanted - set(out)):
    raise DataError(f"{repo_id} ({split}) has no subjects {sorted(absent)}")
  return out


def _hub_parquet_rows(
  repo_id, filename, revision, cache_dir, offline_help
) -> tuple[list[dict], str]:
  import huggingface_hub
  import pyarrow.parquet as pq
  from huggingface_hub import errors as hf_errors

  try:
    local = huggingface_hub.hf_hub_download(
      repo_id, filename, repo_type="dataset", revision=revision, cache_dir=cache_dir
    )
  except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as e:
    raise DataError(
      f"{repo_id}/{filename} is not in the Hugging Face cache and the hub cannot be reached "
      f"({type(e).__name__}). {offline_help}"
    ) from None
  except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError) as e:
    raise DataError(f"{repo_id}: no file {filename} on the hub ({e})") from None
  table = pq.read_table(local)
  missing = {"question", "subject", "choices", "answer"} - set(table.column_names)
  if missing:
    raise DataError(f"{local}: missing columns {sorted(missing)} (has {table.column_names})")
  rows = table.select(["question", "subject", "choices", "answer"]).to_pylist()
  return rows, f"hf://{repo_id}/{filename}"
