"""Train state (the prompt and its optimizer state only), the optimizer, and their placement.

The model's parameters are NOT part of the state: they are frozen and passed to the step as a
separate argument, so they have no optimizer state and no gradient. The state is created the
standard T5X/Flax way: `jax.eval_shape(init)` gives the abstract tree; the prompt's logical axes
give its partition spec; optimizer leaves shaped like the prompt inherit that spec and the other
leaves (counters, factored statistics) are replicated; `jax.jit(init, out_shardings=...)` then
creates every leaf directly in place on the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robust_prompt.model.soft_prompt import Initializer, SoftPrompt, uniform

OPTIMIZERS = ("adafactor", "adam", "adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "rsqrt")


@flax.struct.dataclass
class TrainState:
  """`step: []` int32, `params: {"prompt": [P, H]}`, `opt_state`: the optimizer's state."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState


def make_schedule(
  learning_rate: float = 0.3,
  schedule: str = "constant",
  warmup_steps: int = 0,
  decay_steps: int | None = None,
  end_factor: float = 0.0,
) -> optax.Schedule:
  """Learning-rate schedule: linear warm-up, then constant / linear / cosine / rsqrt decay.

  `decay_steps` (after warm-up) is needed by "linear" and "cosine"; "rsqrt" decays as
  `lr * sqrt(warmup / step)` after warm-up (T5's inverse square root).
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
  if schedule == "constant":
    after = optax.constant_schedule(learning_rate)
  elif schedule == "rsqrt":
    w = max(warmup_steps, 1)
    after = lambda count: learning_rate * jnp.sqrt(w / (count + w))
  else:
    if not decay_steps:
      raise ValueError(f"schedule {schedule!r} needs decay_steps > 0")
    if schedule == "linear":
      after = optax.linear_schedule(learning_rate, learning_rate * end_factor, decay_steps)
    else:
      after = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=end_factor)
  if warmup_steps <= 0:
    return after
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
  name: str = "adafactor",
  learning_rate: float | optax.Schedule = 0.3,
  clip_norm: float | None = None,
  weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """The optimizer of the prompt (Lester et al.: Adafactor, lr 0.3, constant).

  Args:
    name: "adafactor", "adam", "adamw" or "sgd".
    learning_rate: a float or an optax schedule (see `make_schedule`).
    clip_norm: optional global gradient-norm clipping.
    weight_decay: decoupled weight decay (adamw / adafactor).
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {name!r}")
  if name == "adafactor":
    # No parameter-scale-relative steps: the prompt's scale is that of the embeddings, and the
    # prompt-tuning recipe uses an absolute learning rate.
    tx = optax.adafactor(
      learning_rate, multiply_by_parameter_scale=False, weight_decay_rate=weight_decay or None
    )
  elif name == "adam":
    tx = optax.adam(learning_rate)
  elif name == "adamw":
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)
  else:
    tx = optax.sgd(learning_rate)
  if clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  return tx


def build_optimizer(
  name: str = "adafactor",
  learning_rate: float = 0.3,
  schedule: str = "constant",
  warmup_steps: int = 0,
  decay_steps: int | None = None,
  end_factor: float = 0.0,
  clip_norm: float | None = None,
  weight_decay: float = 0.0,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`make_schedule` + `make_optimizer` in one call (the CLI's gin name `optimizer`).

  Returns:
    `(tx, schedule)`; the schedule is returned for logging the learning rate.
  """
  lr = make_schedule(learning_rate, schedule, warmup_steps, decay_steps, end_factor)
  return make_optimizer(name, lr, clip_norm, weight_decay), lr


def init_state(
  rng: jax.Array,
  tx: optax.GradientTransformation,
  length: int,
  width: int,
  init_fn: Initializer | None = None,
) -> TrainState:
  """A fresh state: the `[P, H]` prompt (a `SoftPrompt` initialised with `init_fn`), `tx.init`."""
  variables = SoftPrompt(length, width, init_fn or uniform()).init(rng)
  params = nn.meta.unbox(variables["params"])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(
  abstract: TrainState,
  tx: optax.GradientTransformation,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]],
) -> TrainState:
  """`NamedSharding`s for every leaf of the state (a tree shaped like `abstract`)."""
  # The prompt's logical axes as its module declares them: ("prompt", "prompt_embed").
  length, width = abstract.params["prompt"].shape
  boxed = jax.eval_shape(SoftPrompt(length, width).init, jax.random.PRNGKey(0))
  logical = nn.get_partition_spec(boxed)["params"]
  param_sh = nn.logical_to_mesh_sharding(logical, mesh, list(rules))
  replicated = NamedSharding(mesh, PartitionSpec())

  def like_param(leaf, sharding):
    # Adam's moments are shaped like the prompt; factored statistics ([P] or [H]) are not.
    return sharding if leaf.shape == abstract.params["prompt"].shape else replicated

  opt_sh = optax.tree_map_params(
    tx,
    like_param,
    abstract.opt_state,
    param_sh,
    transform_non_params=lambda _: replicated,
  )
  return TrainState(step=replicated, params=param_sh, opt_state=opt_sh)


def create_state(
  rng: jax.Array,
  tx: optax.GradientTransformation,
  length: int,
  width: int,
  init_fn: Initializer | None,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]],
) -> tuple[TrainState, TrainState]:
  """Creates the state on the mesh. Returns `(state, shardings)` (both TrainState trees)."""
  init: Callable[[jax.Array], TrainState] = lambda r: init_state(r, tx, length, width, init_fn)
  abstract = jax.eval_shape(init, rng)
  shardings = state_shardings(abstract, tx, mesh, rules)
  state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


def abstract_state(
  tx: optax.GradientTransformation, length: int, width: int, shardings: TrainState
) -> TrainState:
  """`ShapeDtypeStruct`s (with shardings) of the state: the target a checkpoint restores into."""
  abstract = jax.eval_shape(lambda r: init_state(r, tx, length, width), jax.random.PRNGKey(0))
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
