"""`robust-prompt eval`: evaluate a model over (task x instruction x example) and write a report.

  robust-prompt eval --model google/flan-t5-small --benchmark mmlu --data_dir data/mmlu \\
    --instructions tasks/instructions/mmlu --output_dir out/flan_small [--tasks 'mmlu:high_school_*']

Writes into `--output_dir`: `run.json` (the run's fingerprint), `results.jsonl` (one row per
task x instruction x example, streamed), `per_instruction.csv`, `summary.json`, `report.md` and
`report.html`. Rerunning the same command after an interruption resumes where it stopped.

Settings come from (later wins): library defaults < gin (`--gin_file runs/eval.gin`,
`--gin.evaluate.score_mode="'mean'"`) < explicit flags. `evaluate` is the gin name of
`robust_prompt.eval.engine.evaluate_settings`. One exception: an instruction file that declares
its prompt format (`prompt_format`, per line or in its `{"defaults": ...}` line) wins over the
run's `--prompt_format` for its own instructions (docs/instructions.md, Prompt formats).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from robust_prompt.cli import common, gin_utils
from robust_prompt.cli.gin_utils import UserError

USES_GIN = True

SCORE_MODES = ("sum", "mean", "greedy_prefix", "acc_norm")


def max_examples_arg(text: str) -> int | float:
  """argparse type: N >= 1 examples per task, or a fraction F in (0, 1)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expected N >= 1 or a fraction in (0, 1), got {text!r}"
    ) from None
  if value.is_integer() and value >= 1:
    return int(value)
  if 0 < value < 1:
    return value
  raise argparse.ArgumentTypeError(f"expected N >= 1 or a fraction in (0, 1), got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_benchmark_arguments(parser, required=False)
  parser.add_argument(
    "--mixture",
    nargs="+",
    default=None,
    help="evaluate registered SeqIO tasks or mixtures instead of --benchmark (each task labelled "
    "with robust_prompt.seqio_tasks.set_label; see docs/tasks.md)",
  )
  parser.add_argument(
    "--module",
    nargs="+",
    default=[],
    help="Python modules to import first: they register the --mixture tasks (T5X style)",
  )
  parser.add_argument(
    "--budget",
    type=float,
    default=None,
    help="score only a seeded, balanced fraction F (0 < F <= 1) of the (instruction x example) "
    "grid and estimate the rest (docs/metrics.md, Budgeted evaluation); rerun with a larger F "
    "to score only the new cells",
  )
  parser.add_argument(
    "--budget_seed", type=int, default=0, help="seed of the --budget design (default 0)"
  )
  parser.add_argument(
    "--shuffle_options",
    nargs="+",
    default=None,
    metavar="TASK=SEED",
    help="reorder these tasks' options with one seeded RNG in example order, e.g. "
    "bigbench:conceptual_combinations=42 (the robustness study's setting)",
  )
  parser.add_argument(
    "--num_fewshot",
    type=int,
    default=None,
    help="K solved demonstrations before each input, same instruction (default 0: zero-shot)",
  )
  parser.add_argument(
    "--fewshot_split",
    default=None,
    help="draw demonstrations from this split of each task (e.g. MMLU's dev); default: the "
    "task's other examples, never the evaluated one",
  )
  parser.add_argument(
    "--fewshot_seed", type=int, default=None, help="seed of the demonstration draw (1234)"
  )
  parser.add_argument(
    "--model_name",
    default=None,
    help="the model's label in every output (default: --model as given, plus the soft prompt's "
    "content digest with --prompt)",
  )
  parser.add_argument(
    "--instructions",
    nargs="+",
    default=None,
    help="instruction JSONL files and/or directories (every *.jsonl below them); default: the "
    "collection shipped in tasks/instructions",
  )
  parser.add_argument("--output_dir", required=True, help="where results and reports go")
  parser.add_argument(
    "--tasks",
    nargs="+",
    default=None,
    help="task names or globs ('mmlu:anatomy', 'mmlu:high_school_*', 'strategyqa'); default: "
    "every task of the benchmark that an instruction applies to",
  )
  parser.add_argument(
    "--max_examples",
    type=max_examples_arg,
    default=None,
    help="the first N examples per task, or a fraction F in (0, 1): the first ceil(F * n)",
  )
  parser.add_argument(
    "--example_ids", default=None, help="a file of example ids (one a line): evaluate only these"
  )
  parser.add_argument(
    "--log_inputs",
    action="store_true",
    help="results rows also carry the input text the model read (after the prompt format)",
  )
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="start afresh: delete this command's earlier results and reports in --output_dir",
  )
  parser.add_argument(
    "--option_eos",
    choices=("yes", "no"),
    default=None,
    help="end options with EOS: T5's default is yes (Hugging Face labels include it), "
    "decoder-only models' is no (lm-evaluation-harness's convention)",
  )
  parser.add_argument(
    "--target_delimiter",
    default=None,
    help="decoder-only models: text between the input and each option (default one space)",
  )
  common.add_prompt_format_argument(parser, "evaluate.prompt_format")
  parser.add_argument(
    "--score_mode",
    choices=SCORE_MODES,
    default=None,
    help="rank-classification score: sum (of the option's token log-probs, EOS included for T5 "
    "unless --option_eos no; default), mean (per token), acc_norm (sum / the option's UTF-8 "
    "bytes, lm-evaluation-harness's), or greedy_prefix (the original robustness study's rule; "
    "equal to it at batch size 1; ties go to the lowest option index, as in every mode; "
    "docs/metrics.md)",
  )
  parser.add_argument(
    "--max_decode_length",
    type=common.positive_int,
    default=None,
    help="greedy decoding steps for generative tasks (default 32)",
  )
  common.add_model_arguments(parser)
  # None = "not given": gin (or the library default) decides; an explicit flag wins over gin.
  parser.set_defaults(batch_size=None, max_input_length=None, max_target_length=None)
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


# -- run -----------------------------------------------------------------------------------------


_CONFIGURED = None


def _read_ids(path: str) -> frozenset[str]:
  """The ids of an --example_ids file (one a line; blank lines and # comments skipped)."""
  try:
    text = pathlib.Path(path).read_text(encoding="utf-8")
  except FileNotFoundError:
    raise UserError(f"--example_ids {path}: no such file") from None
  except UnicodeDecodeError as e:
    raise UserError(f"--example_ids {path}: not UTF-8 text ({e})") from e
  ids = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
  if not ids:
    raise UserError(f"--example_ids {path}: holds no ids (one example id a line)")
  return frozenset(ids)


def configured_settings():
  """`engine.evaluate_settings` registered with gin as `evaluate` (once per process)."""
  global _CONFIGURED
  if _CONFIGURED is None:
    import gin

    from robust_prompt.eval import engine

    _CONFIGURED = gin.external_configurable(engine.evaluate_settings, name="evaluate")
  return _CONFIGURED


SETTING_FLAGS = (
  "num_fewshot",
  "fewshot_split",
  "fewshot_seed",
  "score_mode",
  "batch_size",
  "max_input_length",
  "max_target_length",
  "max_decode_length",
  "max_examples",
  "log_inputs",
  "prompt_format",
)


def _settings(args: argparse.Namespace):
  """EvalSettings from gin (`evaluate.*`) with explicit flags on top."""
  explicit = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k, None) is not None}
  if not explicit.get("log_inputs"):
    explicit.pop("log_inputs", None)  # a store_true flag: absent = gin decides
  if getattr(args, "example_ids", None):
    explicit["example_ids"] = _read_ids(args.example_ids)
  if getattr(args, "shuffle_options", None):
    pairs = []
    for item in args.shuffle_options:
      task, _, seed = item.rpartition("=")
      if not task or not seed.lstrip("-").isdigit():
        raise UserError(f"--shuffle_options {item!r}: expected TASK=SEED, e.g. bigbench:x=42")
      pairs.append((task, int(seed)))
    explicit["shuffle_options"] = tuple(pairs)
  configured_settings()  # registers `evaluate` before gin is asked about it
  if "prompt_format" not in explicit:
    # A model file's format (models/alpaca_7b.gin: PROMPT_FORMAT = 'alpaca') is the default.
    from_model = gin_utils.model_prompt_format("evaluate.prompt_format")
    if from_model is not None:
      explicit["prompt_format"] = from_model
  try:
    return configured_settings()(**explicit)
  except ValueError as e:
    raise UserError(str(e)) from e


def _mesh_from_gin() -> str | None:
  """`--mesh` from the MESH_DATA / MESH_MODEL macros of gin_configs/mesh/*.gin, if bound."""
  data = gin_utils.query_macro("MESH_DATA")
  model = gin_utils.query_macro("MESH_MODEL")
  if data is None and model is None:
    return None
  return f"data={-1 if data is None else data},model={1 if model is None else model}"


# What `--overwrite` deletes: this command's own outputs, nothing else in the directory.
_OUTPUTS = (
  "run.json", "results.jsonl", "budget.json", "per_instruction.csv", "summary.json", "report.md", "report.html",
  "REPORTS_INCOMPLETE",
)  # fmt: skip


def _clear_outputs(output_dir: pathlib.Path) -> None:
  import shutil

  for name in _OUTPUTS:
    (output_dir / name).unlink(missing_ok=True)
  shutil.rmtree(output_dir / "plots", ignore_errors=True)


def _budget_plan(args, output_dir: pathlib.Path, chunks):
  """The chunks of a `--budget` run (rows already scored first) and its summary section."""
  import warnings

  from robust_prompt import io_utils
  from robust_prompt.eval import budget_design, budget_run, resume

  try:
    fraction = budget_design.check_budget(args.budget)
  except ValueError as e:
    raise UserError(f"--budget: {e}") from e
  state_path = output_dir / "budget.json"
  done_rows = []
  if state_path.exists():
    old = json.loads(state_path.read_text(encoding="utf-8"))
    if old.get("seed") != args.budget_seed:
      raise UserError(
        f"{output_dir} holds a budgeted run with --budget_seed {old.get('seed')}; use it again "
        "(or --overwrite)"
      )
    if fraction < old.get("budget", 0):
      raise UserError(
        f"{output_dir} holds a run at --budget {old['budget']}: a budget can only be raised "
        "(or start afresh with --overwrite)"
      )
  results = output_dir / resume.RESULTS_FILE
  if results.exists():
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", io_utils.TornLineWarning)
      try:
        done_rows = io_utils.read_jsonl(results, truncate_torn=True)
      except ValueError as e:
        raise UserError(f"{e}; rerun with --overwrite to start afresh") from e
  try:
    planned = budget_run.plan(chunks, fraction, args.budget_seed, done_rows)
  except ValueError as e:
    raise UserError(f"{output_dir}: {e}; use another --output_dir or --overwrite") from e
  io_utils.atomic_write_json(state_path, {"budget": fraction, "seed": args.budget_seed})
  total = sum(len(c.examples) for c in chunks)
  todo = sum(len(c.examples) for c in planned) - len(done_rows)
  print(
    f"budget {fraction:g}: {todo} new of {total} (instruction x example) cells to score "
    f"({len(done_rows)} scored before)",
    file=sys.stderr,
  )

  def extra(rows):
    section = budget_run.summary_section(rows, fraction, args.budget_seed)
    return "budget", section, budget_run.report_lines(section)

  return planned, extra


def _first_chunks(chunks):
  """One chunk per task (a task's chunks share their examples)."""
  seen = {}
  for c in chunks:
    seen.setdefault(c.task, c)
  return list(seen.values())


def _register_benchmark(args: argparse.Namespace) -> list[str]:
  """Registers our (task x instruction) SeqIO tasks for `--benchmark`; returns their names."""
  import seqio

  from robust_prompt import seqio_tasks
  from robust_prompt.instructions.io import (
    default_instruction_dir,
    instructions_for_task,
    load_instructions,
  )

  instructions = load_instructions(args.instructions or [default_instruction_dir()])
  selected = common.select_tasks(args)
  covered = [t for t in selected if instructions_for_task(instructions, t)]
  if not covered:
    patterns = sorted({p for i in instructions for p in i.tasks})
    raise UserError(
      f"no instruction applies to the selected task(s) ({', '.join(selected[:5])}"
      f"{', ...' if len(selected) > 5 else ''}); the instructions given are for "
      f"{', '.join(patterns[:8])}. Pass instructions written for these tasks, or other --tasks."
    )
  if args.tasks and len(covered) < len(selected):
    missing = [t for t in selected if t not in covered]
    print(
      f"warning: no instruction applies to {len(missing)} selected task(s), skipped: "
      f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
      file=sys.stderr,
    )
  # Text features only: eval tokenizes with the model's own vocabulary, after loading it, and
  # applies the prompt formats itself (prompt_format=None), with the model's tokenizer.
  seqio_tasks.register_tasks(
    args.benchmark,
    args.data_dir,
    instructions,
    seqio.PassThroughVocabulary(size=0),
    tasks=covered,
    prompt_format=None,
  )
  return [
    seqio_tasks.task_name(args.benchmark, t, i.split, i.id)
    for t in covered
    for i in instructions_for_task(instructions, t)
  ]


def run(args: argparse.Namespace) -> int:
  from robust_prompt import io_utils

  gin_utils.register_configurables()
  configured_settings()  # the gin name must exist before files that bind it are parsed
  gin_utils.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
  settings = _settings(args)

  # Cheap checks first: the output dir, the work (tasks x instructions); then the slow model load.
  try:
    output_dir = io_utils.check_writable_dir(args.output_dir)
  except io_utils.NotWritableError as e:
    raise UserError(f"--output_dir: {e}") from e
  # One writer per directory (the kernel releases the lock even when the process is killed);
  # on a multi-host run only process 0 writes, so only it locks.
  import contextlib

  from robust_prompt import multihost

  lock = contextlib.nullcontext()
  if multihost.is_main_process():
    lock = io_utils.DirectoryLock(output_dir, "robust-prompt eval")
  try:
    with lock:
      return _run_locked(args, settings, output_dir)
  except io_utils.DirectoryLockedError as e:
    raise UserError(str(e)) from e


def _run_locked(args: argparse.Namespace, settings, output_dir: pathlib.Path) -> int:
  from robust_prompt import io_utils, seqio_tasks
  from robust_prompt.data.example import DataError
  from robust_prompt.eval import checks, engine, registry, resume
  from robust_prompt.instructions.schema import InstructionError
  from robust_prompt.model import soft_prompt

  if args.overwrite:
    _clear_outputs(output_dir)
  if bool(args.mixture) == bool(args.benchmark):
    raise UserError("say what to evaluate: either --benchmark (with --data_dir) or --mixture")
  try:
    seqio_tasks.import_task_modules(args.module)
    names = args.mixture or _register_benchmark(args)
    chunks = registry.chunks_from_registry(names, settings=settings)
  except (InstructionError, DataError, ModuleNotFoundError) as e:
    raise UserError(str(e)) from e

  if not args.mesh:
    args.mesh = _mesh_from_gin()
  mesh = common.mesh_from_args(args)
  loaded = common.model_from_args(args, mesh)
  prompt, prompt_digest = None, None
  # The default label: --model, as an absolute path when it is one (so that a relative and an
  # absolute spelling of one directory give one label).
  source = pathlib.Path(args.model).expanduser()
  model_name = args.model_name or (str(source.resolve()) if source.exists() else loaded.source)
  if args.prompt:
    prompt = common.load_prompt(args.prompt, loaded.config.d_model)
    prompt_digest = soft_prompt.prompt_digest(args.prompt)
    if not args.model_name:
      # A content digest, not the file name: every trained prompt is a `prompt.npy`.
      model_name = f"{model_name}+prompt:{prompt_digest}"
  from robust_prompt import vocab as vocab_lib
  from robust_prompt.model import prompted

  try:
    model = prompted.for_config(
      loaded.config,
      append_eos=None if args.option_eos is None else args.option_eos == "yes",
      target_delimiter=args.target_delimiter,
    )
  except TypeError as e:
    raise UserError(f"{e}: --target_delimiter is for decoder-only models") from e
  try:
    spec = vocab_lib.vocabulary_spec(loaded.vocab)
  except ValueError:
    spec = {"vocabulary": str(loaded.vocab)}
  if spec.get("path") and pathlib.Path(spec["path"]).is_file():
    spec["path"] = resume.file_digest(spec["path"])  # what it holds, not where it lies
  vocab_id = resume.digest(spec)
  # Every chunk's format must work with this tokenizer before anything runs; the formats are
  # part of the fingerprint (run.json: prompt_format, and prompt_formats when files declare).
  common.prompt_formats(
    list({c.instruction.id: c.instruction for c in chunks}.values()),
    settings.prompt_format,
    "--prompt_format" if args.prompt_format else "gin evaluate.prompt_format, or the default",
    loaded.vocab,
  )
  # Everything that changes the numbers: a rerun into this directory must match all of it.
  fp = engine.fingerprint(
    model=resume.model_digest(args.model),
    chunks=chunks,
    settings=settings,
    prompt_digest=prompt_digest,
    extra={
      "benchmark": args.benchmark,
      "mixture": args.mixture,
      "model_name": model_name,
      "dtype": str(loaded.config.dtype),
      "vocabulary": vocab_id,
      "scoring": repr(model),
      "data": resume.digest(
        [
          [e.id, dict(e.fields), list(e.options), e.answer]
          for c in _first_chunks(chunks)
          for e in c.examples
        ]
      ),
    },
  )
  summary_extra = None
  if args.budget is not None:
    chunks, summary_extra = _budget_plan(args, output_dir, chunks)
  evaluator = engine.Evaluator(
    model,
    loaded.params,
    loaded.vocab,
    settings,
    mesh=mesh,
    prompt=prompt,
  )
  try:
    result = engine.evaluate(
      evaluator,
      chunks,
      output_dir,
      model_name=model_name,
      run_fingerprint=fp,
      progress=not args.no_progress,
      summary_extra=summary_extra,
    )
  except (
    resume.FingerprintMismatch,
    resume.CorruptResults,
    checks.NonFiniteScoreError,
    engine.OptionsTieError,
  ) as e:
    raise UserError(str(e)) from e
  counts = engine.truncation_counts(io_utils.read_jsonl(output_dir / resume.RESULTS_FILE))
  for task, c in counts.items():
    if c["inputs_truncated"] or c["options_truncated"]:
      print(
        f"warning: {task}: {c['inputs_truncated']} of {c['rows']} inputs longer than "
        f"max_input_length={settings.max_input_length} and {c['options_truncated']} options "
        f"longer than max_target_length={settings.max_target_length} were truncated "
        "(summary.json: truncation)",
        file=sys.stderr,
      )
  if result.resumed_chunks:
    print(
      f"resumed: {result.resumed_chunks} of {result.num_chunks} (task, instruction) chunks were "
      "already done",
      file=sys.stderr,
    )
  print(
    f"evaluated {result.num_rows} (task, instruction, example) rows over {len({c.task for c in chunks})} task(s) "
    f"-> {output_dir}",
    file=sys.stderr,
  )
  return 0
