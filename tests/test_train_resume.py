"""Checkpoints and exact resume: 4 steps == 2 steps + restart from the checkpoint dir + 2 steps."""

import json
import os

import jax
import numpy as np
import pytest
import seqio
from helpers import tiny_t5_config

from robust_prompt import partitioning
from robust_prompt.data.example import Example
from robust_prompt.instructions.schema import Instruction
from robust_prompt.model import soft_prompt as prompt_lib
from robust_prompt.model.prompted_t5 import PromptedT5
from robust_prompt.model.t5 import T5
from robust_prompt.train import checkpointing, grouping, loop, metrics_log, objective
from robust_prompt.train import state as state_lib

TINY = tiny_t5_config(d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1, num_decoder_layers=1)


def fresh_run(model_dir, num_steps, seed=0, keep=3):
  """Builds every object anew (as a new process would) and trains into `model_dir`."""
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  model = T5(TINY)
  params = partitioning.init_sharded(model, TINY, mesh, rng=jax.random.PRNGKey(7))
  examples = [
    Example(
      id=f"toy:{i}",
      task="toy:gen",
      fields={"input": f"say {i}"},
      targets=(f"{i}", f"#{i}"),
    )
    for i in range(6)
  ]
  instructions = [
    Instruction(f"i{j}", ("toy:*",), f"v{j} {{input}}", "none", "option_text", "unobserved", "h")
    for j in range(3)
  ]
  data = grouping.GroupedData(
    examples,
    instructions,
    seqio.ByteVocabulary(),
    groups_per_batch=2,
    members_per_group=2,
    max_input_length=16,
    max_target_length=4,
    seed=seed,
  )
  tx, schedule = state_lib.build_optimizer("adafactor", 0.3, "linear", 1, 10)
  return loop.train(
    model=PromptedT5(TINY),
    frozen_params=params,
    data=data,
    model_dir=str(model_dir),
    mesh=mesh,
    num_steps=num_steps,
    prompt_length=3,
    optimizer=tx,
    learning_rate_fn=schedule,
    loss_config=objective.LossConfig(lambda_sim=1.0, lambda_kl=1.0),
    seed=seed,
    save_every=2,
    keep_checkpoints=keep,
    log_every=1,
    write_config=lambda: "# operative config\n",
    progress=False,
  )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("straight")
  return model_dir, fresh_run(model_dir, 4)


def test_resume_is_bit_identical(straight, tmp_path):
  _, full = straight
  first = fresh_run(tmp_path, 2)
  assert first.step == 2 and first.resumed_from is None
  assert not np.array_equal(first.prompt, full.prompt)
  resumed = fresh_run(tmp_path, 4)
  assert resumed.resumed_from == 2 and resumed.step == 4
  np.testing.assert_array_equal(resumed.prompt, full.prompt)
  np.testing.assert_array_equal(prompt_lib.load_prompt(tmp_path / "prompt.npy"), full.prompt)
  # The resumed run logged steps 3 and 4 after the first run's 1 and 2, with the same values.
  logged = metrics_log.read_metrics(str(tmp_path))
  assert [r["step"] for r in logged] == [1, 2, 3, 4]
  reference = metrics_log.read_metrics(str(straight[0]))
  for got, want in zip(logged, reference):
    assert got["loss"] == want["loss"]


def test_outputs_beside_the_checkpoints(straight):
  model_dir, full = straight
  steps = sorted(int(s) for s in os.listdir(model_dir / checkpointing.CHECKPOINT_SUBDIR))
  assert steps == [2, 4]
  np.testing.assert_array_equal(np.load(model_dir / "prompt.npy"), full.prompt)
  assert (model_dir / "config.gin").read_text() == "# operative config\n"
  records = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
  assert {"loss", "ce", "align", "kl", "kl_tokens", "learning_rate", "steps_per_sec"} <= set(
    records[0]
  )
  events = os.listdir(model_dir / metrics_log.TB_SUBDIR / "train")
  assert any(name.startswith("events.out.tfevents") for name in events)


def test_resume_with_another_seed_is_refused(straight, tmp_path):
  model_dir, _ = straight
  with pytest.raises(checkpointing.ResumeMismatchError, match="seed: checkpoint 0 != now 1"):
    fresh_run(model_dir, 6, seed=1)
