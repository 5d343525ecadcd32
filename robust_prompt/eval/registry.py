"""SeqIO tasks and mixtures -> the engine's (task, instruction) chunks: the one way eval gets work.

`robust-prompt eval --benchmark mmlu` registers our (benchmark task x instruction) tasks
(`seqio_tasks.register_tasks`) and evaluates their mixture; `eval --mixture NAME --module M`
evaluates any registered task or mixture whose examples carry rank-classification (or generative)
text features, e.g. a user's own T5X-style tasks. Both go through `chunks_from_registry`.

Features read from a task's examples (after its preprocessors, skipping tokenization):

* one example per row: `inputs` (text), `options` (`[O]` strings) with `answer` (int) or
  `correct` (`[O]` 0/1); generative rows have no options and `targets` (text) and optionally
  `all_targets` (`[N]` references);
* or T5's rank-classification layout, one row per option: `inputs`, `targets` (the option),
  `idx` = `[example_index, option_index]` and `is_correct`.

Each task needs a label (`seqio_tasks.TaskLabel`: benchmark task, instruction id, split):
ours are labelled when registered; label a task of your own with `seqio_tasks.set_label`.

Prompt formats: our tasks keep their `Instruction` (with any `prompt_format` its file declares);
a user task's label may carry one (`set_label(..., prompt_format=...)`). The engine applies it,
else the run's (`engine.prompt_format_of`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robust_prompt import seqio_tasks
from robust_prompt.data import option_order, sources
from robust_prompt.data.example import DataError, Example
from robust_prompt.eval.engine import Chunk, EvalSettings, take
from robust_prompt.instructions import fewshot
from robust_prompt.instructions.render import Rendered, render
from robust_prompt.instructions.schema import Instruction

# Preprocessors that turn text into token ids: eval tokenizes with the model's own vocabulary.
_TOKENIZERS = ("tokenize", "tokenize_and_append_eos", "append_eos", "append_eos_after_trim")


def expand(names: Sequence[str]) -> list[str]:
  """Mixture and task names -> the SeqIO task names, in order, each once.

  Raises:
    DataError: a name that is neither a registered task nor a mixture.
  """
  import seqio

  out: list[str] = []
  for name in names:
    if name in seqio.MixtureRegistry.names():
      tasks = [t.name for t in seqio.get_mixture_or_task(name).tasks]
    elif name in seqio.TaskRegistry.names():
      tasks = [name]
    else:
      known = sorted(seqio.MixtureRegistry.names())[:5]
      raise DataError(
        f"--mixture {name!r}: no SeqIO task or mixture of that name is registered (import the "
        f"module that registers it with --module; registered mixtures include {known})"
      )
    out.extend(t for t in tasks if t not in out)
  return out


def chunks_from_registry(
  names: Sequence[str],
  *,
  split: str = "test",
  max_examples: int | float | None = None,
  settings: EvalSettings | None = None,
) -> list[Chunk]:
  """One chunk per SeqIO task of `names` (mixtures expanded), in order.

  `settings.num_fewshot > 0` puts K solved demonstrations, rendered with the same instruction,
  before each input (our own tasks: demonstrations need the examples' fields).

  Raises:
    DataError: an unknown name, an unlabelled task, examples without the features above, or
      too few examples for the demonstrations.
  """
  fewshot = settings.num_fewshot if settings is not None else 0
  example_ids = None
  if settings is not None:
    example_ids = settings.example_ids
    if max_examples is None:
      max_examples = settings.max_examples
  chunks = []
  for name in expand(names):
    label = seqio_tasks.label_of(name)
    if label is None:
      raise DataError(
        f"SeqIO task {name!r} has no robustness label: after registering it, call "
        "robust_prompt.seqio_tasks.set_label(name, task=..., instruction_id=..., split="
        "'observed'|'unobserved') (docs/tasks.md)"
      )
    ours = seqio_tasks.our_task(name)
    if ours is not None:
      benchmark, task, data_dir, instruction = ours
      all_examples = tuple(sources.load_task(task, data_dir, benchmark=benchmark))
      if settings is not None and settings.shuffle_options:
        all_examples = tuple(option_order.apply(task, all_examples, settings.shuffle_options))
      examples = take(all_examples, max_examples, example_ids)
      if fewshot:
        rendered = _with_demos(
          instruction, task, data_dir, benchmark, examples, all_examples, settings
        )
      else:
        rendered = tuple(render(instruction, ex) for ex in examples)
    else:
      if fewshot:
        raise DataError(
          f"--num_fewshot needs examples with fields to render demonstrations: SeqIO task {name!r} "
          "is not one of ours (use --benchmark, or add the demonstrations in your preprocessor)"
        )
      instruction = Instruction(
        label.instruction_id, (label.task,), label.template, "none", "option_text",
        label.split, label.source, file=f"seqio:{name}", prompt_format=label.prompt_format,
      )  # fmt: skip
      examples, rendered = _read_task(name, label.task, split, max_examples, example_ids)
    if examples:
      chunks.append(Chunk(label.task, instruction, examples, rendered))
  if not chunks:
    raise DataError(f"the SeqIO tasks of {list(names)} hold no examples in split {split!r}")
  return chunks


def _with_demos(instruction, task, data_dir, benchmark, examples, all_examples, settings):
  """Each example rendered after its K demonstrations (`instructions/fewshot.py`)."""
  if settings.fewshot_split:
    try:
      pool = sources.load_task(task, data_dir, benchmark=benchmark, split=settings.fewshot_split)
    except DataError as e:
      raise DataError(f"--fewshot_split {settings.fewshot_split!r} of {task}: {e}") from e
    exclude = False
  else:
    pool, exclude = all_examples, True
  out = []
  for ex in examples:
    try:
      demos = fewshot.select_demos(
        pool,
        settings.num_fewshot,
        seed=settings.fewshot_seed,
        exclude_id=ex.id if exclude else None,
        key=ex.id,
      )
    except ValueError as e:
      raise DataError(f"{task}: {e}") from e
    out.append(fewshot.render_fewshot(instruction, ex, demos, settings.fewshot_separator))
  return tuple(out)


def _read_task(name: str, task: str, split: str, max_examples, example_ids=None):
  """A user task's text features (its preprocessors up to tokenization) as examples."""
  import seqio

  st = seqio.get_mixture_or_task(name)
  if split not in st.splits:
    raise DataError(f"SeqIO task {name!r} has no split {split!r} (it has {list(st.splits)})")
  ds = st.source.get_dataset(split=split, shuffle=False)
  for fn in st.preprocessors:
    base = getattr(fn, "func", fn)
    if getattr(base, "__name__", "") in _TOKENIZERS or isinstance(
      fn, seqio.CacheDatasetPlaceholder
    ):
      continue
    ds = seqio.utils.add_kwargs_to_transform(
      fn, sequence_length=None, output_features=st.output_features
    )(ds)
  rows = [{k: _py(v) for k, v in ex.items()} for ex in ds.as_numpy_iterator()]
  if rows and "idx" in rows[0]:
    rows = _regroup_options(name, rows)
  pairs = [_example(name, task, i, row) for i, row in enumerate(rows)]
  kept = {id(e) for e in take([e for e, _ in pairs], max_examples, example_ids)}
  pairs = [(e, r) for e, r in pairs if id(e) in kept]
  return tuple(e for e, _ in pairs), tuple(r for _, r in pairs)


def _py(value):
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return [_py(v) for v in value.tolist()] if value.dtype == object else value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def _regroup_options(name: str, rows: list[dict]) -> list[dict]:
  """T5's one-row-per-option layout -> one row per example (options in `idx` order)."""
  grouped: dict[int, dict] = {}
  for row in rows:
    example, option = (int(i) for i in row["idx"])
    g = grouped.setdefault(example, {"inputs": row["inputs"], "opts": {}})
    g["opts"][option] = (row["targets"], bool(row.get("is_correct", False)))
  out = []
  for example in sorted(grouped):
    g = grouped[example]
    opts = [g["opts"][k] for k in sorted(g["opts"])]
    correct = [int(c) for _, c in opts]
    if not any(correct):
      raise DataError(f"SeqIO task {name!r}: example {example} has no option with is_correct")
    out.append({"inputs": g["inputs"], "options": [o for o, _ in opts], "correct": correct})
  return out


def _example(name: str, task: str, index: int, row: dict) -> tuple[Example, Rendered]:
  if "inputs" not in row:
    raise DataError(f"SeqIO task {name!r}: example {index} has no 'inputs' text feature")
  inputs = row["inputs"]
  options = tuple(row.get("options") or ())
  example_id = str(row.get("example_id") or f"{task}:{index}")
  if options:
    if "correct" in row:
      correct = tuple(i for i, c in enumerate(row["correct"]) if c)
    elif "answer" in row:
      correct = (int(row["answer"]),)
    else:
      raise DataError(f"SeqIO task {name!r}: example {index} has options but no answer/correct")
    if not correct or not all(0 <= c < len(options) for c in correct):
      raise DataError(f"SeqIO task {name!r}: example {index}: the answer is not an option index")
    targets = tuple(options[c] for c in correct)
    answer = correct[0]
  else:
    refs = row.get("all_targets") or ([row["targets"]] if "targets" in row else [])
    if not refs:
      raise DataError(f"SeqIO task {name!r}: example {index} has neither options nor targets")
    targets, answer, correct = tuple(refs), None, ()
  ex = Example(example_id, task, {"inputs": inputs}, options, answer, correct, targets, {})
  return ex, Rendered(inputs, options, answer, correct, targets)
