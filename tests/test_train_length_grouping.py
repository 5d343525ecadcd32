"""Length-grouped training batches (`GroupedData(length_grouping=N)`, as HF's group_by_length)."""

import jax
import numpy as np
import pytest
import seqio
from helpers import tiny_t5_config

from robust_prompt import batching, partitioning
from robust_prompt.data.example import Example
from robust_prompt.instructions.schema import Instruction
from robust_prompt.model.prompted_t5 import PromptedT5
from robust_prompt.model.t5 import T5
from robust_prompt.train import grouping, loop, objective
from robust_prompt.train import state as state_lib

MAX_INPUT = 160


def _instruction(i: int) -> Instruction:
  return Instruction(
    id=f"ins_{i}",
    tasks=("toy:*",),
    template=f"Variant {i}: {{question}}\n{{options}}",
    options_format="letters",
    answer_space="letters",
    split="observed" if i == 0 else "unobserved",
    source="human",
  )


def _examples(n: int = 24):
  # Questions from a few to ~120 bytes: batches of similar length exist to be found.
  return [
    Example(
      id=f"toy:mc:{i}",
      task="toy:mc",
      fields={"question": "Why " + "so " * (3 * i % 37) + f"{i}?"},
      options=("yes", "no"),
      answer=i % 2,
      correct=(i % 2,),
    )
    for i in range(n)
  ]


def _data(length_grouping=0, seed=0, g=2, k=2, shape_cost_slots=0, run_steps=None):
  # shape_cost_slots=0: every batch keeps its own bucket (merging is tested on its own below).
  return grouping.GroupedData(
    _examples(),
    [_instruction(i) for i in range(3)],
    seqio.ByteVocabulary(),
    groups_per_batch=g,
    members_per_group=k,
    max_input_length=MAX_INPUT,
    max_target_length=4,
    seed=seed,
    length_grouping=length_grouping,
    shape_cost_slots=shape_cost_slots,
    run_steps=run_steps,
  )


def test_a_window_holds_the_same_groups_sorted_by_length_with_less_padding():
  plain, grouped, alone = _data(), _data(length_grouping=6), _data(length_grouping=1)
  for window in range(2):
    steps = range(6 * window, 6 * window + 6)
    assert sorted(g for s in steps for g in grouped.step_groups(s)) == [
      g for s in steps for g in plain.step_groups(s)
    ]
    grouped_slots = plain_slots = alone_slots = 0
    for s in steps:
      batch = grouped.batch(s)
      longest = int(batch["input_mask"].sum(1).max())
      assert batch["input_ids"].shape[1] == batching.bucket_length(longest, MAX_INPUT)
      grouped_slots += batch["input_mask"].size
      plain_slots += plain.batch(s)["input_mask"].size
      alone_slots += alone.batch(s)["input_mask"].size  # buckets, but no sorting across steps
      # Each group keeps its K members together, the anchor first.
      np.testing.assert_array_equal(batch["group_ids"], [0, 0, 1, 1])
      np.testing.assert_array_equal(batch["is_anchor"], [1, 0, 1, 0])
    assert grouped_slots < alone_slots < plain_slots, (grouped_slots, alone_slots, plain_slots)
  # Without grouping every batch has the configured length: one compiled step.
  assert {plain.batch(s)["input_ids"].shape[1] for s in range(12)} == {MAX_INPUT}


def test_grouped_batches_are_a_pure_function_of_seed_and_step_and_rows():
  a, b = _data(length_grouping=4), _data(length_grouping=4)
  for step in (0, 5, 13):  # 13 * 2 groups > 24 examples: crosses an epoch
    full = a.batch(step)
    for key, value in full.items():
      np.testing.assert_array_equal(value, b.batch(step)[key], err_msg=key)
      # A process's rows (multi-host) are the same rows, padded to the same length.
      halves = [a.batch(step, slice(0, 2))[key], a.batch(step, slice(2, 4))[key]]
      np.testing.assert_array_equal(np.concatenate(halves), value, err_msg=key)
  orders = {tuple(_data(length_grouping=4, seed=s).step_groups(0)) for s in range(4)}
  assert len(orders) > 1
  with pytest.raises(ValueError, match="length_grouping must be an integer >= 0"):
    _data(length_grouping=-1)
  with pytest.raises(ValueError, match="shape_cost_slots must be an integer >= 0"):
    _data(length_grouping=4, shape_cost_slots=-1)
  with pytest.raises(ValueError, match="run_steps must be an integer >= 1"):
    _data(length_grouping=4, run_steps=0)


def _cost(data, steps, shape_cost):
  """Input slots of the steps' batches plus `shape_cost` per distinct length."""
  batches = [data.batch(s) for s in steps]
  return sum(b["input_mask"].size for b in batches) + shape_cost * len(
    {b["input_ids"].shape[1] for b in batches}
  )


def test_a_window_merges_lengths_where_a_compilation_costs_more_than_the_padding():
  """`shape_cost_slots`: some batches pad to a longer bucket of their window, for fewer
  compiled steps, at the least padding + shape cost (and never below their own bucket)."""
  steps = range(12)  # two windows of 6
  buckets = _data(length_grouping=6)
  cost = 200  # slots: between one row's worth and a whole batch's
  merged = _data(length_grouping=6, shape_cost_slots=cost)
  for s in steps:
    own = buckets.input_length(s)
    assert merged.input_length(s) >= own and merged.input_length(s) in {
      buckets.input_length(t) for t in range(6 * (s // 6), 6 * (s // 6) + 6)
    }
    batch = merged.batch(s)
    assert batch["input_ids"].shape[1] == merged.input_length(s)
    # The same rows as the unmerged batch, only more padding.
    for key in ("target_ids", "group_ids", "is_anchor", "answer"):
      np.testing.assert_array_equal(batch[key], buckets.batch(s)[key], err_msg=key)
    own_ids = buckets.batch(s)["input_ids"]
    np.testing.assert_array_equal(batch["input_ids"][:, : own_ids.shape[1]], own_ids)
    assert not batch["input_mask"][:, own_ids.shape[1] :].any()
  for window in (range(6), range(6, 12)):
    assert _cost(merged, window, cost) <= _cost(buckets, window, cost)
  assert len({merged.input_length(s) for s in range(6)}) < len(
    {buckets.input_length(s) for s in range(6)}
  )
  # A huge cost: one length per window, its longest bucket.
  one = _data(length_grouping=6, shape_cost_slots=10**9)
  for window in (range(6), range(6, 12)):
    assert {one.input_length(s) for s in window} == {max(buckets.input_length(s) for s in window)}
  # A compilation is shared by the run's windows: over a long run the same cost merges nothing.
  long_run = _data(length_grouping=6, shape_cost_slots=cost, run_steps=6000)
  assert [long_run.input_length(s) for s in steps] == [buckets.input_length(s) for s in steps]


def test_training_compiles_each_length_once_ahead(tmp_path):
  """`loop.train` on length-grouped batches: one compiled step per length bucket of a window,
  compiled ahead (none twice). Resuming needs nothing more: batches are pure in (seed, step)."""
  config = tiny_t5_config(d_ff=24, num_encoder_layers=1, num_decoder_layers=1)
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  params = partitioning.init_sharded(T5(config), config, mesh)

  def run(model_dir, num_steps):
    tx = state_lib.make_optimizer("adam", 0.1)
    return loop.train(
      model=PromptedT5(config),
      frozen_params=params,
      data=_data(length_grouping=6),
      model_dir=str(model_dir),
      mesh=mesh,
      num_steps=num_steps,
      prompt_length=2,
      optimizer=tx,
      loss_config=objective.LossConfig(lambda_sim=0.5, lambda_kl=0.5),
      save_every=2,
      log_every=1,
      progress=False,
    )

  compiles = []

  def on_event(event, duration, fun_name=None, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration" and "train_step" in str(fun_name):
      compiles.append(fun_name)

  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    straight = run(tmp_path / "straight", 6)
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)
  lengths = {_data(length_grouping=6).input_length(s) for s in range(6)}
  assert len(lengths) >= 2 and len(compiles) == len(lengths), (compiles, lengths)
  assert straight.step == 6 and np.isfinite(straight.metrics["loss"])
