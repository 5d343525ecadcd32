"""Few-shot prompts: K solved demonstrations rendered with the same instruction before the example.

Demonstrations come from a pool: a named split (e.g. MMLU's `dev` examples) or the other examples
of the evaluated task, in which case the evaluated example is excluded by id. Selection is
deterministic: every candidate gets a sha256 key of (seed, the evaluated example's id, its own
id), and the K candidates with the smallest keys are the demos, in key order. So each evaluated
example gets its own demos, the same ones on every run and host, whatever the pool's order
(Python's `hash()` is salted per process and would not do).

A demonstration is shown as its rendered input, one space, then its gold answer string
(`render_demo`): with a template ending in "Answer:" that reads "...\\nAnswer: B", the way the
model is then asked to continue the evaluated example's "Answer:".
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from robust_prompt.data.example import Example
from robust_prompt.instructions.render import Rendered, render
from robust_prompt.instructions.schema import Instruction

DEFAULT_SEPARATOR = "\n\n"


def _key(seed: int, key: str, example_id: str) -> bytes:
  # Unambiguous encoding: the NUL separator cannot occur in the decimal seed, and the key is
  # length-prefixed, so ("a", "b:c") and ("a:b", "c") never collide.
  text = f"{int(seed)}\0{len(key)}:{key}\0{example_id}"
  return hashlib.sha256(text.encode("utf-8")).digest()


def select_demos(
  pool: Sequence[Example],
  k: int,
  *,
  seed: int,
  exclude_id: str | None,
  key: str | None = None,
) -> list[Example]:
  """Chooses `k` demonstrations from `pool`, deterministically.

  Args:
    pool: candidate demonstrations (a `dev` split, or the evaluated task's own examples).
    k: how many to choose; 0 returns [].
    seed: the few-shot seed; a different seed gives (almost surely) different demos.
    exclude_id: id of the evaluated example, never returned (None when the pool cannot contain
      it, e.g. a separate `dev` split).
    key: the evaluated example's id to derive the selection from, when it differs from
      `exclude_id` (e.g. a `dev` pool with `exclude_id=None`, where passing the evaluated id
      here still gives each example its own demos); defaults to `exclude_id` ("" if None, so
      that every example gets the same demos).

  Returns:
    `k` distinct pool examples (by position), none with id `exclude_id`, in a fixed order that
    depends only on (their ids, seed, key), not on the order of `pool`.

  Raises:
    ValueError: if `k` is negative or the pool has fewer than `k` usable examples.
  """
  if k < 0:
    raise ValueError(f"num_fewshot must be >= 0, got {k}")
  if k == 0:
    return []
  rng_key = key if key is not None else (exclude_id or "")
  usable = [(i, ex) for i, ex in enumerate(pool) if exclude_id is None or ex.id != exclude_id]
  if len(usable) < k:
    excluded = len(pool) - len(usable)
    raise ValueError(
      f"num_fewshot={k} needs at least {k} demonstration examples, but the pool has "
      f"{len(usable)} usable ({len(pool)} in all"
      + (f", {excluded} excluded as the evaluated example {exclude_id!r}" if excluded else "")
      + "); lower num_fewshot or draw demos from a larger split"
    )
  # Position breaks ties between duplicate ids, so the result is still deterministic.
  ranked = sorted(usable, key=lambda item: (_key(seed, rng_key, item[1].id), item[0]))
  return [ex for _, ex in ranked[:k]]


def render_demo(instruction: Instruction, example: Example) -> str:
  """One solved demonstration: `f"{inputs} {answer}"`.

  `inputs` is `render(instruction, example).inputs` and `answer` its gold answer string as the
  instruction's answer space gives it (`Rendered.targets[0]`: "B" for letters, "2" for numbers,
  the option text for option_text, the first reference for generative examples).

  Raises:
    InstructionError: when the instruction does not fit the example.
    ValueError: when the example has no gold answer to show (a generative example without
      references).
  """
  rendered = render(instruction, example)
  if not rendered.targets:
    raise ValueError(f"demonstration {example.id!r} has no gold answer (no targets) to show")
  return f"{rendered.inputs} {rendered.targets[0]}"


def render_fewshot(
  instruction: Instruction,
  example: Example,
  demos: Sequence[Example],
  separator: str = DEFAULT_SEPARATOR,
) -> Rendered:
  """`example` rendered through `instruction`, preceded by the solved `demos`.

  Args:
    instruction: used for the demos and the example alike.
    example: the evaluated example.
    demos: demonstrations (see `select_demos`); [] gives exactly `render(instruction, example)`.
    separator: between consecutive demos and between the last demo and the example.

  Returns:
    The example's `Rendered` with `inputs = separator.join(demo texts + [example inputs])`, not
    split into instruction and input (`Rendered.parts`); `options`, `answer`, `correct` and
    `targets` are the example's own.

  Raises:
    InstructionError: when the instruction does not fit the example or a demo.
  """
  rendered = render(instruction, example)
  if not demos:
    return rendered
  parts = [render_demo(instruction, demo) for demo in demos]
  parts.append(rendered.inputs)
  # The demos hold the instruction too, so the text no longer splits into one instruction and
  # one input: prompt formats wrap it whole (Alpaca's without-input wrapper).
  return dataclasses.replace(
    rendered, inputs=separator.join(parts), instruction_text="", input_text=""
  )
