"""Reproducing the demo model's recipe on another machine: CPU fingerprints and prefix references.

XLA compiles for the host CPU's instruction set (e.g. with or without AVX2 / AVX-512), and the
vector width changes the order of float additions: the same recipe on the same jax gives
bit-identical parameters only on CPUs of the same kind. `demo_build.json` therefore keeps a list of
*prefix references*, one per CPU kind it was run on: the digest of the parameters after the first
`PREFIX_STEPS` steps, and per-parameter checksums (sum and L2 norm). On a CPU kind with a
reference, a re-run must match its digest bit for bit; on another kind it must match the checksums
to float tolerance (`checksums_close`).

`scripts/build_demo_model.py --add_prefix_reference` records one for the machine it runs on,
without touching the model.
"""

from __future__ import annotations

import os
import pathlib
import platform

import jax
import numpy as np

from robust_prompt.demo import tuning

# The CPU features that change XLA:CPU's generated code (vector width, fused multiply-add).
_SIMD_FLAGS = (
  "sse4_2",
  "avx",
  "avx2",
  "fma",
  "avx512f",
  "avx512bw",
  "avx512vl",
  "avx512_bf16",
  "avx512_vnni",
  "avx_vnni",
  "amx_bf16",
  "amx_tile",
  "asimd",
  "sve",
)


def cpu_fingerprint() -> dict:
  """What decides XLA:CPU's float results here: architecture, SIMD features, CPU count, jax."""
  flags: set[str] = set()
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  if cpuinfo.is_file():
    for line in cpuinfo.read_text(errors="replace").splitlines():
      key, _, value = line.partition(":")
      if key.strip() in ("flags", "Features"):
        flags.update(value.split())
        break
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {
    "machine": platform.machine(),
    "simd": sorted(flags.intersection(_SIMD_FLAGS)),
    "cpus": int(cpus or 1),
    "jax": jax.__version__,
  }


def params_checksums(params: dict) -> dict[str, list[float]]:
  """`{path: [sum, l2_norm]}` per parameter, in float64 (a tolerance-comparable digest)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    x = np.asarray(leaf, np.float64)
    out[jax.tree_util.keystr(path)] = [float(x.sum()), float(np.sqrt(np.sum(x * x)))]
  return out


def checksums_close(a: dict, b: dict, rtol: float = 1e-3) -> list[str]:
  """The parameters whose checksums differ beyond float tolerance (empty: close).

  Sums are compared relative to the parameter's L2 norm (a sum can be near zero), norms relative
  to themselves.
  """
  bad = sorted(set(a) ^ set(b))
  for path in sorted(set(a) & set(b)):
    (sum_a, norm_a), (sum_b, norm_b) = a[path], b[path]
    scale = max(norm_a, norm_b, 1e-12)
    if abs(sum_a - sum_b) > rtol * scale or abs(norm_a - norm_b) > rtol * scale:
      bad.append(path)
  return bad


def prefix_reference(config: tuning.TuneConfig, vocab, steps: int) -> dict:
  """Runs the recipe's first `steps` steps on this machine's CPU: its reference entry."""
  result = tuning.tune(config, vocab, num_steps=steps, progress=False)
  return {
    "cpu": cpu_fingerprint(),
    "steps": steps,
    "digest": tuning.params_digest(result.params),
    "checksums": params_checksums(result.params),
  }


def _same_kind(ref: dict, fingerprint: dict, steps: int) -> bool:
  return ref.get("cpu") == fingerprint and ref.get("steps") == steps


def matching_reference(references: list[dict], fingerprint: dict, steps: int) -> dict | None:
  """The reference recorded on a CPU of this kind for `steps` steps, if any."""
  return next((r for r in references if _same_kind(r, fingerprint, steps)), None)


def with_reference(references: list[dict], entry: dict) -> list[dict]:
  """`references` with `entry` added, replacing one of the same CPU kind and step count."""
  kept = [r for r in references if not _same_kind(r, entry["cpu"], entry["steps"])]
  return kept + [entry]
