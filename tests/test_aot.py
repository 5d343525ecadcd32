"""Ahead-of-time check: Flan-T5 XL/XXL train and eval steps compile on a 2-D mesh of fake devices.

No weights are allocated: parameters, state and batches are sharded `ShapeDtypeStruct`s.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys

import jax
import pytest

from robust_prompt import aot, partitioning
from robust_prompt.cli import aot as aot_cli
from robust_prompt.model.config import T5Config
from robust_prompt.model.prompted_t5 import PromptedT5

GIB = 1024**3
TINY = T5Config(
  vocab_size=64, d_model=16, num_heads=4, head_dim=4, d_ff=32, num_encoder_layers=1,
  num_decoder_layers=1,
)  # fmt: skip
SMALL_SHAPES = dict(
  groups=2, members=2, eval_batch=4, input_length=64, target_length=8, num_options=2,
  option_length=4, prompt_length=8,
)  # fmt: skip


def t5_1_1_param_count(c: T5Config) -> int:
  """Parameters of a T5 1.1 (gated-GELU, untied) model, counted from the architecture."""
  h, f, inner = c.d_model, c.d_ff, c.num_heads * c.head_dim
  attention = 4 * h * inner
  mlp = 3 * h * f
  encoder = c.num_encoder_layers * (attention + mlp + 2 * h) + h
  decoder = c.num_decoder_layers * (2 * attention + mlp + 3 * h) + h
  relpos = 2 * c.num_heads * c.relative_attention_num_buckets
  return 2 * c.vocab_size * h + encoder + decoder + relpos


def test_param_memory_counts_shards():
  mesh = partitioning.make_mesh(data=2, model=4)
  abstract = aot.abstract_params(PromptedT5(TINY), mesh)
  mem = aot.param_memory(abstract)
  assert mem.num_params == t5_1_1_param_count(TINY)
  assert mem.total_bytes == 4 * mem.num_params
  # The embedding [V, H] is split 4 ways over vocab; layer norms [H] are replicated.
  emb = abstract["token_embedder"]["embedding"]
  assert emb.sharding.shard_shape(emb.shape) == (16, 16)
  expected = sum(math.prod(x.sharding.shard_shape(x.shape)) * 4 for x in jax.tree.leaves(abstract))
  assert mem.per_device_bytes == expected < mem.total_bytes


def test_bad_requests_are_refused():
  mesh = partitioning.make_mesh(data=4, model=2)
  with pytest.raises(ValueError, match="data axis"):
    aot.run_check(TINY, mesh, aot.StepShapes(eval_batch=6, prompt_length=2), steps=("eval",))
  with pytest.raises(ValueError, match="unknown step"):
    aot.run_check(TINY, mesh, aot.StepShapes(), steps=("decode",))


def test_cli_needs_a_model_gin_file(capsys):
  assert aot_cli.main(["--mesh", "data=2,model=4", "--steps", "eval"]) == 1
  assert "pass a model gin file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def xl_report(tmp_path_factory):
  """`python -m robust_prompt.cli.aot` on Flan-T5 XL, (data=2, model=4), a small batch."""
  path = tmp_path_factory.mktemp("aot") / "xl.json"
  flags = [f"--{k}={v}" for k, v in SMALL_SHAPES.items()]
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    rc = aot_cli.main(
      ["--gin_file", "models/flan_t5_xl.gin", "--mesh", "data=2,model=4", "--json", str(path)]
      + ["--device_memory_gib", "8", *flags]
    )
  assert rc == 0
  return json.loads(path.read_text()), printed.getvalue()


def test_flan_t5_xl_train_and_eval_compile_sharded(xl_report):
  report, out = xl_report
  config = T5Config.from_dict(report["config"])
  assert (config.d_model, config.num_heads, config.d_ff) == (2048, 32, 5120)
  params = report["params"]
  assert params["num_params"] == t5_1_1_param_count(config)
  assert 2.8e9 < params["num_params"] < 2.9e9  # Flan-T5 XL: 2.85B
  # ~10.6 GiB of float32 params on one device; the model axis (4) splits all big kernels.
  assert params["total_bytes"] > 10 * GIB
  assert params["per_device_bytes"] < params["total_bytes"] / 3.9
  steps = {s["name"]: s for s in report["steps"]}
  assert set(steps) == {"train", "eval"}
  for step in steps.values():
    # Each device's arguments are its parameter shards plus a small batch / prompt / state.
    assert params["per_device_bytes"] <= step["argument_bytes"] < params["per_device_bytes"] * 1.05
    assert step["temp_bytes"] is not None and step["peak_bytes"] < 8 * GIB
  assert "mesh: data=2,model=4 (8 cpu devices)" in out
  assert "parameters: 10.62 GiB on one device -> 2.65 GiB per device" in out
  assert "unsharded parameters alone fit one 8 GiB device: NO" in out


@pytest.mark.slow
def test_flan_t5_xxl_fits_when_sharded_16_ways(tmp_path):
  """XXL (11.3B params, ~42 GiB fp32) on (data=2, model=8): a subprocess with 16 fake devices."""
  path = tmp_path / "xxl.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-m", "robust_prompt.cli.aot", "--gin_file", "models/flan_t5_xxl.gin"]
  cmd += ["--mesh", "data=2,model=8", "--json", str(path), "--device_memory_gib", "32"]
  cmd += [f"--{k}={v}" for k, v in SMALL_SHAPES.items()]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(path.read_text())
  params = report["params"]
  assert 11.0e9 < params["num_params"] < 11.5e9
  assert params["total_bytes"] > 40 * GIB  # too large for one 32 GiB device ...
  assert params["per_device_bytes"] < 6 * GIB  # ... about 1/8 of it on each of 16
  assert all(s["peak_bytes"] < 32 * GIB for s in report["steps"])
  assert "16 cpu devices" in proc.stdout


@pytest.mark.parametrize(
  "gin_file, params_b",
  [
    # Llama 3.2 1B (16 layers, tied output layer) in the default run: the same steps, half the
    # layers to compile of the 7B (~35 s on 2 cores) and larger ones, which are in the slow run.
    ("models/llama3_2_1b.gin", (1.2, 1.3)),
    pytest.param("models/llama_7b.gin", (6.6, 6.8), marks=pytest.mark.slow),
    # About a minute each on 2 cores: in the slow run (-m slow).
    pytest.param("models/llama_13b.gin", (12.9, 13.1), marks=pytest.mark.slow),
    pytest.param("models/llama3_1_8b.gin", (7.9, 8.1), marks=pytest.mark.slow),
  ],
)
def test_decoder_only_train_and_eval_compile_sharded(tmp_path, gin_file, params_b):
  """The decoder-only family through the same `aot`: THE train and eval steps of 1-13B Llamas
  lowered from abstract shapes on a (data=2, model=4) mesh of fake devices, memory per device."""
  path = tmp_path / "report.json"
  flags = [f"--{k}={v}" for k, v in SMALL_SHAPES.items()]
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    rc = aot_cli.main(
      ["--gin_file", gin_file, "--mesh", "data=2,model=4", "--json", str(path), *flags]
    )
  assert rc == 0
  report = json.loads(path.read_text())
  low, high = params_b
  assert low * 1e9 < report["params"]["num_params"] < high * 1e9
  steps = {s["name"]: s for s in report["steps"]}
  assert set(steps) == {"train", "eval"}
  per_device = report["params"]["per_device_bytes"]
  assert per_device < report["params"]["total_bytes"] / 3.5  # the model axis splits the kernels
  for step in steps.values():
    assert per_device <= step["argument_bytes"] < per_device * 1.05
  assert "DecoderConfig" in printed.getvalue() and "per device" in printed.getvalue()
