"""The toy suite: seven small multiple-choice tasks generated deterministically from a seed.

Each task is a generator `(rng) -> JSON line` in the project's JSONL task format
(docs/tasks.md): string fields for the templates, `options` and `answer`. Written out as
`<dir>/<task>.jsonl`, a task loads as `jsonl:<task>` through `robust_prompt.data.jsonl`, so `eval`
and `train` read it through their normal code paths.

The same generators feed the instruction tuning of the demo model (`demo/tuning.py`, fresh
examples every step) and the demo's evaluation and prompt-training sets (fixed files). Each use
draws from its own seed stream (`stream_seed`), so the sets differ but overlap in content is
possible for tasks with few distinct items (a capital-of table has 24 facts): the demo measures
robustness to the *wording of instructions*, not generalisation to new facts.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from robust_prompt.data import jsonl
from robust_prompt.data.example import Example

Line = dict
Generator = Callable[[np.random.Generator], Line]

# Streams: every use of the generators has its own seed sequence `[seed, stream]`.
STREAMS = {"tune": 0, "vocab": 1, "prompt_train": 2, "eval": 3}


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
  return items[int(rng.integers(len(items)))]


# -- sentiment -----------------------------------------------------------------------------------

_THINGS = ("food", "service", "room", "staff", "music", "movie", "book", "pizza", "coffee", "view")
_GOOD = ("great", "lovely", "excellent", "wonderful", "delicious", "friendly", "amazing", "superb")
_BAD = ("awful", "terrible", "rude", "boring", "cold", "dirty", "horrible", "bland")


def sentiment(rng: np.random.Generator) -> Line:
  positive = bool(rng.integers(2))
  adjs = _GOOD if positive else _BAD
  a, b = rng.choice(len(_THINGS), size=2, replace=False)
  review = f"the {_THINGS[a]} was {_pick(rng, adjs)}"
  if rng.integers(2):
    review += f" and the {_THINGS[b]} was {_pick(rng, adjs)}"
  return {"review": review, "options": ["positive", "negative"], "answer": 0 if positive else 1}


# -- bigger number -------------------------------------------------------------------------------


def bigger(rng: np.random.Generator) -> Line:
  a, b = (int(x) for x in rng.choice(100, size=2, replace=False))
  return {"first": str(a), "second": str(b), "options": [str(a), str(b)], "answer": int(b > a)}


# -- parity --------------------------------------------------------------------------------------


def parity(rng: np.random.Generator) -> Line:
  n = int(rng.integers(1000))
  return {"number": str(n), "options": ["even", "odd"], "answer": n % 2}


# -- longer word ---------------------------------------------------------------------------------

_WORDS = (
  "cat", "dog", "sun", "tree", "house", "river", "mountain", "pen", "window", "garden",
  "elephant", "ant", "bicycle", "cup", "blanket", "sky", "umbrella", "hat", "computer", "egg",
  "butterfly", "box", "kitchen", "key", "telephone", "bird", "pencil", "ocean", "chair", "star",
)  # fmt: skip


def longer(rng: np.random.Generator) -> Line:
  while True:
    a, b = (_WORDS[i] for i in rng.choice(len(_WORDS), size=2, replace=False))
    if len(a) != len(b):
      return {"word1": a, "word2": b, "options": [a, b], "answer": int(len(b) > len(a))}


# -- topic ---------------------------------------------------------------------------------------

_TOPICS = {
  "sports": ("goal", "team", "coach", "match", "referee", "stadium", "player", "score"),
  "science": ("experiment", "atom", "lab", "theory", "molecule", "telescope", "physics", "cell"),
  "food": ("recipe", "soup", "oven", "flavor", "bakery", "salad", "chef", "spice"),
  "music": ("song", "guitar", "concert", "melody", "drummer", "album", "piano", "singer"),
}
_TOPIC_FRAMES = (
  "people talked about the {a} and the {b}",
  "a story about a {a} and a {b}",
  "the news mentioned the {a} near the {b}",
  "everyone asked about the {a} after the {b}",
)


def topic(rng: np.random.Generator) -> Line:
  names = list(_TOPICS)
  answer = int(rng.integers(len(names)))
  a, b = rng.choice(len(_TOPICS[names[answer]]), size=2, replace=False)
  words = _TOPICS[names[answer]]
  sentence = _pick(rng, _TOPIC_FRAMES).format(a=words[a], b=words[b])
  return {"sentence": sentence, "options": names, "answer": answer}


# -- capital of ----------------------------------------------------------------------------------

CAPITALS = {
  "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
  "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Greece": "Athens", "Canada": "Ottawa",
  "Russia": "Moscow", "China": "Beijing", "Cuba": "Havana", "Chile": "Santiago", "Iran": "Tehran",
  "Poland": "Warsaw", "Austria": "Vienna", "Sweden": "Stockholm", "Ireland": "Dublin",
  "Portugal": "Lisbon", "Germany": "Berlin", "Mexico": "Mexico City", "India": "New Delhi",
  "Thailand": "Bangkok",
}  # fmt: skip


def capital(rng: np.random.Generator) -> Line:
  countries = list(CAPITALS)
  country = _pick(rng, countries)
  others = [CAPITALS[c] for c in countries if c != country]
  distractors = [others[i] for i in rng.choice(len(others), size=2, replace=False)]
  options = [CAPITALS[country], *distractors]
  order = rng.permutation(3)
  options = [options[i] for i in order]
  return {"country": country, "options": options, "answer": int(np.argmin(order))}


# -- entailment ----------------------------------------------------------------------------------

_NAMES = ("Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Ella")
_COLORS = ("red", "blue", "green", "yellow", "black", "white")
_OBJECTS = ("car", "bike", "hat", "coat", "kite", "boat", "lamp", "bag")


def entailment(rng: np.random.Generator) -> Line:
  name, color, obj = _pick(rng, _NAMES), _pick(rng, _COLORS), _pick(rng, _OBJECTS)
  premise = f"{name} has a {color} {obj}."
  kind = int(rng.integers(4))
  if kind < 2:  # entailed: drop the colour, or restate it
    hypothesis = f"{name} has a {obj}." if kind == 0 else f"{name} owns a {color} {obj}."
    answer = 0
  elif kind == 2:  # another colour
    other = _pick(rng, [c for c in _COLORS if c != color])
    hypothesis, answer = f"{name} has a {other} {obj}.", 1
  else:  # another person
    other = _pick(rng, [n for n in _NAMES if n != name])
    hypothesis, answer = f"{other} has a {color} {obj}.", 1
  return {"premise": premise, "hypothesis": hypothesis, "options": ["yes", "no"], "answer": answer}


# -- the suite -----------------------------------------------------------------------------------

TASKS: dict[str, Generator] = {
  "toy_sentiment": sentiment,
  "toy_bigger": bigger,
  "toy_parity": parity,
  "toy_longer": longer,
  "toy_topic": topic,
  "toy_capital": capital,
  "toy_entailment": entailment,
}


def task_name(stem: str) -> str:
  """The project's name of a toy task (`toy_parity` -> `jsonl:toy_parity`)."""
  return jsonl.task_name(f"{stem}.jsonl")


def stream_seed(seed: int, stream: str, task: str | None = None) -> list[int]:
  """The seed sequence of one use (`STREAMS`) of one task's generator."""
  index = list(TASKS).index(task) if task is not None else len(TASKS)
  return [int(seed), STREAMS[stream], index]


def generate_lines(task: str, n: int, seed: int, stream: str = "eval") -> list[Line]:
  """`n` JSONL lines (dicts) of `task` from `(seed, stream)`; ids are `0..n-1`.

  Raises:
    KeyError: an unknown task (the message lists the known ones).
  """
  if task not in TASKS:
    raise KeyError(f"unknown toy task {task!r}; the suite has {', '.join(TASKS)}")
  rng = np.random.default_rng(stream_seed(seed, stream, task))
  return [{"id": i, **TASKS[task](rng)} for i in range(n)]


def lines_to_examples(task: str, lines: Sequence[Line]) -> list[Example]:
  """Parses generated lines exactly as the JSONL loader parses a file's lines."""
  name = task_name(task)
  return [jsonl.parse_line(obj, task=name, index=i) for i, obj in enumerate(lines)]


def write_task_files(
  directory: str | os.PathLike,
  num_examples: int,
  seed: int,
  stream: str,
  tasks: Sequence[str] | None = None,
) -> pathlib.Path:
  """Writes `<directory>/<task>.jsonl` for every task (a `--data_dir` for `--benchmark jsonl`)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for task in tasks or TASKS:
    with open(directory / f"{task}.jsonl", "w", encoding="utf-8") as f:
      for line in generate_lines(task, num_examples, seed, stream):
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
  return directory
