"""Grouped data, the train step (frozen model, prompt-only updates), sharding and accumulation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
from helpers import instruction, tiny_t5_config

from robust_prompt import partitioning
from robust_prompt.data.example import Example
from robust_prompt.instructions.schema import Instruction
from robust_prompt.model.prompted_t5 import PromptedT5
from robust_prompt.model.t5 import T5
from robust_prompt.train import grouping, objective
from robust_prompt.train import state as state_lib
from robust_prompt.train.step import accumulate_gradients, make_train_step, split_microbatches

RULES = partitioning.DEFAULT_RULES
TINY = tiny_t5_config(d_ff=24, num_encoder_layers=1, num_decoder_layers=1)


def make_instruction(i: int, split: str = "unobserved", template: str | None = None) -> Instruction:
  template = template or f"Variant {i}: {{question}}\n{{options}}"
  return instruction(template, id=f"ins_{i}", tasks=("toy:*",), split=split)


def make_examples(n: int = 10):
  return [
    Example(
      id=f"toy:mc:{i}",
      task="toy:mc",
      fields={"question": f"What is {i} + {i}?"},
      options=(str(2 * i), str(2 * i + 1), "zero"),
      answer=0,
      correct=(0,),
    )
    for i in range(n)
  ]


def make_data(g=4, k=2, seed=0, **kw) -> grouping.GroupedData:
  instructions = [make_instruction(0, "observed")] + [make_instruction(i) for i in range(1, 4)]
  return grouping.GroupedData(
    make_examples(),
    instructions,
    seqio.ByteVocabulary(),
    groups_per_batch=g,
    members_per_group=k,
    max_input_length=48,
    max_target_length=4,
    seed=seed,
    **kw,
  )


# -- data ------------------------------------------------------------------------------------------


def test_grouped_batches_are_a_pure_function_of_seed_and_step():
  a, b = make_data(), make_data()
  for step in (0, 3, 7):  # 7 * 4 groups > 10 examples: crosses epochs
    for key, value in a.batch(step).items():
      np.testing.assert_array_equal(value, b.batch(step)[key], err_msg=key)
  assert not np.array_equal(a.batch(0)["input_ids"], make_data(seed=1).batch(0)["input_ids"])
  assert not np.array_equal(a.batch(0)["input_ids"], a.batch(1)["input_ids"])


def test_grouped_batch_layout_and_anchor():
  data = make_data(g=4, k=3)
  batch = data.batch(0)
  assert batch["input_ids"].shape == (12, 48) and batch["target_ids"].shape == (12, 4)
  assert batch["option_ids"].shape == (12, 3, 4)
  np.testing.assert_array_equal(batch["group_ids"], np.repeat(np.arange(4), 3))
  np.testing.assert_array_equal(batch["is_anchor"], np.tile([1, 0, 0], 4))
  vocab = seqio.ByteVocabulary()
  for g in range(4):
    rows = batch["input_ids"][g * 3 : g * 3 + 3]
    texts = [vocab.decode([int(t) for t in r if t > 1]) for r in rows]
    assert texts[0].startswith("Variant 0")  # the observed instruction is the anchor
    assert len(set(texts)) == 3  # K different phrasings of one example
    assert len({t.split(": ", 1)[1] for t in texts}) == 1
  # Multiple choice: the target is the answer's label, which is option `answer`.
  for r in range(12):
    np.testing.assert_array_equal(
      batch["target_ids"][r], batch["option_ids"][r, batch["answer"][r]]
    )


def test_anchor_choices():
  vocab = seqio.ByteVocabulary()

  def anchors(**kw):
    batch = make_data(g=4, k=2, **kw).batch(0)
    rows = batch["input_ids"][batch["is_anchor"] == 1]
    return [vocab.decode([int(t) for t in r if t > 1]).split(":")[0] for r in rows]

  assert anchors() == ["Variant 0"] * 4  # the observed instruction
  assert anchors(anchor="first") == ["Variant 0"] * 4
  assert len(set(anchors(anchor="random", seed=3) + anchors(anchor="random", seed=4))) > 1
  with pytest.raises(ValueError, match="anchor must be one of"):
    make_data(anchor="best")


def test_check_disjoint_names_the_overlap():
  train = [make_instruction(1), make_instruction(2)]
  grouping.check_disjoint(train, [make_instruction(3)])
  copy = Instruction(**{**make_instruction(2).__dict__, "id": "eval_9", "file": "heldout.jsonl"})
  with pytest.raises(grouping.OverlapError, match=r"'ins_2'.*'eval_9'.*same template"):
    grouping.check_disjoint(train, [copy])
  with pytest.raises(grouping.OverlapError, match=r"'ins_1'.*same id"):
    grouping.check_disjoint(train, [make_instruction(1, template="other {question}")])


def test_task_without_instruction_is_refused():
  other = Instruction(**{**make_instruction(1).__dict__, "tasks": ("mmlu:*",)})
  with pytest.raises(ValueError, match="task 'toy:mc' has no training instruction"):
    grouping.GroupedData(
      make_examples(), [other], seqio.ByteVocabulary(), groups_per_batch=2, members_per_group=2
    )


def test_microbatches_hold_whole_groups():
  batch = {"group_ids": jnp.repeat(jnp.arange(4), 2), "x": jnp.arange(8)}
  micro = split_microbatches(batch, num_groups=4, num_microbatches=2)
  np.testing.assert_array_equal(micro["group_ids"], [[0, 0, 2, 2], [1, 1, 3, 3]])
  with pytest.raises(ValueError, match="whole groups"):
    split_microbatches(batch, num_groups=4, num_microbatches=3)


# -- step ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_params():
  model = T5(TINY)
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  return jax.device_get(partitioning.init_sharded(model, TINY, mesh))


def run_steps(host_params, mesh, num_steps=2, loss=None, microbatches=1, optimizer="sgd"):
  """Runs `num_steps` jitted steps on `mesh`; returns (prompts per step, metrics, state, params).

  SGD by default: its update is linear in the gradient, so float reassociation across shards
  stays at the 1e-7 level (Adam's first steps are ~lr * sign(g) and amplify it for tiny g).
  """
  model = T5(TINY)
  shardings = partitioning.param_shardings(mesh, partitioning.logical_param_specs(model), RULES)
  params = partitioning.place_params(host_params, shardings)
  data = make_data()
  tx = state_lib.make_optimizer(optimizer, 0.1)
  state, state_sh = state_lib.create_state(
    jax.random.PRNGKey(0), tx, 3, TINY.d_model, None, mesh, RULES
  )
  step = make_train_step(
    model=PromptedT5(TINY),
    tx=tx,
    loss_config=loss or objective.LossConfig(lambda_sim=0.5, lambda_kl=0.5),
    mesh=mesh,
    rules=RULES,
    state_shardings=state_sh,
    frozen_shardings=jax.tree.map(lambda x: x.sharding, params),
    example_batch=data.batch(0),
    num_groups=data.G,
    num_microbatches=microbatches,
  )
  prompts, metrics = [np.asarray(state.params["prompt"])], []
  for i in range(num_steps):
    state, m = step(state, params, data.batch(i), jax.random.PRNGKey(1))
    jax.block_until_ready(state)  # one step at a time: XLA CPU collectives on 2 cores
    prompts.append(np.asarray(state.params["prompt"]))
    metrics.append(jax.device_get(m))
  return prompts, metrics, state, params


@pytest.fixture(scope="module")
def single_device(host_params):
  return run_steps(host_params, partitioning.make_mesh(1, 1, jax.devices()[:1]))


def test_one_step_changes_only_the_prompt(host_params, single_device):
  prompts, metrics, state, params = single_device
  assert not np.allclose(prompts[0], prompts[1])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), host_params)
  assert int(state.step) == 2
  for name in ("loss", "ce", "align", "kl", "kl_options", "w_align", "w_kl", "grad_norm"):
    assert np.isfinite(metrics[0][name]), name
  np.testing.assert_allclose(
    metrics[0]["loss"], metrics[0]["ce"] + metrics[0]["w_align"] + metrics[0]["w_kl"], rtol=1e-6
  )


@pytest.mark.parametrize("data,model", [(2, 4), (8, 1)])
def test_sharded_steps_equal_single_device(host_params, single_device, data, model):
  mesh = partitioning.make_mesh(data, model)
  prompts, metrics, state, _ = run_steps(host_params, mesh)
  for got, want in zip(prompts, single_device[0]):
    np.testing.assert_allclose(got, want, atol=1e-5)
  for got, want in zip(metrics, single_device[1]):
    for name in want:
      np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding.mesh.shape == mesh.shape  # every leaf placed on the mesh


@pytest.mark.parametrize("microbatches", [2, 4])  # G=4, K=2: M = K and M > K
def test_gradient_accumulation_equals_full_batch(host_params, single_device, microbatches):
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  prompts, metrics, _, _ = run_steps(host_params, mesh, microbatches=microbatches)
  for got, want in zip(prompts, single_device[0]):
    np.testing.assert_allclose(got, want, atol=1e-5)
  for name in ("loss", "ce", "align", "kl", "kl_options", "grad_norm"):
    np.testing.assert_allclose(metrics[0][name], single_device[1][0][name], atol=1e-5)


@pytest.mark.parametrize(
  "g,k,kl_over,microbatches",
  # M > K, M = K and M < K; M = G (one group per microbatch) by (4, 4, 4). (M = 8 of G = 8, K = 2,
  # another M > K = G case, is one more compile of the heaviest batch: in the slow run.)
  [
    (8, 2, "auto", (2, 4)),
    (4, 4, "tokens", (2, 4)),
    pytest.param(8, 2, "auto", (8,), marks=pytest.mark.slow),
  ],
)
def test_accumulated_terms_and_gradients_equal_full_batch(host_params, g, k, kl_over, microbatches):
  model = PromptedT5(TINY)
  # Large weights, so the alignment and KL terms (small for a random tiny model) dominate the
  # gradient compared below.
  config = objective.LossConfig(lambda_sim=50.0, lambda_kl=50.0, kl_over=kl_over)
  loss_fn = functools.partial(objective.compute_loss, model=model, config=config)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  batch = jax.tree.map(jnp.asarray, make_data(g=g, k=k).batch(0))
  prompt = jnp.asarray(np.random.default_rng(0).normal(size=(3, TINY.d_model)), jnp.float32)
  params = jax.tree.map(jnp.asarray, host_params)

  def run(m):
    fn = jax.jit(lambda p: accumulate_gradients(grad_fn, p, params, batch, g, m))
    return jax.device_get(jax.block_until_ready(fn(prompt)))

  full_grad, full = run(1)
  assert full["align"] > 1e-4 and full["kl"] > 1e-4  # the terms are really compared
  for m in microbatches:
    grad, metrics = run(m)
    assert set(metrics) == set(full)
    for name, want in full.items():
      # float32 sums in another order: ~1e-4 relative on the small KL terms.
      np.testing.assert_allclose(metrics[name], want, rtol=3e-4, atol=1e-8, err_msg=f"M={m} {name}")
    np.testing.assert_allclose(grad, full_grad, rtol=1e-4, atol=1e-6, err_msg=f"M={m} grad")


def test_option_accuracy_exact_when_microbatches_differ_in_option_rows(host_params):
  # Groups 0-1 lose their options: microbatch 0 has no option rows, microbatch 1 has all of them,
  # so averaging per-microbatch accuracies (0 and a) would give a / 2 instead of a.
  g, k = 4, 2
  model = PromptedT5(TINY)
  config = objective.LossConfig(lambda_sim=0.0, lambda_kl=1.0, kl_over="auto")
  grad_fn = jax.value_and_grad(
    functools.partial(objective.compute_loss, model=model, config=config), has_aux=True
  )
  batch = make_data(g=g, k=k).batch(0)
  option_mask = np.array(batch["option_mask"])
  option_mask[: 2 * k] = 0
  batch = jax.tree.map(jnp.asarray, {**batch, "option_mask": option_mask})
  prompt = jnp.asarray(np.random.default_rng(1).normal(size=(3, TINY.d_model)), jnp.float32)
  params = jax.tree.map(jnp.asarray, host_params)
  got = {}
  for m in (1, 2):
    fn = jax.jit(lambda p, m=m: accumulate_gradients(grad_fn, p, params, batch, g, m))
    got[m] = jax.device_get(jax.block_until_ready(fn(prompt)))[1]
  assert got[1]["option_rows"] == 2 * k and got[2]["option_rows"] == 2 * k
  for name in ("option_accuracy", "option_hits", "kl", "loss"):
    np.testing.assert_allclose(got[2][name], got[1][name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_objective_variants_run(host_params):
  model = PromptedT5(TINY)
  batch = jax.tree.map(jnp.asarray, make_data().batch(0))
  prompt = jnp.ones((3, TINY.d_model)) * 0.1
  config = objective.LossConfig(
    lambda_sim=1.0, lambda_kl=1.0, alignment="info_nce", kl_over="tokens", pooling="input"
  )
  loss, metrics = jax.jit(
    lambda p: objective.compute_loss(p, host_params, batch, model=model, config=config)
  )(prompt)
  assert np.isfinite(loss) and "kl_options" not in metrics and metrics["kl_tokens"] > 0
  # Plain prompt tuning: only the cross-entropy is computed (both lambdas 0).
  plain = jax.eval_shape(
    lambda p: objective.compute_loss(
      p, host_params, batch, model=model, config=objective.LossConfig()
    ),
    prompt,
  )
  assert set(plain[1]) == {"ce", "loss"}


def test_frozen_weights_equal_the_loaded_checkpoint(tmp_path_factory, spiece_path):
  from conftest import make_tiny_hf_t5

  from robust_prompt.checkpoints.resolve import load_model

  hf_dir = make_tiny_hf_t5(tmp_path_factory.mktemp("hf"), "t5_1_0", spiece_path)
  mesh = partitioning.make_mesh(2, 4)
  loaded = load_model(str(hf_dir), mesh=mesh)
  reference = load_model(str(hf_dir)).params  # numpy, straight from the files
  model = PromptedT5(loaded.config)
  data = grouping.GroupedData(
    make_examples(4),
    [make_instruction(0, "observed"), make_instruction(1)],
    loaded.vocab,
    groups_per_batch=4,
    members_per_group=2,
    max_input_length=24,
    max_target_length=4,
  )
  tx = state_lib.make_optimizer("adafactor", 0.3)
  state, state_sh = state_lib.create_state(
    jax.random.PRNGKey(0), tx, 2, loaded.config.d_model, None, mesh, RULES
  )
  before = np.asarray(state.params["prompt"])
  step = make_train_step(
    model=model,
    tx=tx,
    loss_config=objective.LossConfig(lambda_sim=1.0, lambda_kl=1.0),
    mesh=mesh,
    rules=RULES,
    state_shardings=state_sh,
    frozen_shardings=jax.tree.map(lambda x: x.sharding, loaded.params),
    example_batch=data.batch(0),
    num_groups=data.G,
  )
  state, metrics = step(state, loaded.params, data.batch(0), jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  # Only the prompt has optimizer state (Adafactor statistics no larger than it), none for the
  # model, and all of it lives on the mesh.
  for leaf in jax.tree.leaves(state.opt_state):
    assert leaf.size <= 2 * loaded.config.d_model and leaf.sharding.mesh.shape == mesh.shape
  assert np.isfinite(float(metrics["loss"]))
  assert not np.allclose(np.asarray(state.params["prompt"]), before)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), reference)
