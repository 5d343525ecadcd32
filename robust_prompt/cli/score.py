"""`robust-prompt score`: teacher-forced log-likelihoods of target strings.

Input: JSON lines `{"inputs": str, "targets": [str, ...], ...}`. Output: the same objects, in the
same order, with `"scores"` (per target: the sum of log-probabilities of its tokens, EOS included,
as Hugging Face `labels` count it) and `"num_tokens"` (per target: how many tokens were scored).

Every input runs once and all its targets are scored against it (`eval/scorer.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from typing import Any

from robust_prompt.cli import common, gin_utils
from robust_prompt.cli.gin_utils import UserError

USES_GIN = True

# Errors listed at most, so that a wholly wrong file does not flood the terminal.
MAX_REPORTED_ERRORS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--input",
    required=True,
    help='JSON lines, one object per line: {"inputs": "...", "targets": ["...", ...]}',
  )
  parser.add_argument(
    "--output",
    required=True,
    help='JSON lines: each input object plus "scores" and "num_tokens" (written atomically)',
  )
  common.add_model_arguments(parser)
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
  """One validated input line."""

  line: int
  record: dict[str, Any]
  inputs: str
  targets: tuple[str, ...]


def read_requests(path: str | os.PathLike) -> list[ScoreRequest]:
  """Reads and validates every line of `path` (blank lines are skipped).

  Raises:
    UserError: naming `path:line` and what is wrong, for every bad line (up to ten of them).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"--input {path}: no such file")
  requests: list[ScoreRequest] = []
  errors: list[str] = []
  with open(path, encoding="utf-8", errors="strict") as f:
    try:
      lines = f.read().split("\n")
    except UnicodeDecodeError as e:
      raise UserError(f"{path}: not UTF-8 text ({e})") from e
  for lineno, text in enumerate(lines, start=1):
    if not text.strip():
      continue
    problem = None
    try:
      record = json.loads(text)
    except json.JSONDecodeError as e:
      problem = f"not valid JSON ({e.msg} at column {e.colno})"
    else:
      problem = _check_record(record)
    if problem is not None:
      errors.append(f"{path}:{lineno}: {problem}")
      continue
    requests.append(ScoreRequest(lineno, record, record["inputs"], tuple(record["targets"])))
  if errors:
    shown = errors[:MAX_REPORTED_ERRORS]
    more = len(errors) - len(shown)
    raise UserError(
      f"{len(errors)} bad line(s) in {path}; nothing was scored. Each line must be a JSON object "
      '{"inputs": "<text>", "targets": ["<text>", ...]}:\n  '
      + "\n  ".join(shown)
      + (f"\n  ... and {more} more" if more else "")
    )
  if not requests:
    raise UserError(f"{path}: no examples (the file is empty)")
  return requests


def _check_record(record: Any) -> str | None:
  if not isinstance(record, dict):
    return f"expected a JSON object, got {type(record).__name__}"
  for key in ("inputs", "targets"):
    if key not in record:
      return f'missing key "{key}" (keys present: {sorted(record)})'
  if not isinstance(record["inputs"], str):
    return f'"inputs" must be a string, got {type(record["inputs"]).__name__}'
  targets = record["targets"]
  if isinstance(targets, str):
    return '"targets" must be a list of strings, got a string: wrap it as ["..."]'
  if not isinstance(targets, list):
    return f'"targets" must be a list of strings, got {type(targets).__name__}'
  if not targets:
    return '"targets" is empty: give at least one target string'
  for k, target in enumerate(targets):
    if not isinstance(target, str):
      return f'"targets"[{k}] must be a string, got {type(target).__name__}'
  return None


def _check_output(path: pathlib.Path, input_path: pathlib.Path) -> None:
  if path.exists() and path.resolve() == input_path.resolve():
    raise UserError(f"--output {path} is the input file; write the scores elsewhere")
  if path.is_dir():
    raise UserError(f"--output {path} is a directory; give a file name")
  parent = path.parent
  try:
    parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"--output {path}: cannot create its directory ({e.strerror or e})") from e
  if not os.access(parent, os.W_OK):
    raise UserError(f"--output {path}: directory {parent} is not writable")


def run(args: argparse.Namespace) -> int:
  from robust_prompt import io_utils

  input_path = pathlib.Path(args.input)
  output_path = pathlib.Path(args.output)
  # Everything the user can get wrong is checked before the (slow) model load.
  requests = read_requests(input_path)
  _check_output(output_path, input_path)
  gin_utils.register_configurables()
  gin_utils.parse_gin(
    getattr(args, "gin_file", []),
    getattr(args, "gin_bindings", []),
    getattr(args, "gin_search_paths", []),
  )

  mesh = common.mesh_from_args(args)
  loaded = common.model_from_args(args, mesh)
  prompt = None
  if args.prompt:
    prompt = common.load_prompt(args.prompt, loaded.config.d_model)

  from robust_prompt.eval.scorer import Scorer
  from robust_prompt.model import prompted

  model = prompted.for_config(loaded.config)
  scorer = Scorer(
    model, loaded.params, loaded.vocab, mesh=mesh, prompt=prompt, batch_size=args.batch_size
  )
  input_ids, target_ids, cut_inputs, cut_targets = scorer.tokenize(
    [r.inputs for r in requests],
    [list(r.targets) for r in requests],
    args.max_input_length,
    args.max_target_length,
  )
  if cut_inputs:
    print(
      f"warning: {cut_inputs} input(s) longer than --max_input_length={args.max_input_length} "
      "tokens were truncated",
      file=sys.stderr,
    )
  if cut_targets:
    print(
      f"warning: {cut_targets} target(s) longer than --max_target_length={args.max_target_length} "
      "tokens were truncated: their scores cover only the kept tokens",
      file=sys.stderr,
    )
  results = scorer.score(
    input_ids,
    target_ids,
    max_input_length=args.max_input_length,
    max_target_length=args.max_target_length,
    progress=not args.no_progress,
  )

  lines = []
  for request, (scores, num_tokens) in zip(requests, results):
    record = dict(request.record)
    record["scores"] = scores
    record["num_tokens"] = num_tokens
    lines.append(json.dumps(record, ensure_ascii=False))
  io_utils.atomic_write_text(output_path, "\n".join(lines) + "\n")
  total = sum(len(r.targets) for r in requests)
  print(f"scored {total} target(s) of {len(requests)} input(s) -> {output_path}", file=sys.stderr)
  return 0
