"""The decoder-only family against transformers' PyTorch Llama / Mistral / Qwen2 (float32).

Tiny random models saved with `save_pretrained` and loaded by `hf_decoder.load_hf_decoder`:
logits, greedy decodes, option log-likelihoods (each option against its (context, continuation)
pair scored alone by PyTorch), padding invariance, the soft prompt after BOS, pooled states.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_decoder_common import (
  KINDS,
  VOCAB_SIZE,
  hf_continuation_log_prob,
  hf_next_token_log_probs,
  make_hf_model,
)

from robust_prompt.checkpoints import hf_decoder
from robust_prompt.model import prompted, scoring
from robust_prompt.model.decoder import Decoder
from robust_prompt.model.prompted_decoder import PromptedDecoder

TOL = 1e-4


@functools.cache
def _step(model: PromptedDecoder, method: str, **kwargs):
  """One jitted `(params, batch) -> out` per (model, method): tests of one shape share compiles."""
  return jax.jit(lambda p, b: getattr(model, method)(p, None, b, **kwargs))


@pytest.fixture(scope="module", params=KINDS)
def loaded(request, tmp_path_factory):
  """(kind, PyTorch model, DecoderConfig, params) for each model type."""
  out = tmp_path_factory.mktemp(f"hf_{request.param}")
  torch_model = make_hf_model(out, request.param)
  config, params, _ = hf_decoder.load_hf_decoder(out)
  return request.param, torch_model, config, params


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  out = tmp_path_factory.mktemp("hf_llama_only")
  torch_model = make_hf_model(out, "llama", seed=1)
  config, params, _ = hf_decoder.load_hf_decoder(out)
  return torch_model, config, params


def _contexts(config, lengths, seed=0):
  rng = np.random.RandomState(seed)
  out = []
  for n in lengths:
    body = [int(t) for t in rng.randint(5, VOCAB_SIZE, n)]
    out.append(([config.bos_token_id] if config.bos_token_id is not None else []) + body)
  return out


def _pad(seqs, length):
  ids = np.zeros((len(seqs), length), np.int32)
  mask = np.zeros((len(seqs), length), np.int32)
  for i, s in enumerate(seqs):
    ids[i, : len(s)] = s
    mask[i, : len(s)] = 1
  return ids, mask


def _options(per_input, num_options, length):
  ids = np.zeros((len(per_input), num_options, length), np.int32)
  mask = np.zeros_like(ids)
  for b, opts in enumerate(per_input):
    for o, toks in enumerate(opts):
      ids[b, o, : len(toks)] = toks
      mask[b, o, : len(toks)] = 1
  return ids, mask


# Different lengths, options sharing a prefix ([7, 8, 9] / [7, 8]), equal options, one-token
# options, and dummy (absent) options.
OPTIONS = [
  [[7, 8, 9], [7, 8], [11]],
  [[20], [21, 22, 23, 24]],
  [[5, 6], [5, 6], [5, 7, 8]],
]


def test_family_is_registered(loaded):
  _, _, config, _ = loaded
  assert isinstance(prompted.for_config(config), PromptedDecoder)


def test_logits_match_pytorch(loaded):
  kind, torch_model, config, params = loaded
  ids = np.random.RandomState(1).randint(0, VOCAB_SIZE, (2, 24)).astype(np.int32)
  ours = jax.jit(Decoder(config).apply)({"params": params}, ids, np.ones_like(ids))
  with torch.no_grad():
    theirs = torch_model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  diff = float(np.abs(np.asarray(ours) - theirs).max())
  assert diff <= TOL, (kind, diff)
  assert np.abs(theirs).max() > 1.0  # the comparison is not between near-zero numbers


def test_option_log_probs_match_pairs_scored_alone(loaded):
  kind, torch_model, config, params = loaded
  model = PromptedDecoder(config)
  contexts = _contexts(config, (5, 9, 3))
  ids, mask = _pad(contexts, 12)
  option_ids, option_mask = _options(OPTIONS, 3, 4)
  batch = dict(input_ids=ids, input_mask=mask, option_ids=option_ids, option_mask=option_mask)
  scores = np.asarray(_step(model, "option_log_probs")(params, batch))
  for b, opts in enumerate(OPTIONS):
    for o in range(3):
      if o >= len(opts):
        assert scores[b, o] == -np.inf
        continue
      want = hf_continuation_log_prob(torch_model, contexts[b], opts[o])
      assert abs(scores[b, o] - want) <= TOL, (kind, b, o, scores[b, o], want)
  assert scores[2, 0] == pytest.approx(scores[2, 1], abs=1e-6)
  mean = np.asarray(_step(model, "option_log_probs", mode="mean")(params, batch))
  lengths = option_mask.sum(-1)
  np.testing.assert_allclose(
    mean[lengths > 0], (scores / np.maximum(lengths, 1))[lengths > 0], rtol=1e-6
  )


def test_padding_invariance(loaded):
  """The same rows padded to other lengths, and in another batch, score the same."""
  kind, _, config, params = loaded
  model = PromptedDecoder(config)
  contexts = _contexts(config, (5, 9, 3))
  option_ids, option_mask = _options(OPTIONS, 3, 4)

  def run(seqs, length, opt_ids, opt_mask, greedy=True):
    ids, mask = _pad(seqs, length)
    batch = dict(input_ids=ids, input_mask=mask, option_ids=opt_ids, option_mask=opt_mask)
    scores = np.asarray(_step(model, "option_log_probs")(params, batch))
    return scores, (np.asarray(_step(model, "greedy", steps=8)(params, batch)) if greedy else None)

  base_scores, base_tokens = run(contexts, 12, option_ids, option_mask)
  long_scores, long_tokens = run(contexts, 20, option_ids, option_mask)
  # More option slots and longer option padding, rows in another order.
  wide_ids, wide_mask = _options([OPTIONS[i] for i in (2, 0, 1)], 4, 6)
  wide_scores, _ = run([contexts[i] for i in (2, 0, 1)], 16, wide_ids, wide_mask, greedy=False)
  finite = np.isfinite(base_scores)
  np.testing.assert_allclose(long_scores[finite], base_scores[finite], atol=TOL)
  np.testing.assert_array_equal(long_tokens, base_tokens)
  reordered = wide_scores[np.argsort([2, 0, 1])][:, :3]
  np.testing.assert_allclose(reordered[finite], base_scores[finite], atol=TOL)
  assert np.all(reordered[~finite] == -np.inf)


def test_greedy_matches_generate(loaded):
  kind, torch_model, config, params = loaded
  model = PromptedDecoder(config)
  contexts = _contexts(config, (5, 9, 3))
  ids, mask = _pad(contexts, 12)
  option_ids, option_mask = _options(OPTIONS, 3, 4)  # unused by greedy: shares the compile above
  batch = dict(input_ids=ids, input_mask=mask, option_ids=option_ids, option_mask=option_mask)
  tokens = np.asarray(_step(model, "greedy", steps=8)(params, batch))
  assert config.eos_token_id not in tokens  # the comparison below runs all 8 steps
  for b, context in enumerate(contexts):
    want = torch_model.generate(
      torch.tensor([context]),
      attention_mask=torch.ones(1, len(context), dtype=torch.long),
      max_new_tokens=8,
      do_sample=False,
      eos_token_id=None,
      pad_token_id=0,
    )[0, len(context) :]
    assert tokens[b].tolist() == want.tolist(), (kind, b)


def test_greedy_stops_at_any_eos(llama):
  torch_model, config, params = llama
  contexts = _contexts(config, (6, 4), seed=3)
  ids, mask = _pad(contexts, 8)
  batch = dict(input_ids=ids, input_mask=mask)
  free = np.asarray(
    _step(PromptedDecoder(config.replace(eos_token_id=VOCAB_SIZE - 1)), "greedy", steps=8)(
      params, batch
    )
  )
  # Make row 0's third greedy token an (extra) EOS: row 0 stops there, PAD after it.
  stop = int(free[0, 2])
  assert stop not in free[0, :2].tolist()
  stopped_config = config.replace(eos_token_id=VOCAB_SIZE - 1, extra_eos_token_ids=(stop,))
  stopped = np.asarray(_step(PromptedDecoder(stopped_config), "greedy", steps=8)(params, batch))
  assert stopped[0, :3].tolist() == free[0, :3].tolist()
  assert stopped[0, 3:].tolist() == [config.pad_token_id] * 5
  want = torch_model.generate(
    torch.tensor([contexts[0]]),
    max_new_tokens=8,
    do_sample=False,
    eos_token_id=stop,
    pad_token_id=config.pad_token_id,
  )[0, len(contexts[0]) :].tolist()
  assert stopped[0, : len(want)].tolist() == want
  if stop not in free[1].tolist():
    assert stopped[1].tolist() == free[1].tolist()


def test_greedy_prefix_is_the_study_rule(llama):
  """`sum_{k<n} log p_k(y_k)` under the GREEDY prefix, n = the shortest option's length."""
  torch_model, config, params = llama
  model = PromptedDecoder(config.replace(eos_token_id=VOCAB_SIZE - 1))
  contexts = _contexts(config, (5, 7), seed=4)
  ids, mask = _pad(contexts, 8)
  per_input = [[[7, 8, 9], [30, 31, 32, 33]], [[40, 41], [42]]]
  option_ids, option_mask = _options(per_input, 2, 4)
  batch = dict(input_ids=ids, input_mask=mask, option_ids=option_ids, option_mask=option_mask)
  scores = np.asarray(_step(model, "option_log_probs", mode="greedy_prefix")(params, batch))
  for b, context in enumerate(contexts):
    out = torch_model.generate(
      torch.tensor([context]),
      max_new_tokens=4,
      do_sample=False,
      eos_token_id=None,
      pad_token_id=0,
      output_scores=True,
      return_dict_in_generate=True,
    )
    step_lp = [torch.log_softmax(s[0].double(), -1).numpy() for s in out.scores]
    n = min(len(o) for o in per_input[b])
    for o, opt in enumerate(per_input[b]):
      want = sum(step_lp[k][opt[k]] for k in range(n))
      assert abs(scores[b, o] - want) <= TOL, (b, o)


def test_soft_prompt_goes_after_bos(loaded):
  """Context = [BOS, prompt, tokens] (Llama, Mistral) or [prompt, tokens] (Qwen2, no BOS)."""
  kind, torch_model, config, params = loaded
  model = PromptedDecoder(config)
  prompt = np.random.RandomState(5).normal(0, 0.5, (3, config.d_model)).astype(np.float32)
  contexts = _contexts(config, (4, 6), seed=6)
  ids, mask = _pad(contexts, 10)
  option_ids, option_mask = _options([[[9, 10], [11]], [[12, 13, 14]]], 2, 3)
  batch = dict(input_ids=ids, input_mask=mask, option_ids=option_ids, option_mask=option_mask)

  @jax.jit
  def run(p, prompt_, b):
    ctx = model.context(p, prompt_, b)
    return (
      model.option_log_probs(p, prompt_, b, context=ctx),
      model.represent(p, prompt_, b, pooling="input", context=ctx),
      model.represent(p, prompt_, b, pooling="prompt", context=ctx),
      model.represent(p, prompt_, b, pooling="last", context=ctx),
    )

  scores, rep_input, rep_prompt, rep_last = map(np.asarray, run(params, prompt, batch))
  embed = torch_model.get_input_embeddings()
  for b, context in enumerate(contexts):
    head = 1 if config.bos_token_id is not None else 0
    for o in range(2):
      opt = option_ids[b, o][option_mask[b, o] > 0].tolist()
      if not opt:
        continue
      tokens = torch.tensor([context + opt])
      with torch.no_grad():
        e = embed(tokens)
        e = torch.cat([e[:, :head], torch.tensor(prompt)[None], e[:, head:]], dim=1)
        out = torch_model(inputs_embeds=e, output_hidden_states=True)
      lp = torch.log_softmax(out.logits[0].double(), -1).numpy()
      start = len(context) + 3  # first option token's index in the prompted sequence
      want = sum(lp[start - 1 + i, t] for i, t in enumerate(opt))
      assert abs(scores[b, o] - want) <= TOL, (kind, b, o)
      if o == 0:
        hidden = out.hidden_states[-1][0].numpy()[: len(context) + 3]  # after the final norm
        positions = np.arange(len(context) + 3)
        is_prompt = (positions >= head) & (positions < head + 3)
        np.testing.assert_allclose(rep_input[b], hidden[positions[~is_prompt]].mean(0), atol=TOL)
        np.testing.assert_allclose(rep_prompt[b], hidden[is_prompt].mean(0), atol=TOL)
        np.testing.assert_allclose(rep_last[b], hidden[len(context) + 2], atol=TOL)


def test_target_scores_and_logits(llama):
  torch_model, config, params = llama
  model = PromptedDecoder(config)
  contexts = _contexts(config, (5, 3), seed=7)
  ids, mask = _pad(contexts, 8)
  targets = [[30, 31, 32], [33], [34, 35]]  # two targets of input 0, one of input 1
  target_index = np.array([0, 0, 1], np.int32)
  target_ids, target_mask = _pad(targets, 4)
  batch = dict(
    input_ids=ids,
    input_mask=mask,
    target_ids=target_ids,
    target_mask=target_mask,
    target_index=target_index,
  )
  sums, counts = jax.jit(lambda p, b: model.target_scores(p, None, b))(params, batch)
  for r, target in enumerate(targets):
    want = hf_continuation_log_prob(torch_model, contexts[target_index[r]], target)
    assert abs(float(sums[r]) - want) <= TOL
  assert np.asarray(counts).tolist() == [3, 1, 2]
  # `logits`: one target per input, teacher forced after the context.
  one = dict(input_ids=ids, input_mask=mask, target_ids=target_ids[[0, 2]])
  logits = np.asarray(jax.jit(lambda p, b: model.logits(p, None, b))(params, one))
  assert logits.shape == (2, 4, config.vocab_size)
  for b, target in enumerate([targets[0], targets[2]]):
    lp = hf_next_token_log_probs(torch_model, contexts[b] + target)
    ours = np.asarray(jax.nn.log_softmax(jnp.asarray(logits[b, : len(target)])))
    np.testing.assert_allclose(
      ours, lp[len(contexts[b]) - 1 : len(contexts[b]) - 1 + len(target)], atol=TOL
    )
  assert scoring.token_log_probs(logits, target_ids[[0, 2]]).shape == (2, 4)


def test_represent_without_prompt(llama):
  torch_model, config, params = llama
  model = PromptedDecoder(config)
  contexts = _contexts(config, (5, 3), seed=8)
  ids, mask = _pad(contexts, 8)
  batch = dict(input_ids=ids, input_mask=mask)
  rep = np.asarray(_step(model, "represent")(params, batch))
  last = np.asarray(_step(model, "represent", pooling="last")(params, batch))
  for b, context in enumerate(contexts):
    with torch.no_grad():
      hidden = torch_model(torch.tensor([context]), output_hidden_states=True).hidden_states[-1]
    np.testing.assert_allclose(rep[b], hidden[0].numpy().mean(0), atol=TOL)
    np.testing.assert_allclose(last[b], hidden[0, -1].numpy(), atol=TOL)


def test_bfloat16_activations(llama):
  _, config, params = llama
  ids = np.random.RandomState(9).randint(0, VOCAB_SIZE, (2, 16)).astype(np.int32)
  f32 = np.asarray(jax.jit(Decoder(config).apply)({"params": params}, ids, np.ones_like(ids)))
  bf16_module = Decoder(config.replace(dtype="bfloat16"))
  bf16 = jax.jit(bf16_module.apply)({"params": params}, ids, np.ones_like(ids))
  assert bf16.dtype == jnp.float32  # logits are float32 whatever the activations
  assert np.abs(np.asarray(bf16) - f32).max() < 0.05 * np.abs(f32).max()


def test_mistral_refuses_inputs_longer_than_its_window(tmp_path):
  make_hf_model(tmp_path, "mistral")
  config, params, _ = hf_decoder.load_hf_decoder(tmp_path)
  assert config.sliding_window == 64
  model = PromptedDecoder(config)
  ids = np.ones((1, 70), np.int32)
  with pytest.raises(ValueError, match="sliding window of 64"):
    model.context(params, None, dict(input_ids=ids, input_mask=np.ones_like(ids)))
  short = np.ones((1, 60), np.int32)
  batch = dict(input_ids=short, input_mask=np.ones_like(short))
  with pytest.raises(ValueError, match="sliding window"):
    model.greedy(params, None, batch, 8)  # 60 + 7 positions
