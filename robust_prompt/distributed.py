"""Multi-host start-up through JAX's own runtime (`jax.distributed`).

On a TPU VM pod and under SLURM, `jax.distributed.initialize()` finds the coordinator, the number of
processes and this process's id by itself; elsewhere they come from flags or from the environment
variables `ROBUST_PROMPT_COORDINATOR`, `ROBUST_PROMPT_NUM_PROCESSES` and `ROBUST_PROMPT_PROCESS_ID`.
This must run before anything touches a jax device.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
  """How to start (or not start) the multi-host runtime.

  Attributes:
    mode: "auto" (start when a cluster or coordinator is detected), "on" (always), "off" (never).
    coordinator_address: "host:port" of process 0, or None to detect.
    num_processes: total processes, or None to detect.
    process_id: this process's id in [0, num_processes), or None to detect.
    local_device_ids: devices of this host to use (e.g. one GPU per process under SLURM).
    initialization_timeout: seconds to wait for all processes to join before failing (a missing
      worker otherwise stalls the whole pod silently).
  """

  mode: str = "auto"
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  initialization_timeout: int = 300


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def spec_from_env(spec: DistributedSpec) -> DistributedSpec:
  """Fills unset fields of `spec` from the ROBUST_PROMPT_* environment variables."""
  return dataclasses.replace(
    spec,
    coordinator_address=spec.coordinator_address or os.environ.get("ROBUST_PROMPT_COORDINATOR"),
    num_processes=spec.num_processes
    if spec.num_processes is not None
    else _env_int("ROBUST_PROMPT_NUM_PROCESSES"),
    process_id=spec.process_id
    if spec.process_id is not None
    else _env_int("ROBUST_PROMPT_PROCESS_ID"),
  )


def cluster_detected() -> bool:
  """True on a multi-worker TPU VM pod or inside a multi-task SLURM job."""
  hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hostnames:
    return True
  slurm_tasks = _env_int("SLURM_NTASKS") or _env_int("SLURM_NPROCS")
  return bool(os.environ.get("SLURM_JOB_ID")) and (slurm_tasks or 1) > 1


def maybe_initialize(spec: DistributedSpec) -> bool:
  """Starts `jax.distributed` when `spec` asks for it; returns whether it was started.

  Raises:
    ValueError: a coordinator was given without the process count / id (or the reverse).
  """
  spec = spec_from_env(spec)
  explicit = spec.coordinator_address is not None
  if spec.mode == "off" or (spec.mode == "auto" and not explicit and not cluster_detected()):
    return False
  if explicit and (spec.num_processes is None or spec.process_id is None):
    raise ValueError(
      "--coordinator_address needs --num_processes and --process_id (or ROBUST_PROMPT_NUM_PROCESSES"
      " and ROBUST_PROMPT_PROCESS_ID); on a TPU pod or under SLURM leave all three unset"
    )
  if explicit and not 0 <= spec.process_id < spec.num_processes:
    raise ValueError(
      f"--process_id {spec.process_id} must lie in [0, --num_processes={spec.num_processes})"
    )
  import jax

  if not jax.config.jax_cpu_collectives_implementation:
    # CPU devices of different processes talk over gloo (TCP); without it every cross-process
    # collective on CPU fails. Harmless on TPU / GPU, whose collectives do not use it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs: dict = {"initialization_timeout": int(spec.initialization_timeout)}
  if explicit:
    kwargs.update(
      coordinator_address=spec.coordinator_address,
      num_processes=spec.num_processes,
      process_id=spec.process_id,
    )
  if spec.local_device_ids is not None:
    kwargs["local_device_ids"] = list(spec.local_device_ids)
  jax.distributed.initialize(**kwargs)
  return True
