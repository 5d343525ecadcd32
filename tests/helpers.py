"""Set-up that several test modules share: toy examples, instructions, JSONL files and gin.

Imported as `helpers` (pytest puts tests/ on sys.path, as for `conftest`). Heavy imports (jax,
the model) stay inside the functions that need them, so that the tests of file-only code (the
shell scripts, the instruction importers) do not pay for them.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import gin
import pytest

from robust_prompt.data.example import Example
from robust_prompt.instructions.schema import Instruction

GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "gin_configs"

# The observed MMLU phrasing the eval tests run (FLAN's "question, lettered options, Answer:").
OBSERVED_LETTERS = {
  "id": "obs_letters",
  "tasks": ["mmlu:*"],
  "template": "{question}\n{options}\nAnswer:",
  "options_format": "letters",
  "answer_space": "letters",
  "split": "observed",
  "source": "flan_v2",
}
# Its BIG-bench counterpart: the input, then the options one a line, answered by the option's text.
OBSERVED_BIGBENCH = {
  "id": "bb_obs",
  "tasks": ["bigbench:*"],
  "template": "{input}\n{options}",
  "options_format": "newline",
  "answer_space": "option_text",
  "split": "observed",
  "source": "flan_v2",
}


# -- examples and files ----------------------------------------------------------------------------


def example(
  task: str,
  fields: Mapping[str, str],
  options: Sequence[str],
  answer: int,
  *,
  correct: Sequence[int] | None = None,
  index: int = 0,
) -> Example:
  """A multiple-choice `Example` with id `<task>:<index>` (correct: just `answer` by default)."""
  return Example(
    id=f"{task}:{index}",
    task=task,
    fields=dict(fields),
    options=tuple(options),
    answer=answer,
    correct=(answer,) if correct is None else tuple(correct),
  )


def mmlu_example(
  question: str, options: Sequence[str], answer: int, *, subject: str = "x", index: int = 0
) -> Example:
  """An MMLU `Example` of task `mmlu:<subject>` (fields: question and subject)."""
  fields = {"question": question, "subject": subject}
  return example(f"mmlu:{subject}", fields, options, answer, index=index)


def instruction(template: str, **fields: Any) -> Instruction:
  """An `Instruction` of `template`: by default `t_01`, every MMLU task, lettered, unobserved.

  Args:
    template: the template.
    **fields: any other `Instruction` field, over the defaults (`id="t_01"`,
      `tasks=("mmlu:*",)`, `options_format="letters"`, `answer_space="letters"`,
      `split="unobserved"`, `source="human"`).
  """
  defaults = dict(
    id="t_01",
    tasks=("mmlu:*",),
    options_format="letters",
    answer_space="letters",
    split="unobserved",
    source="human",
  )
  return Instruction(template=template, **(defaults | fields))


def write_jsonl(path: pathlib.Path, records: Iterable[Any]) -> pathlib.Path:
  """Writes one JSON record a line (UTF-8); returns `path`."""
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return path


# -- gin -------------------------------------------------------------------------------------------


def parse_gin_or_skip(*gin_files: str) -> None:
  """Parses gin files with the CLI's configurables; skips while DecoderConfig is unregistered."""
  from robust_prompt.cli import gin_utils

  try:
    gin_utils.parse_gin(list(gin_files), [])
  except gin_utils.UserError as e:
    if "No configurable matching 'DecoderConfig'" in str(e):
      pytest.skip(f"{', '.join(gin_files)}: the CLI does not register DecoderConfig with gin yet")
    raise


def gin_bindings() -> dict[str, str]:
  """Every binding of the parsed gin config, NAME -> value as gin prints it (macros included)."""
  out: dict[str, str] = {}
  name = None
  for line in gin.config_str().splitlines():
    if not line.strip() or line.startswith("#"):
      continue
    if line[0].isspace():  # a long value continued
      out[name] += " " + line.strip()
      continue
    name, value = line.split(" = ", 1)
    out[name] = value
  return out


def model_gin_fixture(config_type: type) -> Callable[[], Iterator[None]]:
  """An autouse fixture: each test gets a clean gin with `config_type` and gin_configs/ searched.

  `config_type` is configurable under its class name; gin is cleared again after the test. A test
  module of model gin files assigns it: `gin_env = helpers.model_gin_fixture(T5Config)`.
  """

  @pytest.fixture(autouse=True)
  def gin_env() -> Iterator[None]:
    gin.clear_config(clear_constants=True)
    gin.external_configurable(config_type, name=config_type.__name__)
    gin.add_config_file_search_path(str(GIN_DIR))
    yield
    gin.clear_config(clear_constants=True)

  return gin_env


def model_config(path: pathlib.Path, config_type: type) -> Any:
  """The `%MODEL_CONFIG` a model gin file binds (checked to be a `config_type`)."""
  gin.parse_config_file(str(path))
  config = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
  assert isinstance(config, config_type)
  return config


def assert_needs_size_file(path: pathlib.Path) -> None:
  """A family file (sizes left `%gin.REQUIRED`) parses but builds no config on its own."""
  gin.parse_config_file(str(path))
  with pytest.raises(ValueError, match="size file"):
    gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()


# -- models ----------------------------------------------------------------------------------------


def tiny_t5_config(**overrides: Any):
  """A `T5Config` small enough for any unit test: these defaults, `overrides` over them.

  The defaults: 300 token ids (the 259 of `seqio.ByteVocabulary` fit), `d_model=16`, 4 heads of
  4, `d_ff=32`, 2 encoder and 2 decoder layers, 8 relative-position buckets up to distance 16; the
  rest is `T5Config`'s own (T5 1.1: gated-GELU, an untied output layer).
  """
  from robust_prompt.model.config import T5Config

  defaults = dict(
    vocab_size=300,
    d_model=16,
    num_heads=4,
    head_dim=4,
    d_ff=32,
    num_encoder_layers=2,
    num_decoder_layers=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
  )
  return T5Config(**(defaults | overrides))


def num_params(module: Any) -> int:
  """A Flax module's parameter count, from `jax.eval_shape` of its init (nothing allocated)."""
  import jax
  import numpy as np

  from robust_prompt import partitioning

  shapes = partitioning.abstract_variables(module)
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
