"""Prompt formats per instruction file: declaration, precedence, validation, the two Alpaca
wrappers, the fingerprint, the SeqIO path, training, and eval end to end on a tiny Llama."""

import json
import pathlib

import pytest

from robust_prompt.data.example import Example
from robust_prompt.instructions import fewshot
from robust_prompt.instructions.io import load_instructions, write_instructions
from robust_prompt.instructions.render import check_prompt_formats, model_input, render
from robust_prompt.instructions.schema import InstructionError
from robust_prompt.model import prompt_formats

# The wrappers of stanford_alpaca's train.py (PROMPT_DICT), written out here so that a change to
# the constants in model/prompt_formats.py cannot pass unnoticed.
WITH_INPUT = (
  "Below is an instruction that describes a task, paired with an input that provides further "
  "context. Write a response that appropriately completes the request.\n\n"
  "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
WITHOUT_INPUT = (
  "Below is an instruction that describes a task. Write a response that appropriately "
  "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)

SPLIT = {
  "id": "alp_split", "tasks": ["jsonl:toy"], "template": "Pick the best continuation.",
  "input_template": "{input}", "options_format": "none", "answer_space": "option_text",
  "split": "observed", "source": "alpaca",
}  # fmt: skip
WHOLE = {
  "id": "alp_whole", "tasks": ["jsonl:toy"], "template": "Continue: {input}",
  "options_format": "none", "answer_space": "option_text", "split": "observed",
  "source": "alpaca",
}  # fmt: skip
PLAIN = {
  "id": "plain", "tasks": ["jsonl:toy"], "template": "{input}", "options_format": "none",
  "answer_space": "option_text", "split": "unobserved", "source": "human",
}  # fmt: skip
EXAMPLE = Example(
  id="jsonl:toy:0",
  task="jsonl:toy",
  fields={"input": "the quick brown"},
  options=("fox", "dog"),
  answer=0,
  correct=(0,),
)


def _write(path: pathlib.Path, lines) -> pathlib.Path:
  text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
  path.write_text(text, encoding="utf-8")
  return path


def _alpaca_file(tmp_path) -> pathlib.Path:
  return _write(
    tmp_path / "alpaca.jsonl",
    ["# Alpaca-style phrasings", {"defaults": {"prompt_format": "alpaca"}}, SPLIT, WHOLE],
  )


# -- declaring a format ---------------------------------------------------------------------------


def test_file_defaults_apply_to_that_file_only_and_records_win(tmp_path):
  own = dict(PLAIN, id="own_raw", prompt_format="raw")
  declared = _write(
    tmp_path / "a.jsonl", [{"defaults": {"prompt_format": "alpaca"}}, SPLIT, WHOLE, own]
  )
  other = _write(tmp_path / "b.jsonl", [PLAIN])
  formats = {i.id: i.prompt_format for i in load_instructions([declared, other])}
  assert formats == {"alp_split": "alpaca", "alp_whole": "alpaca", "own_raw": "raw", "plain": None}
  # The run's format applies only where nothing is declared.
  loaded = {i.id: i for i in load_instructions([declared, other])}
  assert loaded["alp_whole"].format_for("chat") == "alpaca"
  assert loaded["own_raw"].format_for("chat") == "raw"
  assert loaded["plain"].format_for("chat") == "chat"


def test_written_collections_keep_the_resolved_format(tmp_path):
  instructions = load_instructions([_alpaca_file(tmp_path), _write(tmp_path / "b.jsonl", [PLAIN])])
  out = tmp_path / "pool.jsonl"
  write_instructions(instructions, out)
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert [x.get("prompt_format") for x in lines] == ["alpaca", "alpaca", None]
  assert lines[0]["input_template"] == "{input}" and "input_template" not in lines[1]
  again = load_instructions([out])
  assert [(i.prompt_format, i.input_template) for i in again] == [
    (i.prompt_format, i.input_template) for i in instructions
  ]


@pytest.mark.parametrize(
  "lines, where, message",
  [
    ([dict(PLAIN, prompt_format="vicuna")], 1, r"prompt_format 'vicuna' is not one of \['raw', "
     "'alpaca', 'chat'\\]"),
    ([dict(PLAIN, prompt_format=None)], 1, r"prompt_format None is not one of"),
    (["# header", {"defaults": {"prompt_format": "Alpaca"}}, PLAIN], 2,
     r"defaults.prompt_format 'Alpaca' is not one of \['raw', 'alpaca', 'chat'\]"),
    ([PLAIN, {"defaults": {"prompt_format": "alpaca"}}], 2,
     r"defaults line must come before the first instruction"),
    ([{"defaults": {"prompt_format": "raw"}}, {"defaults": {"prompt_format": "chat"}}, PLAIN], 2,
     r"a second defaults line \(the first is line 1\)"),
    ([{"defaults": {"options_format": "letters"}}, PLAIN], 1,
     r"unknown key\(s\) \['options_format'\] in 'defaults'; a file can set \['prompt_format'\]"),
    ([{"defaults": "alpaca"}, PLAIN], 1, r"'defaults' must be an object"),
    ([{"defaults": {}, "id": "x"}, PLAIN], 1, r"a defaults line holds only the key 'defaults'"),
    ([dict(PLAIN, input_template=3)], 1, r"'input_template' must be a string"),
    ([dict(PLAIN, input_template="{input")], 1, r"bad input_template"),
  ],
)  # fmt: skip
def test_bad_declarations_are_file_line_errors(tmp_path, lines, where, message):
  path = _write(tmp_path / "bad.jsonl", lines)
  with pytest.raises(InstructionError, match=message) as info:
    load_instructions([path])
  assert str(info.value).startswith(f"{path}:{where}: ")


def test_input_template_counts_for_the_placeholder_checks(tmp_path):
  mmlu = {
    "id": "m", "tasks": ["mmlu:*"], "template": "Answer the question.",
    "input_template": "{question}\n{options}", "options_format": "letters",
    "answer_space": "letters", "split": "unobserved", "source": "human",
  }  # fmt: skip
  (instruction,) = load_instructions([_write(tmp_path / "m.jsonl", [mmlu])])
  assert instruction.placeholders == ("question", "options")
  bad = dict(mmlu, input_template="{question}\n{passage}\n{options}")
  with pytest.raises(
    InstructionError, match=r"bad.jsonl:1: .*unknown placeholder\(s\) \['\{passage"
  ):
    load_instructions([_write(tmp_path / "bad.jsonl", [bad])])


# -- the two Alpaca wrappers ----------------------------------------------------------------------


def _loaded(tmp_path):
  return {i.id: i for i in load_instructions([_alpaca_file(tmp_path)])}


def test_alpaca_with_input_when_the_instruction_shows_its_input_apart(tmp_path):
  r = render(_loaded(tmp_path)["alp_split"], EXAMPLE)
  # What T5 (or the raw format) reads: the two parts joined by a blank line.
  assert r.inputs == "Pick the best continuation.\n\nthe quick brown"
  assert model_input(r, "raw") == r.inputs
  expected = WITH_INPUT.format(instruction="Pick the best continuation.", input="the quick brown")
  assert model_input(r, "alpaca") == expected
  assert expected == prompt_formats.ALPACA_WITH_INPUT.format(
    instruction="Pick the best continuation.", input="the quick brown"
  )


def test_alpaca_without_input_when_the_template_holds_everything(tmp_path):
  r = render(_loaded(tmp_path)["alp_whole"], EXAMPLE)
  assert r.parts() == ("Continue: the quick brown", "")
  expected = WITHOUT_INPUT.format(instruction="Continue: the quick brown")
  assert model_input(r, "alpaca") == expected
  assert expected == prompt_formats.ALPACA_WITHOUT_INPUT.format(
    instruction="Continue: the quick brown"
  )


def test_an_empty_input_uses_the_without_input_wrapper(tmp_path):
  empty = dataclasses_replace(EXAMPLE, fields={"input": "  "})
  r = render(_loaded(tmp_path)["alp_split"], empty)
  assert r.inputs == "Pick the best continuation."
  assert model_input(r, "alpaca") == WITHOUT_INPUT.format(instruction="Pick the best continuation.")


def test_few_shot_text_is_wrapped_whole(tmp_path):
  demo = dataclasses_replace(EXAMPLE, id="jsonl:toy:1", fields={"input": "hello"})
  r = fewshot.render_fewshot(_loaded(tmp_path)["alp_split"], EXAMPLE, [demo])
  whole = (
    "Pick the best continuation.\n\nhello fox\n\nPick the best continuation.\n\nthe quick brown"
  )
  assert r.inputs == whole
  assert model_input(r, "alpaca") == WITHOUT_INPUT.format(instruction=whole)


def test_chat_puts_the_joined_text_in_one_user_turn(tmp_path):
  config = {"chat_template": "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"}
  r = render(_loaded(tmp_path)["alp_split"], EXAMPLE)
  assert model_input(r, "chat", config) == "<Pick the best continuation.\n\nthe quick brown>"


def test_a_format_the_tokenizer_cannot_apply_names_the_file_and_line(tmp_path):
  chat = _write(tmp_path / "chat.jsonl", [{"defaults": {"prompt_format": "chat"}}, PLAIN])
  instructions = load_instructions([chat])
  with pytest.raises(InstructionError, match=r"chat.jsonl:2: .*prompt_format 'chat' \(declared"):
    check_prompt_formats(instructions, "raw", {})
  assert check_prompt_formats(load_instructions([_alpaca_file(tmp_path)]), "chat", {}) == {
    "alp_split": "alpaca",
    "alp_whole": "alpaca",
  }


def dataclasses_replace(obj, **changes):
  import dataclasses

  return dataclasses.replace(obj, **changes)


# -- what a run records ---------------------------------------------------------------------------


def test_fingerprint_changes_with_the_format(tmp_path):
  from robust_prompt.eval import engine

  tasks = {"jsonl:toy": [EXAMPLE]}
  plain = load_instructions([_write(tmp_path / "p.jsonl", [PLAIN])])
  declared = load_instructions(
    [_write(tmp_path / "d.jsonl", [{"defaults": {"prompt_format": "alpaca"}}, PLAIN])]
  )

  def fp(instructions, run_format):
    chunks = engine.plan_chunks(tasks, instructions)
    settings = engine.evaluate_settings(prompt_format=run_format)
    return engine.fingerprint(model="m", chunks=chunks, settings=settings)

  base = fp(plain, "raw")
  assert "prompt_formats" not in base  # nothing declared: run.json as before
  assert fp(plain, "alpaca") != base
  assert fp(plain, "alpaca")["prompt_format"] == "alpaca"
  with_file = fp(declared, "raw")
  assert with_file != base and with_file["prompt_formats"] == {"plain": "alpaca"}
  # The run's default changes the fingerprint even when every instruction declares its own.
  assert fp(declared, "chat") != with_file


def test_registered_tasks_carry_the_format(tmp_path):
  seqio = pytest.importorskip("seqio")
  from robust_prompt import seqio_tasks
  from robust_prompt.eval import engine, registry

  data = tmp_path / "data"
  data.mkdir()
  _write(data / "toy.jsonl", [{"id": "0", "input": "the quick brown", "options": ["fox", "dog"],
                              "answer": 0}])  # fmt: skip
  instructions = load_instructions([_alpaca_file(tmp_path), _write(tmp_path / "b.jsonl", [PLAIN])])
  vocab = seqio.ByteVocabulary()
  made = seqio_tasks.register_tasks("jsonl", data, instructions, vocab, prompt_format="raw")
  by_id = {seqio_tasks.label_of(n).instruction_id: n for n in made.task_names}
  assert seqio_tasks.label_of(by_id["alp_split"]).prompt_format == "alpaca"
  assert seqio_tasks.label_of(by_id["plain"]).prompt_format is None
  # The text features of a SeqIO consumer (T5X) are in the declared format too.
  ds = seqio.get_mixture_or_task(by_id["alp_split"]).get_dataset(None, split="test", shuffle=False)
  (row,) = list(ds.as_numpy_iterator())
  assert vocab.decode(row["inputs"].tolist()) == WITH_INPUT.format(
    instruction="Pick the best continuation.", input="the quick brown"
  )
  ds = seqio.get_mixture_or_task(by_id["plain"]).get_dataset(None, split="test", shuffle=False)
  assert vocab.decode(next(ds.as_numpy_iterator())["inputs"].tolist()) == "the quick brown"
  # Eval's chunks keep each instruction's declaration; the engine resolves it.
  chunks = registry.chunks_from_registry(list(by_id.values()))
  settings = engine.evaluate_settings(prompt_format="chat")
  assert {c.instruction.id: engine.prompt_format_of(c.instruction, settings) for c in chunks} == {
    "alp_split": "alpaca",
    "alp_whole": "alpaca",
    "plain": "chat",
  }
  with pytest.raises(ValueError, match="prompt_format must be one of"):
    seqio_tasks.set_label(by_id["plain"], task="jsonl:toy", instruction_id="x", split="observed",
                          prompt_format="vicuna")  # fmt: skip


# -- training -------------------------------------------------------------------------------------


def test_training_reads_each_instruction_in_its_format(tmp_path):
  seqio = pytest.importorskip("seqio")
  from robust_prompt.train import grouping

  instructions = load_instructions([_alpaca_file(tmp_path), _write(tmp_path / "b.jsonl", [PLAIN])])
  vocab = seqio.ByteVocabulary()
  data = grouping.GroupedData(
    [EXAMPLE], instructions, vocab, groups_per_batch=1, members_per_group=3,
    max_input_length=512, anchor="first",
  )  # fmt: skip
  seen = set()
  for step in range(4):
    batch = data.batch(step)
    for ids, mask in zip(batch["input_ids"], batch["input_mask"]):
      seen.add(vocab.decode([int(t) for t, m in zip(ids, mask) if m]))
  assert seen == {
    WITH_INPUT.format(instruction="Pick the best continuation.", input="the quick brown"),
    WITHOUT_INPUT.format(instruction="Continue: the quick brown"),
    "the quick brown",  # the plain file declares nothing: the run's "raw"
  }
  with pytest.raises(ValueError, match="prompt_format must be one of"):
    grouping.GroupedData([EXAMPLE], instructions, vocab, prompt_format="vicuna")


# -- eval end to end on a tiny Llama --------------------------------------------------------------


def test_eval_cli_file_format_wins_and_is_recorded(tmp_path, capsys):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from test_decoder_common import make_bpe_tokenizer, make_hf_model

  from robust_prompt.cli import main as cli_main

  model_dir = tmp_path / "llama"
  make_bpe_tokenizer(model_dir)
  make_hf_model(model_dir, "llama")
  data = tmp_path / "data"
  data.mkdir()
  _write(data / "toy.jsonl", [{"id": "0", "input": "the quick brown", "options": ["fox", "dog"],
                              "answer": 0}])  # fmt: skip
  alpaca = _alpaca_file(tmp_path)
  plain = _write(tmp_path / "plain.jsonl", [PLAIN])
  out = tmp_path / "out"
  argv = [
    "eval", "--model", str(model_dir), "--benchmark", "jsonl", "--data_dir", str(data),
    "--instructions", str(alpaca), str(plain), "--output_dir", str(out), "--log_inputs",
    "--no_progress",
  ]  # fmt: skip

  capsys.readouterr()
  assert cli_main.main([*argv, "--prompt_format", "chat"]) == 0, capsys.readouterr().err
  err = capsys.readouterr().err
  assert (
    "prompt format: 'chat' (--prompt_format) for 1 instruction(s); declared by their instruction "
    f"files: 'alpaca' for 2 from {alpaca} (alp_split, alp_whole)"
  ) in err
  rows = {r["instruction_id"]: r for r in map(json.loads, (out / "results.jsonl").open())}
  assert {i: r["prompt_format"] for i, r in rows.items()} == {
    "alp_split": "alpaca",
    "alp_whole": "alpaca",
    "plain": "chat",
  }
  assert rows["alp_split"]["inputs"] == WITH_INPUT.format(
    instruction="Pick the best continuation.", input="the quick brown"
  )
  assert rows["alp_whole"]["inputs"] == WITHOUT_INPUT.format(
    instruction="Continue: the quick brown"
  )
  assert rows["plain"]["inputs"] == (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nthe quick brown<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
  )
  run = json.loads((out / "run.json").read_text())
  assert run["prompt_format"] == "chat"
  assert run["prompt_formats"] == {"alp_split": "alpaca", "alp_whole": "alpaca", "plain": "chat"}

  # Another run format changes what the plain file's instruction reads: not the same run.
  assert cli_main.main([*argv, "--prompt_format", "raw"]) == 1
  err = capsys.readouterr().err
  assert "holds results of a different run" in err and "prompt_format" in err
