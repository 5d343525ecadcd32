"""The committed demo model (robust_prompt/demo/assets/model) and its reproducible recipe."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from robust_prompt import vocab as vocab_lib
from robust_prompt.checkpoints.resolve import load_model
from robust_prompt.demo import assets, build, reproduce, suite, tuning
from robust_prompt.demo.instructions import demo_instructions
from robust_prompt.instructions.render import render
from robust_prompt.model.prompted_t5 import PromptedT5

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

  Scored with `target_scores` on one padded shape (a single compilation), not the eval engine:
  the engine is exercised end to end by tests/test_demo_cli.py.
  """
  model = PromptedT5(loaded.config)
  score = jax.jit(
    lambda p, i, m, t, tm: model.target_scores(
      p, None, dict(input_ids=i, input_mask=m, target_ids=t, target_mask=tm)
    )
  )
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
from robust_prompt.demo import reproduce, tuning
recipe = tuning.TuneConfig(**json.loads(sys.argv[1]))
vocab = tuning.load_vocabulary(sys.argv[2])
print("REFERENCE", json.dumps(reproduce.prefix_reference(recipe, vocab, int(sys.argv[3]))))
"""


def _run_prefix(info) -> dict:
  """This machine's prefix reference, in a fresh process set up like the build (one CPU device):
  this test session's 8 fake CPU devices change XLA's CPU threading and float summation order."""
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
      str(info["prefix_steps"]),
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.split("REFERENCE", 1)[1])


def test_tuning_prefix_reproduces_the_build(info):
  """Re-runs the first steps of the recipe.

  On a CPU kind recorded in `demo_build.json` the parameters must be bit-identical to its digest;
  on another kind (XLA's float summation order follows the instruction set) they must match the
  recorded per-parameter checksums to float tolerance.
  """
  steps = info["prefix_steps"]
  assert steps == build.PREFIX_STEPS
  references = info["prefix_references"]
  assert references, "demo_build.json records no prefix reference"
  ours = _run_prefix(info)
  same_kind = reproduce.matching_reference(references, ours["cpu"], steps)
  if same_kind is not None:
    assert ours["digest"] == same_kind["digest"], (
      f"re-running the demo model's recipe on {ours['cpu']} gave parameters different from the "
      f"ones recorded for this CPU kind after {steps} steps"
    )
  for ref in references:
    bad = reproduce.checksums_close(ours["checksums"], ref["checksums"])
    assert not bad, f"after {steps} steps, far from the run on {ref['cpu']}: {bad[:5]}"


def test_add_prefix_reference_records_this_cpu_kind_and_refuses_a_far_run(tmp_path, monkeypatch):
  """The script's --add_prefix_reference: this machine's kind is recorded once, its digest
  reproducible; a run far from a recorded kind is refused and the file is left as it was."""
  import shutil

  model = tmp_path / "model"
  shutil.copytree(assets.model_dir(), model)
  info = assets.build_info(model)
  far = json.loads(json.dumps(info))
  far_ref = dict(far["prefix_references"][0], cpu={"machine": "elsewhere"})
  far_ref["checksums"] = {k: [v[0] + 10 * v[1], v[1]] for k, v in far_ref["checksums"].items()}
  far["prefix_references"].append(far_ref)

  # Runs the recipe's first steps twice for real (the determinism check).
  computed = []
  real_prefix_reference = reproduce.prefix_reference

  def recording(*args, **kwargs):
    computed.append(real_prefix_reference(*args, **kwargs))
    return computed[-1]

  monkeypatch.setattr(reproduce, "prefix_reference", recording)
  entry = build.add_prefix_reference(model, log=lambda _: None)
  assert len(computed) == 2 and computed[0] == computed[1] == entry
  refs = assets.build_info(model)["prefix_references"]
  assert reproduce.matching_reference(refs, entry["cpu"], info["prefix_steps"]) == entry
  assert sum(r["cpu"] == entry["cpu"] for r in refs) == 1

  # The refusal: the same (deterministic, just computed) run of this machine, without computing
  # it twice more (the steps dominate this test's time).
  monkeypatch.setattr(reproduce, "prefix_reference", lambda *args, **kwargs: dict(entry))
  (model / assets.BUILD_INFO).write_text(json.dumps(far))
  before = (model / assets.BUILD_INFO).read_bytes()
  with pytest.raises(RuntimeError, match="not close"):
    build.add_prefix_reference(model, log=lambda _: None)
  assert (model / assets.BUILD_INFO).read_bytes() == before
  with pytest.raises(FileNotFoundError, match="demo model directory"):
    build.add_prefix_reference(tmp_path / "nothing", log=lambda _: None)


def test_checksums_tell_close_from_far():
  params = {"a": np.linspace(-1, 1, 101, dtype=np.float32), "b": np.ones((3, 4), np.float32)}
  base = reproduce.params_checksums(params)
  assert base["['b']"] == [12.0, pytest.approx(np.sqrt(12.0))]
  nudged = {"a": params["a"] * (1 + 1e-6), "b": params["b"]}
  assert reproduce.checksums_close(base, reproduce.params_checksums(nudged)) == []
  moved = {"a": params["a"], "b": params["b"] * 1.01}
  assert reproduce.checksums_close(base, reproduce.params_checksums(moved)) == ["['b']"]
  assert reproduce.checksums_close(base, {"['a']": base["['a']"]}) == ["['b']"]


def test_references_are_kept_one_per_cpu_kind():
  a = {"cpu": {"simd": ["avx"]}, "steps": 5, "digest": "1"}
  b = {"cpu": {"simd": ["avx2"]}, "steps": 5, "digest": "2"}
  a2 = dict(a, digest="3")
  refs = reproduce.with_reference(reproduce.with_reference([a], b), a2)
  assert refs == [b, a2]
  assert reproduce.matching_reference(refs, {"simd": ["avx"]}, 5) is a2
  assert reproduce.matching_reference(refs, {"simd": ["avx"]}, 6) is None
  fingerprint = reproduce.cpu_fingerprint()
  assert fingerprint["cpus"] >= 1 and fingerprint["jax"] == jax.__version__


def test_cpu_fingerprint_names_the_processor_model():
  """Two CPUs with the same SIMD flags but different models are different kinds (LLVM tunes
  XLA's code for the microarchitecture): the fingerprint carries vendor, family and model."""
  text = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
    "model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f mmx\n\n"
    "processor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
    "flags\t\t: fpu avx512_fp16\n"
  )
  model, flags = reproduce.parse_cpuinfo(text)
  assert model == {"vendor": "AuthenticAMD", "family": "25", "model": "17"}
  assert flags == {"fpu", "sse4_2", "avx", "avx2", "fma", "avx512f", "mmx"}
  assert reproduce.parse_cpuinfo("processor : 0\nFeatures : fp asimd sve\n") == (
    {"vendor": "", "family": "", "model": ""},
    {"fp", "asimd", "sve"},
  )
  fingerprint = reproduce.cpu_fingerprint()
  assert {"vendor", "family", "model"} <= set(fingerprint)
  zen4 = dict(fingerprint, vendor="AuthenticAMD", family="25", model="17")
  intel = dict(zen4, vendor="GenuineIntel", family="6", model="143")
  refs = [{"cpu": intel, "steps": 5, "digest": "intel"}]
  assert reproduce.matching_reference(refs, zen4, 5) is None
  assert reproduce.matching_reference(refs, intel, 5)["digest"] == "intel"


def _leaves(tree):
  return jax.tree.leaves(tree)
