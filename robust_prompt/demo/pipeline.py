"""The offline demo: measure brittleness, train a soft prompt with alignment, measure again.

Phases (each with a progress bar):

1. write the toy suite (`<out>/suite/`: task JSONL files and instruction JSONL files);
2. evaluate the committed demo model on observed and held-out unobserved instructions
   (`<out>/before/`, the `eval` engine and its files);
3. train a soft prompt (model frozen) with cross-entropy + the paraphrase-alignment loss on the
   observed + *training* paraphrases (`<out>/prompt/`, the `train` loop; held-out phrasings are
   checked to be disjoint from the pool);
4. evaluate again with the prompt (`<out>/after/`);
5. one report over both runs (`<out>/summary.json`, `per_instruction.csv`, `report.md`,
   `report.html`): "before" and "after" side by side.

Every number is measured when the demo runs; nothing is precomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence

import numpy as np

from robust_prompt import io_utils, partitioning
from robust_prompt.checkpoints.resolve import LoadedModel, load_model
from robust_prompt.data import jsonl
from robust_prompt.demo import assets, instructions, suite
from robust_prompt.eval import engine, report, summary, tables
from robust_prompt.instructions.io import load_instructions
from robust_prompt.model import prompted
from robust_prompt.model import soft_prompt as prompt_lib
from robust_prompt.train import grouping, loop, objective, state

BEFORE_LABEL = "before: demo model"
AFTER_LABEL = "after: + soft prompt (CE + alignment)"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
  """Sizes of the demo run (`QUICK` is a reduced set for tests and smoke runs).

  Attributes:
    seed: suite generation, prompt initialisation and data order.
    eval_examples: examples per task in the evaluation set.
    train_examples: examples per task the soft prompt is trained on (a separate set).
    prompt_length: `P`.
    num_steps: prompt-training steps.
    groups_per_batch / members_per_group: `G` examples a batch, each under `K` instructions
      (the anchor is one of the observed templates).
    learning_rate: Adafactor learning rate of the prompt (constant, as in prompt tuning).
    lambda_sim: weight of the alignment loss (cosine distance of pooled encoder states to the
      group mean); 0 is plain prompt tuning.
    lambda_kl: weight of KL(anchor || member) over the answer options.
    alignment / pooling: see `objective.LossConfig` ("cosine" | "info_nce"; "mean" | "input" |
      "prompt").
    eval_batch_size: rows per evaluation batch.
    tasks: toy task names (default: all).
    instructions_per_set: use only the first N observed, training and held-out instructions of
      each task (default: all; fewer means fewer shapes to compile).
  """

  seed: int = 0
  eval_examples: int = 60
  train_examples: int = 200
  prompt_length: int = 8
  num_steps: int = 600
  groups_per_batch: int = 8
  members_per_group: int = 4
  learning_rate: float = 0.3
  lambda_sim: float = 1.0
  lambda_kl: float = 0.0
  alignment: str = "cosine"
  pooling: str = "mean"
  eval_batch_size: int = 64
  tasks: tuple[str, ...] | None = None
  instructions_per_set: int | None = None


QUICK = DemoSettings(
  eval_examples=6,
  train_examples=8,
  num_steps=10,
  groups_per_batch=4,
  members_per_group=2,
  eval_batch_size=8,
  instructions_per_set=2,
)
MAX_INPUT_LENGTH = 96  # tokens; the longest paraphrase renders to ~70
MAX_TARGET_LENGTH = 8


@dataclasses.dataclass
class SuitePaths:
  root: pathlib.Path
  eval_data: pathlib.Path  # --data_dir of the evaluation set (jsonl benchmark)
  train_data: pathlib.Path  # --data_dir of the prompt-training set
  instructions: dict[str, pathlib.Path]  # observed / train / heldout JSONL files


def write_suite(directory: str | os.PathLike, settings: DemoSettings) -> SuitePaths:
  """Writes the toy suite's data and instruction files under `directory`."""
  root = pathlib.Path(directory)
  tasks = list(settings.tasks) if settings.tasks else None
  return SuitePaths(
    root=root,
    eval_data=suite.write_task_files(
      root / "data" / "eval", settings.eval_examples, settings.seed, "eval", tasks
    ),
    train_data=suite.write_task_files(
      root / "data" / "prompt_train", settings.train_examples, settings.seed, "prompt_train", tasks
    ),
    instructions=instructions.write_instruction_files(
      root / "instructions", tasks, settings.instructions_per_set
    ),
  )


def _load_tasks(data_dir: pathlib.Path) -> dict[str, list]:
  return {
    jsonl.task_name(p): jsonl.load_jsonl(p) for p in sorted(pathlib.Path(data_dir).glob("*.jsonl"))
  }


def _evaluate(
  loaded: LoadedModel,
  mesh,
  chunks: Sequence[engine.Chunk],
  output_dir: pathlib.Path,
  settings: DemoSettings,
  *,
  model_name: str,
  prompt: np.ndarray | None,
  progress: bool,
) -> list[dict]:
  eval_settings = engine.evaluate_settings(
    batch_size=settings.eval_batch_size,
    max_input_length=MAX_INPUT_LENGTH,
    max_target_length=MAX_TARGET_LENGTH,
  )
  evaluator = engine.Evaluator(
    prompted.for_config(loaded.config),
    loaded.params,
    loaded.vocab,
    eval_settings,
    mesh=mesh,
    prompt=prompt,
  )
  digest = None
  if prompt is not None:
    digest = hashlib.sha256(np.ascontiguousarray(prompt, np.float32).tobytes()).hexdigest()
  fp = engine.fingerprint(
    model=loaded.source,
    chunks=chunks,
    settings=eval_settings,
    prompt_digest=digest,
    extra={"benchmark": "jsonl", "demo": dataclasses.asdict(settings)},
  )
  result = engine.evaluate(
    evaluator, chunks, output_dir, model_name=model_name, run_fingerprint=fp, progress=progress
  )
  return io_utils.read_jsonl(result.files["results"])


def _train_prompt(
  loaded: LoadedModel,
  mesh,
  paths: SuitePaths,
  settings: DemoSettings,
  model_dir: pathlib.Path,
  progress: bool,
) -> np.ndarray:
  pool = load_instructions([paths.instructions["observed"], paths.instructions["train"]])
  heldout = load_instructions(paths.instructions["heldout"])
  grouping.check_disjoint(pool, heldout)
  examples = [ex for exs in _load_tasks(paths.train_data).values() for ex in exs]
  data = grouping.GroupedData(
    examples,
    pool,
    loaded.vocab,
    groups_per_batch=settings.groups_per_batch,
    members_per_group=settings.members_per_group,
    max_input_length=MAX_INPUT_LENGTH,
    max_target_length=MAX_TARGET_LENGTH,
    seed=settings.seed,
    anchor="observed",
  )
  tx, schedule = state.build_optimizer("adafactor", settings.learning_rate)
  embedding = np.asarray(loaded.params["token_embedder"]["embedding"])
  result = loop.train(
    model=prompted.for_config(loaded.config),
    frozen_params=loaded.params,
    data=data,
    model_dir=str(model_dir),
    mesh=mesh,
    num_steps=settings.num_steps,
    prompt_length=settings.prompt_length,
    prompt_init=prompt_lib.from_vocab(embedding, num_ids=loaded.vocab.vocab_size),
    optimizer=tx,
    learning_rate_fn=schedule,
    loss_config=objective.LossConfig(
      lambda_sim=settings.lambda_sim,
      lambda_kl=settings.lambda_kl,
      alignment=settings.alignment,
      pooling=settings.pooling,
    ),
    seed=settings.seed,
    save_every=max(settings.num_steps, 1),
    keep_checkpoints=1,
    async_checkpoints=False,
    log_every=max(1, min(25, settings.num_steps)),
    progress=progress,
  )
  return result.prompt


def write_combined_report(
  output_dir: pathlib.Path, before: list[dict], after: list[dict], texts: dict[str, str]
) -> dict[str, pathlib.Path]:
  """per_instruction.csv, summary.json, report.md/html with "before" and "after" sections."""
  tabs = tables.tables_from_results(before + after)
  per_instruction = tables.per_instruction_rows(tabs)
  tables.write_per_instruction_csv(output_dir / "per_instruction.csv", per_instruction)
  summaries = summary.summarize(tabs, instruction_texts=texts)
  summary.write_summary(output_dir / "summary.json", summaries)
  names = {BEFORE_LABEL: before[0]["model"], AFTER_LABEL: after[0]["model"]}
  sections = [
    (label, summaries[name], [r for r in per_instruction if r["model"] == name])
    for label, name in names.items()
  ]
  written = report.write_report(output_dir, sections, title="robust-prompt demo (toy suite)")
  return {
    "summary": output_dir / "summary.json",
    "per_instruction": output_dir / "per_instruction.csv",
    "report_md": written["report.md"],
    "report_html": written["report.html"],
  }


@dataclasses.dataclass
class DemoResult:
  output_dir: pathlib.Path
  before: dict  # macro summary (observed / unobserved / gap ...) before prompt training
  after: dict
  files: dict[str, pathlib.Path]
  seconds: dict[str, float]


def _headline(macro: dict) -> str:
  def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"

  gap = macro["gap"]["value"]
  return (
    f"observed {pct(macro['observed']['mean'])}, held-out unobserved "
    f"{pct(macro['unobserved']['mean'])}, gap {'n/a' if gap is None else f'{100 * gap:+.1f} pp'}"
  )


def run_demo(
  output_dir: str | os.PathLike,
  settings: DemoSettings = DemoSettings(),
  *,
  model_dir: str | os.PathLike | None = None,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> DemoResult:
  """Runs the whole demo into `output_dir` (see the module docstring); returns the headline.

  Args:
    output_dir: created if needed; must be empty of a previous demo with other settings.
    settings: sizes (`DemoSettings()` full, `QUICK` reduced).
    model_dir: the model to evaluate (default: the committed demo checkpoint).
    progress: progress bars.
    log: where phase messages go.
  """
  out = io_utils.check_writable_dir(output_dir)
  seconds: dict[str, float] = {}
  t = time.perf_counter()

  def phase(name: str) -> None:
    nonlocal t
    now = time.perf_counter()
    seconds[name] = round(now - t, 2)
    t = now

  log(f"[1/5] writing the toy suite -> {out / 'suite'}")
  paths = write_suite(out / "suite", settings)
  model_path = pathlib.Path(model_dir) if model_dir else assets.model_dir()
  # One device: the model is tiny, and splitting its batches over several (e.g. the 8 fake CPU
  # devices of the tests) only adds compilation and communication.
  mesh = partitioning.make_mesh(1, 1)
  loaded = load_model(str(model_path), mesh=mesh)
  eval_instructions = load_instructions(
    [paths.instructions["observed"], paths.instructions["heldout"]]
  )
  chunks = engine.plan_chunks(_load_tasks(paths.eval_data), eval_instructions)
  texts = {c.instruction.id: c.instruction.text for c in chunks}
  phase("suite")

  def evaluate(stage: str, model_name: str, prompt: np.ndarray | None) -> list[dict]:
    # Before and after training: the same chunks and settings, only the prompt differs.
    rows = _evaluate(
      loaded, mesh, chunks, out / stage, settings, model_name=model_name, prompt=prompt,
      progress=progress,
    )  # fmt: skip
    phase(f"eval_{stage}")
    return rows

  log(f"[2/5] evaluating the demo model (observed vs held-out unobserved) -> {out / 'before'}")
  before = evaluate("before", "demo-t5", None)

  log(f"[3/5] training a soft prompt with the alignment loss -> {out / 'prompt'}")
  prompt = _train_prompt(loaded, mesh, paths, settings, out / "prompt", progress)
  phase("train")

  log(f"[4/5] evaluating again with the soft prompt -> {out / 'after'}")
  after = evaluate("after", "demo-t5+prompt", prompt)

  log(f"[5/5] writing the before/after report -> {out / 'report.html'}")
  files = write_combined_report(out, before, after, texts)
  summaries = summary.load_summaries(files["summary"])
  result = DemoResult(
    output_dir=out,
    before=summaries["demo-t5"]["macro"],
    after=summaries["demo-t5+prompt"]["macro"],
    files=files,
    seconds=seconds,
  )
  phase("report")
  io_utils.atomic_write_json(
    out / "demo.json",
    {
      "settings": dataclasses.asdict(settings),
      "model": str(model_path),
      "seconds": seconds,
      "before": {k: result.before[k] for k in ("observed", "unobserved", "gap")},
      "after": {k: result.after[k] for k in ("observed", "unobserved", "gap")},
    },
  )
  log(f"before: {_headline(result.before)}")
  log(f"after:  {_headline(result.after)}")
  log(f"report: {files['report_html']}  ({sum(seconds.values()):.0f} s)")
  return result


def load_demo_json(output_dir: str | os.PathLike) -> dict:
  return json.loads((pathlib.Path(output_dir) / "demo.json").read_text())
