"""Teacher-forced log-likelihoods of ragged targets (the `score` command's engine).

Every input runs once (`PromptedModel.context`) and all its targets are scored against it
(`target_scores` with `target_index`): with `O` targets an input costs one input pass instead
of `O`. Batches use a few static (bucketed) shapes so that jit compiles a handful of times, and
are split over the mesh like every batch (`multihost.place_batch`).
"""

from __future__ import annotations

import collections
import functools
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from robust_prompt import batching, compile_ahead, multihost, partitioning
from robust_prompt.model.prompted import PromptedModel


@functools.lru_cache(maxsize=16)
def score_step(model: PromptedModel):
  """The jitted `(params, prompt, batch) -> (sum_logprob [R], num_tokens [R])`."""
  return jax.jit(lambda params, prompt, batch: model.target_scores(params, prompt, batch))


class Scorer:
  """Scores targets against inputs in bucketed, mesh-sharded batches.

  Args:
    model: the prompted model; params: its parameters (on `mesh`, or host arrays).
    vocab: the model's vocabulary.
    mesh: the device mesh, or None for the default device.
    prompt: `[P, H]` optional soft prompt.
    batch_size: inputs per batch (rounded up to a multiple of the mesh's data axis).
  """

  def __init__(self, model: PromptedModel, params, vocab, *, mesh=None, prompt=None, batch_size=32):
    self.model = model
    self.vocab = vocab
    self.mesh = mesh
    self.data_size = int(dict(mesh.shape).get("data", 1)) if mesh is not None else 1
    self.batch_size = -(-batch_size // self.data_size) * self.data_size
    self.params = multihost.place_replicated(params, mesh)
    self.prompt = None
    if prompt is not None:
      self.prompt = multihost.place_replicated(np.asarray(prompt, np.float32), mesh)
    self._fn = score_step(model)
    self._fixed_key = compile_ahead.avals_key((self.params, self.prompt), mesh)

  def tokenize(
    self, inputs: Sequence[str], targets: Sequence[Sequence[str]], max_input: int, max_target: int
  ) -> tuple[list[list[int]], list[list[list[int]]], int, int]:
    """Token ids the family's way; also counts the inputs and targets that truncation cut.

    Returns:
      `(input_ids, target_ids, num_cut_inputs, num_cut_targets)`.
    """
    full_in = self.model.encode_inputs(self.vocab, inputs, None)
    cut_in = self.model.encode_inputs(self.vocab, inputs, max_input)
    full_t = self.model.encode_options(self.vocab, inputs, targets, None)
    cut_t = self.model.encode_options(self.vocab, inputs, targets, max_target)
    n_in = sum(len(a) != len(b) for a, b in zip(full_in, cut_in))
    n_t = sum(len(a) != len(b) for fa, ca in zip(full_t, cut_t) for a, b in zip(fa, ca))
    return cut_in, cut_t, n_in, n_t

  def score(
    self,
    input_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[Sequence[int]]],
    *,
    max_input_length: int | None = None,
    max_target_length: int | None = None,
    progress: bool = True,
  ) -> list[tuple[list[float], list[int]]]:
    """Scores every target of every input.

    Args:
      input_ids: per example, its input tokens (at most `max_input_length`).
      target_ids: per example, a non-empty list of target token lists.
      max_input_length / max_target_length: caps of the length buckets.
      progress: show a tqdm bar (examples/s).

    Returns:
      Per example, in input order: (sum log-prob per target, number of tokens per target).
    """

    n = len(input_ids)
    # The usual number of targets: batches of such inputs fill exactly one pair-count bucket.
    usual = collections.Counter(len(t) for t in target_ids).most_common(1)[0][0]
    # Within a length bucket, inputs with similar longest targets go together: the decoder pads
    # every target of a batch to its longest, and the decoder (logits over V) dominates the cost.
    plan = batching.plan_batches(
      [len(x) for x in input_ids],
      min(self.batch_size, -(-n // self.data_size) * self.data_size),
      max_len=max_input_length,
      secondary=[max(len(t) for t in targets) for targets in target_ids],
    )
    results: list[Any] = [None] * n
    pad_id = self.model.pad_id
    # All batches are built first, so that their shapes compile ahead, in parallel with each
    # other and with the first batches (`compile_ahead`).
    batches = []
    for batch in plan:
      ids, mask = batching.pad_batch(
        [input_ids[i] for i in batch.indices], batch.length, pad_id=pad_id, batch_size=batch.size
      )
      pairs = batching.pack_ragged(
        [target_ids[i] for i in batch.indices],
        max_len=max_target_length,
        pad_id=pad_id,
        minimum_pairs=batch.size * usual,
        pairs_multiple=self.data_size,
      )
      host = dict(
        input_ids=ids,
        input_mask=mask,
        target_ids=pairs.ids,
        target_mask=pairs.mask,
        target_index=pairs.group_index,
      )
      key = compile_ahead.submit_step(
        self._fn, self.params, self.prompt, host, self.mesh, self._fixed_key
      )
      batches.append((batch, pairs, host, key))
    try:
      self._score_batches(batches, results, n, progress)
    except BaseException:
      compile_ahead.cancel(key for *_, key in batches)
      raise
    return results

  def _score_batches(self, batches, results, n: int, progress: bool) -> None:
    """Runs the built `batches` in order (each after its program compiled) into `results`."""
    from tqdm import tqdm

    with tqdm(total=n, unit="ex", desc="score", disable=not progress, file=sys.stderr) as bar:
      for batch, pairs, host, key in batches:
        compile_ahead.wait(key)
        sums, counts = self._run(host)
        per_group_sums = pairs.split(np.asarray(sums, np.float64), batch.num_real)
        per_group_counts = pairs.split(np.asarray(counts), batch.num_real)
        for row, index in enumerate(batch.indices):
          results[index] = (
            [float(s) for s in per_group_sums[row]],
            [int(c) for c in per_group_counts[row]],
          )
        bar.update(batch.num_real)

  def _run(self, host: dict):
    batch = multihost.place_batch(host, self.mesh)
    if self.mesh is None:
      out = self._fn(self.params, self.prompt, batch)
    else:
      with partitioning.mesh_context(self.mesh):
        out = self._fn(self.params, self.prompt, batch)
    # Fetching before the next dispatch keeps one step in flight: queueing many sharded steps
    # can deadlock XLA's CPU collectives, and the host work per batch is small anyway.
    return multihost.to_host(jax.block_until_ready(out))
