"""The committed demo model (robust_prompt/demo/assets/model) and its reproducible recipe."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from robust_prompt import vocab as vocab_lib
from robust_prompt.checkpoints.resolve import load_model
from robust_prompt.demo import assets, build, suite, tuning
from robust_prompt.demo.instructions import demo_instructions
from robust_prompt.instructions.render import render
from robust_prompt.model import scoring
from robust_prompt.model.t5 import T5

CHANCE = {
  "jsonl:toy_sentiment": 1 / 2,
  "jsonl:toy_bigger": 1 / 2,
  "jsonl:toy_parity": 1 / 2,
  "jsonl:toy_longer": 1 / 2,
  "jsonl:toy_topic": 1 / 4,
  "jsonl:toy_capital": 1 / 3,
  "jsonl:toy_entailment": 1 / 2,
}


@pytest.fixture(scope="module")
def loaded():
  return load_model(str(assets.model_dir()))


@pytest.fixture(scope="module")
def info():
  return assets.build_info()


@pytest.fixture(scope="module")
def recipe(info):
  return tuning.TuneConfig(**info["recipe"])


def test_checkpoint_is_tiny_and_matches_its_record(loaded, info, recipe):
  num_params = sum(np.size(x) for x in _leaves(loaded.params))
  assert num_params == info["num_params"] < 3_000_000
  assert loaded.config == recipe.model_config(loaded.vocab.vocab_size)
  assert loaded.vocab.vocab_size == info["vocab_size"]
  # The stored parameters are exactly those the build produced.
  assert tuning.params_digest(loaded.params) == info["final_digest"]


def test_observed_accuracy_is_clearly_above_chance(loaded):
  """Rank classification on two observed templates x 16 fresh examples per task.

  Scored with `score_targets` on one padded shape (a single compilation), not the eval engine:
  the engine is exercised end to end by tests/test_demo_cli.py.
  """
  model = T5(loaded.config)
  score = jax.jit(functools.partial(scoring.score_targets, model))
  observed = [i for i in demo_instructions()["observed"] if i.id.endswith(("_1", "_2"))]
  inputs, options, golds, tasks = [], [], [], []
  for inst in observed:
    task = inst.tasks[0].split(":", 1)[1]
    for ex in suite.lines_to_examples(task, suite.generate_lines(task, 16, seed=7)):
      r = render(inst, ex)
      inputs.append(r.inputs)
      options.append(r.options)
      golds.append(r.answer)
      tasks.append(inst.tasks[0])
  num_o = max(map(len, options))
  flat_inputs = [x for x, opts in zip(inputs, options) for _ in opts]
  flat_options = [o for opts in options for o in opts]
  ids, mask = _pad(vocab_lib.encode_inputs(loaded.vocab, flat_inputs), 96)
  tids, tmask = _pad(vocab_lib.encode_targets(loaded.vocab, flat_options), 8)
  scores, _ = score(loaded.params, ids, mask, tids, tmask)
  scores = np.asarray(scores)
  per_task: dict[str, list[bool]] = {}
  at = 0
  for opts, gold, task in zip(options, golds, tasks):
    per_task.setdefault(task, []).append(int(np.argmax(scores[at : at + len(opts)])) == gold)
    at += len(opts)
  assert at == len(flat_options) and num_o <= 4
  accuracy = {task: float(np.mean(v)) for task, v in per_task.items()}
  assert set(accuracy) == set(CHANCE)
  for task, acc in accuracy.items():
    assert acc >= CHANCE[task] + 0.25, (task, acc)
  assert np.mean(list(accuracy.values())) >= 0.85, accuracy


def _pad(rows, length):
  ids = np.zeros((len(rows), length), np.int32)
  for r, seq in enumerate(rows):
    assert len(seq) <= length
    ids[r, : len(seq)] = seq
  return ids, (ids != 0).astype(np.int32)


def test_vocabulary_rebuilds_bit_for_bit(recipe):
  committed = (assets.model_dir() / "spiece.model").read_bytes()
  assert tuning.train_vocabulary(recipe) == committed


def test_tuning_batches_are_pure_functions_of_the_step(loaded, recipe):
  batches = tuning.TuningBatches(recipe, loaded.vocab)
  a, b, c = batches(3), batches(3), batches(4)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["input_ids"], c["input_ids"])
  assert a["input_ids"].shape == (recipe.batch_size, recipe.max_input_length)


_PREFIX_SCRIPT = """
import json, sys
from robust_prompt.demo import tuning
recipe = tuning.TuneConfig(**json.loads(sys.argv[1]))
vocab = tuning.load_vocabulary(sys.argv[2])
steps = int(sys.argv[3])
result = tuning.tune(recipe, vocab, num_steps=steps, progress=False, digest_at=(steps,))
print("DIGEST", result.digests[steps])
"""


def test_tuning_prefix_is_bit_identical_to_the_build(info):
  """Re-runs the first steps of the recipe; the parameters must match the build's digest.

  Runs in a fresh process set up like `scripts/build_demo_model.py` (one CPU device): this test
  session's 8 fake CPU devices change XLA's CPU threading and with it float summation order.
  """
  steps = info["prefix_steps"]
  assert steps == build.PREFIX_STEPS
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
  env["XLA_FLAGS"] = flags.strip()
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      _PREFIX_SCRIPT,
      json.dumps(info["recipe"]),
      str(assets.model_dir() / "spiece.model"),
      str(steps),
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  digest = proc.stdout.split("DIGEST")[-1].strip()
  assert digest == info["digests"][str(steps)], (
    "re-running the demo model's recipe gave different parameters after "
    f"{steps} steps: different jax/XLA version or CPU type than the build "
    f"({info['software']})?"
  )


def _leaves(tree):
  return jax.tree.leaves(tree)
