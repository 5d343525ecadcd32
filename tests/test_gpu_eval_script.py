"""benchmarks/gpu_eval.py at its tiny size on the CPU: both of its steps, both model families.

The script is meant for one run on a GPU; here it runs the same code paths at a tiny size: the
prepare step (MMLU rendered and tokenized; synthetic MMLU-like questions when ../shared is
absent) in this process, then the device step in a subprocess where seqio and TensorFlow cannot
be imported, as on the GPU image. Its useful-FLOP count (the numerator of MFU) is checked against
XLA's own count of the step.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_eval.py"

# A sitecustomize that makes these packages unimportable (ModuleNotFoundError), as on the GPU image.
HIDE_PACKAGES = textwrap.dedent(
  """
  import importlib.abc, importlib.machinery, sys

  HIDDEN = ("seqio", "tensorflow", "tensorflow_text", "gin")


  class _Missing(importlib.abc.Loader):
    def create_module(self, spec):
      raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):
      pass


  class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
      if name.split(".")[0] in HIDDEN:
        return importlib.machinery.ModuleSpec(name, _Missing())
      return None


  sys.meta_path.insert(0, _Hide())
  """
)


def _gpu_eval():
  if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
  return importlib.import_module("benchmarks.gpu_eval")


def test_tiny_run_without_seqio_reports_ratio_mfu_and_agrees_with_pytorch(tmp_path):
  gpu_eval = _gpu_eval()
  inputs = tmp_path / "inputs"
  assert (
    gpu_eval.main(["--prepare", "--inputs", str(inputs), "--size", "tiny", "--questions", "2"]) == 0
  )
  prepared = {f: json.loads((inputs / f"{f}.json").read_text()) for f in gpu_eval.FAMILIES}
  hide = tmp_path / "hide"
  hide.mkdir()
  (hide / "sitecustomize.py").write_text(HIDE_PACKAGES)
  out = tmp_path / "results.json"
  command = [
    sys.executable,
    str(SCRIPT),
    "--inputs",
    str(inputs),
    "--size",
    "tiny",
    "--dtype",
    "float32",
    "--compile_threads",
    "2",
    "--repeats",
    "1",
    "--json",
    str(out),
  ]
  env = dict(os.environ, PYTHONPATH=str(hide))
  proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  assert "seqio is not installed: running from prepared token ids only" in proc.stdout
  for line in ("ratio ours / torch (warm):", "MFU ours", "agreement (float32)"):
    assert proc.stdout.count(line) == 2, line
  results = json.loads(out.read_text())
  for family in gpu_eval.FAMILIES:
    r = results["families"][family]
    assert r["pairs"] == 2 * prepared[family]["questions"] == 4
    assert r["requests"] == 4 * r["pairs"]
    assert r["ratio"] > 0 and r["ratio_cold"] > 0
    assert 0 < r["ours"]["mfu"] and 0 < r["torch"]["per_request"]["mfu"]
    assert r["useful_flops"] > 0 and r["peak_flops"] > 0
    # Compiled ahead: each shape once (none again by the call), none in the warm passes.
    assert r["ours"]["cold_xla_compiles"] == r["plan"]["shapes"] >= 1
    assert r["ours"]["warm_xla_compiles"] == 0
    check = r["agreement"]
    assert check["ok"] and check["max_abs_diff"] <= 1e-3, check
    assert check["predictions_agree"] == r["pairs"]
  assert "logits_cache" in results["families"]["decoder"]["torch"]
  assert {p["phase"] for p in results["phases"]} >= {"ours: first pass", "ours: warm pass 1"}


@pytest.mark.parametrize("family", ["t5", "decoder"])
def test_useful_flops_match_xla_count_of_an_unpadded_step(family):
  """One row, every token real, 4 options of 3 tokens: XLA counts what the formula counts, plus
  norms, softmax and (decoder) the masked half of the causal attention square."""
  import jax
  import jax.numpy as jnp

  from robust_prompt.model import prompted
  from robust_prompt.model.config import T5Config
  from robust_prompt.model.decoder_config import DecoderConfig

  gpu_eval = _gpu_eval()
  common = dict(vocab_size=4096, d_model=256, num_heads=4, head_dim=64, d_ff=512)
  if family == "t5":
    config = T5Config(num_encoder_layers=2, num_decoder_layers=2, **common)
  else:
    config = DecoderConfig(num_layers=2, num_kv_heads=2, bos_token_id=1, **common)
  model = prompted.for_config(config)
  t, o, s = 96, 4, 3
  ids = jnp.ones((1, t), jnp.int32)
  options = jnp.ones((1, o, s), jnp.int32)
  init_args = (ids, ids, ids[:, :s], ids[:, :s]) if family == "t5" else (ids, ids)
  params = jax.eval_shape(lambda: model.module.init(jax.random.PRNGKey(0), *init_args))["params"]
  batch = dict(input_ids=ids, input_mask=ids, option_ids=options, option_mask=options)
  step = jax.jit(lambda p, b: model.option_log_probs(p, None, b))
  cost = step.lower(params, batch).compile().cost_analysis()
  xla = float((cost[0] if isinstance(cost, list) else cost)["flops"])
  useful = gpu_eval.pair_flops(family, config, t, [s] * o)
  assert useful <= xla <= 1.06 * useful, (xla, useful)
