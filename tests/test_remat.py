"""Rematerialisation policies: same parameters, same prompt gradients, less train-step memory."""

from __future__ import annotations

import contextlib
import functools
import io
import json

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_t5_config

from robust_prompt import aot, partitioning
from robust_prompt.checkpoints import orbax_io, resolve
from robust_prompt.cli import aot as aot_cli
from robust_prompt.cli import gin_utils
from robust_prompt.model import prompted, remat
from robust_prompt.model.config import T5Config
from robust_prompt.model.decoder_config import DecoderConfig
from robust_prompt.train import objective

T5_TINY = tiny_t5_config(vocab_size=64)
DECODER_TINY = DecoderConfig(
  vocab_size=64, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4, d_ff=32,
  max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip
CONFIGS = {"t5": T5_TINY, "decoder": DECODER_TINY}
# Every term of the objective: CE, alignment over the group, KL to the anchor over the options.
LOSSES = objective.LossConfig(lambda_sim=1.0, lambda_kl=1.0)
PROMPT_LENGTH = 3


def _params(config):
  module = prompted.for_config(config).module
  ids = jnp.ones((1, 1), jnp.int32)
  n = int(getattr(type(module), "NUM_INIT_INPUTS", 4))
  return partitioning.unbox(module.init(jax.random.PRNGKey(0), *(ids,) * n))["params"]


def _batch(g: int = 2, k: int = 2, t: int = 10, s: int = 4, o: int = 3, s_opt: int = 3) -> dict:
  """A grouped batch (`grouping.GroupedData.batch` layout) of random tokens, right-padded."""
  rng = np.random.default_rng(0)
  b = g * k
  lengths = rng.integers(4, t + 1, size=b)
  input_mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
  target_mask = (np.arange(s)[None, :] < rng.integers(1, s + 1, size=b)[:, None]).astype(np.int32)
  option_mask = np.ones((b, o, s_opt), np.int32)
  option_mask[:, -1, 1:] = 0  # one short option
  return {
    "input_ids": rng.integers(3, 64, size=(b, t)).astype(np.int32) * input_mask,
    "input_mask": input_mask,
    "target_ids": rng.integers(3, 64, size=(b, s)).astype(np.int32) * target_mask,
    "target_mask": target_mask,
    "group_ids": np.repeat(np.arange(g), k).astype(np.int32),
    "is_anchor": np.tile([1] + [0] * (k - 1), g).astype(np.int32),
    "answer": rng.integers(0, o, size=b).astype(np.int32),
    "option_ids": rng.integers(3, 64, size=(b, o, s_opt)).astype(np.int32) * option_mask,
    "option_mask": option_mask,
  }


@functools.cache
def _loss_and_grad(family: str, policy: str) -> tuple[np.ndarray, np.ndarray]:
  """Loss and prompt gradient of the real objective on a fixed batch (cached: compiles are slow)."""
  config = CONFIGS[family]
  params = _params(config)  # the same random weights under every policy
  batch = _batch()
  prompt = jax.random.normal(jax.random.PRNGKey(1), (PROMPT_LENGTH, config.d_model)) * 0.5
  model = prompted.for_config(config.replace(remat_policy=policy))

  def loss(p):
    return objective.compute_loss(p, params, batch, model=model, config=LOSSES)[0]

  value, grad = jax.jit(jax.value_and_grad(loss))(prompt)
  return np.asarray(value), np.asarray(grad)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_policies_keep_the_parameter_tree(family):
  base = jax.tree.map(lambda x: (x.shape, x.dtype), _params(CONFIGS[family]))
  for policy in ("full", "dots"):
    tree = jax.tree.map(
      lambda x: (x.shape, x.dtype), _params(CONFIGS[family].replace(remat_policy=policy))
    )
    assert tree == base, policy


@pytest.mark.parametrize("policy", ["full", "dots"])
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_prompt_gradients_equal_those_without_remat(family, policy):
  loss0, grad0 = _loss_and_grad(family, "none")
  loss1, grad1 = _loss_and_grad(family, policy)
  assert np.all(np.isfinite(grad0)) and float(np.abs(grad0).max()) > 1e-3  # a real gradient
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad1, grad0, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # greedy decoding does not differentiate: remat only wraps the same layers
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_greedy_decoding_runs_under_remat(family):
  """Decoding (T5's KV cache collection, the decoder-only cache) is unchanged by the policy."""
  config = CONFIGS[family]
  params = _params(config)
  batch = _batch()
  prompt = jnp.zeros((PROMPT_LENGTH, config.d_model))
  plain, full = (
    np.asarray(prompted.for_config(config.replace(remat_policy=p)).greedy(params, prompt, batch, 4))
    for p in ("none", "full")
  )
  np.testing.assert_array_equal(full, plain)


def test_the_decoder_fork_sums_the_encoder_gradient():
  """`t5._fork` is the identity forward; backward, the sum of both copies' cotangents."""
  from robust_prompt.model import t5

  x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 4))

  def forked(v):
    here, later = t5._fork(v)
    return jnp.sum(jnp.sin(here) * later**2)

  np.testing.assert_array_equal(jnp.stack(t5._fork(x)), jnp.stack([x, x]))
  want = jax.grad(lambda v: jnp.sum(jnp.sin(v) * v**2))(x)
  np.testing.assert_allclose(jax.grad(forked)(x), want, rtol=1e-6, atol=1e-6)


def test_jax_policies():
  assert remat.jax_policy("none") is None
  assert remat.jax_policy("full") is jax.checkpoint_policies.nothing_saveable
  assert remat.jax_policy("dots") is jax.checkpoint_policies.dots_with_no_batch_dims_saveable


@pytest.mark.parametrize("config_type", [T5Config, DecoderConfig])
def test_an_unknown_policy_is_refused_clearly(config_type):
  name = config_type.__name__
  with pytest.raises(ValueError, match=rf"{name}.remat_policy='ful' is not a rematerial.*'full'"):
    config_type(remat_policy="ful")
  with pytest.raises(ValueError, match="'none', 'full', 'dots'|'none': keep"):
    remat.check_policy(None)


def test_json_round_trip_and_checkpoints_leave_the_policy_out(tmp_path):
  full = T5_TINY.replace(remat_policy="full")
  assert T5Config.from_json(full.to_json()) == full
  assert (
    DecoderConfig.from_json(DECODER_TINY.replace(remat_policy="dots").to_json()).remat_policy
    == "dots"
  )
  # A config.json written before the field existed still loads (the default policy).
  old = json.loads(T5_TINY.to_json())
  del old["remat_policy"]
  assert T5Config.from_dict(old) == T5_TINY
  # Our checkpoints store the architecture, not the run's remat policy ...
  saved = orbax_io.save_params(tmp_path / "ckpt", _params(full), full, vocab=None)
  stored = json.loads((saved / orbax_io.CONFIG_NAME).read_text())
  assert "remat_policy" not in stored
  assert orbax_io.load_config(saved) == T5_TINY
  # ... and the run's (gin's) policy wins over the stored one when loading.
  loaded = resolve._reconcile_config(T5_TINY, T5_TINY.replace(remat_policy="dots"), "ckpt")
  assert loaded.remat_policy == "dots"
  assert resolve._reconcile_config(full, None, "ckpt").remat_policy == "full"


@pytest.fixture
def gin_env():
  from robust_prompt.cli import eval as eval_cli
  from robust_prompt.cli import train as train_cli

  gin_utils.register_configurables()
  train_cli.configurables()  # the names the train/eval run files bind (as `aot` registers them)
  eval_cli.configured_settings()
  yield
  gin.clear_config()


def test_gin_binds_the_policy(gin_env):
  gin_utils.parse_gin(["models/flan_t5_small.gin"], ["T5Config.remat_policy = 'dots'"])
  assert gin_utils.model_config_from_gin().remat_policy == "dots"
  gin_utils.parse_gin(["models/qwen2_5_0_5b.gin"], ["DecoderConfig.remat_policy = 'full'"])
  assert gin_utils.model_config_from_gin().remat_policy == "full"
  # The XXL training configuration turns it on (and bfloat16 activations) by itself.
  gin_utils.parse_gin(["experiments/train_alignment_prompt_flan_t5_xxl.gin"], [])
  xxl = gin_utils.model_config_from_gin()
  assert (xxl.remat_policy, xxl.dtype) == ("full", "bfloat16")
  gin_utils.parse_gin(["models/flan_t5_small.gin"], ["T5Config.remat_policy = 'everything'"])
  with pytest.raises(gin_utils.UserError, match="remat_policy='everything' is not a remat"):
    gin_utils.model_config_from_gin()


def test_aot_reports_a_lower_train_peak_with_remat():
  """THE train step of a small T5 on 2 fake devices: the layers' activations dominate, and "full"
  remat keeps only their inputs."""
  config = T5Config(
    vocab_size=64, d_model=64, num_heads=4, head_dim=16, d_ff=256, num_encoder_layers=4,
    num_decoder_layers=1, remat_policy="full",
  )  # fmt: skip
  shapes = aot.StepShapes(
    groups=2, members=4, input_length=128, target_length=4, num_options=2, option_length=2,
    prompt_length=4,
  )  # fmt: skip
  mesh = partitioning.make_mesh(data=2, model=1, devices=jax.devices()[:2])
  report = aot.run_check(config, mesh, shapes, steps=("train",), compare_remat=("full", "none"))
  assert [s.remat_policy for s in report.steps] == ["full", "none"]  # the configured one first
  full, none = (s.peak_bytes for s in report.steps)
  assert full < 0.6 * none, (full, none)
  line = aot.remat_comparison(report)
  assert line.startswith("train peak GiB per device by remat policy: full ")
  assert "%), none " in line and line.endswith("(configured: full)")


def test_aot_cli_remat_flags(capsys):
  flags = ["--gin_file", "models/flan_t5_small.gin", "--mesh", "data=2,model=1", "--steps", "train"]
  # Shrunk to a seconds-long compile: the flags, not the sizes, are under test.
  for name, value in dict(
    d_model=16, d_ff=32, num_heads=2, head_dim=8, num_encoder_layers=1, num_decoder_layers=1
  ).items():
    flags.append(f"--gin.T5Config.{name}={value}")
  flags += ["--groups=2", "--members=2", "--input_length=16", "--target_length=4"]
  flags += ["--num_options=2", "--option_length=2", "--prompt_length=2"]
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert aot_cli.main([*flags, "--remat_policy", "full", "--compare_remat"]) == 0
  out = printed.getvalue()
  rows = [line.split()[:2] for line in out.splitlines() if line.startswith("train  ")]
  assert rows == [["train", "full"], ["train", "none"], ["train", "dots"]]
  assert "remat full" in out and "(configured: full)" in out
  assert aot_cli.main([*flags, "--remat_policy", "some"]) == 1
  assert "--remat_policy='some' is not a rematerialisation policy" in capsys.readouterr().err
