"""The train step: a pure function of (state, frozen_params, batch, rng), jitted once on a mesh.

`train_step` differentiates the objective with respect to the prompt only; the frozen model
parameters are an ordinary (non-donated, non-differentiated) argument. Large `G x K` batches are
split into microbatches of whole groups whose gradients are accumulated with `lax.scan`. Every
microbatch has the same number of groups, rows and non-anchor rows, and every loss term is a mean
of per-row values over them, so the mean of the microbatch losses (and gradients) equals the
full-batch one (InfoNCE excepted: its negatives are the other groups of the microbatch). A
microbatch keeps the batch-wide group ids; the losses treat ids as labels (`losses.
dense_group_ids`), so ids larger than the microbatch are fine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robust_prompt import multihost, partitioning
from robust_prompt.model.prompted import PromptedModel
from robust_prompt.train import objective
from robust_prompt.train.state import TrainState

Batch = dict


def split_microbatches(batch: Batch, num_groups: int, num_microbatches: int) -> Batch:
  """`[B, ...]` group-major rows -> `[M, B/M, ...]`, microbatch `m` holding groups `g % M == m`.

  Striding over groups (rather than cutting contiguous blocks) keeps every microbatch spread
  over all data shards.
  """
  if num_groups % num_microbatches:
    raise ValueError(
      f"{num_groups} groups per batch cannot be split into {num_microbatches} microbatches of "
      "whole groups; choose a number of microbatches that divides G"
    )
  per = num_groups // num_microbatches

  def split(x):
    k = x.shape[0] // num_groups
    x = x.reshape(per, num_microbatches, k, *x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(num_microbatches, per * k, *x.shape[3:])

  return jax.tree.map(split, batch)


def accumulate_gradients(
  grad_fn: Callable,
  prompt: jax.Array,
  frozen_params,
  batch: Batch,
  num_groups: int,
  num_microbatches: int,
) -> tuple[jax.Array, dict]:
  """Mean gradient and metrics of `grad_fn` over `num_microbatches` microbatches of whole groups.

  Args:
    grad_fn: `jax.value_and_grad(loss_fn, has_aux=True)` of
      `loss_fn(prompt, frozen_params, batch) -> (loss, metrics)`.
    prompt: `[P, H]`.
    frozen_params: passed through to `grad_fn`.
    batch: `B = G * K` group-major rows.
    num_groups: `G`.
    num_microbatches: `M`, dividing `G`; 1 computes the full batch at once.

  Returns:
    `(grad [P, H], metrics)`, equal (up to float reassociation) to the full batch's.
  """
  if num_microbatches == 1:
    (_, metrics), grad = grad_fn(prompt, frozen_params, batch)
    return grad, metrics
  micro = split_microbatches(batch, num_groups, num_microbatches)

  def accumulate(carry, mb):
    (_, m), g = grad_fn(prompt, frozen_params, mb)
    return jax.tree.map(jnp.add, carry, (g, m)), None

  shapes = jax.eval_shape(grad_fn, prompt, frozen_params, jax.tree.map(lambda x: x[0], micro))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[1], shapes[0][1]))
  (grad, metrics), _ = jax.lax.scan(accumulate, zeros, micro)
  # Equal weights are right: every microbatch has G/M whole groups (see the module docstring).
  # Counts stay summed and the ratios made of them are recomputed from the sums.
  metrics = {
    k: v if k in objective.COUNT_METRICS else v / num_microbatches for k, v in metrics.items()
  }
  return jax.tree.map(lambda g: g / num_microbatches, grad), objective.finish_metrics(metrics)


def train_step(
  state: TrainState,
  frozen_params,
  batch: Batch,
  rng: jax.Array,
  *,
  model: PromptedModel,
  tx: optax.GradientTransformation,
  loss_config: objective.LossConfig,
  num_groups: int,
  num_microbatches: int = 1,
  learning_rate_fn: optax.Schedule | None = None,
) -> tuple[TrainState, dict]:
  """One optimizer update of the prompt.

  Args:
    state: prompt + optimizer state (donated by the jitted version).
    frozen_params: the model's parameters (never updated).
    batch: a grouped batch (`grouping.GroupedData.batch`), `B = G * K` rows.
    rng: base key; the step folds in `state.step` (the model is deterministic today, so this
      only keeps the signature ready for dropout without changing resumability).
    model: the prompted model (`model/prompted.py`), any family.
    tx: the prompt's optimizer.
    loss_config: objective weights.
    num_groups: `G` (rows are group-major).
    num_microbatches: gradient-accumulation steps (must divide `G`).
    learning_rate_fn: optional schedule, only to log the learning rate.

  Returns:
    `(new_state, metrics)` with scalar metrics: every loss term, grad_norm, prompt_norm, lr.
  """
  del rng  # deterministic model: see Args.
  loss_fn = functools.partial(objective.compute_loss, model=model, config=loss_config)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  prompt = state.params["prompt"]

  grad, metrics = accumulate_gradients(
    grad_fn, prompt, frozen_params, batch, num_groups, num_microbatches
  )

  grads = {"prompt": grad}
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics)
  metrics["grad_norm"] = optax.global_norm(grads)
  metrics["prompt_norm"] = jnp.sqrt(jnp.mean(jnp.sum(params["prompt"] ** 2, axis=-1)))
  if learning_rate_fn is not None:
    metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def batch_shardings(mesh: Mesh, batch: Batch) -> Batch:
  """Every batch array is split along its leading (row) axis over the mesh's `data` axis."""
  data = int(dict(mesh.shape).get("data", 1))
  for name, x in batch.items():
    if x.shape[0] % data:
      raise ValueError(
        f"batch array {name!r} has {x.shape[0]} rows, not a multiple of the mesh's data axis "
        f"({data}); choose G * K divisible by it"
      )
  return {k: multihost.batch_sharding(mesh, len(x.shape)) for k, x in batch.items()}


def make_train_step(
  *,
  model: PromptedModel,
  tx: optax.GradientTransformation,
  loss_config: objective.LossConfig,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]],
  state_shardings: TrainState,
  frozen_shardings,
  example_batch: Batch,
  num_groups: int,
  num_microbatches: int = 1,
  learning_rate_fn: optax.Schedule | None = None,
) -> Callable[[TrainState, object, Batch, jax.Array], tuple[TrainState, dict]]:
  """`train_step` jitted once with explicit in/out shardings and the state donated.

  `example_batch` gives the GLOBAL batch's shapes (arrays or `ShapeDtypeStruct`s).

  Returns:
    `step(state, frozen_params, batch, rng) -> (state, metrics)`; numpy batches (the global
    batch, or only this process's rows `multihost.process_rows(mesh, B)`) are placed row-wise
    over the mesh's `data` axis.
  """
  step_fn = functools.partial(
    train_step,
    model=model,
    tx=tx,
    loss_config=loss_config,
    num_groups=num_groups,
    num_microbatches=num_microbatches,
    learning_rate_fn=learning_rate_fn,
  )
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sh = batch_shardings(mesh, example_batch)
  jitted = jax.jit(
    step_fn,
    in_shardings=(
      state_shardings,
      frozen_shardings,
      batch_sh,
      replicated,
    ),
    out_shardings=(state_shardings, replicated),
    donate_argnums=(0,),
  )

  global_rows = int(next(iter(example_batch.values())).shape[0])

  def run(state, frozen_params, batch, rng):
    # Host batches are either the global batch (every host computes the same one; each device
    # takes its rows) or just this process's rows (`GroupedData.batch(step, process_rows)`),
    # assembled into global arrays: either way it works unchanged on multi-host meshes.
    host = {k: v for k, v in batch.items() if not isinstance(v, jax.Array)}
    if host:
      rows = {int(v.shape[0]) for v in host.values()}
      if rows == {global_rows}:
        host = multihost.place_batch(host, mesh, rules)
      else:
        host = multihost.host_local_to_global(host, mesh, global_rows)
    batch = {**batch, **host}
    with partitioning.mesh_context(mesh, rules):
      return jitted(state, frozen_params, batch, rng)

  def lower(state, frozen_params, batch, rng) -> jax.stages.Lowered:
    """This very step lowered on (abstract) inputs: what `aot` compiles and measures."""
    with partitioning.mesh_context(mesh, rules):
      return jitted.lower(state, frozen_params, batch, rng)

  run.lower = lower
  return run
