"""`robust-prompt eval` from the command line: gin + flags, benchmarks, and clear errors."""

import json

import pytest
from helpers import OBSERVED_BIGBENCH, OBSERVED_LETTERS, write_jsonl

MMLU_INSTRUCTIONS = [
  OBSERVED_LETTERS,
  {
    "id": "unobs_letters",
    "tasks": ["mmlu:*"],
    "template": "Pick the right letter. {question}\n{options}",
    "options_format": "letters",
    "answer_space": "letters",
    "split": "unobserved",
    "source": "human",
  },
]
BB_INSTRUCTIONS = [
  OBSERVED_BIGBENCH,
  {
    "id": "bb_unobs",
    "tasks": ["bigbench:*"],
    "template": "Answer: {input} ({options})",
    "options_format": "inline",
    "answer_space": "option_text",
    "split": "unobserved",
    "source": "human",
  },
]


def run_cli(argv, capsys):
  from robust_prompt.cli import main as cli_main

  capsys.readouterr()
  code = cli_main.main(argv)
  captured = capsys.readouterr()
  return code, captured.err


def test_gin_file_bindings_and_flags(tiny_model_dir, mmlu_dir, tmp_path, capsys):
  instructions = write_jsonl(tmp_path / "mmlu.jsonl", MMLU_INSTRUCTIONS)
  base = [
    "eval", "--model", str(tiny_model_dir), "--benchmark", "mmlu", "--data_dir", str(mmlu_dir),
    "--instructions", str(instructions), "--tasks", "mmlu:anat*", "--no_progress",
    "--gin_file", "test/eval_tiny.gin",
  ]  # fmt: skip
  # gin alone: eval_tiny.gin's 3 examples, the binding's score mode.
  out = tmp_path / "gin"
  code, err = run_cli([*base, "--output_dir", str(out), "--gin.evaluate.score_mode='mean'"], capsys)
  assert code == 0, err
  run = json.loads((out / "run.json").read_text())
  assert (run["score_mode"], run["max_examples"], run["max_input_length"]) == ("mean", 3, 256)
  assert len((out / "results.jsonl").read_text().splitlines()) == 2 * 3
  # Flags win over gin.
  out = tmp_path / "flags"
  argv = [*base, "--output_dir", str(out), "--gin.evaluate.score_mode='mean'"]
  code, err = run_cli([*argv, "--score_mode", "sum", "--max_examples", "2"], capsys)
  assert code == 0, err
  run = json.loads((out / "run.json").read_text())
  assert (run["score_mode"], run["max_examples"]) == ("sum", 2)
  rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 2 * 2 and {r["task"] for r in rows} == {"mmlu:anatomy"}
  summary = json.loads((out / "summary.json").read_text())
  assert summary["tasks"]["mmlu:anatomy"]["gap"]["value"] is not None


def test_bigbench_lite_with_a_mesh(tiny_model_dir, bigbench_lite_dir, tmp_path, capsys):
  instructions = write_jsonl(tmp_path / "bb.jsonl", BB_INSTRUCTIONS)
  out = tmp_path / "bb"
  argv = [
    "eval", "--model", str(tiny_model_dir), "--benchmark", "bigbench_lite",
    "--data_dir", str(bigbench_lite_dir), "--instructions", str(instructions),
    "--output_dir", str(out), "--tasks", "strategyqa", "--max_examples", "2",
    "--batch_size", "4", "--mesh", "data=2,model=2", "--no_progress",
  ]  # fmt: skip
  code, err = run_cli(argv, capsys)
  assert code == 0, err
  rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
  assert [(r["task"], r["instruction_id"]) for r in rows] == [
    ("bigbench:strategyqa", "bb_obs"),
    ("bigbench:strategyqa", "bb_obs"),
    ("bigbench:strategyqa", "bb_unobs"),
    ("bigbench:strategyqa", "bb_unobs"),
  ]
  assert all(len(r["option_scores"]) == 2 for r in rows)  # strategyqa: Yes / No
  for name in ("per_instruction.csv", "summary.json", "report.md", "report.html"):
    assert (out / name).is_file()


# -- errors (all found before the model is loaded: --model need not even exist) -----------------


def _argv(tmp_path, benchmark, data_dir, instructions, *extra, out=None):
  return [
    "eval", "--model", str(tmp_path / "no_such_model"), "--benchmark", benchmark,
    "--data_dir", str(data_dir), "--instructions", str(instructions),
    "--output_dir", str(out or tmp_path / "out"), *extra,
  ]  # fmt: skip


def test_unknown_task_lists_close_matches(mmlu_dir, tmp_path, capsys):
  instructions = write_jsonl(tmp_path / "mmlu.jsonl", MMLU_INSTRUCTIONS)
  code, err = run_cli(
    _argv(tmp_path, "mmlu", mmlu_dir, instructions, "--tasks", "anatomyy"), capsys
  )
  assert code == 1
  assert "unknown task 'anatomyy'" in err and "mmlu:anatomy" in err
  assert "Traceback" not in err


def test_instruction_that_does_not_fit_names_file_line_and_task(tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  write_jsonl(
    data / "qa.jsonl", [{"id": "q1", "question": "2+2?", "options": ["3", "4"], "answer": 1}]
  )
  bad = dict(
    MMLU_INSTRUCTIONS[0],
    id="needs_context",
    tasks=["jsonl:*"],
    template="{context} {question} {options}",
  )
  instructions = write_jsonl(
    tmp_path / "jsonl_instr.jsonl", [dict(bad, id="fine", template="{question} {options}"), bad]
  )
  code, err = run_cli(_argv(tmp_path, "jsonl", data, instructions), capsys)
  assert code == 1
  assert f"{instructions}:2:" in err  # the offending line
  assert "needs_context" in err and "jsonl:qa" in err and "{context}" in err


def test_unwritable_output_dir(mmlu_dir, tmp_path, capsys):
  instructions = write_jsonl(tmp_path / "mmlu.jsonl", MMLU_INSTRUCTIONS)
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  out = blocker / "out"
  code, err = run_cli(_argv(tmp_path, "mmlu", mmlu_dir, instructions, out=out), capsys)
  assert code == 1
  assert "--output_dir" in err and str(out) in err


def test_no_instruction_applies(mmlu_dir, tmp_path, capsys):
  instructions = write_jsonl(tmp_path / "bb.jsonl", BB_INSTRUCTIONS)
  code, err = run_cli(_argv(tmp_path, "mmlu", mmlu_dir, instructions, "--tasks", "anatomy"), capsys)
  assert code == 1
  assert "no instruction applies" in err and "mmlu:anatomy" in err and "bigbench:*" in err


def test_soft_prompt_flag(tiny_model_dir, mmlu_dir, tmp_path, capsys):
  import numpy as np

  instructions = write_jsonl(tmp_path / "mmlu.jsonl", MMLU_INSTRUCTIONS)
  prompt = tmp_path / "prompt.npy"
  np.save(prompt, np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32))
  outs = {}
  for name, extra in (("base", []), ("prompted", ["--prompt", str(prompt)])):
    outs[name] = tmp_path / name
    argv = [
      "eval", "--model", str(tiny_model_dir), "--benchmark", "mmlu", "--data_dir", str(mmlu_dir),
      "--instructions", str(instructions), "--output_dir", str(outs[name]), "--tasks", "anatomy",
      "--max_examples", "2", "--batch_size", "4", "--no_progress", *extra,
    ]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert code == 0, err
  read = lambda out: [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]  # noqa: E731
  base, prompted = read(outs["base"]), read(outs["prompted"])
  assert (
    prompted[0]["model"].startswith(f"{tiny_model_dir}+prompt:")
    and len(prompted[0]["model"]) == len(str(tiny_model_dir)) + 20
  )
  assert json.loads((outs["prompted"] / "run.json").read_text())["prompt"] is not None
  assert any(a["option_scores"] != b["option_scores"] for a, b in zip(base, prompted))


def test_task_selection_names_globs_and_subtasks(bigbench_lite_dir):
  from robust_prompt.data import sources

  where = str(bigbench_lite_dir)
  select = lambda *p: sources.select_tasks("bigbench_lite", where, list(p))  # noqa: E731
  assert select("strategyqa", "bigbench:winowhy") == ["bigbench:strategyqa", "bigbench:winowhy"]
  assert select("bbq*") == ["bigbench:bbq_lite_json"]  # a task glob does not add its subtasks
  assert select("bbq_lite_json:age_*") == [
    "bigbench:bbq_lite_json:age_ambig",
    "bigbench:bbq_lite_json:age_disambig",
  ]
  available = sources.select_tasks("bigbench_lite", where)
  assert "bigbench:strategyqa" in available and not any(t.count(":") > 1 for t in available)
  with pytest.raises(sources.DataError, match="Did you mean: bigbench:strategyqa"):
    select("stratgyqa")


USER_MODULE = '''
"""A user's T5X-style task module: two phrasings of one task, and a mixture of both."""
import json
import pathlib

import seqio
import tensorflow as tf

from robust_prompt import seqio_tasks

DATA = pathlib.Path(__file__).with_name("toy.jsonl")
PHRASINGS = {"plain": ("{q}", "observed"), "polite": ("Please answer: {q}", "unobserved")}


def _source(template):
  rows = [json.loads(line) for line in DATA.read_text().splitlines()]

  def dataset_fn(split, shuffle_files, seed=None):
    return tf.data.Dataset.from_tensor_slices({
      "inputs": [template.format(q=r["question"]) for r in rows],
      "options": tf.ragged.constant([r["options"] for r in rows]),
      "answer": [r["answer"] for r in rows],
      "example_id": [r["id"] for r in rows],
    }).map(lambda ex: {**ex, "options": ex["options"]})

  return seqio.FunctionDataSource(dataset_fn, splits=["test"])


for pid, (template, split) in PHRASINGS.items():
  name = f"user_toy_{pid}"
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(name, source=_source(template), output_features={}, preprocessors=[])
  seqio_tasks.set_label(name, task="jsonl:toy", instruction_id=pid, split=split, template=template)
if "user_toy" not in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.add("user_toy", ["user_toy_plain", "user_toy_polite"], default_rate=1.0)
'''


def test_mixture_of_user_tasks_equals_jsonl_benchmark(
  tiny_model_dir, tmp_path, capsys, monkeypatch
):
  """SeqIO tasks a user registers in their own module (two phrasings + a mixture) are scored
  exactly as the same examples and phrasings given as a JSONL benchmark with instructions."""
  rows = [
    {"id": f"jsonl:toy:{i}", "question": q, "options": opts, "answer": a}
    for i, (q, opts, a) in enumerate(
      [("2 + 2 =", ["3", "4", "5"], 1), ("The sky is", ["blue", "green"], 0),
       ("Cats say", ["woof", "meow", "moo", "quack"], 1)]
    )
  ]  # fmt: skip
  module_dir = tmp_path / "user_mod"
  module_dir.mkdir()
  write_jsonl(module_dir / "toy.jsonl", rows)
  (module_dir / "user_toy_tasks.py").write_text(USER_MODULE)
  monkeypatch.syspath_prepend(str(module_dir))
  data = tmp_path / "data"
  data.mkdir()
  write_jsonl(
    data / "toy.jsonl",
    [{"id": str(i), "input": r["question"], "options": r["options"], "answer": r["answer"]}
     for i, r in enumerate(rows)],
  )  # fmt: skip
  instructions = write_jsonl(
    tmp_path / "toy_instructions.jsonl",
    [
      {"id": "plain", "tasks": ["jsonl:toy"], "template": "{input}", "options_format": "none",
       "answer_space": "option_text", "split": "observed", "source": "user"},
      {"id": "polite", "tasks": ["jsonl:toy"], "template": "Please answer: {input}",
       "options_format": "none", "answer_space": "option_text", "split": "unobserved",
       "source": "user"},
    ],
  )  # fmt: skip
  common = ["eval", "--model", str(tiny_model_dir), "--no_progress", "--batch_size", "4"]
  code, err = run_cli(
    [*common, "--mixture", "user_toy", "--module", "user_toy_tasks",
     "--output_dir", str(tmp_path / "mix")], capsys,
  )  # fmt: skip
  assert code == 0, err
  code, err = run_cli(
    [*common, "--benchmark", "jsonl", "--data_dir", str(data), "--instructions",
     str(instructions), "--output_dir", str(tmp_path / "bench")], capsys,
  )  # fmt: skip
  assert code == 0, err

  def table(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    return {(r["instruction_id"], r["example_id"]): r for r in map(json.loads, lines)}

  mix, bench = table(tmp_path / "mix"), table(tmp_path / "bench")
  assert sorted(mix) == sorted(bench) and len(mix) == 6
  for key, row in bench.items():
    assert mix[key]["task"] == row["task"] == "jsonl:toy"
    assert mix[key]["split"] == row["split"]
    assert mix[key]["option_scores"] == pytest.approx(row["option_scores"], abs=1e-5)
    assert mix[key]["prediction"] == row["prediction"]
  # An unlabelled task is refused with what to do.
  code, err = run_cli(
    [*common, "--mixture", "nonexistent_mix", "--output_dir", str(tmp_path / "bad")], capsys
  )
  assert code == 1 and "no SeqIO task or mixture" in err


def test_num_fewshot_puts_demonstrations_before_the_input(
  tiny_model_dir, mmlu_dir, tmp_path, capsys
):
  """--num_fewshot K: K solved examples of the task, same instruction, never the evaluated one;
  recorded in run.json (a zero-shot rerun into the same directory is refused)."""
  import seqio

  from robust_prompt import seqio_tasks
  from robust_prompt.eval import engine, registry
  from robust_prompt.instructions.io import load_instructions

  instructions = write_jsonl(tmp_path / "mmlu.jsonl", MMLU_INSTRUCTIONS[:1])
  seqio_tasks.register_tasks(
    "mmlu", str(mmlu_dir), load_instructions([instructions]), seqio.PassThroughVocabulary(0),
    tasks=["mmlu:anatomy"],
  )  # fmt: skip
  name = seqio_tasks.task_name("mmlu", "mmlu:anatomy", "observed", "obs_letters")
  settings = engine.evaluate_settings(num_fewshot=2, max_examples=3)
  chunk = registry.chunks_from_registry([name], settings=settings)[0]
  zero = registry.chunks_from_registry([name], max_examples=3)[0]
  for ex, few, plain in zip(chunk.examples, chunk.rendered, zero.rendered):
    assert few.inputs.endswith(plain.inputs) and few.inputs.count("Answer:") == 3
    assert few.options == plain.options and few.answer == plain.answer
    assert ex.fields["question"] not in few.inputs[: -len(plain.inputs)]  # not its own demo
  base = [
    "eval", "--model", str(tiny_model_dir), "--benchmark", "mmlu", "--data_dir", str(mmlu_dir),
    "--instructions", str(instructions), "--tasks", "mmlu:anatomy", "--max_examples", "3",
    "--no_progress", "--output_dir", str(tmp_path / "few"),
  ]  # fmt: skip
  code, err = run_cli([*base, "--num_fewshot", "2"], capsys)
  assert code == 0, err
  assert json.loads((tmp_path / "few" / "run.json").read_text())["num_fewshot"] == 2
  code, err = run_cli(base, capsys)
  assert code == 1 and "run.json" in err or "different" in err
