"""`robust-prompt score`: teacher-forced log-likelihoods of target strings.

Input: JSON lines `{"inputs": str, "targets": [str, ...], ...}`. Output: the same objects, in the
same order, with `"scores"` (per target: the sum of log-probabilities of its tokens, EOS included,
as Hugging Face `labels` count it) and `"num_tokens"` (per target: how many tokens were scored).

Every input is encoded once and all its targets are scored against that encoder output: with `O`
targets an input costs one encoder pass instead of `O`. Batches use a few static (bucketed) shapes
so that jit compiles a handful of times, and are split over the mesh's `data` axis.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

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


class Scorer:
  """Scores targets against inputs with a loaded model, in bucketed, mesh-sharded batches.

  Args:
    loaded: the model (`load_model`'s result; params already placed on `mesh`).
    mesh: the device mesh, or None for the default device.
    prompt: [P, H] optional soft prompt prepended to every input's embeddings.
    batch_size: inputs per batch (rounded up to a multiple of the mesh's data axis).
  """

  def __init__(self, loaded, *, mesh=None, prompt: np.ndarray | None = None, batch_size: int = 32):
    import jax

    from robust_prompt.model.t5 import T5

    self.loaded = loaded
    self.mesh = mesh
    self.data_size = common.data_axis_size(mesh)
    self.batch_size = -(-batch_size // self.data_size) * self.data_size
    self.model = T5(loaded.config)
    # Without a mesh the loader returns numpy arrays: put them on the device once, not per call.
    self.params = loaded.params if mesh is not None else jax.device_put(loaded.params)
    self.prompt = None if prompt is None else self._put(np.asarray(prompt, np.float32), False)
    self._fn = jax.jit(self._score_pairs)

  def _score_pairs(
    self, params, prompt, input_ids, input_mask, group_index, target_ids, target_mask
  ):
    """Encodes [B, T] inputs once, then scores the [R, S] targets; returns ([R], [R])."""
    from robust_prompt.model import scoring
    from robust_prompt.model.t5 import T5

    variables = {"params": params}
    if prompt is None:
      encoded = self.model.apply(variables, input_ids, input_mask, method=T5.encode)
      encoder_mask = input_mask
    else:
      from robust_prompt.train.prompt import prepend_prompt

      embeds = self.model.apply(variables, input_ids, method=T5.embed)
      embeds, encoder_mask = prepend_prompt(prompt, embeds, input_mask)
      encoded = self.model.apply(variables, embeds, encoder_mask, method=T5.encode_embeds)
    # Each (input, target) pair reads its input's encoder output: the encoder ran once per input,
    # and `encoder_index` makes cross-attention project its keys/values once per input as well.
    return scoring.score_with_encoded(
      self.model,
      params,
      encoded,
      encoder_mask,
      target_ids,
      target_mask,
      encoder_index=group_index,
    )

  def _put(self, array: np.ndarray, batched: bool = True):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if self.mesh is None:
      return jax.device_put(array)
    spec = PartitionSpec("data") if batched else PartitionSpec()
    return jax.device_put(array, NamedSharding(self.mesh, spec))

  def score(
    self,
    input_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[Sequence[int]]],
    *,
    max_input_length: int | None = None,
    max_target_length: int | None = None,
    progress: bool = True,
  ) -> list[tuple[list[float], list[int]]]:
    """Scores every target of every input.

    Args:
      input_ids: per example, its input tokens (EOS included; at most `max_input_length`).
      target_ids: per example, a non-empty list of target token lists (EOS included).
      max_input_length / max_target_length: caps of the length buckets.
      progress: show a tqdm bar (examples/s).

    Returns:
      Per example, in input order: (sum log-prob per target, number of tokens per target).
    """
    import jax
    from tqdm import tqdm

    from robust_prompt import batching

    n = len(input_ids)
    # The usual number of targets: batches of such inputs fill exactly one pair-count bucket.
    usual = collections.Counter(len(t) for t in target_ids).most_common(1)[0][0]
    # Within a length bucket, inputs with similar longest targets go together: the decoder pads
    # every target of a batch to its longest, and the decoder (logits over V) dominates the cost.
    plan = batching.plan_batches(
      [len(x) for x in input_ids],
      self.batch_size,
      max_len=max_input_length,
      secondary=[max(len(t) for t in targets) for targets in target_ids],
    )
    results: list[Any] = [None] * n
    pad_id = self.loaded.config.pad_token_id
    with tqdm(total=n, unit="ex", desc="score", disable=not progress, file=sys.stderr) as bar:
      for batch in plan:
        ids, mask = batching.pad_batch(
          [input_ids[i] for i in batch.indices], batch.length, pad_id=pad_id, batch_size=batch.size
        )
        pairs = batching.pack_ragged(
          [target_ids[i] for i in batch.indices],
          max_len=max_target_length,
          pad_id=pad_id,
          minimum_pairs=batch.size * usual,
          pairs_multiple=self.data_size,
        )
        sums, counts = self._fn(
          self.params,
          self.prompt,
          self._put(ids),
          self._put(mask),
          self._put(pairs.group_index),
          self._put(pairs.ids),
          self._put(pairs.mask),
        )
        # Fetching before the next dispatch keeps one step in flight: queueing many sharded steps
        # can deadlock XLA's CPU collectives, and the host work per batch is small anyway.
        sums, counts = jax.device_get((sums, counts))
        per_group_sums = pairs.split(np.asarray(sums, np.float64), batch.num_real)
        per_group_counts = pairs.split(np.asarray(counts), batch.num_real)
        for row, index in enumerate(batch.indices):
          results[index] = (
            [float(s) for s in per_group_sums[row]],
            [int(c) for c in per_group_counts[row]],
          )
        bar.update(batch.num_real)
    return results

  def mesh_context(self):
    """The context the model runs under: the mesh and the logical-axis rules (if any mesh)."""
    import contextlib

    from robust_prompt import partitioning

    if self.mesh is None:
      return contextlib.nullcontext()
    return partitioning.mesh_context(self.mesh)


def _tokenize(vocab, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], int]:
  """`vocab.encode(text) + [EOS]`, truncated to `max_len` keeping EOS; returns (ids, #truncated)."""
  from robust_prompt import batching
  from robust_prompt import vocab as vocab_lib

  full = vocab_lib.encode_inputs(vocab, texts)
  cut = [batching.truncate(ids, max_len) for ids in full]
  return cut, sum(len(a) != len(b) for a, b in zip(full, cut))


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

  input_ids, cut_inputs = _tokenize(
    loaded.vocab, [r.inputs for r in requests], args.max_input_length
  )
  flat_targets = [t for r in requests for t in r.targets]
  flat_ids, cut_targets = _tokenize(loaded.vocab, flat_targets, args.max_target_length)
  target_ids, start = [], 0
  for r in requests:
    target_ids.append(flat_ids[start : start + len(r.targets)])
    start += len(r.targets)
  if cut_inputs:
    print(
      f"warning: {cut_inputs} input(s) longer than --max_input_length={args.max_input_length} "
      "tokens were truncated (EOS kept)",
      file=sys.stderr,
    )
  if cut_targets:
    print(
      f"warning: {cut_targets} target(s) longer than --max_target_length={args.max_target_length} "
      "tokens were truncated: their scores cover only the kept tokens",
      file=sys.stderr,
    )

  scorer = Scorer(loaded, mesh=mesh, prompt=prompt, batch_size=args.batch_size)
  with scorer.mesh_context():
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
