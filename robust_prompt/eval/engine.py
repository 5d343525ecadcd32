"""The robustness evaluation engine: every (task, instruction, example) scored, streamed, resumable.

Work is split into *chunks*, one per (task, instruction), in a fixed order (tasks in the order
given, instructions in collection order, examples in loader order). Each chunk is rendered and
tokenized; pooled rows are sorted by input length and cut into batches of a few static shapes
(`batching`), so that `jax.jit` compiles a handful of times for the whole run, not per batch:

* multiple-choice rows go through `PromptedModel.option_log_probs` (`[B, T]` inputs,
  `[B, O, S]` options; `T`, `O` and `S` are bucketed, `B` is fixed and filled with dummy rows);
* generative rows (no options) are decoded greedily (`PromptedModel.greedy`) and scored by
  normalised exact match against any reference.

Both run through `eval_step`, the one jitted eval step (which `aot` also lowers).

Consecutive chunks of a task are pooled (`plan_pools`, about `pool_rows` rows) and batched
together, so that batches hold inputs of similar length across instructions. A pool's rows are
appended to `results.jsonl` in one fsync'd write once the pool is done; `resume.completed_chunks`
lets a rerun skip them. Pools and batch composition depend only on the full chunk list, so a
resumed run writes exactly the bytes an uninterrupted one would.

Multi-host: every process builds the same batches (the plan is deterministic), places them on the
global mesh with `jax.make_array_from_callback` (each process supplies only its addressable
shards of the `data` axis), and reads replicated results; only process 0 writes files. This
follows JAX's SPMD model but has only been run on one host (with 8 CPU devices).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from robust_prompt import batching, compile_ahead, io_utils, multihost, partitioning
from robust_prompt.data.example import Example
from robust_prompt.eval import checks, generate, rank, resume
from robust_prompt.instructions.io import instructions_for_task
from robust_prompt.instructions.render import Rendered, model_input, render
from robust_prompt.instructions.schema import Instruction
from robust_prompt.model import prompted
from robust_prompt.model.prompted import PromptedModel

# Rank-classification scores: the model's modes, and "acc_norm" (lm-evaluation-harness's
# byte-length normalisation: the "sum" log-likelihood divided by the option's UTF-8 length).
SCORE_MODES = (*prompted.SCORE_MODES, "acc_norm")


class OptionsTieError(ValueError):
  """Truncation made different options of an example identical (so they must tie)."""


def take(examples: Sequence, max_examples: int | float | None, example_ids=None) -> tuple:
  """The examples a run evaluates: the chosen ids, then the first N (or ceil(F * n))."""
  out = tuple(examples)
  if example_ids is not None:
    out = tuple(e for e in out if e.id in example_ids)
  if max_examples is None:
    return out
  if isinstance(max_examples, float) and max_examples < 1:
    return out[: math.ceil(max_examples * len(out))]
  return out[: int(max_examples)]


# Smallest buckets (powers of two above them): option counts 2, 4, 8, ...; option lengths
# 1, 2, 4, 8, ... A T5 letter + EOS is 2 tokens; a decoder-only model's letter continuation
# (" A", no EOS) is 1, and a bucket of 2 would run a continuation pass of O positions whose
# logits no option reads (+4% FLOPs, +25% bytes of a B16 T128 MMLU step on a 100M Llama).
MIN_OPTIONS_BUCKET = 2
MIN_OPTION_LENGTH_BUCKET = 1


class NoWorkError(ValueError):
  """No instruction applies to any selected task."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How to run the evaluation (the CLI fills it from flags and gin).

  Attributes:
    score_mode: "sum" | "mean" | "greedy_prefix" (see `rank`).
    batch_size: rows per global batch (rounded up to a multiple of the mesh's data axis).
    max_input_length: inputs are truncated to this many tokens (EOS kept).
    max_target_length: options / references are truncated to this many tokens (EOS kept).
    max_decode_length: greedy steps for generative tasks.
    max_examples: evaluate only the first N examples of each task, or (a float in (0, 1)) the
      first ceil(F * n) (None: all).
    example_ids: evaluate only these example ids (None: all).
    shuffle_options: `(task pattern, seed)` pairs: those tasks' options are reordered by one
      seeded RNG in example order (`data/option_order.py`; the study's conceptual_combinations).
    log_inputs: results rows also carry the input text the model read (after the prompt format).
    prompt_format: how the rendered text is wrapped for the model: "raw", "alpaca" or "chat"
      (`model/prompt_formats.py`; decoder-only instruction-tuned models), for instructions that
      declare no format of their own (`Instruction.prompt_format` wins; `prompt_format_of`).
    pool_rows: rows of consecutive (task, instruction) chunks batched together (`plan_pools`);
      results are written, and a killed run resumes, a pool at a time.
    num_fewshot: K solved demonstrations before each input, rendered with the same instruction
      (`instructions/fewshot.py`); 0 = zero-shot.
    fewshot_split: where demonstrations come from: a split of the task (e.g. MMLU's "dev"), or
      None for the task's other examples (never the evaluated one).
    fewshot_seed: the seed of the (per example, reproducible) draw.
    fewshot_separator: between demonstrations and before the input.
    shape_cost_slots: what one more compiled shape is worth in padded token slots (rows x
      positions): a run's batches share lengths where padding costs less (`merge_lengths`).
      The default, 4096 slots, is ~0.6 s of T5-small on a 2-core CPU: about what one more
      shape costs there when shapes compile two at a time (`compile_ahead`), measured with
      `benchmarks/eval_throughput.py --shape_cost_slots`. 0 keeps every quarter-octave bucket.
      It changes padding only, so scores agree to float rounding.
    compile_ahead: compile every planned batch shape in background threads before it runs
      (`compile_ahead`); off, each shape compiles when first called. Results are the same.
  """

  score_mode: str = "sum"
  batch_size: int = 32
  max_input_length: int = 1024
  max_target_length: int = 256
  max_decode_length: int = 32
  max_examples: int | float | None = None
  pool_rows: int = 2048
  example_ids: frozenset[str] | None = None
  shuffle_options: tuple[tuple[str, int], ...] = ()
  log_inputs: bool = False
  prompt_format: str = "raw"
  num_fewshot: int = 0
  fewshot_split: str | None = None
  fewshot_seed: int = 1234
  fewshot_separator: str = "\n\n"
  shape_cost_slots: int = batching.DEFAULT_SHAPE_COST_SLOTS
  compile_ahead: bool = True


def evaluate_settings(
  score_mode: str = "sum",
  batch_size: int = 32,
  max_input_length: int = 1024,
  max_target_length: int = 256,
  max_decode_length: int = 32,
  max_examples: int | float | None = None,
  pool_rows: int = 2048,
  example_ids=None,
  shuffle_options=(),
  log_inputs: bool = False,
  prompt_format: str = "raw",
  num_fewshot: int = 0,
  fewshot_split: str | None = None,
  fewshot_seed: int = 1234,
  fewshot_separator: str = "\n\n",
  shape_cost_slots: int = batching.DEFAULT_SHAPE_COST_SLOTS,
  compile_ahead: bool = True,
) -> EvalSettings:
  """Validated `EvalSettings` (the CLI exposes this function to gin as `evaluate`).

  Raises:
    ValueError: an unknown score mode or a non-positive size.
  """
  sizes = dict(
    batch_size=batch_size,
    max_input_length=max_input_length,
    max_target_length=max_target_length,
    max_decode_length=max_decode_length,
    pool_rows=pool_rows,
  )
  if isinstance(max_examples, float) and not max_examples.is_integer():
    if not 0 < max_examples < 1:
      raise ValueError(f"max_examples as a fraction must be in (0, 1), got {max_examples!r}")
  elif max_examples is not None:
    max_examples = int(max_examples)
    sizes["max_examples"] = max_examples
  if score_mode not in SCORE_MODES:
    raise ValueError(f"score_mode {score_mode!r} is not one of {', '.join(SCORE_MODES)}")
  from robust_prompt.model.prompt_formats import FORMATS

  if prompt_format not in FORMATS:
    raise ValueError(f"prompt_format {prompt_format!r} is not one of {', '.join(FORMATS)}")
  for name, value in sizes.items():
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if not isinstance(shape_cost_slots, int) or shape_cost_slots < 0:
    raise ValueError(f"shape_cost_slots must be an integer >= 0, got {shape_cost_slots!r}")
  if not isinstance(num_fewshot, int) or num_fewshot < 0:
    raise ValueError(f"num_fewshot must be an integer >= 0, got {num_fewshot!r}")
  return EvalSettings(
    score_mode=score_mode,
    batch_size=batch_size,
    max_input_length=max_input_length,
    max_target_length=max_target_length,
    max_decode_length=max_decode_length,
    max_examples=max_examples,
    pool_rows=pool_rows,
    example_ids=None if example_ids is None else frozenset(example_ids),
    shuffle_options=tuple((str(t), int(seed)) for t, seed in shuffle_options),
    log_inputs=bool(log_inputs),
    prompt_format=prompt_format,
    num_fewshot=num_fewshot,
    fewshot_split=fewshot_split,
    fewshot_seed=fewshot_seed,
    fewshot_separator=fewshot_separator,
    shape_cost_slots=shape_cost_slots,
    compile_ahead=bool(compile_ahead),
  )


@dataclasses.dataclass(frozen=True)
class Chunk:
  """One (task, instruction) unit of work with its rendered examples."""

  task: str
  instruction: Instruction
  examples: tuple[Example, ...]
  rendered: tuple[Rendered, ...]

  @property
  def key(self) -> tuple[str, str]:
    return (self.task, self.instruction.id)


def plan_chunks(
  tasks: Mapping[str, Sequence[Example]],
  instructions: Sequence[Instruction],
  max_examples: int | None = None,
) -> list[Chunk]:
  """Renders every (task, instruction, example) up front, so that misfits fail before any work.

  Raises:
    InstructionError: an instruction does not fit an example of a task it claims (its message
      names the instruction's file:line, the example and the task).
    NoWorkError: no instruction applies to any of `tasks`.
  """
  chunks = []
  for task, examples in tasks.items():
    examples = take(examples, max_examples)
    if not examples:
      continue
    for instruction in instructions_for_task(instructions, task):
      rendered = tuple(render(instruction, ex) for ex in examples)
      chunks.append(Chunk(task, instruction, examples, rendered))
  if not chunks:
    patterns = sorted({p for i in instructions for p in i.tasks})
    raise NoWorkError(
      f"no instruction applies to the selected task(s) {sorted(tasks)[:10]}"
      f"{' ...' if len(tasks) > 10 else ''}; the instructions are for {patterns[:10]}. "
      "Pass instruction files written for these tasks (their `tasks` field must name or glob-match "
      "them), or select other --tasks."
    )
  return chunks


def prompt_format_of(instruction: Instruction, settings: EvalSettings) -> str:
  """The format `instruction` is read in: its own (record or file defaults), else the run's.

  A declared format wins even over an explicit `--prompt_format`: it says how the instruction's
  text was written to be read (e.g. a file of Alpaca-style instructions).
  """
  return instruction.format_for(settings.prompt_format)


def plan_pools(chunks: Sequence[Chunk], pool_rows: int) -> list[range]:
  """Cuts the chunk list into pools of consecutive chunks of one task, batched together.

  A pool closes once it holds at least `pool_rows` rows, or when the task changes (a task's
  chunks share their examples, hence input lengths and option counts). The pools depend only on
  the full chunk list, never on where a resumed run starts, so that a resumed run batches (and
  therefore scores) every row exactly as an uninterrupted one.

  Returns:
    Ranges of chunk indices covering `chunks` in order.
  """
  pools, start, rows = [], 0, 0
  for i, chunk in enumerate(chunks):
    if i > start and (rows >= pool_rows or chunk.task != chunks[start].task):
      pools.append(range(start, i))
      start, rows = i, 0
    rows += len(chunk.examples)
  if chunks:
    pools.append(range(start, len(chunks)))
  return pools


def fingerprint(
  *,
  model: str,
  chunks: Sequence[Chunk],
  settings: EvalSettings,
  prompt_digest: str | None = None,
  extra: Mapping[str, Any] | None = None,
) -> dict:
  """What identifies a run's results (`run.json`): resuming requires the same fingerprint."""
  instructions = {c.instruction.id: c.instruction for c in chunks}
  return {
    "model": model,
    "prompt": prompt_digest,
    "tasks": sorted({c.task for c in chunks}),
    "instructions": resume.digest([instructions[i].to_json_dict() for i in sorted(instructions)]),
    "num_instructions": len(instructions),
    "score_mode": settings.score_mode,
    "max_examples": settings.max_examples,
    **(
      {}
      if settings.example_ids is None
      else {"example_ids": resume.digest(sorted(settings.example_ids))}
    ),
    "prompt_format": settings.prompt_format,
    # Each instruction's own format, when any declares one: runs that read an instruction in
    # different formats must not share a directory.
    **(
      {
        "prompt_formats": {
          i: prompt_format_of(instructions[i], settings) for i in sorted(instructions)
        }
      }
      if any(inst.prompt_format for inst in instructions.values())
      else {}
    ),
    **({"shuffle_options": settings.shuffle_options} if settings.shuffle_options else {}),
    "max_input_length": settings.max_input_length,
    "max_target_length": settings.max_target_length,
    "max_decode_length": settings.max_decode_length,
    **(
      {}
      if not settings.num_fewshot
      else {
        "num_fewshot": settings.num_fewshot,
        "fewshot_split": settings.fewshot_split,
        "fewshot_seed": settings.fewshot_seed,
        "fewshot_separator": settings.fewshot_separator,
      }
    ),
    **dict(extra or {}),
  }


@functools.lru_cache(maxsize=64)
def eval_step(model: PromptedModel, kind: str, option: str | int, out_shardings=None) -> Callable:
  """THE jitted eval step (the engine runs it, `aot` lowers it): `(params, prompt, batch) -> out`.

  Args:
    model: the prompted model (static: frozen, hashed by its config).
    kind: "options" (`option` = score mode; out `[B, O]` scores) or "generate" (`option` =
      greedy steps K; out `[B, K]` tokens).
    out_shardings: e.g. replicated on the mesh, so that every process reads all results.

  Compiles once per distinct batch shape (and prompt presence). Parameters are arguments, so
  evaluators of one architecture share compilations (e.g. a baseline and a soft-prompt run).
  """
  if kind == "options":
    option = "sum" if option == "acc_norm" else prompted.check_mode(option)

    def fn(params, prompt, batch):
      return model.option_log_probs(params, prompt, batch, mode=option)
  elif kind == "generate":

    def fn(params, prompt, batch):
      return model.greedy(params, prompt, batch, option)
  else:
    raise ValueError(f"unknown eval step kind {kind!r}")
  return jax.jit(fn, out_shardings=out_shardings)


class Evaluator:
  """Scores chunks with jitted, bucketed, sharded steps.

  Args:
    model: the prompted model (`prompted.for_config(loaded.config)`).
    params: its parameter tree (placed on `mesh`, or host arrays: placed once here).
    vocab: the model's vocabulary.
    settings: see `EvalSettings`.
    mesh: a `Mesh(data, model)` or None (default device).
    prompt: optional soft prompt `[P, H]`.
  """

  def __init__(
    self, model: PromptedModel, params, vocab, settings: EvalSettings, *, mesh=None, prompt=None
  ):
    self.model = model
    self.vocab = vocab
    self.settings = settings
    self.mesh = mesh
    data = int(dict(mesh.shape).get("data", 1)) if mesh is not None else 1
    self.data_size = data
    self.batch_size = -(-settings.batch_size // data) * data
    replicated = None
    if mesh is not None:
      from jax.sharding import NamedSharding, PartitionSpec

      replicated = NamedSharding(mesh, PartitionSpec())
    # Host (numpy) parameters are put on the devices once, here: passed to every step as numpy,
    # they would be copied in again per batch (~240 MB for T5-small, a sixth of a step on CPU).
    self.params = multihost.place_replicated(params, mesh)
    self.prompt = (
      None if prompt is None else multihost.place_replicated(np.asarray(prompt, np.float32), mesh)
    )
    self._prompt_length = 0 if prompt is None else int(np.shape(prompt)[0])
    self.score_fn = eval_step(model, "options", settings.score_mode, replicated)
    self.decode_fn = eval_step(model, "generate", settings.max_decode_length, replicated)
    # (kind, *shape) of every step run: the compilations to expect (see tests).
    self.shapes: set[tuple] = set()
    # What, besides a batch's shapes, tells the compiled programs of the steps apart.
    self._fixed_key = compile_ahead.avals_key((self.params, self.prompt), mesh)

  def _run(self, fn, batch: dict) -> np.ndarray:
    """Runs `fn` on a host batch under the mesh; returns host numpy (blocking: 2-core note)."""
    batch = multihost.place_batch(batch, self.mesh)
    if self.mesh is None:
      out = fn(self.params, self.prompt, batch)
    else:
      with partitioning.mesh_context(self.mesh):
        out = fn(self.params, self.prompt, batch)
    return np.asarray(jax.device_get(jax.block_until_ready(out)))

  def _batch_rows(self, num_rows: int) -> int:
    """Rows of a batch: `batch_size`, or fewer (a power of two) when there is less work.

    A `--batch_size` far above the work (1024 for 16 rows) must not pad to its full size.
    """
    rows = _pow2_bucket(num_rows, 1)
    rows = -(-rows // self.data_size) * self.data_size
    return min(self.batch_size, rows)

  # -- chunks ------------------------------------------------------------------------------------

  def texts(self, chunk: Chunk) -> list[str]:
    """The model's input texts of a chunk: its rendered inputs in the chunk's prompt format
    (`prompt_format_of`; Alpaca's with-input wrapper when the instruction shows its input apart)."""
    fmt = prompt_format_of(chunk.instruction, self.settings)
    config = getattr(self.vocab, "tokenizer_config", None)
    return [model_input(r, fmt, config) for r in chunk.rendered]

  def input_ids(self, chunk: Chunk) -> list[list[int]]:
    """The token ids of a chunk's rendered inputs (the family's tokenization, truncated)."""
    return self._encode_inputs(self.texts(chunk))[0]

  def _encode_inputs(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """Ids truncated the family's way, and which inputs truncation cut."""
    cap = self.settings.max_input_length
    full = self.model.encode_inputs(self.vocab, texts, None)
    cut = [i for i, ids in enumerate(full) if len(ids) > cap]
    if cut:
      for i, ids in zip(cut, self.model.encode_inputs(self.vocab, [texts[i] for i in cut], cap)):
        full[i] = ids
    flags = [False] * len(texts)
    for i in cut:
      flags[i] = True
    return full, flags

  def _encode_options(self, chunk: Chunk, texts: list[str]) -> tuple[list, list[int]]:
    """Option ids (truncated) and, per row, how many options truncation cut.

    Raises:
      OptionsTieError: truncation made two different options identical.
    """
    cap = self.settings.max_target_length
    opts = [r.options for r in chunk.rendered]
    full = self.model.encode_options(self.vocab, texts, opts, None)
    counts = [sum(len(o) > cap for o in row) for row in full]
    rows = [i for i, c in enumerate(counts) if c]
    if rows:
      cut = self.model.encode_options(
        self.vocab, [texts[i] for i in rows], [opts[i] for i in rows], cap
      )
      for i, ids in zip(rows, cut):
        full[i] = ids
        if len({tuple(o) for o in ids}) < len(set(opts[i])):
          raise OptionsTieError(
            f"--max_target_length {cap} cuts different options of example "
            f"{chunk.examples[i].id!r} (task {chunk.task}, instruction {chunk.instruction.id}) "
            "to the same tokens, so they would tie: raise --max_target_length"
          )
    return full, counts

  def score_chunk(self, chunk: Chunk, model_name: str) -> list[dict]:
    """Scores one (task, instruction) chunk; returns its results rows in example order."""
    return self.score_chunks([chunk], model_name)[0]

  def score_chunks(
    self,
    chunks: Sequence[Chunk],
    model_name: str,
    on_batch: Callable[[int], None] | None = None,
    run_rows: int | None = None,
  ) -> list[list[dict]]:
    """Scores several chunks pooled together; returns each chunk's rows in example order.

    The rows of all `chunks` are sorted by input length (then by longest option) and cut into
    batches together, so that a batch holds inputs of similar length whichever instruction
    rendered them: a chunk alone (often a few dozen rows) would leave most batches padded to a
    long outlier, or partly filled with dummy rows. The input length `T` is bucketed, and per
    batch the option count `O` and option length `S` (powers of two): the decoder's cost grows
    with `1 + O * (S - 1)` (a `V`-wide logit row per option position), so one long option must
    not pad every batch. The results depend only on `chunks` (and the settings), not on what ran
    before.

    Args:
      chunks: the chunks to pool (`plan_pools` chooses them in `evaluate`).
      model_name: the `model` column of the rows.
      on_batch: called with the number of real rows after each batch (progress).
      run_rows: the rows of the whole run (`evaluate`: of every pool, done or not), over which
        one compiled shape is paid for: a pool of a long run weighs a new shape by its share
        (`settings.shape_cost_slots`, `batching.merge_lengths`). Default: these chunks' rows.
    """
    inputs: list[list[int]] = []
    options: list[list[list[int]]] = []
    cut_inputs: list[bool] = []
    cut_options: list[int] = []
    cap = self.settings.max_target_length
    logged: list[list[str] | None] = []  # the model's texts per chunk, for --log_inputs
    for chunk in chunks:
      texts = self.texts(chunk)
      logged.append(texts if self.settings.log_inputs else None)
      ids, flags = self._encode_inputs(texts)
      inputs.extend(ids)
      cut_inputs.extend(flags)
      opts, counts = self._encode_options(chunk, texts)
      options.extend(opts)
      cut_options.extend(counts)
    total = sum(len(c.rendered) for c in chunks)
    # Rows are not grouped by chunk within a length bucket, although a decoder-only model would
    # then share more of each instruction's leading tokens (`with_shared_prefix`): on MMLU x 16
    # instructions that saved 0.4-1.7% more context positions for 15-18% more compiled shapes
    # (benchmarks/shared_prefix.py).
    plans = batching.plan_batches(
      [len(x) for x in inputs],
      self._batch_rows(total),
      max_len=self.settings.max_input_length,
      secondary=[max(map(len, o)) if o else 0 for o in options],
      # An evaluation runs many batches of each shape: quarter-octave buckets (<= 1/5 padding)
      # cost a few more compilations and save far more encoder work than they cost.
      steps_per_octave=4,
    )
    # On a short run, compiling a shape costs more than padding a few batches to the next one.
    plans = batching.merge_lengths(
      plans, self.settings.shape_cost_slots * total / max(run_rows or total, total)
    )
    # Every batch is built before any runs, so that all their shapes can compile ahead, in
    # parallel with each other and with the first batches (`compile_ahead`).
    steps: list[tuple[str, list[int], dict, Any]] = []  # (kind, rows, batch, num real rows)
    for plan in plans:
      length = plan.length  # batching's buckets: 16, 20, 24, 28, 32, 40, ... (<= 1/5 padding)
      mc = [i for i in plan.indices if options[i]]
      gen = [i for i in plan.indices if not options[i]]
      if mc:
        longest = max(len(t) for i in mc for t in options[i])
        num_o = _pow2_bucket(max(len(options[i]) for i in mc), MIN_OPTIONS_BUCKET)
        num_s = min(_pow2_bucket(longest, MIN_OPTION_LENGTH_BUCKET), max(cap, longest))
        batch = self._options_batch(inputs, options, mc, plan.size, length, num_o, num_s)
        steps.append(("options", mc, batch, None if gen else plan.num_real))
      if gen:
        steps.append(
          ("generate", gen, self._generate_batch(inputs, gen, plan.size, length), plan.num_real)
        )
    keys = [self._compile_ahead(kind, batch) for kind, _, batch, _ in steps]
    outputs: list[Any] = [None] * len(inputs)
    try:
      for (kind, rows, batch, num_real), key in zip(steps, keys):
        compile_ahead.wait(key)
        if kind == "options":
          scores = self._run(self.score_fn, batch)
          for r, i in enumerate(rows):
            outputs[i] = scores[r, : len(options[i])]
        else:
          for i, text in zip(rows, self._decode(self._run(self.decode_fn, batch), len(rows))):
            outputs[i] = text
        if on_batch is not None and num_real is not None:
          on_batch(num_real)
    except BaseException:
      compile_ahead.cancel(k for k in keys if k is not None)
      raise
    results, at = [], 0
    for chunk, texts in zip(chunks, logged):
      rows = []
      fmt = prompt_format_of(chunk.instruction, self.settings)
      for k, (ex, r) in enumerate(zip(chunk.examples, chunk.rendered)):
        out = outputs[at + k]
        if r.options and self.settings.score_mode == "acc_norm":
          lengths = np.array([max(len(o.encode("utf-8")), 1) for o in r.options], np.float32)
          out = np.asarray(out, np.float32) / lengths
        row = make_row(model_name, chunk, ex, r, out)
        row["truncated_input"] = cut_inputs[at + k]
        row["truncated_options"] = cut_options[at + k]
        row["prompt_format"] = fmt
        if texts is not None:
          row["inputs"] = texts[k]  # what the model read: after the prompt format
        rows.append(row)
      # Before anything is written: a NaN score would otherwise "predict" the first option.
      checks.check_finite_scores(rows)
      results.append(rows)
      at += len(chunk.rendered)
    return results

  def _options_batch(self, inputs, options, rows, b, length, num_o, num_s) -> dict:
    """The host batch of `rows` (`b` rows, dummies included) for the options step."""
    ids, mask = batching.pad_batch([inputs[i] for i in rows], length, batch_size=b)
    option_ids = np.zeros((b, num_o, num_s), np.int32)
    option_mask = np.zeros((b, num_o, num_s), np.int32)
    for r, i in enumerate(rows):
      for o, toks in enumerate(options[i]):
        option_ids[r, o, : len(toks)] = toks
        option_mask[r, o, : len(toks)] = 1
    batch = dict(input_ids=ids, input_mask=mask, option_ids=option_ids, option_mask=option_mask)
    batch = self.model.with_shared_prefix(batch, self._prompt_length)
    self.shapes.add(("options", b, length, num_o, num_s, *_shared_prefix_shape(batch)))
    return batch

  def _generate_batch(self, inputs, rows, b, length) -> dict:
    """The host batch of `rows` (`b` rows, dummies included) for greedy decoding."""
    ids, mask = batching.pad_batch([inputs[i] for i in rows], length, batch_size=b)
    batch = self.model.with_shared_prefix(dict(input_ids=ids, input_mask=mask), self._prompt_length)
    self.shapes.add(("generate", b, length, *_shared_prefix_shape(batch)))
    return batch

  def _decode(self, tokens: np.ndarray, num_rows: int) -> list[str]:
    """Greedy generations `[B, K]` -> the text before EOS of the first `num_rows` rows."""
    eos, pad = self.model.eos_id, self.model.pad_id
    return [
      self.vocab.decode(generate.strip_after_eos(tokens[r], eos, pad)) for r in range(num_rows)
    ]

  def _compile_ahead(self, kind: str, batch: dict) -> tuple | None:
    """Submits the step of `batch`'s shapes for compilation in the background; returns its key
    (for `compile_ahead.wait`), or None when compiling ahead is off."""
    if not self.settings.compile_ahead:
      return None
    fn = self.score_fn if kind == "options" else self.decode_fn
    return compile_ahead.submit_step(
      fn, self.params, self.prompt, batch, self.mesh, self._fixed_key
    )


def _shared_prefix_shape(batch: Mapping[str, Any]) -> tuple[int, ...]:
  """`(T_s,)` when the batch carries a shared prefix (one more static shape), else `()`."""
  return (batch["prefix_ids"].shape[1],) if "prefix_ids" in batch else ()


def _pow2_bucket(n: int, minimum: int) -> int:
  """The smallest power of two >= max(n, minimum)."""
  bucket = max(int(minimum), 1)
  while bucket < n:
    bucket *= 2
  return bucket


def _gold(rendered: Rendered):
  if rendered.options:
    return rendered.answer if len(rendered.correct) <= 1 else list(rendered.correct)
  return rendered.targets[0] if len(rendered.targets) == 1 else list(rendered.targets)


def make_row(model_name: str, chunk: Chunk, example: Example, rendered: Rendered, output) -> dict:
  """One results row (design.md's results table)."""
  if rendered.options:
    scores = [float(s) for s in np.asarray(output, np.float32)]
    prediction: int | str = rank.predict(np.asarray(scores), len(scores))
    correct = prediction in rendered.correct
  else:
    scores = []
    prediction = str(output)
    correct = generate.exact_match(prediction, rendered.targets)
  return {
    "model": model_name,
    "task": chunk.task,
    "instruction_id": chunk.instruction.id,
    "split": chunk.instruction.split,
    "source": chunk.instruction.source,
    "example_id": example.id,
    "options": list(rendered.options),
    # The rendered input, for checking a run against another tool's (`--log_inputs` keeps it).
    "input_digest": hashlib.sha256(rendered.inputs.encode("utf-8")).hexdigest()[:16],
    "option_scores": scores,
    "prediction": prediction,
    "gold": _gold(rendered),
    "correct": bool(correct),
  }


@dataclasses.dataclass
class EvalResult:
  """What `evaluate` produced."""

  output_dir: pathlib.Path
  num_rows: int
  num_chunks: int
  resumed_chunks: int
  files: dict[str, pathlib.Path]


def evaluate(
  evaluator: Evaluator,
  chunks: Sequence[Chunk],
  output_dir: str | os.PathLike,
  *,
  model_name: str,
  run_fingerprint: Mapping[str, Any],
  progress: bool = True,
  write_reports: bool = True,
  summary_extra: Callable[[list[dict]], tuple[str, dict, list[str]]] | None = None,
) -> EvalResult:
  """Runs (or resumes) the evaluation of `chunks` into `output_dir`.

  Writes `run.json`, streams `results.jsonl` (one fsync'd append per pool of chunks,
  `plan_pools`), then the reports
  (`per_instruction.csv`, `summary.json`, `report.md`, `report.html`) atomically. Only process 0
  touches the disk.

  Raises:
    resume.FingerprintMismatch: `output_dir` holds results of another set-up.
    io_utils.NotWritableError: `output_dir` cannot be written.
  """
  main = jax.process_index() == 0
  output_dir = pathlib.Path(output_dir)
  results_path = output_dir / resume.RESULTS_FILE
  done, error = 0, None
  if main:
    try:
      io_utils.check_writable_dir(output_dir)
      resume.check_fingerprint(output_dir, dict(run_fingerprint))
      done = resume.completed_chunks(results_path, [(c.key, len(c.examples)) for c in chunks])
    except Exception as e:  # re-raised below, after telling the other processes to stop
      error, done = e, -1
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    done = int(multihost_utils.broadcast_one_to_all(np.int32(done)))
  if error is not None:
    raise error
  if done < 0:
    raise RuntimeError("process 0 could not prepare the output directory (see its error)")
  if main and not results_path.exists():
    results_path.touch()
  # A pool is scored whole even when a torn write left some of its chunks done: its batches,
  # hence its scores, are then exactly those of an uninterrupted run.
  pools = [p for p in plan_pools(chunks, evaluator.settings.pool_rows) if p.stop > done]
  resume_from = pools[0].start if pools else len(chunks)
  total = sum(len(c.examples) for c in chunks)
  bar = _progress_bar(total, sum(len(c.examples) for c in chunks[:resume_from]), progress and main)
  last_chunk = {c.task: i for i, c in enumerate(chunks)}  # a task is done after its last chunk
  on_batch = None if bar is None else bar.update
  try:
    for pool in pools:
      skip = max(done - pool.start, 0)
      pooled = evaluator.score_chunks(
        chunks[pool.start : pool.stop], model_name, on_batch, run_rows=total
      )
      if main:
        io_utils.append_jsonl(results_path, [row for rows in pooled[skip:] for row in rows])
      if bar is not None:
        tasks_done = sum(last < pool.stop for last in last_chunk.values())
        bar.set_postfix_str(
          f"tasks {tasks_done}/{len(last_chunk)}, (task, instruction) {pool.stop}/{len(chunks)}",
          refresh=False,
        )
  finally:
    if bar is not None:
      bar.close()
  files = {"results": results_path, "run": output_dir / resume.RUN_FILE}
  if main and write_reports:
    texts = {c.instruction.id: c.instruction.text for c in chunks}
    # Until the reports are all written, a marker says they are not to be trusted (a kill
    # mid-way leaves it; the rerun that resumes rewrites the reports and removes it).
    marker = output_dir / REPORTS_INCOMPLETE
    marker.write_text("reports are being written; rerun the same command if this file stays\n")
    rows = io_utils.read_jsonl(results_path)
    files.update(write_report_files(output_dir, rows, texts))
    if summary_extra is not None:  # e.g. a budgeted run's estimates
      import json

      key, section, lines = summary_extra(rows)
      summary = json.loads(files["summary"].read_text(encoding="utf-8"))
      summary[key] = section
      io_utils.atomic_write_json(files["summary"], summary)
      md = files["report_md"]
      io_utils.atomic_write_text(md, md.read_text(encoding="utf-8") + "\n".join(lines) + "\n")
    marker.unlink()
  return EvalResult(output_dir, total, len(chunks), done, files)


REPORTS_INCOMPLETE = "REPORTS_INCOMPLETE"


def truncation_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
  """Per task: rows whose input was truncated, and options cut (over all instructions)."""
  out: dict[str, dict[str, int]] = {}
  for row in rows:
    t = out.setdefault(row["task"], {"rows": 0, "inputs_truncated": 0, "options_truncated": 0})
    t["rows"] += 1
    t["inputs_truncated"] += bool(row.get("truncated_input"))
    t["options_truncated"] += int(row.get("truncated_options") or 0)
  return out


def _progress_bar(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc="eval", unit="ex", dynamic_ncols=True)


def write_report_files(
  output_dir: pathlib.Path, rows: list[dict], instruction_texts: Mapping[str, str] | None = None
) -> dict[str, pathlib.Path]:
  """per_instruction.csv, summary.json, report.md and report.html (+ plots) from results rows."""
  from robust_prompt.eval import report, summary, tables

  tabs = tables.tables_from_results(rows)
  per_instruction = tables.per_instruction_rows(tabs)
  paths = {
    "per_instruction": output_dir / "per_instruction.csv",
    "summary": output_dir / "summary.json",
  }
  tables.write_per_instruction_csv(paths["per_instruction"], per_instruction)
  summaries = summary.summarize(tabs, instruction_texts=instruction_texts)
  for model, summ in summaries.items():
    # Per task, the inputs and options that truncation cut (tasks with none are left out), so
    # summary.json and the report say what the console warned about.
    counts = truncation_counts([r for r in rows if r.get("model") == model])
    summ["truncation"] = {
      t: c for t, c in counts.items() if c["inputs_truncated"] or c["options_truncated"]
    }
  summary.write_summary(paths["summary"], summaries)
  sections = [
    (model, summ, [r for r in per_instruction if r["model"] == model])
    for model, summ in summaries.items()
  ]
  written = report.write_report(output_dir, sections)
  paths["report_md"] = written["report.md"]
  paths["report_html"] = written["report.html"]
  return paths
