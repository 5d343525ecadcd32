"""Task-registration modules (importable as `robust_prompt_tasks`) and instruction collections.

Importing `robust_prompt_tasks.mmlu`, `.bigbench_lite` or `.jsonl` registers SeqIO tasks and
mixtures (see docs/tasks.md), as T5X's `MIXTURE_OR_TASK_MODULE` expects; in gin:

  robust_prompt.seqio_tasks.import_task_modules.modules = ["robust_prompt_tasks.mmlu"]

The modules read their settings from the environment, because they run at import time:

  ROBUST_PROMPT_DATA_DIR      data directory (required; see robust_prompt/data/sources.py)
  ROBUST_PROMPT_VOCAB         vocabulary: spiece.model / tokenizer.json / model dir / "byte"
                              (default: T5's SentencePiece model, DEFAULT_VOCAB)
  ROBUST_PROMPT_INSTRUCTIONS  instruction files or folders, separated by os.pathsep
                              (default: the collection in `instructions/` beside this file)
  ROBUST_PROMPT_RANK_CLASSIFICATION  "1": one row per answer option (score-based metric)

Importing this package itself registers nothing and stays cheap.
"""

from __future__ import annotations

import os
import pathlib

INSTRUCTIONS_DIR = pathlib.Path(__file__).resolve().parent / "instructions"
# The vocabulary of T5 1.1, Flan-T5 and T0 (T5X's default), with its 100 sentinel ids.
DEFAULT_VOCAB = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"


def register_from_environment(benchmark: str):
  """Registers `benchmark`'s SeqIO tasks with the settings in the environment (see above).

  Returns:
    `robust_prompt.seqio_tasks.Registered`.
  """
  from robust_prompt import seqio_tasks, vocab

  instructions = os.environ.get("ROBUST_PROMPT_INSTRUCTIONS")
  paths = instructions.split(os.pathsep) if instructions else [INSTRUCTIONS_DIR]
  spec = os.environ.get("ROBUST_PROMPT_VOCAB")
  if spec:
    vocabulary = vocab.load_vocabulary(spec)
  else:
    import seqio

    # Built directly (not through load_vocabulary, which probes gs:// with gfile): the file is
    # read only when tokenizing, so registering works offline.
    vocabulary = seqio.SentencePieceVocabulary(DEFAULT_VOCAB, extra_ids=vocab.T5_EXTRA_IDS)
  rank = os.environ.get("ROBUST_PROMPT_RANK_CLASSIFICATION", "").lower() in ("1", "true", "yes")
  return seqio_tasks.register_tasks(benchmark, None, paths, vocabulary, rank_classification=rank)
