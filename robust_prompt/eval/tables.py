"""Score tables: the results table (`results.jsonl`) and `per_instruction.csv`, per (model, task).

`TaskScores` holds what the metrics need for one model on one task: per-instruction accuracies and,
when built from example-level results, the paired `[I, E]` correctness and prediction matrices
(`I` instructions, `E` examples; see robust_prompt/eval/metrics.py).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import pathlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from robust_prompt import io_utils, text_files
from robust_prompt.eval import checks
from robust_prompt.instructions.schema import PROMPT_FORMATS, SPLITS

PER_INSTRUCTION_COLUMNS = (
  "model",
  "task",
  "instruction_id",
  "split",
  "source",
  "n_examples",
  "accuracy",
  "prompt_format",  # last, so that older files (without it) read the same by name or position
)
REQUIRED_CSV_COLUMNS = ("model", "task", "instruction_id", "split", "accuracy")
ON_DUPLICATE_CHOICES = ("error", "first", "mean")


class TableError(ValueError):
  """Bad score-table input; the message starts with `file:line: ` when there is a line."""


@dataclasses.dataclass
class TaskScores:
  """One model's scores on one task, instructions ordered observed first, then by id.

  Attributes:
    instruction_ids, splits, sources: [I] per-instruction labels.
    accuracy: [I] float in [0, 1].
    n_examples: [I] int examples scored (-1 when unknown).
    correct: [I, E] float 1/0/NaN, or None when only accuracies are known.
    predictions: [I, E] int option index (or code of a generated string), -1 missing; or None.
    example_ids: [E] or None.
    prompt_formats: [I] the format each instruction was read in ("raw", "alpaca", "chat"; ""
      when not recorded), or None.
  """

  model: str
  task: str
  instruction_ids: tuple[str, ...]
  splits: tuple[str, ...]
  sources: tuple[str, ...]
  accuracy: np.ndarray
  n_examples: np.ndarray
  correct: np.ndarray | None = None
  predictions: np.ndarray | None = None
  example_ids: tuple[str, ...] | None = None
  prompt_formats: tuple[str, ...] | None = None

  def in_split(self, split: str) -> np.ndarray:
    """[I] bool: which instructions belong to `split`."""
    return np.array([s == split for s in self.splits], dtype=bool)


def _order(ids_splits: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
  rank = {s: i for i, s in enumerate(SPLITS)}
  return sorted(ids_splits, key=lambda x: (rank.get(x[1], len(rank)), x[0]))


def _prediction_key(row: Mapping[str, Any]) -> tuple:
  """What identifies a prediction across instructions: the option index, not the rendered label."""
  pred = row.get("prediction")
  if isinstance(pred, int) and not isinstance(pred, bool):
    return ("index", pred)
  scores = row.get("option_scores") or []
  if scores:
    return ("index", int(np.argmax(scores)))
  return ("text", str(pred).strip())


def tables_from_results(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], TaskScores]:
  """Groups results rows (design.md's results table) into `TaskScores` per (model, task).

  A repeated (model, task, instruction, example) row (e.g. a resumed run) keeps the last one.

  Raises:
    TableError: a row lacks a field, has an unknown split, or has option scores that cannot be
      ranked (NaN, +inf, all -inf: `checks.check_finite_scores`).
  """
  rows = list(rows)
  try:
    checks.check_finite_scores(rows)
  except checks.NonFiniteScoreError as e:
    raise TableError(str(e)) from None
  groups: dict[tuple[str, str], dict[str, Any]] = {}
  duplicates = 0
  for n, row in enumerate(rows, start=1):
    try:
      key = (str(row["model"]), str(row["task"]))
      iid, split, ex = str(row["instruction_id"]), str(row["split"]), str(row["example_id"])
      correct = bool(row["correct"])
    except KeyError as e:
      raise TableError(f"results row {n}: missing field {e.args[0]!r}") from None
    if split not in SPLITS:
      raise TableError(f"results row {n}: unknown split {split!r} (expected one of {SPLITS})")
    g = groups.setdefault(key, {"inst": {}, "examples": {}, "cells": {}, "formats": {}})
    prev = g["inst"].setdefault(iid, (split, str(row.get("source") or "")))
    g["formats"].setdefault(iid, str(row.get("prompt_format") or ""))
    if prev[0] != split:
      raise TableError(f"results row {n}: instruction {iid!r} is both {prev[0]} and {split}")
    g["examples"].setdefault(ex, len(g["examples"]))
    duplicates += (iid, ex) in g["cells"]
    g["cells"][(iid, ex)] = (correct, _prediction_key(row))
  if duplicates:
    warnings.warn(f"{duplicates} repeated results rows; kept the last of each", stacklevel=2)
  tables = {}
  for (model, task), g in sorted(groups.items()):
    order = _order((iid, sp) for iid, (sp, _) in g["inst"].items())
    row_of = {iid: i for i, (iid, _) in enumerate(order)}
    shape = (len(order), len(g["examples"]))
    correct = np.full(shape, np.nan)
    codes: dict[tuple, int] = {}
    preds = np.full(shape, -1, dtype=np.int64)
    for (iid, ex), (ok, pkey) in g["cells"].items():
      i, e = row_of[iid], g["examples"][ex]
      correct[i, e] = float(ok)
      preds[i, e] = codes.setdefault(pkey, len(codes))
    n = np.sum(~np.isnan(correct), axis=1)
    tables[(model, task)] = TaskScores(
      model=model,
      task=task,
      instruction_ids=tuple(iid for iid, _ in order),
      splits=tuple(sp for _, sp in order),
      sources=tuple(g["inst"][iid][1] for iid, _ in order),
      accuracy=np.nansum(correct, axis=1) / np.maximum(n, 1),
      n_examples=n.astype(np.int64),
      correct=correct,
      predictions=preds,
      example_ids=tuple(g["examples"]),
      prompt_formats=tuple(g["formats"][iid] for iid, _ in order),
    )
  return tables


def tables_from_per_instruction(
  rows: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], TaskScores]:
  """Groups validated per-instruction rows (see `read_per_instruction_csv`) per (model, task)."""
  groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault((row["model"], row["task"]), []).append(row)
  tables = {}
  for (model, task), group in sorted(groups.items()):
    by_id = {r["instruction_id"]: r for r in group}
    order = _order((r["instruction_id"], r["split"]) for r in group)
    rs = [by_id[iid] for iid, _ in order]
    tables[(model, task)] = TaskScores(
      model=model,
      task=task,
      instruction_ids=tuple(r["instruction_id"] for r in rs),
      splits=tuple(r["split"] for r in rs),
      sources=tuple(r.get("source") or "" for r in rs),
      accuracy=np.array([r["accuracy"] for r in rs], dtype=np.float64),
      n_examples=np.array([r.get("n_examples", -1) for r in rs], dtype=np.int64),
      prompt_formats=tuple(r.get("prompt_format") or "" for r in rs),
    )
  return tables


def per_instruction_rows(tables: Mapping[tuple[str, str], TaskScores]) -> list[dict[str, Any]]:
  """One row per (model, task, instruction) with PER_INSTRUCTION_COLUMNS."""
  return [
    dict(
      model=t.model,
      task=t.task,
      instruction_id=iid,
      split=split,
      source=source,
      n_examples=int(n),
      accuracy=float(acc),
      prompt_format=fmt,
    )
    for t in tables.values()
    for iid, split, source, n, acc, fmt in zip(
      t.instruction_ids,
      t.splits,
      t.sources,
      t.n_examples,
      t.accuracy,
      t.prompt_formats or ("",) * len(t.instruction_ids),
    )
  ]


def write_per_instruction_csv(path: str | pathlib.Path, rows: Iterable[Mapping[str, Any]]) -> None:
  """Writes per-instruction rows as CSV (atomically); accuracy keeps full float precision."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=PER_INSTRUCTION_COLUMNS, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow(
      {k: ("" if row.get(k) in (None, -1) else row.get(k)) for k in writer.fieldnames}
    )
  io_utils.atomic_write_text(path, buf.getvalue())


def read_per_instruction_csv(
  path: str | pathlib.Path, *, on_duplicate: str = "error"
) -> list[dict[str, Any]]:
  """Reads and validates a per-instruction CSV (columns PER_INSTRUCTION_COLUMNS).

  `source`, `n_examples` and `prompt_format` are optional. accuracy must be a fraction in [0, 1]; split one of
  SPLITS; n_examples, when given, a positive integer.

  Args:
    path: the CSV (UTF-8, an Excel BOM allowed).
    on_duplicate: what to do with a (model, task, instruction_id) given on several lines (some
      released per-instruction tables repeat rows): "error" (the default: say where), "first"
      (keep the first line) or "mean" (one row whose accuracy is the mean of the repeats, as
      repeated measurements of one instruction; n_examples the largest given). Repeats must
      agree on the split.

  Raises:
    TableError: `path:line: what is wrong; what to do`.
  """
  if on_duplicate not in ON_DUPLICATE_CHOICES:
    raise ValueError(f"on_duplicate must be one of {ON_DUPLICATE_CHOICES}; got {on_duplicate!r}")
  path = pathlib.Path(path)
  text = text_files.read_text(path, error=TableError, bom=True)  # Excel writes a BOM
  reader = csv.DictReader(io.StringIO(text, newline=""))
  try:
    fieldnames = reader.fieldnames
  except csv.Error as e:
    raise TableError(f"{path}:1: malformed CSV ({e})") from None
  header = [h.strip() for h in (fieldnames or [])]
  missing = [c for c in REQUIRED_CSV_COLUMNS if c not in header]
  if missing:
    raise TableError(
      f"{path}:1: missing column(s) {', '.join(missing)}; the header must contain "
      f"{', '.join(REQUIRED_CSV_COLUMNS)} (optional: source, n_examples, prompt_format)"
    )
  reader.fieldnames = header
  rows: list[dict[str, Any]] = []
  seen: dict[tuple[str, str, str], int] = {}  # key -> index into rows
  repeats: dict[int, list[dict[str, Any]]] = {}  # row index -> its later copies
  for raw in text_files.csv_records(reader, path, error=TableError):
    where = f"{path}:{reader.line_num}"  # the record's last line (they are one line, but quoted)
    row = _per_instruction_row(raw, header, where)
    row["line"] = reader.line_num
    key = (row["model"], row["task"], row["instruction_id"])
    if key not in seen:
      seen[key] = len(rows)
      rows.append(row)
      continue
    first = rows[seen[key]]
    if row["split"] != first["split"]:
      raise TableError(
        f"{where}: {'/'.join(key)} is {row['split']} here but {first['split']} on line "
        f"{first['line']}"
      )
    if on_duplicate == "error":
      raise TableError(
        f"{where}: duplicate of line {first['line']} for {'/'.join(key)}; if the file repeats "
        "rows on purpose, pass --on_duplicate first (keep the first) or --on_duplicate mean "
        "(average the repeats)"
      )
    repeats.setdefault(seen[key], []).append(row)
  if not rows:
    raise TableError(f"{path}: no rows after the header")
  if repeats:
    n = sum(len(r) for r in repeats.values())
    warnings.warn(
      f"{path}: {n} repeated (model, task, instruction) row(s) for {len(repeats)} instruction(s); "
      + ("kept the first of each" if on_duplicate == "first" else "averaged their accuracies"),
      stacklevel=2,
    )
  if on_duplicate == "mean":
    for index, copies in repeats.items():
      group = [rows[index], *copies]
      rows[index] = dict(
        rows[index],
        accuracy=float(np.mean([r["accuracy"] for r in group])),
        n_examples=max(r["n_examples"] for r in group),
      )
  for row in rows:
    del row["line"]
  return rows


def _per_instruction_row(raw: Mapping[str | None, Any], header: list[str], where: str) -> dict:
  """One validated CSV row (`where` = `path:line` for errors)."""
  if None in raw or any(raw.get(c) is None for c in REQUIRED_CSV_COLUMNS):
    raise TableError(f"{where}: expected {len(header)} fields as in the header")
  row = {k: (v or "").strip() for k, v in raw.items()}
  for c in ("model", "task", "instruction_id"):
    if not row[c]:
      raise TableError(f"{where}: empty {c}")
  if row["split"] not in SPLITS:
    raise TableError(f"{where}: unknown split {row['split']!r}; use one of {', '.join(SPLITS)}")
  try:
    acc = float(row["accuracy"])
  except ValueError:
    raise TableError(f"{where}: accuracy {row['accuracy']!r} is not a number") from None
  if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
    raise TableError(
      f"{where}: accuracy {acc:g} is outside [0, 1]; write fractions (57.3% is 0.573)"
    )
  n_examples = -1
  if row.get("n_examples"):
    try:
      n_examples = int(row["n_examples"])
    except ValueError:
      raise TableError(f"{where}: n_examples {row['n_examples']!r} is not an integer") from None
    if n_examples <= 0:
      raise TableError(
        f"{where}: n_examples {n_examples} must be a positive integer (the examples the "
        "accuracy was measured on); leave it empty when unknown"
      )
  prompt_format = row.get("prompt_format", "")
  if prompt_format and prompt_format not in PROMPT_FORMATS:
    raise TableError(
      f"{where}: unknown prompt_format {prompt_format!r}; use one of "
      f"{', '.join(PROMPT_FORMATS)}, or leave it empty when unknown"
    )
  return dict(
    model=row["model"],
    task=row["task"],
    instruction_id=row["instruction_id"],
    split=row["split"],
    source=row.get("source", ""),
    n_examples=n_examples,
    accuracy=acc,
    prompt_format=prompt_format,
  )
