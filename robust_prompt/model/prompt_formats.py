"""How an instruction and its input become the text a decoder-only model reads.

* `raw`: the instruction, then the input after a blank line (the text as T5 reads it).
* `alpaca`: Stanford Alpaca's training wrappers (`PROMPT_DICT` of tatsu-lab/stanford_alpaca's
  train.py), with and without an input.
* `chat`: the tokenizer's own chat template (`chat_template` of tokenizer_config.json, or
  chat_template.jinja beside it): one user turn holding the instruction and the input, and the
  generation prompt (`add_generation_prompt=True`), rendered as `transformers`'
  `apply_chat_template(..., tokenize=False)` renders it.

A template that writes BOS itself (Llama 3's `{{ bos_token }}`) is fine: the decoder family's
`encode_inputs` keeps a single BOS.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

FORMATS = ("raw", "alpaca", "chat")

ALPACA_WITH_INPUT = (
  "Below is an instruction that describes a task, paired with an input that provides further "
  "context. Write a response that appropriately completes the request.\n\n"
  "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_WITHOUT_INPUT = (
  "Below is an instruction that describes a task. Write a response that appropriately completes "
  "the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def user_turn(instruction_text: str, input_text: str) -> str:
  """The instruction, and the input after a blank line when there is one."""
  if not input_text:
    return instruction_text
  if not instruction_text:
    return input_text
  return f"{instruction_text}\n\n{input_text}"


def format_input(
  fmt: str,
  instruction_text: str,
  input_text: str = "",
  tokenizer_config: Mapping[str, Any] | None = None,
) -> str:
  """The model's input text for `fmt` ("raw", "alpaca" or "chat").

  Args:
    fmt: one of `FORMATS`.
    instruction_text: the rendered instruction.
    input_text: the example's input ("" when the instruction already holds it).
    tokenizer_config: the model's tokenizer settings (`vocab.read_tokenizer_config`, or
      `DecoderVocabulary.tokenizer_config`); needed for "chat".

  Raises:
    ValueError: an unknown format, or "chat" for a tokenizer without a chat template.
  """
  if fmt == "raw":
    return user_turn(instruction_text, input_text)
  if fmt == "alpaca":
    if input_text:
      return ALPACA_WITH_INPUT.format(instruction=instruction_text, input=input_text)
    return ALPACA_WITHOUT_INPUT.format(instruction=instruction_text)
  if fmt == "chat":
    config = dict(tokenizer_config or {})
    template = _chat_template(config)
    messages = [{"role": "user", "content": user_turn(instruction_text, input_text)}]
    return render_chat(template, messages, config)
  raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _chat_template(config: Mapping[str, Any]) -> str:
  template = config.get("chat_template")
  if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
    template = named.get("default")
  if not template:
    raise ValueError(
      "prompt format 'chat' needs the tokenizer's chat template, but this model has none "
      "(no chat_template in tokenizer_config.json and no chat_template.jinja); it is probably "
      "a base model: use the 'raw' or 'alpaca' format"
    )
  return str(template)


def _special_token(value: Any) -> str | None:
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) else None


def render_chat(
  template: str, messages: list[dict[str, str]], tokenizer_config: Mapping[str, Any]
) -> str:
  """Renders a chat template as `transformers` does (sandboxed jinja2, trimmed blocks).

  The template sees `messages`, `add_generation_prompt=True` and the special tokens
  (`bos_token`, `eos_token`, `unk_token`, `pad_token`) as strings.
  """
  import jinja2
  import jinja2.ext
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(
      x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )

  def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)

  env = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
  )
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = strftime_now
  specials = {
    name: _special_token(tokenizer_config.get(name))
    for name in ("bos_token", "eos_token", "unk_token", "pad_token")
  }
  try:
    return env.from_string(template).render(
      messages=messages, add_generation_prompt=True, **{k: v for k, v in specials.items() if v}
    )
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"the tokenizer's chat template failed to render: {e}") from e
