"""Fewer, earlier compilations: lengths merged by cost, shapes compiled ahead in threads."""

import contextlib
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_hf_t5

from robust_prompt import batching, compile_ahead

# -- batching.merge_lengths ----------------------------------------------------------------------


def _batches(lengths, size=4):
  return [batching.Batch(indices=(i,), length=n, size=size) for i, n in enumerate(lengths)]


def _cost(batches, shape_cost):
  return sum(b.size * b.length for b in batches) + shape_cost * len({b.length for b in batches})


@pytest.mark.parametrize("seed", range(6))
def test_merge_lengths_is_the_cheapest_choice(seed):
  """Against every subset of lengths (the longest always kept), by brute force."""
  rng = np.random.default_rng(seed)
  lengths = [int(n) for n in rng.choice([16, 20, 24, 32, 40, 56, 80, 96, 112], size=9)]
  shape_cost = float(rng.choice([10, 100, 300, 1000]))
  merged = batching.merge_lengths(_batches(lengths), shape_cost)
  distinct = sorted(set(lengths))
  best = np.inf
  for r in range(len(distinct)):
    for kept in itertools.combinations(distinct[:-1], r):
      keep = sorted(kept) + [distinct[-1]]
      options = [
        batching.Batch((i,), min(k for k in keep if k >= n), 4) for i, n in enumerate(lengths)
      ]
      best = min(best, _cost(options, shape_cost))
  assert _cost(merged, shape_cost) == best
  # Each batch only grows, to a length another batch had; rows and order are untouched.
  for before, after in zip(_batches(lengths), merged):
    assert after.indices == before.indices and after.size == before.size
    assert after.length >= before.length and after.length in lengths


def test_merge_lengths_without_a_shape_cost_changes_nothing():
  batches = _batches([16, 24, 24, 96])
  assert batching.merge_lengths(batches, 0) == batches
  # A huge cost: one shape, the longest.
  assert {b.length for b in batching.merge_lengths(batches, 1e9)} == {96}


# -- compile_ahead --------------------------------------------------------------------------------


@contextlib.contextmanager
def counting_compiles():
  """Yields a list that receives, per XLA backend compilation (any thread), its thread's name."""
  import threading

  compiles = []

  def on_event(event, duration, *args, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(threading.current_thread().name)

  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)


def test_submitted_program_is_compiled_once_and_used_by_the_call():
  fn = jax.jit(lambda x: jnp.tanh(x) * 2)
  x = jnp.ones((3, 7), jnp.float32)
  lowered = []

  def lower():
    lowered.append(1)
    return fn.lower(x)

  key = ("test_submit", 7)
  with counting_compiles() as compiles:
    compile_ahead.submit(key, lower)
    compile_ahead.submit(key, lower)  # already submitted: not lowered again
    compile_ahead.wait(key)
    assert len(lowered) == 1 and len(compiles) == 1
    np.testing.assert_allclose(fn(x), np.tanh(np.ones((3, 7))) * 2, rtol=1e-6)
    assert len(compiles) == 1  # the call found the background compilation in jit's cache


def test_a_failed_background_compile_is_left_to_the_call():
  def lower():
    raise RuntimeError("boom")

  key = ("test_fail", 1)
  compile_ahead.submit(key, lower)
  compile_ahead.wait(key)  # does not raise: the caller's own call reports real errors
  calls = []
  compile_ahead.submit(key, lambda: calls.append(1) or jax.jit(jnp.sin).lower(1.0))
  compile_ahead.wait(key)
  assert calls == [1]  # forgotten after the failure, so it could be submitted again
  compile_ahead.wait(("never", "submitted"))  # returns at once


def test_finished_keys_are_remembered_up_to_a_bound(monkeypatch):
  """A key holds its jitted step (and its compiled programs) alive: only the newest
  MAX_FINISHED finished ones are kept, the older ones would be lowered again."""
  monkeypatch.setattr(compile_ahead, "MAX_FINISHED", 2)
  lowered = []

  def lower(n):
    lowered.append(n)
    return jax.jit(jnp.sin).lower(jnp.ones((n,), jnp.float32))

  for n in (1, 2, 3, 4, 5):  # each submission forgets all but the 2 newest finished ones
    compile_ahead.submit(("bounded", n), functools.partial(lower, n))
    compile_ahead.wait(("bounded", n))
  assert [k[1] for k in compile_ahead._futures if k[0] == "bounded"] == [3, 4, 5]
  for n in (3, 4, 5, 1):  # 3, 4 and 5 remembered; 1 forgotten, so lowered again
    compile_ahead.submit(("bounded", n), functools.partial(lower, n))
    compile_ahead.wait(("bounded", n))
  assert lowered == [1, 2, 3, 4, 5, 1]


# -- the engine -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, spiece_path):
  from robust_prompt.checkpoints.resolve import load_model

  return load_model(str(make_tiny_hf_t5(tmp_path_factory.mktemp("ahead"), "t5_1_1", spiece_path)))


@pytest.fixture(scope="module")
def chunks(mmlu_dir):
  from helpers import instruction

  from robust_prompt.data import mmlu
  from robust_prompt.eval import engine

  tasks = {f"mmlu:{s}": mmlu.load_subject(mmlu_dir, s)[:8] for s in ("anatomy", "virology")}
  return engine.plan_chunks(tasks, [instruction("{question}\n{options}\nAnswer:")])


def _evaluator(loaded, **settings):
  from robust_prompt.eval import engine
  from robust_prompt.model import prompted

  # A model object of its own: a fresh jit cache, so that compilations can be counted.
  model = prompted.for_config(loaded.config)
  settings = engine.evaluate_settings(batch_size=4, **settings)
  engine.eval_step.cache_clear()
  return engine.Evaluator(model, loaded.params, loaded.vocab, settings)


def _scores(rows):
  return [
    (r["example_id"], r["instruction_id"], np.asarray(r["option_scores"])) for c in rows for r in c
  ]


def test_compiling_ahead_compiles_each_shape_once_and_scores_the_same(loaded, chunks):
  with counting_compiles() as compiles:
    ahead = _evaluator(loaded, compile_ahead=True, shape_cost_slots=0)
    got = ahead.score_chunks(chunks, "m")
  programs = ahead.score_fn._cache_size()
  assert programs == len(ahead.shapes) >= 2, sorted(ahead.shapes)
  assert len(compiles) == programs  # none compiled twice (in a thread and again by the call)
  plain = _evaluator(loaded, compile_ahead=False, shape_cost_slots=0)
  want = plain.score_chunks(chunks, "m")
  assert plain.shapes == ahead.shapes
  for (i, j, a), (k, m, b) in zip(_scores(got), _scores(want)):
    assert (i, j) == (k, m)
    np.testing.assert_array_equal(a, b)  # the same programs on the same batches


def test_shape_cost_trades_compiled_shapes_for_padding(loaded, chunks):
  fine = _evaluator(loaded, shape_cost_slots=0)
  want = fine.score_chunks(chunks, "m")
  coarse = _evaluator(loaded, shape_cost_slots=10**6)
  got = coarse.score_chunks(chunks, "m")
  assert len(fine.shapes) >= 2 and len(coarse.shapes) == 1
  # A long run weighs a shape by the pool's share of its rows: here a millionth (1 slot).
  amortised = _evaluator(loaded, shape_cost_slots=10**6)
  amortised.score_chunks(chunks, "m", run_rows=10**6 * sum(len(c.examples) for c in chunks))
  assert amortised.shapes == fine.shapes
  for (i, j, a), (k, m, b) in zip(_scores(got), _scores(want)):
    assert (i, j) == (k, m)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # padding changes rounding only


def test_cancel_drops_compilations_not_yet_started():
  import threading

  release = threading.Event()
  compile_ahead.set_num_threads(1)
  try:
    # The one thread is held by the first job, so the second has not started when cancelled.
    compile_ahead.submit(("hold", 1), lambda: release.wait(30) and jax.jit(jnp.cos).lower(1.0))
    started = []
    compile_ahead.submit(("queued", 1), lambda: started.append(1) or jax.jit(jnp.sin).lower(1.0))
    compile_ahead.cancel([("queued", 1), ("never", "submitted")])
    release.set()
    compile_ahead.wait(("hold", 1))
    compile_ahead.wait(("queued", 1))  # forgotten: returns at once
    assert started == []
  finally:
    release.set()
    compile_ahead.set_num_threads(None)


def test_scorer_compiles_each_shape_once_ahead(loaded):
  """The score command's engine: every planned shape compiled ahead, none again by the call."""
  from robust_prompt.eval.scorer import Scorer, score_step
  from robust_prompt.model import prompted

  score_step.cache_clear()  # a fresh jitted step: earlier tests compiled the same config's shapes
  scorer = Scorer(prompted.for_config(loaded.config), loaded.params, loaded.vocab, batch_size=2)
  inputs = [
    "short",
    "a somewhat longer input " * 3,
    "the longest input of them all " * 6,
    "mid " * 9,
  ]
  targets = [["yes", "no"], ["maybe"], ["a", "bb", "ccc"], ["x"]]
  ids, tids, _, _ = scorer.tokenize(inputs, targets, 128, 16)
  with counting_compiles() as compiles:
    got = scorer.score(ids, tids, max_input_length=128, max_target_length=16, progress=False)
  assert [len(s) for s, _ in got] == [2, 1, 3, 1]
  assert len(compiles) == scorer._fn._cache_size() >= 2  # several shapes, each compiled once
  assert all(name.startswith("robust_prompt-compile") for name in compiles), compiles  # ahead
