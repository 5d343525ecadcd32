"""Grouped training batches: one example under K instructions of its task, G groups a batch.

Every batch is a pure function of `(seed, step)`: step `s` holds the groups
`s*G, ..., s*G + G - 1` of an endless stream made of epochs, epoch `e` being a permutation of the
examples drawn from `(seed, e)`, and the members of a group drawn from `(seed, e, position)`.
Resuming at step `s` therefore sees exactly the batches an uninterrupted run would have seen, with
no iterator state to checkpoint.

Rows are laid out group-major (`row = g * K + k`); `group_ids [B]` and `is_anchor [B]` travel
with the batch so that the losses do not rely on the layout. Shapes are static (padded to the
configured lengths), so the train step compiles once.

With `length_grouping=N` (as Hugging Face's `group_by_length`), the groups of N consecutive
steps are sorted by their longest input and cut into N batches again, taken in a seeded random
order, and each batch is padded only to the length bucket of its longest input
(`batching.bucket_length`: 16, 24, 32, 48, 64, ...): less padding, for one compiled step per
bucket. Where a window's batches come in many buckets, some pad further to a longer bucket of
the window (`batching.merged_lengths`): one more compiled step is worth `shape_cost_slots`
padded token slots, shared by the windows of the run (a long run compiles its buckets once
and keeps them all; a short one compiles fewer). Batches are still a pure function of
`(seed, step)` and the configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

import numpy as np

from robust_prompt import batching
from robust_prompt import vocab as vocab_lib
from robust_prompt.data.example import Example
from robust_prompt.instructions.render import model_input, render
from robust_prompt.instructions.schema import PROMPT_FORMATS, Instruction

_log = logging.getLogger(__name__)

ANCHOR_CHOICES = ("observed", "first", "random")
# With length grouping, what one more compiled train step is worth in padded input slots. Lower
# than eval's (`batching.DEFAULT_SHAPE_COST_SLOTS`): a padded slot costs a forward and a backward
# pass here. Measured with `benchmarks/train_throughput.py --length_grouped --shape_cost_slots`
# (T5-small, 16 steps of 8 MMLU questions, 2-core AMD EPYC Zen 4): 1024 and 2048 kept 4 of the 7
# buckets (first pass 35 s against 42 s), 4096 kept 2 (37 s, warm 28% slower). Zen 5, 2048:
# 21.4 s against 24.0 s.
TRAIN_SHAPE_COST_SLOTS = 2048


class OverlapError(ValueError):
  """Training instructions overlap the instructions held out for evaluation."""


def check_disjoint(train: Sequence[Instruction], heldout: Sequence[Instruction]) -> None:
  """Refuses a training pool that shares instructions with the held-out (evaluation) set.

  Two instructions are the same when they have the same id or the same template text (a copy
  under another id would leak the evaluation phrasing into training just the same).

  Raises:
    OverlapError: naming every shared instruction and where each copy was read from.
  """
  by_id = {i.id: i for i in heldout}
  by_template = {" ".join(i.text.split()): i for i in heldout}
  clashes = []
  for inst in train:
    other = by_id.get(inst.id) or by_template.get(" ".join(inst.text.split()))
    if other is not None:
      how = "same id" if other.id == inst.id else "same template"
      clashes.append(f"{inst.id!r} ({inst.where}) = held-out {other.id!r} ({other.where}), {how}")
  if clashes:
    raise OverlapError(
      f"{len(clashes)} training instruction(s) are also held out for evaluation: "
      + "; ".join(clashes)
      + ". Remove them from --train_instructions (or from --heldout_instructions)."
    )


@dataclasses.dataclass(frozen=True)
class Shapes:
  """Static batch shapes: `T` input, `S` target, `O` options and `S_opt` option lengths."""

  max_input_length: int
  max_target_length: int
  num_options: int
  max_option_length: int


def _pad(rows: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  ids = np.zeros((len(rows), length), np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for r, seq in enumerate(rows):
    ids[r, : len(seq)] = seq
    mask[r, : len(seq)] = 1
  return ids, mask


class GroupedData:
  """Endless, deterministic stream of grouped batches over a pool of training instructions.

  Args:
    examples: training examples (any tasks; each needs at least one instruction in the pool).
    instructions: the training instruction pool; each example uses those that apply to its task.
    vocab: the model vocabulary (`encode` + `eos_id`).
    groups_per_batch: `G`.
    members_per_group: `K`, instructions per example (tasks with fewer instructions repeat some).
    max_input_length / max_target_length: `T` / `S`, EOS included (longer ones are truncated,
      keeping EOS, as Hugging Face does).
    seed: data-order seed.
    anchor: which member is the KL anchor: "observed" (an observed instruction of the pool when
      the task has one, else a random member), "first" (the first instruction of the pool that
      applies to the task) or "random".
    model: the prompted model whose token conventions apply (`PromptedModel.encode_*`: T5
      appends EOS, a decoder-only model scores continuations); None = T5's.
    prompt_format: how rendered inputs are wrapped for the model ("raw", "alpaca", "chat";
      `instructions.render.model_input`) for instructions that declare no format of their own;
      a declared one (`Instruction.prompt_format`, e.g. from its file's defaults) wins, as in
      eval.
    length_grouping: 0 (default): every batch padded to `max_input_length`, one compiled step.
      N >= 1: windows of N steps' groups sorted by length, each batch padded to its length
      bucket (see the module docstring); e.g. 16.
    shape_cost_slots: with length grouping, what one more compiled step is worth in padded
      input token slots (rows x positions; `TRAIN_SHAPE_COST_SLOTS`); 0 keeps every bucket.
    run_steps: the run's number of steps, over which a compilation is shared: a window of N
      steps weighs a shape at `shape_cost_slots * min(1, N / run_steps)`. None: the run is one
      window (e.g. a benchmark). `robust-prompt train` passes `train.num_steps`.
  """

  def __init__(
    self,
    examples: Sequence[Example],
    instructions: Sequence[Instruction],
    vocab,
    *,
    groups_per_batch: int = 8,
    members_per_group: int = 4,
    max_input_length: int = 256,
    max_target_length: int = 32,
    seed: int = 0,
    anchor: str = "observed",
    model=None,
    prompt_format: str = "raw",
    length_grouping: int = 0,
    shape_cost_slots: int = TRAIN_SHAPE_COST_SLOTS,
    run_steps: int | None = None,
  ):
    if not examples:
      raise ValueError("no training examples: check --benchmark, --data_dir and --tasks")
    if groups_per_batch < 1 or members_per_group < 1:
      raise ValueError(f"need G >= 1 and K >= 1; got G={groups_per_batch}, K={members_per_group}")
    if anchor not in ANCHOR_CHOICES:
      raise ValueError(f"anchor must be one of {ANCHOR_CHOICES}; got {anchor!r}")
    if prompt_format not in PROMPT_FORMATS:
      raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}; got {prompt_format!r}")
    if not isinstance(length_grouping, int) or length_grouping < 0:
      raise ValueError(f"length_grouping must be an integer >= 0, got {length_grouping!r}")
    if not isinstance(shape_cost_slots, int) or shape_cost_slots < 0:
      raise ValueError(f"shape_cost_slots must be an integer >= 0, got {shape_cost_slots!r}")
    if run_steps is not None and (not isinstance(run_steps, int) or run_steps < 1):
      raise ValueError(f"run_steps must be an integer >= 1 or None, got {run_steps!r}")
    self.shape_cost_slots = shape_cost_slots
    self.run_steps = run_steps
    self.prompt_format = prompt_format
    self.length_grouping = length_grouping
    self.examples = list(examples)
    self.vocab = vocab
    self.model = model
    self.G, self.K = int(groups_per_batch), int(members_per_group)
    self.seed = int(seed)
    self.anchor = anchor
    self._pool: dict[str, list[Instruction]] = {}
    for task in sorted({e.task for e in self.examples}):
      pool = [i for i in instructions if i.applies_to(task)]
      if not pool:
        raise ValueError(
          f"task {task!r} has no training instruction: none of the {len(instructions)} "
          "instructions of --train_instructions applies to it (check their `tasks` patterns)"
        )
      if len(pool) < self.K:
        _log.warning(
          "task %s has %d training instruction(s) for K=%d members: some repeat in a group",
          task,
          len(pool),
          self.K,
        )
      self._pool[task] = pool
    num_options = max(len(e.options) for e in self.examples)
    self.shapes = Shapes(max_input_length, max_target_length, num_options, max_target_length)
    self.num_truncated = 0

  @property
  def batch_size(self) -> int:
    return self.G * self.K

  @functools.lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs, tied to this object
  def _epoch_order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

  def _members(self, example: Example, rng: np.random.Generator) -> list[Instruction]:
    """K instructions for one group, the anchor first."""
    pool = self._pool[example.task]
    if self.anchor == "first":
      anchor = pool[0]
    else:
      observed = [i for i in pool if i.split == "observed"] if self.anchor == "observed" else []
      candidates = observed or pool
      anchor = candidates[rng.integers(len(candidates))]
    others = [i for i in pool if i is not anchor] or [anchor]
    need = self.K - 1
    picks = rng.choice(len(others), size=need, replace=len(others) < need) if need else []
    return [anchor] + [others[j] for j in picks]

  @functools.lru_cache(maxsize=65536)  # noqa: B019
  def _encode_row(self, instruction: Instruction, example_index: int, target_choice: int):
    example = self.examples[example_index]
    rendered = render(instruction, example)
    # The text the model reads, wrapped exactly as eval wraps it (same per-instruction rule).
    text = model_input(
      rendered,
      instruction.format_for(self.prompt_format),
      getattr(self.vocab, "tokenizer_config", None),
    )
    shapes = self.shapes
    if self.model is None:
      inputs = vocab_lib.encode_inputs(self.vocab, [text])[0]
      if len(inputs) > shapes.max_input_length:
        self.num_truncated += 1
        inputs = batching.truncate(inputs, shapes.max_input_length)  # keeps EOS last, as HF does
    else:
      full = self.model.encode_inputs(self.vocab, [text], None)[0]
      inputs = self.model.encode_inputs(self.vocab, [text], shapes.max_input_length)[0]
      self.num_truncated += len(full) != len(inputs)
    if not rendered.targets:
      raise ValueError(
        f"example {example.id!r} of task {example.task!r} has no target to train on (neither "
        "an answer option nor a reference)"
      )
    target_text = rendered.targets[target_choice % len(rendered.targets)]
    if self.model is None:
      target = vocab_lib.encode_targets(self.vocab, [target_text], shapes.max_target_length)[0]
      options = vocab_lib.encode_targets(self.vocab, rendered.options, shapes.max_option_length)
    else:
      target = self.model.encode_targets(self.vocab, [target_text], shapes.max_target_length)[0]
      options = self.model.encode_options(
        self.vocab, [text], [rendered.options], shapes.max_option_length
      )[0]
    answer = -1 if rendered.answer is None else rendered.answer
    return inputs, target, options, answer

  def group_rows(self, index: int) -> list[tuple]:
    """The K encoded rows of global group `index` (anchor first)."""
    epoch, position = divmod(index, len(self.examples))
    example_index = int(self._epoch_order(epoch)[position])
    rng = np.random.default_rng([self.seed, epoch, position])
    example = self.examples[example_index]
    # One reference per group, shared by all members, so their target tokens line up (token KL).
    target_choice = int(rng.integers(max(len(example.targets), 1)))
    members = self._members(example, rng)
    return [self._encode_row(m, example_index, target_choice) for m in members]

  def step_groups(self, step: int) -> list[int]:
    """The global group indices of step `step`'s batch, in row order (G of them)."""
    if not self.length_grouping:
      return list(range(step * self.G, (step + 1) * self.G))
    window, position = divmod(step, self.length_grouping)
    return self._window(window)[position]

  def input_length(self, step: int) -> int:
    """`T` of step `step`'s batch: `max_input_length`, or with length grouping the bucket of
    the batch's longest input (over all its rows: every process pads to the same length), or the
    longer bucket of its window it merges into (`shape_cost_slots`)."""
    if not self.length_grouping:
      return self.shapes.max_input_length
    window, position = divmod(step, self.length_grouping)
    return self._window_lengths(window)[position]

  @functools.lru_cache(maxsize=4)  # noqa: B019 - as `_window`
  def _window_lengths(self, window: int) -> list[int]:
    """The input length of each batch of a window (`input_length`)."""
    n = self.length_grouping
    buckets = []
    for groups in self._window(window):
      longest = max(len(r[0]) for g in groups for r in self.group_rows(g))
      buckets.append(batching.bucket_length(longest, self.shapes.max_input_length))
    rows_at: dict[int, int] = {}
    for length in buckets:
      rows_at[length] = rows_at.get(length, 0) + self.batch_size
    share = 1.0 if self.run_steps is None else min(1.0, n / self.run_steps)
    chosen = batching.merged_lengths(rows_at, self.shape_cost_slots * share)
    return [chosen[length] for length in buckets]

  @functools.lru_cache(maxsize=4)  # noqa: B019 - the current window and its neighbour
  def _window(self, window: int) -> list[list[int]]:
    """The N batches of a window of `length_grouping` steps: its groups sorted by their longest
    input, cut into batches of G, in a seeded random order."""
    n = self.length_grouping
    groups = np.arange(window * n * self.G, (window + 1) * n * self.G)
    longest = [max(len(r[0]) for r in self.group_rows(int(g))) for g in groups]
    ordered = groups[np.argsort(longest, kind="stable")]
    batches = [ordered[i * self.G : (i + 1) * self.G].tolist() for i in range(n)]
    order = np.random.default_rng([self.seed, window, n]).permutation(n)
    return [batches[i] for i in order]

  def batch(self, step: int, rows: slice | None = None) -> dict[str, np.ndarray]:
    """The batch of training step `step` (a pure function of `(seed, step)`).

    Args:
      step: the training step.
      rows: only these rows of the global `B = G * K` (a multi-host process builds just the rows
        its devices hold, `multihost.process_rows`); group ids stay global. Default: all rows.

    Returns:
      input_ids, input_mask: `[B, T]` int32 (`T` = max_input_length, or with length grouping
      the bucket of the batch's longest input); target_ids, target_mask: `[B, S]` int32;
      group_ids: `[B]` int32 (0..G-1); is_anchor: `[B]` int32; answer: `[B]` int32 (-1 for
      generative rows); and when any example has options, option_ids / option_mask:
      `[B, O, S_opt]` int32 (padded options have an all-zero mask).
    """
    start, stop, _ = (rows or slice(None)).indices(self.batch_size)
    if stop <= start:
      raise ValueError(f"rows {rows} select no row of the {self.batch_size}-row batch")
    s = self.shapes
    groups = self.step_groups(step)
    length = self.input_length(step)
    # Only the groups that overlap [start, stop) are built (rows are group-major).
    first, last = start // self.K, (stop - 1) // self.K
    skip, keep = start - first * self.K, stop - start
    selected, group_ids, is_anchor = [], [], []
    for g in range(first, last + 1):
      for k, row in enumerate(self.group_rows(groups[g])):
        selected.append(row)
        group_ids.append(g)
        is_anchor.append(int(k == 0))
    picked = selected[skip : skip + keep]
    group_ids, is_anchor = group_ids[skip : skip + keep], is_anchor[skip : skip + keep]
    input_ids, input_mask = _pad([r[0] for r in picked], length)
    target_ids, target_mask = _pad([r[1] for r in picked], s.max_target_length)
    batch = {
      "input_ids": input_ids,
      "input_mask": input_mask,
      "target_ids": target_ids,
      "target_mask": target_mask,
      "group_ids": np.asarray(group_ids, np.int32),
      "is_anchor": np.asarray(is_anchor, np.int32),
      "answer": np.asarray([r[3] for r in picked], np.int32),
    }
    if s.num_options > 0:
      option_ids = np.zeros((len(picked), s.num_options, s.max_option_length), np.int32)
      option_mask = np.zeros_like(option_ids)
      for r, row in enumerate(picked):
        if row[2]:
          ids, mask = _pad(row[2], s.max_option_length)
          option_ids[r, : len(ids)] = ids
          option_mask[r, : len(ids)] = mask
      batch["option_ids"] = option_ids
      batch["option_mask"] = option_mask
    return batch
