"""The training loop: state on the mesh, jitted step, checkpoints, exact resume, logs.

`train` is the library entry point (the CLI wraps it with gin). It resumes from the latest
checkpoint in `model_dir` when there is one; since batches and RNG keys are pure functions of
`(seed, step)`, a resumed run produces bit-for-bit the prompt an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh

from robust_prompt import compile_ahead, multihost, partitioning
from robust_prompt.model import soft_prompt as prompt_lib
from robust_prompt.model.prompted import PromptedModel
from robust_prompt.train import checkpointing, metrics_log
from robust_prompt.train import state as state_lib
from robust_prompt.train.grouping import GroupedData
from robust_prompt.train.objective import LossConfig
from robust_prompt.train.step import make_train_step

_log = logging.getLogger(__name__)

PROMPT_FILE = "prompt.npy"
CONFIG_FILE = "config.gin"


@dataclasses.dataclass
class TrainResult:
  """What `train` returns: the final prompt `[P, H]`, the step reached and the last metrics."""

  prompt: np.ndarray
  step: int
  metrics: dict
  model_dir: str
  resumed_from: int | None


def _to_floats(metrics) -> dict:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(
  *,
  model: PromptedModel,
  frozen_params,
  data: GroupedData,
  model_dir: str,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]] = partitioning.DEFAULT_RULES,
  num_steps: int = 1000,
  prompt_length: int = 100,
  prompt_init: prompt_lib.Initializer | None = None,
  optimizer: optax.GradientTransformation | None = None,
  learning_rate_fn: optax.Schedule | None = None,
  loss_config: LossConfig | None = None,
  seed: int = 0,
  num_microbatches: int = 1,
  save_every: int = 500,
  keep_checkpoints: int = 3,
  async_checkpoints: bool = True,
  log_every: int = 10,
  write_config: Callable[[], str] | None = None,
  progress: bool = True,
  run_meta: Mapping[str, Any] | None = None,
) -> TrainResult:
  """Trains a soft prompt for the frozen `model` on grouped batches from `data`.

  Args:
    model: the prompted model (`prompted.for_config`); `frozen_params`: its parameters on `mesh` (never updated).
    data: grouped batches (`seed` of the data order is `data.seed`).
    model_dir: checkpoints, `prompt.npy`, `config.gin`, `metrics.jsonl`, TensorBoard events.
    mesh / rules: device mesh and logical-axis rules.
    num_steps: total optimizer steps (a resumed run continues up to this).
    prompt_length: `P`; prompt_init: initializer (default uniform(0.5)).
    optimizer: optax transformation of the prompt (default Adafactor, lr 0.3).
    learning_rate_fn: the schedule, only for logging.
    loss_config: objective weights (default: plain prompt tuning).
    seed: initialisation and per-step RNG seed.
    num_microbatches: gradient accumulation over whole groups.
    save_every / keep_checkpoints / async_checkpoints: orbax checkpointing.
    log_every: steps between metric logs (JSONL, TensorBoard, progress bar).
    write_config: returns the operative config text, written to `config.gin` after the first
      step (when every configurable has been used) and at the end.
    progress: show a tqdm progress bar.
    run_meta: further settings that must match to resume (model weights digest, instruction
      pool, losses, optimizer, ...): stored with every checkpoint, compared on restore.
  """
  if num_steps < 0:
    raise ValueError(f"num_steps must be >= 0; got {num_steps}")
  os.makedirs(model_dir, exist_ok=True)
  tx = optimizer or state_lib.make_optimizer()
  loss_config = loss_config or LossConfig()
  width = int(frozen_params["token_embedder"]["embedding"].shape[1])
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed))
  meta = {
    "seed": int(seed),
    "data_seed": int(data.seed),
    "groups_per_batch": data.G,
    "members_per_group": data.K,
    "num_examples": len(data.examples),
    "prompt_length": int(prompt_length),
    "width": width,
    "num_microbatches": int(num_microbatches),
    **json.loads(json.dumps(dict(run_meta or {}), default=str)),
  }

  ckpt = checkpointing.Checkpointer(
    model_dir, save_every=save_every, keep=keep_checkpoints, asynchronous=async_checkpoints
  )
  latest = ckpt.latest_step()
  try:
    with partitioning.mesh_context(mesh, rules):
      abstract = jax.eval_shape(
        lambda r: state_lib.init_state(r, tx, prompt_length, width), init_rng
      )
      shardings = state_lib.state_shardings(abstract, tx, mesh, rules)
      if latest is None:
        state, _ = state_lib.create_state(
          init_rng, tx, prompt_length, width, prompt_init, mesh, rules
        )
      else:
        target = state_lib.abstract_state(tx, prompt_length, width, shardings)
        state = ckpt.restore(latest, target, meta)
        _log.info("resumed from %s at step %d", ckpt.directory, latest)
  except BaseException:
    ckpt.close()
    raise
  start = int(jax.device_get(state.step))

  frozen_shardings = jax.tree.map(lambda x: x.sharding, frozen_params)
  # Each process builds only the rows its devices hold (all of them with one process).
  rows = multihost.process_rows(mesh, data.batch_size)
  batch = data.batch(start, rows)
  global_shapes = {
    k: jax.ShapeDtypeStruct((data.batch_size, *v.shape[1:]), v.dtype) for k, v in batch.items()
  }
  step_fn = make_train_step(
    model=model,
    tx=tx,
    loss_config=loss_config,
    mesh=mesh,
    rules=rules,
    state_shardings=shardings,
    frozen_shardings=frozen_shardings,
    example_batch=global_shapes,
    num_groups=data.G,
    num_microbatches=num_microbatches,
    learning_rate_fn=learning_rate_fn,
  )
  writer = metrics_log.MetricsWriter(model_dir)
  prompt_path = os.path.join(model_dir, PROMPT_FILE)
  last: dict = {}
  bar = tqdm.tqdm(
    total=num_steps,
    initial=start,
    desc="train",
    unit="step",
    disable=not progress or not multihost.is_main_process(),
    leave=False,
  )
  ahead = WindowAhead(
    step_fn, (state, frozen_params, step_rng), global_shapes, mesh, rules, data, num_steps
  )
  t0, steps_done = time.perf_counter(), 0
  try:
    for step in range(start, num_steps):
      ahead.wait(step)
      state, metrics = step_fn(state, frozen_params, batch, step_rng)
      # Build the next batch on the host while the device runs this step.
      if step + 1 < num_steps:
        batch = data.batch(step + 1, rows)
      # Blocking on every step keeps XLA's CPU collectives from deadlocking on few cores.
      jax.block_until_ready(state)
      steps_done += 1
      bar.update(1)
      done = step + 1
      if done == start + 1 and write_config is not None:
        _write_text(os.path.join(model_dir, CONFIG_FILE), write_config())
      if done % log_every == 0 or done == num_steps:
        last = _to_floats(metrics)
        last["steps_per_sec"] = steps_done / max(time.perf_counter() - t0, 1e-9)
        writer.write(done, last)
        bar.set_postfix(loss=f"{last['loss']:.4f}", steps_s=f"{last['steps_per_sec']:.2f}")
      if ckpt.save(done, state, meta, force=done == num_steps):
        _save_prompt(prompt_path, state.params["prompt"])
    if data.num_truncated:
      _log.warning(
        "%d training inputs were truncated to %d tokens",
        data.num_truncated,
        data.shapes.max_input_length,
      )
  finally:
    ahead.cancel()
    bar.close()
    writer.close()
    ckpt.close()
  final = np.asarray(jax.device_get(state.params["prompt"]))
  _save_prompt(prompt_path, final)
  if write_config is not None:
    _write_text(os.path.join(model_dir, CONFIG_FILE), write_config())
  return TrainResult(final, int(jax.device_get(state.step)), last, model_dir, latest)


class WindowAhead:
  """With length grouping, the steps of a window come in a few input lengths, each one more
  compiled step: those of the window compile ahead in background threads (`compile_ahead`)
  while the first steps run. Without it there is one shape, compiled by the first call."""

  def __init__(self, step_fn, args, global_shapes, mesh, rules, data, num_steps):
    def spec(x):
      return jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=x.sharding, weak_type=getattr(x, "weak_type", False)
      )

    # Abstract: the state's arrays are donated to each step, the lowering must not touch them.
    # The batch as `place_batch` puts it on the mesh: another sharding is another program.
    self._args = jax.tree.map(spec, args)
    self._batch = {
      k: jax.ShapeDtypeStruct(
        v.shape, v.dtype, sharding=multihost.batch_sharding(mesh, v.ndim, rules)
      )
      for k, v in global_shapes.items()
    }
    self._step_fn = step_fn
    self._keys: dict[int, tuple] = {}
    self.data, self.num_steps = data, num_steps

  def wait(self, step: int) -> None:
    """Called before step `step` runs: submits its window's lengths when it starts one, and
    waits for the program of its own length."""
    n = self.data.length_grouping
    if not n:
      return
    if step % n == 0 or not self._keys:
      for s in range(step, min(self.num_steps, (step // n + 1) * n)):
        self._submit(self.data.input_length(s))
    compile_ahead.wait(self._keys.get(self.data.input_length(step)))

  def cancel(self) -> None:
    """Drops the window's compilations that have not started (the run stops)."""
    compile_ahead.cancel(self._keys.values())

  def _submit(self, length: int) -> None:
    if length in self._keys:
      return
    state, frozen, rng = self._args
    batch = {
      k: v.update(shape=(v.shape[0], length, *v.shape[2:]))
      if k in ("input_ids", "input_mask")
      else v
      for k, v in self._batch.items()
    }
    key = ("train_step", self._step_fn, length)
    compile_ahead.submit(key, lambda: self._step_fn.lower(state, frozen, batch, rng))
    self._keys[length] = key


def _write_text(path: str, text: str) -> None:
  multihost.write_text_main(path, text)


def _save_prompt(path: str, prompt) -> None:
  # The prompt is replicated: every process holds it, process 0 writes it.
  value = np.asarray(jax.device_get(prompt))
  if multihost.is_main_process():
    prompt_lib.save_prompt(path, value)
