"""Multi-host helpers: which rows a process feeds, host-local -> global arrays, process-0 writing.

JAX runs one process per host; every process runs the same program on a *global* mesh but can
only touch its own (addressable) devices. A batch split over the mesh's `data` axis is therefore
assembled from host-local pieces: each process reads (or builds) only the rows that land on its
devices (`local_rows`) and hands them to `host_local_to_global`, which calls
`jax.make_array_from_process_local_data`. Results are brought back with `to_host`, which gathers
sharded arrays across processes. Files (logs, reports, exported prompts) are written by process 0
only (`is_main_process`, `write_text_main`), after `sync` barriers where order matters.

Everything here also works with a single process, where it reduces to the obvious thing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

T = TypeVar("T")


def is_main_process() -> bool:
  """True in process 0, the one that writes logs, reports and exported files."""
  return jax.process_index() == 0


def batch_axis(rules=None) -> str | None:
  """The mesh axis that the logical `batch` axis maps to under `rules` (default rules: `data`)."""
  from robust_prompt import partitioning

  for name, axis in partitioning.DEFAULT_RULES if rules is None else rules:
    if name == "batch":
      return axis
  return None


def batch_sharding(mesh: Mesh, ndim: int = 1, rules=None) -> NamedSharding:
  """Rows (leading axis, logical `batch`) split as the rules say; the other axes replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axis(rules), *([None] * (ndim - 1))))


def place_batch(batch: Mapping[str, Any], mesh: Mesh | None, rules=None) -> dict[str, jax.Array]:
  """THE batch placement: host arrays identical on every process -> arrays on the mesh.

  Rows are split over the mesh axis of the logical `batch` axis; each process supplies only the
  shards its devices hold. Without a mesh the arrays go to the default device. Entries that are
  already `jax.Array`s or None pass through.
  """
  out = {}
  for name, x in batch.items():
    if x is None or isinstance(x, jax.Array):
      out[name] = x
    elif mesh is None:
      out[name] = jax.device_put(np.asarray(x))
    else:
      x = np.asarray(x)
      sharding = batch_sharding(mesh, x.ndim, rules)
      out[name] = jax.make_array_from_callback(x.shape, sharding, lambda idx, x=x: x[idx])
  return out


def batch_specs(batch: Mapping[str, Any], mesh: Mesh | None, rules=None) -> dict[str, Any]:
  """The `jax.ShapeDtypeStruct`s of what `place_batch` makes of host `batch` (to lower ahead)."""
  out = {}
  for name, x in batch.items():
    if x is None or isinstance(x, jax.Array):
      out[name] = x
      continue
    x = np.asarray(x)
    sharding = None if mesh is None else batch_sharding(mesh, x.ndim, rules)
    out[name] = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return out


def place_replicated(tree: Any, mesh: Mesh | None) -> Any:
  """Host values (a tree, e.g. parameters or a prompt) replicated on every device of `mesh`."""
  if mesh is None:
    return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), tree)
  sharding = NamedSharding(mesh, PartitionSpec())

  def put(x):
    if isinstance(x, jax.Array):
      return x
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def local_rows(sharding: jax.sharding.Sharding, num_rows: int) -> slice:
  """The contiguous block of global rows that this process's devices hold under `sharding`.

  With `Mesh(devices.reshape(data, model))` and devices ordered by process (jax's order on CPU,
  GPU and TPU hosts), each process holds a contiguous block of the `data` axis; when the batch is
  replicated (data=1) every process holds all rows.

  Args:
    sharding: the sharding of a `[B, ...]` array (only its leading axis matters).
    num_rows: `B`, the global number of rows.

  Raises:
    ValueError: this process's rows are not one contiguous block (an unusual device order).
  """
  index_map = sharding.addressable_devices_indices_map((num_rows,))
  starts, stops = set(), set()
  for index in index_map.values():
    start, stop, _ = index[0].indices(num_rows)
    starts.add(start)
    stops.add(stop)
  first, last = min(starts), max(stops)
  covered = np.zeros(num_rows, bool)
  for index in index_map.values():
    covered[index[0]] = True
  if not covered[first:last].all():
    raise ValueError(
      f"process {jax.process_index()} holds non-contiguous rows of a {num_rows}-row batch under "
      f"{sharding}; build the mesh with devices ordered by process (partitioning.make_mesh does)"
    )
  return slice(first, last)


def process_rows(mesh: Mesh, num_rows: int, rules=None) -> slice:
  """`local_rows` for a batch split over `mesh` as the logical `batch` axis says."""
  return local_rows(batch_sharding(mesh, 1, rules), num_rows)


def host_local_to_global(
  local: Mapping[str, np.ndarray], mesh: Mesh, num_rows: int, rules=None
) -> dict[str, jax.Array]:
  """Assembles global `[B, ...]` arrays from this process's rows (`process_rows(mesh, B)`).

  Args:
    local: name -> `[B_local, ...]` numpy rows of this process (the same names on every process).
    mesh: the global mesh.
    num_rows: `B`, the global batch size (checked against each local array).
    rules: logical-axis rules (default `partitioning.DEFAULT_RULES`): rows follow `batch`.

  Returns:
    name -> global `[B, ...]` `jax.Array`, rows split over `axis`.

  Raises:
    ValueError: a local array has the wrong number of rows for this process.
  """
  rows = process_rows(mesh, num_rows, rules)
  expected = rows.stop - rows.start
  out = {}
  for name, x in local.items():
    x = np.asarray(x)
    if x.shape[0] != expected:
      raise ValueError(
        f"host-local array {name!r} has {x.shape[0]} rows; process {jax.process_index()} must "
        f"supply rows {rows.start}:{rows.stop} of the {num_rows}-row global batch ({expected} rows)"
      )
    sharding = batch_sharding(mesh, x.ndim, rules)
    out[name] = jax.make_array_from_process_local_data(sharding, x, (num_rows, *x.shape[1:]))
  return out


def to_host(x: Any) -> Any:
  """A (possibly multi-host sharded) array or tree of arrays -> numpy, identical on every process.

  Fully replicated arrays are read from a local copy; sharded arrays are gathered across
  processes (`multihost_utils.process_allgather`, a collective: every process must call this).
  """

  def get(a):
    if not isinstance(a, jax.Array):
      return np.asarray(a)
    if a.is_fully_addressable or a.is_fully_replicated:
      return np.asarray(jax.device_get(a))
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))

  return jax.tree.map(get, x)


def shard_for_process(items: Sequence[T], index: int | None = None, count: int | None = None):
  """This process's contiguous share of `items` (sizes differ by at most one).

  For work that is independent per item (e.g. reading files); a batch on the mesh should use
  `process_rows` instead, which follows the device layout.
  """
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f"process index {index} is outside [0, {count})")
  per, extra = divmod(len(items), count)
  start = index * per + min(index, extra)
  return items[start : start + per + (index < extra)]


def sync(name: str) -> None:
  """A barrier across all processes (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def broadcast_from_main(value: Any) -> Any:
  """Process 0's value of a (tree of) numpy scalars/arrays, on every process."""
  if jax.process_count() == 1:
    return value
  return multihost_utils.broadcast_one_to_all(value)


def main_process_only(fn: Callable[..., T]) -> Callable[..., T | None]:
  """Decorator: runs `fn` on process 0 and returns None elsewhere (for writers)."""

  def wrapped(*args, **kwargs):
    return fn(*args, **kwargs) if is_main_process() else None

  wrapped.__name__ = getattr(fn, "__name__", "wrapped")
  wrapped.__doc__ = fn.__doc__
  return wrapped


@main_process_only
def write_text_main(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` atomically, on process 0 only."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
