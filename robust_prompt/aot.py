"""Ahead-of-time check: do the train and eval steps of a model size compile on a mesh, and fit?

Everything is abstract: parameters, train state and batches are `jax.ShapeDtypeStruct`s carrying
their production `NamedSharding`s (from the logical-axis rules), so no weight is ever allocated.
`jax.jit(step).lower(...).compile()` then runs XLA's SPMD partitioner exactly as a real run would
on that mesh, and `compiled.memory_analysis()` gives each device's argument / temporary / output
bytes. On a machine without the accelerators, fake CPU devices stand in (the partitioning and the
per-device shapes are the same; only the backend's fusion and memory planning differ).

The train step is compiled under the config's rematerialisation policy (`remat_policy`,
`model/remat.py`); `compare_remat` compiles it again under other policies, so that one report
shows the per-device peak with and without recomputation. The eval step is never differentiated,
so remat does not change it.

The command-line front end (gin model files, `--mesh`) is `robust_prompt/cli/aot.py`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robust_prompt import multihost, partitioning
from robust_prompt.model import prompted, remat
from robust_prompt.model.prompted import PromptedModel

STEPS = ("train", "eval")
GIB = 1024**3

# XLA:CPU expands `jax.checkpoint`'s optimization barriers early in its pipeline, after which CSE
# merges the backward pass's recomputation back into the forward pass: a rematerialised step
# would then measure as if nothing were rematerialised (checked: XXL widths, 4+4 layers, "full"
# 9.98 -> 4.18 GiB per device with the barriers kept). The accelerators keep them, so for fake CPU
# devices the barriers stay until code generation, which handles them as no-ops.
CPU_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


@dataclasses.dataclass(frozen=True)
class StepShapes:
  """Static shapes of the compiled steps (global batch sizes, split over the `data` axis).

  Attributes:
    groups: `G`, groups per training batch; members: `K` (training rows `B = G * K`).
    eval_batch: rows of an eval batch.
    input_length: `T`; target_length: `S` (training targets); num_options: `O` and
      option_length: `S_opt` (rank classification); prompt_length: `P`.
    num_microbatches: gradient accumulation in the train step (activation memory is that of
      `B / num_microbatches` rows).
  """

  groups: int = 8
  members: int = 4
  eval_batch: int = 32
  input_length: int = 512
  target_length: int = 32
  num_options: int = 4
  option_length: int = 16
  prompt_length: int = 100
  num_microbatches: int = 1

  @property
  def train_batch(self) -> int:
    return self.groups * self.members


@dataclasses.dataclass(frozen=True)
class ParamMemory:
  """Parameter count and bytes: all of them (one device) vs. the largest per-device share."""

  num_params: int
  total_bytes: int
  per_device_bytes: int


@dataclasses.dataclass(frozen=True)
class StepReport:
  """What compiling one step produced (bytes are per device, from `memory_analysis()`).

  `remat_policy` is the policy the step was compiled under; None for steps that are not
  differentiated (eval), where it changes nothing.
  """

  name: str
  lower_seconds: float
  compile_seconds: float
  argument_bytes: int | None
  output_bytes: int | None
  temp_bytes: int | None
  alias_bytes: int | None
  remat_policy: str | None = None

  @property
  def peak_bytes(self) -> int | None:
    """Arguments + temporaries + outputs not aliased to (donated) arguments."""
    if self.argument_bytes is None or self.temp_bytes is None:
      return None
    return (
      self.argument_bytes + self.temp_bytes + (self.output_bytes or 0) - (self.alias_bytes or 0)
    )


@dataclasses.dataclass(frozen=True)
class AotReport:
  """The whole check: model, mesh, parameter memory and one `StepReport` per step."""

  config: Any
  mesh_shape: dict[str, int]
  platform: str
  params: ParamMemory
  steps: tuple[StepReport, ...]


def abstract_params(model: PromptedModel, mesh: Mesh, rules=partitioning.DEFAULT_RULES) -> Any:
  """The parameter tree as sharded `ShapeDtypeStruct`s (no memory): what `place_params` makes."""
  shapes = meta.unbox(partitioning.abstract_variables(model.module))["params"]
  shardings = partitioning.model_param_shardings(model.module, mesh, rules)
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  )


def param_memory(abstract: Any) -> ParamMemory:
  """Counts parameters and bytes of a tree of sharded shape structs (see `abstract_params`)."""
  num = total = per_device = 0
  for leaf in jax.tree.leaves(abstract):
    size = math.prod(leaf.shape)
    itemsize = np.dtype(leaf.dtype).itemsize
    num += size
    total += size * itemsize
    per_device += math.prod(leaf.sharding.shard_shape(leaf.shape)) * itemsize
  return ParamMemory(num, total, per_device)


def _batch(mesh: Mesh, shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.ShapeDtypeStruct]:
  """Abstract int32 batch arrays, rows split as `multihost.place_batch` splits them."""
  return {
    k: jax.ShapeDtypeStruct(s, jnp.int32, sharding=multihost.batch_sharding(mesh, len(s)))
    for k, s in shapes.items()
  }


def _check_rows(name: str, rows: int, mesh: Mesh) -> None:
  data = int(dict(mesh.shape).get("data", 1))
  if rows % data:
    raise ValueError(
      f"{name} = {rows} rows cannot be split over the mesh's data axis ({data}); use a multiple"
    )


def lower_train_step(
  model: PromptedModel,
  mesh: Mesh,
  shapes: StepShapes,
  rules=partitioning.DEFAULT_RULES,
  *,
  tx=None,
  loss_config=None,
  params: Any = None,
) -> jax.stages.Lowered:
  """Lowers THE train step (`train.step.make_train_step`, the one `train` runs) on abstract inputs.

  Args:
    tx: the optimizer (default Adafactor at 1e-3; the CLI passes gin's `optimizer.*`).
    loss_config: the objective (default CE + alignment + KL; the CLI passes gin's `losses.*`).
    params: `abstract_params(...)` computed before (tracing a big model's init takes seconds).
  """
  from robust_prompt.train import objective
  from robust_prompt.train import state as state_lib
  from robust_prompt.train.step import make_train_step

  _check_rows("G * K (train batch)", shapes.train_batch, mesh)
  params = abstract_params(model, mesh, rules) if params is None else params
  tx = state_lib.make_optimizer("adafactor", 1e-3) if tx is None else tx
  if loss_config is None:
    loss_config = objective.LossConfig(lambda_sim=1.0, lambda_kl=1.0)
  p, h = shapes.prompt_length, model.d_model
  with partitioning.mesh_context(mesh, rules):
    state_shapes = jax.eval_shape(
      lambda r: state_lib.init_state(r, tx, p, h), jax.random.PRNGKey(0)
    )
    state_sh = state_lib.state_shardings(state_shapes, tx, mesh, rules)
  state = state_lib.abstract_state(tx, p, h, state_sh)
  b, o = shapes.train_batch, shapes.num_options
  batch_shapes = {
    "input_ids": (b, shapes.input_length),
    "input_mask": (b, shapes.input_length),
    "target_ids": (b, shapes.target_length),
    "target_mask": (b, shapes.target_length),
    "group_ids": (b,),
    "is_anchor": (b,),
    "answer": (b,),
  }
  if o:
    batch_shapes["option_ids"] = batch_shapes["option_mask"] = (b, o, shapes.option_length)
  batch = _batch(mesh, batch_shapes)
  step = make_train_step(
    model=model,
    tx=tx,
    loss_config=loss_config,
    mesh=mesh,
    rules=rules,
    state_shardings=state_sh,
    frozen_shardings=jax.tree.map(lambda x: x.sharding, params),
    example_batch=batch,
    num_groups=shapes.groups,
    num_microbatches=shapes.num_microbatches,
  )
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(mesh, PartitionSpec()))
  return step.lower(state, params, batch, rng)


def lower_eval_step(
  model: PromptedModel,
  mesh: Mesh,
  shapes: StepShapes,
  rules=partitioning.DEFAULT_RULES,
  *,
  score_mode: str = "sum",
  params: Any = None,
) -> jax.stages.Lowered:
  """Lowers THE eval step (`eval.engine.eval_step`, rank classification, soft prompt included)."""
  from robust_prompt.eval import engine

  _check_rows("eval batch", shapes.eval_batch, mesh)
  params = abstract_params(model, mesh, rules) if params is None else params
  replicated = NamedSharding(mesh, PartitionSpec())
  b, t = shapes.eval_batch, shapes.input_length
  opt = (b, max(shapes.num_options, 1), shapes.option_length)
  batch = _batch(
    mesh, {"input_ids": (b, t), "input_mask": (b, t), "option_ids": opt, "option_mask": opt}
  )
  prompt = jax.ShapeDtypeStruct(
    (shapes.prompt_length, model.d_model), jnp.float32, sharding=replicated
  )
  step = engine.eval_step(model, "options", score_mode, replicated)
  with partitioning.mesh_context(mesh, rules):
    return step.lower(params, prompt, batch)


def compile_step(
  name: str,
  lowered: jax.stages.Lowered,
  lower_seconds: float = 0.0,
  remat_policy: str | None = None,
  compiler_options: dict[str, str] | None = None,
) -> StepReport:
  """Compiles a lowered step and reads its per-device memory analysis (None where unavailable).

  `compiler_options` are XLA debug options for this compile (see `CPU_COMPILER_OPTIONS`).
  """
  t0 = time.perf_counter()
  compiled = lowered.compile(compiler_options)
  seconds = time.perf_counter() - t0
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, jax.errors.JaxRuntimeError):
    stats = None

  def field(attr: str) -> int | None:
    value = getattr(stats, attr, None)
    return None if value is None else int(value)

  return StepReport(
    name,
    lower_seconds,
    seconds,
    field("argument_size_in_bytes"),
    field("output_size_in_bytes"),
    field("temp_size_in_bytes"),
    field("alias_size_in_bytes"),
    remat_policy,
  )


def run_check(
  config,
  mesh: Mesh,
  shapes: StepShapes,
  rules=partitioning.DEFAULT_RULES,
  *,
  steps: Sequence[str] = STEPS,
  tx=None,
  loss_config=None,
  score_mode: str = "sum",
  compare_remat: Sequence[str] = (),
) -> AotReport:
  """Lowers and compiles the requested steps for `config` on `mesh`; nothing is allocated.

  Args:
    compare_remat: further remat policies to compile the train step under (beside
      `config.remat_policy`, which comes first); each adds a "train" `StepReport`. Policies equal
      to the config's, and all of them when "train" is not in `steps`, are skipped.

  Raises:
    ValueError: an unknown step name or remat policy, or a batch the data axis does not divide.
  """
  unknown = sorted(set(steps) - set(STEPS))
  if unknown:
    raise ValueError(f"unknown step(s) {unknown}; choose from {STEPS}")
  extra = []
  for policy in compare_remat:
    remat.check_policy(policy, "compare_remat")
    if policy != config.remat_policy and policy not in extra:
      extra.append(policy)
  model = prompted.for_config(config)
  # Parameters do not depend on the remat policy: one abstract tree serves every variant.
  abstract = abstract_params(model, mesh, rules)
  platform = mesh.devices.flat[0].platform
  options = CPU_COMPILER_OPTIONS if platform == "cpu" else None
  reports = []
  for name in steps:
    variants = [config.remat_policy, *extra] if name == "train" else [None]
    for policy in variants:
      t0 = time.perf_counter()
      if name == "train":
        variant = model
        if policy != config.remat_policy:
          variant = prompted.for_config(config.replace(remat_policy=policy))
        lowered = lower_train_step(
          variant, mesh, shapes, rules, tx=tx, loss_config=loss_config, params=abstract
        )
      else:
        lowered = lower_eval_step(
          model, mesh, shapes, rules, score_mode=score_mode, params=abstract
        )
      reports.append(compile_step(name, lowered, time.perf_counter() - t0, policy, options))
  return AotReport(config, dict(mesh.shape), platform, param_memory(abstract), tuple(reports))


def remat_comparison(report: AotReport) -> str | None:
  """One line comparing the train step's peak per device under each compiled remat policy.

  None when the train step was compiled under one policy only.
  """
  train = [s for s in report.steps if s.name == "train" and s.peak_bytes is not None]
  if len(train) < 2:
    return None
  base = next((s for s in train if s.remat_policy == "none"), None)
  parts = []
  for s in train:
    part = f"{s.remat_policy} {_gib(s.peak_bytes)}"
    if base is not None and s is not base and base.peak_bytes:
      part += f" ({s.peak_bytes / base.peak_bytes - 1:+.0%})"
    parts.append(part)
  configured = report.config.remat_policy
  return f"train peak GiB per device by remat policy: {', '.join(parts)} (configured: {configured})"


def _gib(n: int | None) -> str:
  return "n/a" if n is None else f"{n / GIB:.2f}"


def _layers(config) -> str:
  """`encoder+decoder` layers of an encoder-decoder, `L` of a decoder-only model."""
  if hasattr(config, "num_encoder_layers"):
    return f"{config.num_encoder_layers}+{config.num_decoder_layers}"
  return str(config.num_layers)


def format_report(report: AotReport, device_memory_gib: float | None = None) -> str:
  """A plain-text table of the report (GiB per device), with a fit verdict when a size is given."""
  c, p = report.config, report.params
  n_dev = math.prod(report.mesh_shape.values())
  mesh = ",".join(f"{k}={v}" for k, v in report.mesh_shape.items())
  lines = [
    f"model: {type(c).__name__} d_model={c.d_model} d_ff={c.d_ff} heads={c.num_heads}x"
    f"{c.head_dim} layers={_layers(c)} vocab={c.vocab_size} "
    f"params={p.num_params / 1e9:.2f}B ({c.param_dtype}, activations {c.dtype}, "
    f"remat {c.remat_policy})",
    f"mesh: {mesh} ({n_dev} {report.platform} devices)",
    f"parameters: {_gib(p.total_bytes)} GiB on one device -> {_gib(p.per_device_bytes)} GiB per "
    f"device sharded ({p.total_bytes / max(p.per_device_bytes, 1):.1f}x less)",
    "",
    "step   remat  lower_s  compile_s  args_GiB  temp_GiB  out_GiB  peak_GiB"
    + ("  fits" if device_memory_gib else ""),
  ]
  for s in report.steps:
    row = (
      f"{s.name:<6} {s.remat_policy or '-':<5}  {s.lower_seconds:7.1f}  {s.compile_seconds:9.1f}  "
      f"{_gib(s.argument_bytes):>8}  {_gib(s.temp_bytes):>8}  "
      f"{_gib(s.output_bytes):>7}  {_gib(s.peak_bytes):>8}"
    )
    if device_memory_gib:
      peak = s.peak_bytes
      row += "  " + ("?" if peak is None else "yes" if peak <= device_memory_gib * GIB else "NO")
    lines.append(row)
  comparison = remat_comparison(report)
  if comparison:
    lines.append(comparison)
  if device_memory_gib:
    one = "yes" if p.total_bytes <= device_memory_gib * GIB else "NO"
    lines.append(f"unsharded parameters alone fit one {device_memory_gib:g} GiB device: {one}")
  return "\n".join(lines)


def report_dict(report: AotReport) -> dict:
  """JSON-ready form of the report (for `--json`)."""
  return {
    "config": report.config.to_dict(),
    "mesh": report.mesh_shape,
    "platform": report.platform,
    "params": dataclasses.asdict(report.params),
    "steps": [dict(dataclasses.asdict(s), peak_bytes=s.peak_bytes) for s in report.steps],
  }
