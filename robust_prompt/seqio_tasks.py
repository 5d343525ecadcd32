"""SeqIO registration: one `seqio.Task` per (benchmark task x instruction), plus mixtures.

Names (docs/tasks.md): `rp:<benchmark>:<task>:<split>:<instruction_id>`, where `<task>` is the task
name without its benchmark prefix and every character outside `[A-Za-z0-9_.]` (such as the `:` of
a subtask or a `-` in an id) becomes `_`, e.g. `rp:mmlu:abstract_algebra:unobserved:human_07`.
Mixtures: `rp:<benchmark>:<split>` and `rp:<benchmark>:<task>:<split>`.

A task's data source yields each `Example` as JSON; the `render` preprocessor applies the
instruction (`robust_prompt.instructions.render`) and produces the text features `inputs` and
`targets` plus, for rank classification, `options` (`[O]` strings to score), `answer` (int, -1
for generative examples), `correct` (`[O]` 0/1) and `all_targets`; then the text is tokenized with
the model's vocabulary and EOS is appended (`vocab.encode(text) + [EOS]`, as design.md).

With `rank_classification=True` every multiple-choice example becomes `O` rows (one per option,
`targets` = that option) carrying `idx = [example_index, option_index]` and `is_correct`, the
layout of T5's rank-classification tasks: score every row with seqio's scoring evaluation and
`rank_classification_accuracy(targets, scores)` picks the best-scoring option per example.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from robust_prompt.data import sources
from robust_prompt.data.example import DataError, Example
from robust_prompt.instructions.io import instructions_for_task, load_instructions
from robust_prompt.instructions.render import check_prompt_formats, model_input, render
from robust_prompt.instructions.schema import PROMPT_FORMATS, Instruction

if TYPE_CHECKING:
  import seqio
  import tensorflow as tf

# seqio and tensorflow are imported inside the functions that need them, so that the naming
# helpers stay cheap to import (`robust-prompt tasks` prints SeqIO names without loading TF).

log = logging.getLogger(__name__)

PREFIX = "rp"
SPLITS = ("observed", "unobserved")
# SeqIO split names -> MMLU CSV/hub splits. Other benchmarks have only "test".
MMLU_SPLITS = {"test": "test", "validation": "val", "dev": "dev"}
# name -> a description of what was registered under it (for idempotent re-registration).
_DEFINITIONS: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class TaskLabel:
  """What a registered SeqIO task measures: the benchmark task, the instruction and its split.

  `robust-prompt eval --mixture` needs it for every task it evaluates. `register_tasks` labels
  ours; a user's T5X-style module labels its own tasks with `set_label` after registering them.
  """

  task: str
  instruction_id: str
  split: str
  source: str = "user"
  template: str = ""
  prompt_format: str | None = None


_LABELS: dict[str, TaskLabel] = {}
# Our own tasks: SeqIO name -> (benchmark, benchmark task, data dir, instruction), so that eval
# renders their examples in Python exactly as their `render` preprocessor does, without tf.data.
_OURS: dict[str, tuple[str, str, str, Instruction]] = {}


def set_label(
  seqio_task: str,
  *,
  task: str,
  instruction_id: str,
  split: str,
  source: str = "user",
  template: str = "",
  prompt_format: str | None = None,
) -> None:
  """Labels a registered SeqIO task for `eval --mixture` (split: "observed" or "unobserved").

  `prompt_format` ("raw", "alpaca", "chat") is how eval wraps the task's `inputs` for the model;
  None = the run's `--prompt_format`, a value wins over it (as an instruction file's does).
  """
  if split not in SPLITS:
    raise ValueError(f"set_label({seqio_task!r}): split must be one of {SPLITS}, got {split!r}")
  if prompt_format is not None and prompt_format not in PROMPT_FORMATS:
    raise ValueError(
      f"set_label({seqio_task!r}): prompt_format must be one of {PROMPT_FORMATS} or None, got "
      f"{prompt_format!r}"
    )
  _LABELS[seqio_task] = TaskLabel(task, instruction_id, split, source, template, prompt_format)


def label_of(seqio_task: str) -> TaskLabel | None:
  """The label of a registered task (ours or `set_label`'s), or None."""
  return _LABELS.get(seqio_task)


def our_task(seqio_task: str) -> tuple[str, str, str, Instruction] | None:
  """(benchmark, task, data_dir, instruction) of a task `register_tasks` made, else None."""
  return _OURS.get(seqio_task)


def sanitize(part: str) -> str:
  """Makes one name component SeqIO-safe: anything outside [A-Za-z0-9_.] becomes `_`."""
  return re.sub(r"[^A-Za-z0-9_.]", "_", part)


def short_task(task: str) -> str:
  """ "mmlu:abstract_algebra" -> "abstract_algebra"; "bigbench:a:b" -> "a_b"."""
  return sanitize(task.split(":", 1)[1] if ":" in task else task)


def task_name(benchmark: str, task: str, split: str, instruction_id: str) -> str:
  """`rp:<benchmark>:<task>:<split>:<instruction_id>` (components sanitized)."""
  return ":".join(
    [PREFIX, sanitize(benchmark), short_task(task), sanitize(split), sanitize(instruction_id)]
  )


def mixture_name(benchmark: str, split: str, task: str | None = None) -> str:
  """`rp:<benchmark>:<split>`, or `rp:<benchmark>:<task>:<split>` for one task."""
  parts = [PREFIX, sanitize(benchmark)] + ([short_task(task)] if task else []) + [sanitize(split)]
  return ":".join(parts)


# ----------------------------------------------------------------------------- data source


def examples_dataset(examples: Sequence[Example]) -> tf.data.Dataset:
  """Examples as a dataset of {"example": JSON string, "example_id", "example_index"}."""
  import tensorflow as tf

  return tf.data.Dataset.from_tensor_slices(
    {
      "example": tf.constant([e.to_json() for e in examples], tf.string),
      "example_id": tf.constant([e.id for e in examples], tf.string),
      "example_index": tf.range(len(examples), dtype=tf.int32),
    }
  )


def _source_splits(benchmark: str, data_dir: str) -> dict[str, str]:
  if benchmark != "mmlu":
    return {"test": "test"}
  where = sources.benchmark_dir("mmlu", data_dir)
  if where.startswith(sources.HF_PREFIX):
    return {"test": "test", "validation": "validation", "dev": "dev"}
  return {s: d for s, d in MMLU_SPLITS.items() if (pathlib.Path(where) / d).is_dir()} or {
    "test": "test"
  }


def data_source(benchmark: str, task: str, data_dir: str) -> seqio.FunctionDataSource:
  """A `seqio.FunctionDataSource` over `sources.load_task` (loaded lazily, cached)."""
  import seqio

  splits = _source_splits(benchmark, data_dir)

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # one "file" per task; SeqIO shuffles examples when asked
    return examples_dataset(
      sources.load_task(task, data_dir, benchmark=benchmark, split=splits[split])
    )

  n = len(sources.load_task(task, data_dir, benchmark=benchmark, split=splits["test"]))
  return seqio.FunctionDataSource(
    dataset_fn, splits=list(splits), num_input_examples={"test": n}, caching_permitted=False
  )


# ----------------------------------------------------------------------------- preprocessors


def _strings(values: Sequence[str]) -> np.ndarray:
  """A 1-D array of UTF-8 bytes (`np.bytes_` would only take ASCII)."""
  return np.array([v.encode("utf-8") for v in values] or [b""], dtype=object)[: len(values)]


def _render_py(instruction: Instruction, fmt: str | None, tokenizer_config, example_json) -> list:
  example = Example.from_json(example_json.numpy())
  r = render(instruction, example)
  correct = [1 if i in r.correct else 0 for i in range(len(r.options))]
  inputs = r.inputs if fmt is None else model_input(r, fmt, tokenizer_config)
  return [
    inputs.encode("utf-8"),
    (r.targets[0] if r.targets else "").encode("utf-8"),
    _strings(r.options),
    -1 if r.answer is None else r.answer,
    np.array(correct, np.int32),
    _strings(r.targets),
  ]


def render_preprocessor(
  instruction: Instruction, prompt_format: str | None = None, tokenizer_config=None
) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  """A preprocessor that renders each example through `instruction` into text features.

  Args:
    instruction: the instruction.
    prompt_format: the format of the `inputs` feature (`render.model_input`); None = the
      rendered text as it is, for a caller that applies the format itself (eval).
    tokenizer_config: the model's tokenizer settings, for "chat".
  """
  import tensorflow as tf

  def _map(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    inputs, targets, options, answer, correct, all_targets = tf.py_function(
      functools.partial(_render_py, instruction, prompt_format, tokenizer_config),
      [ex["example"]],
      [tf.string, tf.string, tf.string, tf.int32, tf.int32, tf.string],
    )
    out = {
      "inputs": tf.ensure_shape(inputs, []),
      "targets": tf.ensure_shape(targets, []),
      "options": tf.ensure_shape(options, [None]),
      "answer": tf.ensure_shape(answer, []),
      "correct": tf.ensure_shape(correct, [None]),
      "all_targets": tf.ensure_shape(all_targets, [None]),
      "example_id": ex["example_id"],
      "example_index": ex["example_index"],
    }
    return out

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return preprocess


def expand_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Rank classification layout: one row per option (`targets` = the option string).

  Adds `idx` `[2] int32` = (example_index, option_index) and `is_correct` (bool). Generative
  examples (no options) keep one row with their reference target and `idx` = (example_index, 0).
  """
  import tensorflow as tf

  def _expand(ex):
    n = tf.size(ex["options"])
    has_options = n > 0
    count = tf.maximum(n, 1)
    targets = tf.cond(has_options, lambda: ex["options"], lambda: tf.reshape(ex["targets"], [1]))
    correct = tf.cond(has_options, lambda: ex["correct"] > 0, lambda: tf.ones([1], tf.bool))
    rows = {
      "targets": targets,
      "is_correct": correct,
      "idx": tf.stack([tf.fill([count], ex["example_index"]), tf.range(count)], axis=1),
    }
    for key in ("inputs", "example_id", "answer"):
      rows[key] = tf.fill([count], ex[key])
    return tf.data.Dataset.from_tensor_slices(rows)

  return dataset.flat_map(_expand)


# ----------------------------------------------------------------------------- metrics


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def postprocess(output, example: Mapping[str, Any] | None = None, is_target: bool = False):
  """SeqIO postprocess_fn: targets become the information the metrics need.

  For targets it returns `{"idx", "is_correct"}` (rank-classification rows) or `{"options",
  "correct", "all_targets"}` (one row per example); predictions become stripped text.
  """
  if not is_target or example is None:
    return _text(output).strip()
  if "idx" in example:
    idx = np.asarray(example["idx"]).tolist()
    return {"idx": tuple(int(i) for i in idx), "is_correct": bool(example["is_correct"])}
  return {
    "options": [_text(o) for o in np.asarray(example["options"]).tolist()],
    "correct": [int(c) for c in np.asarray(example["correct"]).tolist()],
    "all_targets": [_text(t) for t in np.asarray(example["all_targets"]).tolist()],
  }


def prediction_accuracy(targets: Sequence[Mapping], predictions: Sequence[str]) -> dict[str, float]:
  """Accuracy of generated text: correct when it equals (after strip) a correct option
  (multiple choice) or one of the references (generative). Returns {"accuracy": percent}."""
  hits = []
  for target, prediction in zip(targets, predictions, strict=True):
    if target["options"]:
      good = {o.strip() for o, c in zip(target["options"], target["correct"]) if c}
    else:
      good = {t.strip() for t in target["all_targets"]}
    hits.append(prediction.strip() in good)
  return {"accuracy": 100.0 * float(np.mean(hits)) if hits else float("nan")}


def rank_classification_accuracy(
  targets: Sequence[Mapping], scores: Sequence[float]
) -> dict[str, float]:
  """Rank-classification accuracy over rows (see `expand_options`).

  Args:
    targets: per row `{"idx": (example_index, option_index), "is_correct": bool}`.
    scores: per row the model's score of its `targets` (e.g. summed log-likelihood).

  Returns:
    {"accuracy": percent of examples whose best-scoring option (lowest index on ties) is correct}.
  """
  best: dict[int, tuple[float, int, bool]] = {}
  for target, score in zip(targets, scores, strict=True):
    example, option = target["idx"]
    entry = (float(score), -int(option), bool(target["is_correct"]))
    if example not in best or entry[:2] > best[example][:2]:
      best[example] = entry
  if not best:
    return {"accuracy": float("nan")}
  return {"accuracy": 100.0 * float(np.mean([ok for _, _, ok in best.values()]))}


# ----------------------------------------------------------------------------- registration


@dataclasses.dataclass(frozen=True)
class Registered:
  """What `register_tasks` registered: SeqIO task names per (task, split) and mixture names."""

  tasks: dict[tuple[str, str], list[str]]
  mixtures: list[str]
  missing: dict[str, str]

  @property
  def task_names(self) -> list[str]:
    return [name for names in self.tasks.values() for name in names]


def _vocab_key(vocabulary: seqio.Vocabulary) -> str:
  from robust_prompt import vocab as vocab_lib

  try:
    return json.dumps(vocab_lib.vocabulary_spec(vocabulary), sort_keys=True)
  except ValueError:
    return f"{type(vocabulary).__name__}@{id(vocabulary)}"


def _add(registry, name: str, definition: Any, make: Callable[[], Any]) -> None:
  """Registers `name` unless the same definition is already there (replaces a different one)."""
  if name in registry.names():
    if _DEFINITIONS.get(name) == definition:
      return
    log.warning("replacing SeqIO provider %s registered with a different definition", name)
    registry.remove(name)
  make()
  _DEFINITIONS[name] = definition


def register_tasks(
  benchmark: str,
  data_dir: str | os.PathLike | None,
  instructions: Sequence[Instruction] | Sequence[str | os.PathLike] | str | os.PathLike,
  vocabulary: seqio.Vocabulary,
  *,
  tasks: Sequence[str] | None = None,
  rank_classification: bool = False,
  prompt_format: str | None = "raw",
) -> Registered:
  """Registers a SeqIO task per (benchmark task x applicable instruction), and the mixtures.

  Idempotent: a name already registered with the same definition is kept; one registered with a
  different definition (other data dir, instruction text, vocabulary, mode) is replaced.

  Args:
    benchmark: "mmlu", "bigbench_lite", "bigbench" or "jsonl".
    data_dir: the data directory (None: $ROBUST_PROMPT_DATA_DIR).
    instructions: `Instruction`s, or instruction files/directories to load.
    vocabulary: the model's vocabulary (output features `inputs`/`targets`, add_eos=True).
    tasks: restrict to these task names (default: every available task of the benchmark).
    rank_classification: one row per option (see `expand_options`) and a score-based metric.
    prompt_format: the format of the `inputs` feature ("raw", "alpaca", "chat") for
      instructions that declare none; a declared one (`Instruction.prompt_format`) wins. "chat"
      needs `vocabulary.tokenizer_config`. None: `inputs` is the rendered text, unformatted
      whatever an instruction declares (eval applies the formats itself, with the model's
      tokenizer; the labels still carry each instruction).

  Returns:
    A `Registered` with the names; absent BIG-bench Lite tasks are listed in `missing` (and
    logged), not registered.

  Raises:
    DataError: unknown benchmark, missing data directory, malformed data.
    InstructionError: an instruction that cannot render one of its tasks' examples, or whose
      prompt format the vocabulary cannot apply.
  """
  import seqio

  data_dir = sources.resolve_data_dir(data_dir)
  if isinstance(instructions, (str, os.PathLike)) or (
    instructions and not isinstance(instructions[0], Instruction)
  ):
    instructions = load_instructions(instructions)
  tokenizer_config = getattr(vocabulary, "tokenizer_config", None)
  if prompt_format is not None:
    if prompt_format not in PROMPT_FORMATS:
      raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS} or None: {prompt_format!r}")
    check_prompt_formats(instructions, prompt_format, tokenizer_config)
  infos = sources.list_tasks(benchmark, data_dir)
  if tasks is not None:
    known = {i.name for i in infos}
    if unknown := [t for t in tasks if t not in known]:
      raise DataError(f"{benchmark} has no tasks {unknown}; it has {sorted(known)[:10]} ...")
    infos = [i for i in infos if i.name in set(tasks)]
  missing = {i.name: i.problem for i in infos if not i.available}
  for name, problem in missing.items():
    log.warning("skipping %s: %s", name, problem)
  output_features = {
    "inputs": seqio.Feature(vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary, add_eos=True),
  }
  vocab_key = _vocab_key(vocabulary)
  by_task_split: dict[tuple[str, str], list[str]] = {}
  made: dict[str, Instruction] = {}
  for info in infos:
    if not info.available:
      continue
    applicable = instructions_for_task(instructions, info.name)
    if not applicable:
      continue
    first = sources.load_task(info.name, data_dir, benchmark=benchmark)[0]
    source = data_source(benchmark, info.name, data_dir)  # cheap: examples are cached
    for instruction in applicable:
      render(instruction, first)  # fail now (file:line), not inside a tf.data pipeline
      name = task_name(benchmark, info.name, instruction.split, instruction.id)
      if name in made:
        raise instruction.error(
          f"its SeqIO name {name} is also the name of instruction {made[name].id!r} "
          f"({made[name].where}): ids that differ only in characters outside [A-Za-z0-9_.] collide"
        )
      made[name] = instruction
      definition = (
        "task",
        benchmark,
        info.name,
        data_dir,
        instruction,
        vocab_key,
        rank_classification,
        prompt_format,
      )
      fmt = None if prompt_format is None else instruction.format_for(prompt_format)
      preprocessors = [render_preprocessor(instruction, fmt, tokenizer_config)]
      if rank_classification:
        preprocessors.append(expand_options)
      preprocessors += [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
      _add(
        seqio.TaskRegistry,
        name,
        definition,
        functools.partial(
          seqio.TaskRegistry.add,
          name,
          source=source,
          output_features=output_features,
          preprocessors=preprocessors,
          postprocess_fn=postprocess,
          metric_fns=[rank_classification_accuracy if rank_classification else prediction_accuracy],
          shuffle_buffer_size=None,
        ),
      )
      by_task_split.setdefault((info.name, instruction.split), []).append(name)
      _OURS[name] = (benchmark, info.name, data_dir, instruction)
      _LABELS[name] = TaskLabel(
        info.name,
        instruction.id,
        instruction.split,
        instruction.source,
        instruction.text,
        instruction.prompt_format,
      )
  mixtures = []
  for split in SPLITS:
    names = [n for (_, s), ns in by_task_split.items() if s == split for n in ns]
    if names:
      mixtures.append(_add_mixture(mixture_name(benchmark, split), names))
    for (task, s), ns in by_task_split.items():
      if s == split:
        mixtures.append(_add_mixture(mixture_name(benchmark, split, task), ns))
  return Registered(by_task_split, mixtures, missing)


def _add_mixture(name: str, task_names: list[str]) -> str:
  import seqio

  _add(
    seqio.MixtureRegistry,
    name,
    ("mixture", tuple(task_names)),
    lambda: seqio.MixtureRegistry.add(name, list(task_names), default_rate=1.0),
  )
  return name


def import_task_modules(modules: Sequence[str]) -> list[Any]:
  """Imports modules that register tasks (T5X's MIXTURE_OR_TASK_MODULE), e.g.
  ["robust_prompt_tasks.mmlu"]. Importing twice is harmless (registration is idempotent)."""
  imported = []
  for module in modules:
    try:
      imported.append(importlib.import_module(module))
    except ModuleNotFoundError as e:
      raise ModuleNotFoundError(
        f"task module {module!r} could not be imported ({e}); modules shipped with robust_prompt "
        "are robust_prompt_tasks.mmlu, robust_prompt_tasks.bigbench_lite, robust_prompt_tasks.jsonl"
      ) from e
  return imported
