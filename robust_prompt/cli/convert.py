"""`robust-prompt convert`: a Hugging Face or T5X checkpoint -> our orbax checkpoint directory.

  robust-prompt convert --model google/flan-t5-small --output_dir ckpts/flan_t5_small
  robust-prompt convert --model gs://.../checkpoint_1100000 \\
      --gin_file models/t5_1_1_small.gin --vocab .../spiece.model --output_dir ckpts/t5_small

The output holds the parameters (orbax), `config.json` and the vocabulary, so that later commands
need only `--model ckpts/flan_t5_small`.
"""

from __future__ import annotations

import argparse
import pathlib

from robust_prompt.cli import gin_utils
from robust_prompt.cli.gin_utils import UserError

USES_GIN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--model",
    required=True,
    help="a Hugging Face hub id, a Hugging Face model directory (T5, or a llama / mistral / "
    "qwen2 decoder-only model), or a T5X checkpoint directory (.../checkpoint_N; then also "
    "--gin_file models/<size>.gin and --vocab)",
  )
  parser.add_argument("--output_dir", required=True, help="directory to write the checkpoint to")
  parser.add_argument(
    "--vocab",
    default=None,
    help="vocabulary (spiece.model, tokenizer.json, a directory holding one, or 'byte'); "
    "required for T5X, defaults to the model's own for Hugging Face",
  )
  parser.add_argument(
    "--overwrite", action="store_true", help="replace a checkpoint already in --output_dir"
  )


def _n_params(params) -> int:
  import jax

  return sum(int(x.size) for x in jax.tree.leaves(params))


def run(args: argparse.Namespace) -> int:
  from tqdm.auto import tqdm

  gin_utils.register_configurables()
  gin_utils.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
  config = gin_utils.model_config_from_gin()

  from robust_prompt.checkpoints import orbax_io, resolve
  from robust_prompt.io_utils import NotWritableError
  from robust_prompt.model.decoder_config import DecoderConfig

  out = pathlib.Path(args.output_dir).expanduser()
  if orbax_io.is_orbax_params_dir(out) and not args.overwrite:
    raise UserError(
      f"--output_dir {out} already holds a checkpoint; pass --overwrite to replace it"
    )
  with tqdm(total=2, desc="convert", unit="step") as bar:
    bar.set_postfix_str(f"reading {args.model}")
    try:
      loaded = resolve.load_model(args.model, config=config, vocab_path=args.vocab)
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, ImportError) as e:
      message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
      raise UserError(f"could not load --model {args.model!r}: {message}") from e
    bar.update(1)
    bar.set_postfix_str(f"writing {out}")
    try:
      written = orbax_io.save_params(
        out,
        loaded.params,
        loaded.config,
        loaded.vocab,
        source=args.model,
        overwrite=args.overwrite,
      )
    except (NotWritableError, FileExistsError) as e:
      raise UserError(str(e)) from e
    bar.update(1)

  c = loaded.config
  print(f"wrote {written}")
  if isinstance(c, DecoderConfig):
    layers = f"{c.model_type}, {c.num_layers} layers, d_model {c.d_model}, {c.num_heads} heads"
    layers += f" ({c.num_kv_heads} key/value)"
  else:
    layers = f"{c.num_encoder_layers}+{c.num_decoder_layers} layers, d_model {c.d_model}, "
    layers += c.feed_forward_proj
  print(
    f"  params/            {_n_params(loaded.params):,} parameters ({c.param_dtype}), "
    f"{layers}, {'tied' if c.tie_word_embeddings else 'untied'} output layer"
  )
  print(f"  {orbax_io.CONFIG_NAME:<18} {type(c).__name__}")
  vocab_names = ("spiece.model", "tokenizer.json", "tokenizer.model")
  vocab_files = [p.name for p in written.iterdir() if p.name in vocab_names]
  print(f"  {orbax_io.META_NAME:<18} vocabulary {loaded.vocab}; source {args.model}")
  for name in vocab_files:
    print(f"  {name:<18} vocabulary file")
  print(f"use it with: --model {written}")
  return 0
