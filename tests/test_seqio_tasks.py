"""SeqIO registration: token ids with the real T5 vocabulary, idempotency, mixtures, metrics."""

import importlib
import json
import re
import sys

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")

from robust_prompt import seqio_tasks  # noqa: E402
from robust_prompt.data import sources  # noqa: E402
from robust_prompt.instructions.render import render  # noqa: E402
from robust_prompt.instructions.schema import Instruction  # noqa: E402

EOS = 1


def _instruction(
  id_, tasks, template, options_format="letters", answer_space="letters", split="unobserved"
):
  return Instruction(
    id=id_,
    tasks=tuple(tasks),
    template=template,
    options_format=options_format,
    answer_space=answer_space,
    split=split,
    source="human",
  )


MMLU_LETTERS = _instruction(
  "h4_letters", ["mmlu:*"], "Subject: {subject}\n{question}\n{options}\nAnswer:"
)
MMLU_TEXT = _instruction(
  "h4-text", ["mmlu:*"], "{question} Options: {options}", "inline", "option_text", split="observed"
)
BB_TEXT = _instruction(
  "h4_bb", ["bigbench:known_unknowns"], "{input}\n{options}", "newline", "option_text"
)


@pytest.fixture(scope="module")
def vocab(spiece_path):
  return seqio.SentencePieceVocabulary(str(spiece_path), extra_ids=100)


def _rows(name, n=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split="test", shuffle=False)
  return list((ds.take(n) if n else ds).as_numpy_iterator())


def test_names():
  assert seqio_tasks.task_name("mmlu", "mmlu:abstract_algebra", "unobserved", "human_07") == (
    "rp:mmlu:abstract_algebra:unobserved:human_07"
  )
  assert seqio_tasks.task_name("bigbench_lite", "bigbench:a:b", "observed", "flan-v2/3") == (
    "rp:bigbench_lite:a_b:observed:flan_v2_3"
  )
  assert seqio_tasks.mixture_name("mmlu", "observed") == "rp:mmlu:observed"
  assert seqio_tasks.mixture_name("mmlu", "observed", "mmlu:anatomy") == "rp:mmlu:anatomy:observed"


def test_mmlu_token_ids_match_vocabulary(shared_dir, vocab):
  data = shared_dir / "data"
  reg = seqio_tasks.register_tasks(
    "mmlu", data, [MMLU_LETTERS, MMLU_TEXT], vocab, tasks=["mmlu:anatomy", "mmlu:virology"]
  )
  assert sorted(reg.tasks) == [
    ("mmlu:anatomy", "observed"),
    ("mmlu:anatomy", "unobserved"),
    ("mmlu:virology", "observed"),
    ("mmlu:virology", "unobserved"),
  ]
  pattern = re.compile(r"^[\w\d\.\:_#]+$")  # seqio's allowed task names
  assert all(pattern.match(n) for n in reg.task_names + reg.mixtures)
  examples = sources.load_task("mmlu:anatomy", data)
  for instruction in (MMLU_LETTERS, MMLU_TEXT):
    name = seqio_tasks.task_name("mmlu", "mmlu:anatomy", instruction.split, instruction.id)
    assert seqio.get_mixture_or_task(name).num_input_examples("test") == 135
    rows = _rows(name, 3)
    for row, ex in zip(rows, examples):
      r = render(instruction, ex)
      assert row["inputs"].tolist() == vocab.encode(r.inputs) + [EOS]
      assert row["targets"].tolist() == vocab.encode(r.targets[0]) + [EOS]
      assert row["inputs_pretokenized"].decode() == r.inputs
      assert [o.decode() for o in row["options"]] == list(r.options)
      assert int(row["answer"]) == ex.answer
      assert row["correct"].tolist() == [int(i in ex.correct) for i in range(4)]
      assert row["example_id"].decode() == ex.id
  assert rows[0]["targets_pretokenized"].decode() == examples[0].options[examples[0].answer]
  assert "rp:mmlu:observed" in reg.mixtures and "rp:mmlu:anatomy:unobserved" in reg.mixtures
  mixture = seqio.MixtureRegistry.get("rp:mmlu:unobserved")
  assert sorted(t.name for t in mixture.tasks) == [
    "rp:mmlu:anatomy:unobserved:h4_letters",
    "rp:mmlu:virology:unobserved:h4_letters",
  ]


def test_registering_twice_is_harmless(shared_dir, vocab):
  data = shared_dir / "data"
  args = ("mmlu", data, [MMLU_LETTERS], vocab)
  first = seqio_tasks.register_tasks(*args, tasks=["mmlu:astronomy"])
  task = seqio.TaskRegistry.get(first.task_names[0])
  again = seqio_tasks.register_tasks(*args, tasks=["mmlu:astronomy"])
  assert again.task_names == first.task_names
  assert seqio.TaskRegistry.get(first.task_names[0]) is task  # kept, not re-created
  # Same name, different definition (edited template): replaced, and the new text is used.
  edited = Instruction(**{**MMLU_LETTERS.__dict__, "template": "Q: {question}\n{options}"})
  seqio_tasks.register_tasks("mmlu", data, [edited], vocab, tasks=["mmlu:astronomy"])
  replaced = seqio.TaskRegistry.get(first.task_names[0])
  assert replaced is not task
  row = _rows(first.task_names[0], 1)[0]
  assert row["inputs_pretokenized"].decode().startswith("Q: ")


def test_rank_classification_rows_and_metric(shared_dir, vocab):
  data = shared_dir / "data"
  reg = seqio_tasks.register_tasks(
    "bigbench_lite",
    data,
    [BB_TEXT],
    vocab,
    tasks=["bigbench:known_unknowns"],
    rank_classification=True,
  )
  (name,) = reg.task_names
  assert name == "rp:bigbench_lite:known_unknowns:unobserved:h4_bb"
  examples = sources.load_task("bigbench:known_unknowns", data)
  rows = _rows(name)
  assert len(rows) == sum(len(e.options) for e in examples)
  task = seqio.get_mixture_or_task(name)
  targets = [
    task.postprocess_fn(r["targets_pretokenized"], example=r, is_target=True) for r in rows
  ]
  for row, target in zip(rows, targets):
    ex = examples[target["idx"][0]]
    option = target["idx"][1]
    assert row["targets"].tolist() == vocab.encode(ex.options[option]) + [EOS]
    assert target["is_correct"] == (option in ex.correct)
  # Scores that prefer the gold option -> 100%; constant scores -> first option wins ties.
  gold = [1.0 if t["is_correct"] else 0.0 for t in targets]
  assert seqio_tasks.rank_classification_accuracy(targets, gold) == {"accuracy": 100.0}
  expected = 100.0 * np.mean([0 in e.correct for e in examples])
  got = seqio_tasks.rank_classification_accuracy(targets, [0.0] * len(rows))["accuracy"]
  assert got == pytest.approx(expected)
  (metric,) = task.metric_fns
  assert metric is seqio_tasks.rank_classification_accuracy


def test_prediction_accuracy_postprocess(shared_dir, vocab):
  data = shared_dir / "data"
  reg = seqio_tasks.register_tasks("mmlu", data, [MMLU_LETTERS], vocab, tasks=["mmlu:anatomy"])
  task = seqio.get_mixture_or_task(reg.task_names[0])
  rows = _rows(reg.task_names[0], 8)
  targets = [
    task.postprocess_fn(r["targets_pretokenized"], example=r, is_target=True) for r in rows
  ]
  gold = [task.postprocess_fn(r["targets_pretokenized"]) for r in rows]
  assert task.metric_fns[0](targets, gold) == {"accuracy": 100.0}
  preds = ["A"] * len(rows)
  expected = 100.0 * np.mean([r["answer"] == 0 for r in rows])
  assert task.metric_fns[0](targets, preds)["accuracy"] == pytest.approx(expected)


def test_task_modules_import(tmp_path, monkeypatch, spiece_path):
  (tmp_path / "jsonl").mkdir()
  (tmp_path / "jsonl" / "toy.jsonl").write_text(
    json.dumps({"id": "a", "question": "Up?", "options": ["yes", "no"], "answer": 0})
    + "\n"
    + json.dumps({"id": "b", "question": "Down?", "options": ["yes", "no"], "answer": 1})
    + "\n"
  )
  inst = tmp_path / "inst.jsonl"
  inst.write_text(
    json.dumps(
      {
        "id": "toy_1",
        "tasks": ["jsonl:toy"],
        "template": "{question} {options}",
        "options_format": "inline",
        "answer_space": "option_text",
        "split": "unobserved",
        "source": "human",
      }  # fmt: skip
    )
    + "\n"
  )
  monkeypatch.setenv("ROBUST_PROMPT_DATA_DIR", str(tmp_path))
  monkeypatch.setenv("ROBUST_PROMPT_VOCAB", str(spiece_path))
  monkeypatch.setenv("ROBUST_PROMPT_INSTRUCTIONS", str(inst))
  sys.modules.pop("robust_prompt_tasks.jsonl", None)
  (module,) = seqio_tasks.import_task_modules(["robust_prompt_tasks.jsonl"])
  assert module.REGISTERED.task_names == ["rp:jsonl:toy:unobserved:toy_1"]
  importlib.reload(module)  # registering again is harmless
  rows = _rows("rp:jsonl:toy:unobserved:toy_1")
  assert [r["inputs_pretokenized"].decode() for r in rows] == ["Up? yes or no", "Down? yes or no"]
  assert [r["targets_pretokenized"].decode() for r in rows] == ["yes", "no"]
  with pytest.raises(ModuleNotFoundError, match="robust_prompt_tasks.mmlu"):
    seqio_tasks.import_task_modules(["robust_prompt_tasks.nope"])


def test_instruction_that_cannot_render_fails_at_registration(shared_dir, vocab):
  from robust_prompt.instructions.schema import InstructionError

  bad = _instruction("h4_bad", ["mmlu:*"], "{question} {context}")
  with pytest.raises(InstructionError, match="context"):
    seqio_tasks.register_tasks("mmlu", shared_dir / "data", [bad], vocab, tasks=["mmlu:anatomy"])


def test_colliding_sanitized_names_are_an_error(shared_dir, vocab):
  from robust_prompt.instructions.schema import InstructionError

  a = _instruction("h4-x", ["mmlu:*"], "{question} {options}")
  b = _instruction("h4_x", ["mmlu:*"], "{question}\n{options}")
  with pytest.raises(InstructionError, match="collide"):
    seqio_tasks.register_tasks("mmlu", shared_dir / "data", [a, b], vocab, tasks=["mmlu:anatomy"])
