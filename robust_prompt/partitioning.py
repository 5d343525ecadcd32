"""Logical-axis rules, the (data, model) device mesh, parameter shardings and placement.

Follows T5X: parameters and activations carry *logical* axis names (see docs/design.md); a list
of rules maps them onto the two mesh axes `data` and `model`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, str | None]]

# T5X's standard 1-D model parallelism + data parallelism.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", "data"),
  ("vocab", "model"),
  ("mlp", "model"),
  ("heads", "model"),
  ("joined_kv", "model"),
  ("embed", None),
  ("kv", None),
  ("length", None),
  ("relpos_buckets", None),
  ("prompt", None),
  ("prompt_embed", None),
)

MESH_AXES = ("data", "model")


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds `Mesh(devices.reshape(data, model), ("data", "model"))`.

  Args:
    data: size of the data axis; -1 = all devices not used by `model`.
    model: size of the model axis; -1 = all devices not used by `data`.
    devices: devices to use (default `jax.devices()`).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if data == -1 and model == -1:
    raise ValueError("mesh: at most one of data/model may be -1")
  if data == -1:
    if model <= 0 or n % model:
      raise ValueError(f"mesh: model={model} does not divide the {n} available devices")
    data = n // model
  elif model == -1:
    if data <= 0 or n % data:
      raise ValueError(f"mesh: data={data} does not divide the {n} available devices")
    model = n // data
  if data <= 0 or model <= 0:
    raise ValueError(f"mesh: sizes must be positive or -1, got data={data}, model={model}")
  if data * model > n:
    raise ValueError(
      f"mesh: data={data} x model={model} needs {data * model} devices, only {n} available"
    )
  grid = np.asarray(devices[: data * model], dtype=object).reshape(data, model)
  return Mesh(grid, MESH_AXES)


def parse_mesh_spec(spec: str) -> tuple[int, int]:
  """Parses a `--mesh` flag such as "data=2,model=4" (either may be -1) -> (data, model).

  A missing axis defaults to data=-1 / model=1. Raises ValueError with the expected syntax.
  """
  sizes = {"data": -1, "model": 1}
  seen = set()
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, value = part.partition("=")
    name = name.strip()
    if not sep or name not in sizes or name in seen:
      raise ValueError(
        f"bad mesh spec {spec!r}: expected 'data=D,model=M' (each a positive int or -1)"
      )
    try:
      sizes[name] = int(value)
    except ValueError:
      raise ValueError(f"bad mesh spec {spec!r}: {name}={value!r} is not an integer") from None
    if sizes[name] == 0 or sizes[name] < -1:
      raise ValueError(f"bad mesh spec {spec!r}: {name} must be positive or -1")
    seen.add(name)
  return sizes["data"], sizes["model"]


def _dummy_inputs(model: nn.Module, batch: int = 1, length: int = 1) -> tuple[jax.Array, ...]:
  """The `[batch, length]` int32 arrays `model.init` is called with.

  T5's `__call__` takes four (inputs, mask, decoder inputs, decoder mask); a module whose
  `__call__` takes fewer says how many in its class attribute `NUM_INIT_INPUTS` (the decoder-only
  `Decoder`: input_ids, input_mask).
  """
  ids = jnp.ones((batch, length), jnp.int32)
  return (ids,) * int(getattr(type(model), "NUM_INIT_INPUTS", 4))


def abstract_variables(model: nn.Module, rng: jax.Array | None = None) -> Any:
  """`jax.eval_shape(model.init, ...)`: boxed (LogicallyPartitioned) shape structs, no memory."""
  rng = jax.random.PRNGKey(0) if rng is None else rng
  return jax.eval_shape(model.init, rng, *_dummy_inputs(model))


def logical_param_specs(model: nn.Module, config: Any = None) -> Any:
  """Tree of logical `PartitionSpec`s for `model`'s params, e.g. P("embed", "joined_kv").

  Returns the tree *without* the outer "params" key (same layout as the loaders' trees).
  `config` is accepted for symmetry with the other helpers (the model already holds it).
  """
  del config
  return nn.get_partition_spec(abstract_variables(model))["params"]


def param_shardings(
  mesh: Mesh, specs: Any, rules: LogicalRules = DEFAULT_RULES, shapes: Any = None
) -> Any:
  """Logical specs -> tree of `NamedSharding` on `mesh`.

  Args:
    mesh: the (data, model) mesh.
    specs: tree of logical `PartitionSpec`s (from `logical_param_specs`).
    rules: logical-axis rules.
    shapes: optional tree (same structure) of arrays / shape structs. When given, a dimension that
      the mesh axis does not divide evenly (e.g. 6 heads over model=4) is replicated instead, as
      jax requires even tiling. `place_params` applies the same relaxation on its own.
  """
  shardings = nn.logical_to_mesh_sharding(specs, mesh, list(rules))
  if shapes is None:
    return shardings
  return jax.tree_util.tree_map(
    lambda sh, x: fit_sharding(sh, tuple(x.shape)),
    shardings,
    shapes,
    is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
  )


def model_param_shardings(model: nn.Module, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
  """`param_shardings` for `model`'s params, relaxed to the real parameter shapes."""
  abstract = meta.unbox(abstract_variables(model))["params"]
  return param_shardings(mesh, logical_param_specs(model), rules, shapes=abstract)


def fit_sharding(sharding: jax.sharding.Sharding, shape: tuple[int, ...]) -> jax.sharding.Sharding:
  """Replicates the dimensions of `shape` that `sharding`'s mesh axes do not divide evenly."""
  if not isinstance(sharding, NamedSharding):
    return sharding
  spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
  changed = False
  for i, axes in enumerate(spec[: len(shape)]):
    if axes is None:
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    size = int(np.prod([sharding.mesh.shape[a] for a in names]))
    if shape[i] % size:
      spec[i] = None
      changed = True
  if not changed:
    return sharding
  return NamedSharding(sharding.mesh, PartitionSpec(*spec[: len(shape)]))


def place_params(tree: Any, shardings: Any) -> Any:
  """Puts a tree of host arrays (numpy) onto the mesh; each device receives only its slice.

  Args:
    tree: nested dict of numpy (or jax) arrays, same structure as `shardings`.
    shardings: tree of `jax.sharding.Sharding` (e.g. from `param_shardings`).
  """

  def place(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    sharding = fit_sharding(sharding, tuple(np.shape(x)))
    if isinstance(x, jax.Array):
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  tree_paths = _leaf_paths(tree)
  sharding_paths = _leaf_paths(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  if tree_paths != sharding_paths:
    missing = sorted(sharding_paths - tree_paths)[:10]
    extra = sorted(tree_paths - sharding_paths)[:10]
    raise ValueError(
      "place_params: the parameter tree does not match the shardings' tree "
      f"(missing from params: {missing}; not in shardings: {extra}). Both must use the layout of "
      "docs/design.md without the outer 'params' key."
    )
  return jax.tree_util.tree_map(place, tree, shardings)


def _leaf_paths(tree: Any, is_leaf: Any = None) -> set[str]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves}


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Iterator[Mesh]:
  """Context in which `apply`/`jit` see the mesh and the logical-axis rules.

  Inside it, `nn.with_logical_constraint` on activations becomes a real sharding constraint.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield mesh


def unbox(variables: Any) -> Any:
  """Strips `LogicallyPartitioned` boxes (as returned by `model.init`) -> plain arrays."""
  return meta.unbox(variables)


def init_sharded(
  model: nn.Module,
  config: Any,
  mesh: Mesh,
  rules: LogicalRules = DEFAULT_RULES,
  rng: jax.Array | None = None,
) -> Any:
  """Randomly initialises params directly on the mesh (eval_shape -> shardings -> jit init).

  Returns the params tree (no outer "params" key) of sharded `jax.Array`s.
  """
  del config
  rng = jax.random.PRNGKey(0) if rng is None else rng
  shardings = model_param_shardings(model, mesh, rules)

  def init(key: jax.Array) -> Any:
    return meta.unbox(model.init(key, *_dummy_inputs(model)))["params"]

  with mesh_context(mesh, rules):
    return jax.jit(init, out_shardings=shardings)(rng)


def shardings_for(
  mesh: Mesh, *axes: str | None, rules: LogicalRules = DEFAULT_RULES
) -> NamedSharding:
  """NamedSharding for an array with the given logical axes.

  e.g. `shardings_for(mesh, "batch", "length")` for `[B, T]` inputs (split over "data").
  """
  spec = nn.logical_to_mesh_axes(axes, list(rules))
  return NamedSharding(mesh, PartitionSpec(*spec))


def tree_sharding_summary(tree: Any) -> Mapping[str, str]:
  """'path' -> sharding spec string for each array (for logs and tests)."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    out[name] = str(getattr(getattr(x, "sharding", None), "spec", None))
  return out
