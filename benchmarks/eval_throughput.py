"""Evaluation throughput: (question x instruction) pairs per second, ours vs a Hugging Face loop.

A model with RANDOM weights is created with `transformers`, saved with `save_pretrained`, and
loaded into robust_prompt with `load_model`, so both sides run identical weights. Both evaluate the
same real MMLU test questions rendered through the same instructions
(`robust_prompt.instructions.render`: the 4 options shown lettered, the letters "A".."D" scored),
in one run. `--family` picks the model:

  t5       a T5-small-sized encoder-decoder (`--size t5-small` or `t5-1.1-small`), the T5
           SentencePiece vocabulary, the same token ids on both sides.
  decoder  a ~100M-parameter Llama (`--size llama-100m`: hidden 768, 12 layers, 12 heads, 4 KV
           heads, SwiGLU 2048, vocabulary 32,000, tied embeddings as Llama 3.2), with a 32,000-piece
           Unigram `tokenizer.json` (the T5 SentencePiece pieces in Llama's layout: <unk> 0,
           <s> 1, </s> 2; BOS first). Both sides read that one file, each tokenizing its own way.

Timed, tokenization excluded:

  ours    `robust_prompt.eval.engine.Evaluator.score_chunks` over the pools of chunks that
          `evaluate` uses (`plan_pools`: the (task, instruction) chunks of a task together),
          inputs sorted and padded to bucketed static shapes, the input run ONCE per pair (T5:
          the encoder; decoder: the context pass, keys and values kept) and the 4 options
          scored in one pass over it (jit; "warm" = already compiled, the first, compiling pass
          is reported as "cold").
  hf      what lm-evaluation-harness's `HFLM.loglikelihood` does, one request per (pair, option),
          requests sorted by length (longest first), batched, right-padded:
          - t5 (AutoModelForSeq2SeqLM): ONE FULL FORWARD (encoder + decoder) per request with the
            option as teacher-forced labels, log-softmax, summed over the option's tokens;
            `torch.inference_mode()`.
          - decoder (AutoModelForCausalLM; `_encode_pair` / `_loglikelihood_tokens`): the
            context's trailing whitespace moved into the continuation, continuation =
            target delimiter " " + option, context + continuation tokenized TOGETHER and split
            where the context's own tokens end (`add_bos_token=True`, as Llama needs), ONE
            FORWARD of `(context + continuation)[:-1]` per request without an attention mask
            (right padding), log-softmax over the whole `[B, L, V]`, the continuation's
            positions gathered and summed; `torch.no_grad()`. This is the harness with
            `logits_cache=False`. Its default (`logits_cache=True`) runs one forward per distinct
            `(context + continuation)[:-1]`: for one-token continuations (" A" .. " D") that is
            one forward per pair; it is timed too and printed as "hf lm-eval, logits cache".

The two sides' scores and predictions are compared (max |difference|, disagreements).

Usage: python benchmarks/eval_throughput.py [--family t5|decoder] [--num_questions 64]
  [--batch_size 16]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
  HF_SIZES,
  SPIECE,
  VOCAB_SIZE,
  CompileCounter,
  cpu_threads,
  host_note,
  matmul_peak_gflops,
  pair_flops,
)

MMLU_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu"
# Two subjects: each (task, instruction) chunk then holds num_questions / 2 examples, i.e. whole
# batches, as in real runs (MMLU subjects have 100-1,534 questions).
SUBJECTS = ("anatomy", "astronomy")

# Decoder-only architectures as `transformers.LlamaConfig` keyword arguments (random weights).
DECODER_SIZES = {
  # ~100M parameters (76M outside the embedding): a small Llama with grouped-query attention
  # and tied embeddings (as Llama 3.2 1B / 3B).
  "llama-100m": dict(
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    tie_word_embeddings=True,
  ),
  # For the smoke test (tests/test_benchmarks_decoder.py): seconds, not minutes.
  "llama-tiny": dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
  ),
}
DECODER_VOCAB_SIZE = 32000
DEFAULT_SIZE = {"t5": "t5-small", "decoder": "llama-100m"}


def make_hf_model(out_dir: pathlib.Path, size: str, seed: int = 0):
  """Saves a random HF T5 of `size` with the real T5 tokenizer; returns (model, tokenizer)."""
  import torch
  import transformers

  torch.manual_seed(seed)
  config = transformers.T5Config(
    vocab_size=VOCAB_SIZE,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    **HF_SIZES[size],
  )
  model = transformers.T5ForConditionalGeneration(config).eval()
  model.save_pretrained(out_dir)
  shutil.copy(SPIECE, out_dir / "spiece.model")
  tokenizer = transformers.T5TokenizerFast.from_pretrained(out_dir)
  tokenizer.save_pretrained(out_dir)
  return model, tokenizer


def save_decoder_tokenizer(out_dir: pathlib.Path):
  """Writes a Llama-layout 32,000-piece `tokenizer.json` (+ config); returns the HF tokenizer.

  No Llama tokenizer ships with the checkout, so T5's SentencePiece pieces and scores become a
  `tokenizers` Unigram model with Llama's specials (<unk> 0, <s> 1, </s> 2; the first three T5
  pieces, <pad> </s> <unk>, are control pieces it never emits for text), Llama's Metaspace
  pre-tokenizer and a BOS post-processor: MMLU questions come out at T5's lengths (about 100
  tokens), as a real 32k Llama vocabulary gives.
  """
  import transformers
  from sentencepiece import sentencepiece_model_pb2
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

  if not SPIECE.is_file():
    raise SystemExit(f"needs the T5 SentencePiece model at {SPIECE} (../shared)")
  proto = sentencepiece_model_pb2.ModelProto.FromString(SPIECE.read_bytes())
  pieces = [(p.piece, p.score) for p in proto.pieces]
  specials = ("<unk>", "<s>", "</s>")
  pieces[: len(specials)] = [(s, 0.0) for s in specials]
  tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=False))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
  tok.post_processor = processors.TemplateProcessing(
    single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
  )
  hf_tok = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
  )
  hf_tok.save_pretrained(out_dir)
  return transformers.AutoTokenizer.from_pretrained(out_dir)


def make_hf_decoder(out_dir: pathlib.Path, size: str, seed: int = 0):
  """Saves a random `LlamaForCausalLM` of `size` and its tokenizer; returns (model, tokenizer)."""
  import torch
  import transformers

  tokenizer = save_decoder_tokenizer(out_dir)
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
    vocab_size=DECODER_VOCAB_SIZE,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
    **DECODER_SIZES[size],
  )
  model = transformers.LlamaForCausalLM(config).eval()
  model.save_pretrained(out_dir)
  return model, tokenizer


def num_parameters(model) -> int:
  """Distinct parameters of a PyTorch model (a tied embedding counted once)."""
  return sum(p.numel() for p in model.parameters())


def instructions():
  from robust_prompt.instructions.schema import Instruction

  common = dict(tasks=("mmlu:*",), options_format="letters", answer_space="letters")
  return [
    Instruction(
      id="flan_style",
      template="{question}\n{options}\nAnswer:",
      split="observed",
      source="flan_v2",
      **common,
    ),
    Instruction(
      id="human_1",
      template="The following is a question about {subject}. Choose the correct letter.\n"
      "{question}\n{options}",
      split="unobserved",
      source="human",
      **common,
    ),
  ]


def hf_lm_eval_loop(model, requests, batch_size: int) -> list[float]:
  """lm-evaluation-harness's seq2seq loglikelihood: one full forward per (input, option) request.

  Args:
    requests: (input ids with EOS, option ids with EOS) pairs.

  Returns:
    The summed log-probability of each request's option, in request order.
  """
  import torch

  order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
  out = [0.0] * len(requests)
  with torch.inference_mode():
    for start in range(0, len(order), batch_size):
      batch = [requests[i] for i in order[start : start + batch_size]]
      t = max(len(x) for x, _ in batch)
      s = max(len(y) for _, y in batch)
      ids = torch.zeros((len(batch), t), dtype=torch.long)
      mask = torch.zeros((len(batch), t), dtype=torch.long)
      labels = torch.full((len(batch), s), -100, dtype=torch.long)
      for r, (x, y) in enumerate(batch):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
        labels[r, : len(y)] = torch.tensor(y)
      logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
      log_probs = torch.log_softmax(logits, dim=-1)
      keep = labels != -100
      picked = torch.gather(log_probs, 2, labels.clamp(min=0)[..., None])[..., 0]
      sums = (picked * keep).sum(-1)
      for r, i in enumerate(order[start : start + batch_size]):
        out[i] = float(sums[r])
  return out


def lm_eval_encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """lm-evaluation-harness's `HFLM._encode_pair` (with `add_bos_token=True`).

  Trailing whitespace of the context moves into the continuation; context + continuation are
  tokenized together and split where the context's own tokens end.
  """
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces > 0:
    continuation = context[-n_spaces:] + continuation
    context = context[:-n_spaces]
  whole = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
  context_enc = tokenizer(context, add_special_tokens=True)["input_ids"]
  return context_enc, whole[len(context_enc) :]


def hf_lm_eval_causal_loop(
  model, requests: Sequence[tuple[list[int], list[int]]], batch_size: int, logits_cache: bool
) -> list[float]:
  """lm-evaluation-harness's causal `_loglikelihood_tokens`: one forward per request.

  Args:
    requests: (context ids, continuation ids) pairs (`lm_eval_encode_pair`).
    logits_cache: the harness's `logits_cache`: requests whose model input
      `(context + continuation)[:-1]` is the same share one forward (its `Collator` with
      `group_by="contexts"`); each still reads its own continuation tokens.

  Returns:
    The summed log-probability of each request's continuation, in request order.
  """
  import torch

  # The harness's sort key: longest (context + continuation) first, then the tokens themselves.
  order = sorted(
    range(len(requests)),
    key=lambda i: (-len(requests[i][0] + requests[i][1]), tuple(requests[i][0] + requests[i][1])),
  )
  groups: dict[tuple[int, ...], list[int]] = {}
  for i in order:
    key = tuple((requests[i][0] + requests[i][1])[:-1])
    groups.setdefault(key if logits_cache else (i,), []).append(i)
  work = list(groups.values())  # one forward per group, in sorted order of its first member
  out = [0.0] * len(requests)
  with torch.no_grad():
    for start in range(0, len(work), batch_size):
      batch = work[start : start + batch_size]
      inps = [(requests[g[0]][0] + requests[g[0]][1])[:-1] for g in batch]
      width = max(len(x) for x in inps)
      ids = torch.zeros((len(batch), width), dtype=torch.long)  # pad_and_concat: zeros, right
      for r, x in enumerate(inps):
        ids[r, : len(x)] = torch.tensor(x)
      log_probs = torch.log_softmax(model(ids).logits, dim=-1)
      for r, (g, x) in enumerate(zip(batch, inps)):
        for i in g:
          cont = requests[i][1]
          rows = log_probs[r, len(x) - len(cont) : len(x)]
          picked = torch.gather(rows, 1, torch.tensor(cont)[:, None])[:, 0]
          out[i] = float(picked.sum())
  return out


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--family", choices=("t5", "decoder"), default="t5")
  parser.add_argument("--num_questions", type=int, default=64, help="MMLU questions in total")
  parser.add_argument("--batch_size", type=int, default=16, help="rows per batch (both sides)")
  parser.add_argument(
    "--size",
    choices=sorted(HF_SIZES) + sorted(DECODER_SIZES),
    help=f"architecture (default {DEFAULT_SIZE})",
  )
  parser.add_argument(
    "--no_logits_cache",
    action="store_true",
    help="decoder: skip the second reference run (lm-eval's default logits_cache=True)",
  )
  parser.add_argument(
    "--shape_cost_slots",
    type=int,
    help="the engine's setting (padded token slots one compiled shape is worth; 0: every bucket)",
  )
  parser.add_argument(
    "--no_compile_ahead",
    action="store_true",
    help="the engine compiles each shape when it first meets it (not in background threads)",
  )
  args = parser.parse_args(argv)
  size = args.size or DEFAULT_SIZE[args.family]
  if (size in DECODER_SIZES) != (args.family == "decoder"):
    parser.error(f"--size {size} is not a {args.family} architecture")
  threads = cpu_threads()

  import numpy as np
  import torch

  torch.set_num_threads(threads)
  from robust_prompt import vocab as vocab_lib
  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.data import mmlu
  from robust_prompt.eval import engine
  from robust_prompt.model import prompted

  per_subject = -(-args.num_questions // len(SUBJECTS))
  tasks = {f"mmlu:{s}": mmlu.load_subject(MMLU_DIR, s)[:per_subject] for s in SUBJECTS}
  chunks = engine.plan_chunks(tasks, instructions())
  pairs = sum(len(c.examples) for c in chunks)

  with tempfile.TemporaryDirectory() as tmp:
    make = make_hf_decoder if args.family == "decoder" else make_hf_model
    hf_model, tokenizer = make(pathlib.Path(tmp), size)
    loaded = load_model(tmp)
    settings = engine.evaluate_settings(
      batch_size=args.batch_size,
      compile_ahead=not args.no_compile_ahead,
      **({} if args.shape_cost_slots is None else {"shape_cost_slots": args.shape_cost_slots}),
    )
    # As `robust-prompt eval` builds it (no --option_eos / --target_delimiter: the defaults).
    model = prompted.for_config(loaded.config)
    evaluator = engine.Evaluator(model, loaded.params, loaded.vocab, settings)

    pools = engine.plan_pools(chunks, settings.pool_rows)

    def ours():
      # As `evaluate` calls it: a shape's compilation is weighed against the whole run's rows.
      return [
        row
        for pool in pools
        for rows in evaluator.score_chunks([chunks[i] for i in pool], "ours", run_rows=pairs)
        for row in rows
      ]

    compiles = CompileCounter()
    start = time.perf_counter()
    ours()
    cold = time.perf_counter() - start
    cold_compiles = (compiles.programs, compiles.seconds)
    start = time.perf_counter()
    rows = ours()
    warm = time.perf_counter() - start
    # Useful work: each pair's input once and its options' own tokens, no padding.
    useful = 0.0
    for c in chunks:
      ins = evaluator.input_ids(c)
      opts, _ = evaluator._encode_options(c, evaluator.texts(c))
      useful += sum(
        pair_flops(args.family, loaded.config, len(x), [len(o) for o in ys])
        for x, ys in zip(ins, opts)
      )

    # The reference's requests, one per (pair, option), in pair order.
    requests, owner, same_ids = [], [], 0
    for c in chunks:
      texts = evaluator.texts(c)
      if args.family == "t5":
        # The same token ids: inputs and options as the engine tokenizes them.
        inputs = vocab_lib.encode_inputs(loaded.vocab, texts, 1024)
        for x, r in zip(inputs, c.rendered):
          for y in vocab_lib.encode_targets(loaded.vocab, r.options):
            requests.append((x, y))
          owner.append(len(r.options))
        continue
      # The harness tokenizes with the HF tokenizer; ours must give the same ids.
      our_inputs = evaluator.input_ids(c)
      our_options = model.encode_options(loaded.vocab, texts, [r.options for r in c.rendered], None)
      for text, r, x, ys in zip(texts, c.rendered, our_inputs, our_options):
        for option, y in zip(r.options, ys):
          pair = lm_eval_encode_pair(tokenizer, text, model.target_delimiter + option)
          requests.append(pair)
          same_ids += pair == (x, y)
        owner.append(len(r.options))
  hf_cached = None
  if args.family == "t5":
    hf_lm_eval_loop(hf_model, requests[: args.batch_size], args.batch_size)  # warm-up
    start = time.perf_counter()
    scores = hf_lm_eval_loop(hf_model, requests, args.batch_size)
    hf_time = time.perf_counter() - start
  else:
    hf_lm_eval_causal_loop(hf_model, requests[: args.batch_size], args.batch_size, False)
    start = time.perf_counter()
    scores = hf_lm_eval_causal_loop(hf_model, requests, args.batch_size, False)
    hf_time = time.perf_counter() - start
    if not args.no_logits_cache:
      start = time.perf_counter()
      cached = hf_lm_eval_causal_loop(hf_model, requests, args.batch_size, True)
      hf_cached = time.perf_counter() - start
      cache_diff = float(np.max(np.abs(np.array(cached) - np.array(scores))))

  flat, k = [], 0
  for n in owner:
    flat.append(scores[k : k + n])
    k += n
  disagree = sum(int(np.argmax(h)) != r["prediction"] for h, r in zip(flat, rows))
  max_diff = max(
    float(np.max(np.abs(np.array(h) - r["option_scores"]))) for h, r in zip(flat, rows)
  )
  lengths = [len(x) + len(y) for x, y in requests]

  if args.family == "decoder":
    arch = (
      f"{size} (random weights, {num_parameters(hf_model) / 1e6:.1f}M parameters: "
      + ", ".join(f"{k} {v}" for k, v in DECODER_SIZES[size].items())
      + f", vocabulary {DECODER_VOCAB_SIZE}; PyTorch attention "
      f"{hf_model.config._attn_implementation})"
    )
  else:
    arch = f"{size} (random weights, {num_parameters(hf_model) / 1e6:.1f}M parameters)"
  print(f"model: {arch}, {threads} CPU threads, {host_note()}, batch {args.batch_size}")
  print(
    f"work: {pairs} (question x instruction) pairs, {len(requests)} (pair, option) requests, "
    f"{np.mean(lengths):.0f} tokens per request on average (max {max(lengths)})"
  )
  if args.family == "decoder":
    print(
      f"tokenization: ours = the harness's (context, continuation) ids on {same_ids}/"
      f"{len(requests)} requests"
    )
  print(f"  ours (warm)         {warm:7.2f}s  {pairs / warm:7.1f} pairs/s")
  print(f"  ours (cold, +jit)   {cold:7.2f}s  {pairs / cold:7.1f} pairs/s")
  print(f"  hf lm-eval loop     {hf_time:7.2f}s  {pairs / hf_time:7.1f} pairs/s")
  if hf_cached is not None:
    print(
      f"  hf lm-eval, logits cache {hf_cached:7.2f}s  {pairs / hf_cached:7.1f} pairs/s "
      f"(same scores to {cache_diff:.1e})"
    )
  print(
    f"  compiled on the cold pass: {cold_compiles[0]} XLA programs, {cold_compiles[1]:.1f}s "
    f"of compilation (summed over threads; {compiles.programs - cold_compiles[0]} warm)"
  )
  peak = matmul_peak_gflops()
  print(
    f"  useful work {useful / 1e12:.3f} TFLOP (each input once, no padding): warm "
    f"{useful / warm / 1e9:.1f} GFLOP/s = {useful / warm / 1e9 / peak['jax']:.0%} of the "
    f"measured fp32 matmul peak (jax {peak['jax']:.0f}, torch {peak.get('torch', 0):.0f} GFLOP/s)"
  )
  print(f"speed-up (warm): {hf_time / warm:.2f}x   (cold: {hf_time / cold:.2f}x)")
  if hf_cached is not None:
    print(
      f"speed-up vs the logits-cache loop (warm): {hf_cached / warm:.2f}x   "
      f"(cold: {hf_cached / cold:.2f}x)"
    )
  print(
    f"predictions disagree on {disagree}/{len(rows)} pairs; "
    f"max |option log-likelihood difference| {max_diff:.2e}"
  )
  print(
    "shapes compiled (kind, B, T, O, S): "
    + json.dumps(sorted(evaluator.shapes, key=lambda s: tuple(map(str, s))))
  )
  return 0


if __name__ == "__main__":
  from robust_prompt import host_memory

  host_memory.reexec_with_huge_pages()
  sys.exit(main())
