"""Reproducing the demo model's recipe on another machine: CPU fingerprints and prefix references.

XLA compiles for the host CPU (its instruction set, e.g. with or without AVX2 / AVX-512, and the
microarchitecture LLVM tunes for), and that changes the order of float additions: the same recipe
on the same jax gives bit-identical parameters only on CPUs of the same kind (same processor
model, features, CPU count). `demo_build.json` therefore keeps a list of
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


# The /proc/cpuinfo fields naming the processor model. The SIMD flags alone do not decide the
# code XLA:CPU generates: LLVM also tunes it for the detected microarchitecture. Measured: an AMD
# Zen 4 gave a different digest after the same 5 steps than the (unnamed) machine that recorded
# the first reference with the same flags, while a Zen 4 and a Zen 5 agreed.
_MODEL_FIELDS = {"vendor_id": "vendor", "cpu family": "family", "model": "model"}


def parse_cpuinfo(text: str) -> tuple[dict[str, str], set[str]]:
  """`({vendor, family, model}, flags)` of the first processor listed in `/proc/cpuinfo` text.

  Fields absent (e.g. on ARM, which lists `Features` and `CPU part` instead) are "".
  """
  model = {name: "" for name in _MODEL_FIELDS.values()}
  flags: set[str] = set()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if not key:  # the blank line after the first processor's block: all cores are of one kind
      if flags:
        break
    elif key in _MODEL_FIELDS and not model[_MODEL_FIELDS[key]]:
      model[_MODEL_FIELDS[key]] = value.strip()
    elif key in ("flags", "Features") and not flags:
      flags.update(value.split())
  return model, flags


def cpu_fingerprint() -> dict:
  """What decides XLA:CPU's float results here: architecture, processor model, SIMD features,
  CPU count, jax."""
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  text = cpuinfo.read_text(errors="replace") if cpuinfo.is_file() else ""
  model, flags = parse_cpuinfo(text)
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {
    "machine": platform.machine(),
    **model,
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
