"""Binding a source placeholder to a constant, or dropping it only where the phrasing survives."""

import pytest

from robust_prompt.instructions.bindings import apply_bindings, escape, literal_text


def test_drop_a_placeholder_alone_on_its_line():
  assert apply_bindings("{fact}\n{question}\n\n{options}", drop=["fact"]) == (
    "{question}\n\n{options}"
  )
  # The blank lines around a dropped paragraph collapse to one.
  assert apply_bindings("Intro.\n\n{fact}\n\n{question}", drop=["fact"]) == "Intro.\n\n{question}"
  # Names the template does not use are ignored; nothing else changes.
  assert apply_bindings("A\n\n\nB {question}", drop=["context"]) == "A\n\n\nB {question}"


def test_drop_refused_inside_a_sentence_or_when_referred_to():
  with pytest.raises(ValueError, match="part of the line 'Fact: {fact}'"):
    apply_bindings("Fact: {fact}\n{question}", drop=["fact"])
  with pytest.raises(ValueError, match="still refers to it \\('passage'\\)"):
    apply_bindings("{context}\nUsing the passage, answer: {question}", drop=["context"])
  with pytest.raises(ValueError, match="'background'"):
    apply_bindings("{background_info}\nGiven the background: {question}", drop=["background_info"])


def test_bind_to_a_constant_keeps_braces_literal():
  out = apply_bindings("{topic}: {question} {{x}}", bind={"topic": "Sets {a, b}"})
  assert out == "Sets {{a, b}}: {question} {{x}}"
  assert literal_text(out) == "Sets {a, b}:  {x}"
  assert escape("{}") == "{{}}"
