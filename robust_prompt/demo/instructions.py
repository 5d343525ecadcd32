"""The toy suite's instructions: observed templates, training paraphrases, held-out paraphrases.

For every task there are three disjoint sets of phrasings:

* `observed` (split "observed"): the only templates the demo model was instruction-tuned on;
* `train` (split "unobserved"): paraphrases the soft prompt is trained on (with the alignment
  loss, anchored on the observed templates);
* `heldout` (split "unobserved"): paraphrases used only for the final evaluation.

The observed templates are short and regular (as a tuning mixture's templates tend to be); the
paraphrases reorder the parts, add chatty filler, change how options are shown and sometimes ask
for a letter or a number instead of the option text. `write_instruction_files` writes them as the
project's instruction JSONL (robust_prompt/instructions/schema.py), with source "demo".
"""

from __future__ import annotations

import os
import pathlib

from robust_prompt.instructions.io import load_instructions, write_instructions
from robust_prompt.instructions.schema import Instruction

SETS = ("observed", "train", "heldout")
SOURCE = "demo"
MODEL_FAMILY = "demo-t5"

# (template, options_format, answer_space); "text" is short for "option_text".
Phrasing = tuple[str, str, str]

TEMPLATES: dict[str, dict[str, list[Phrasing]]] = {
  "toy_sentiment": {
    "observed": [
      ("Review: {review}\nIs this review positive or negative?", "none", "text"),
      ("{review}\nWhat is the sentiment of this review?\nOPTIONS:\n{options}", "dashes", "text"),
      ("What is the sentiment of the following review? {review}", "none", "text"),
      ("Review: {review}\nSentiment ({options}):", "inline", "text"),
    ],
    "train": [
      ("Here is what a customer wrote: {review}. Did they like it? Say {options}.", "inline", "text"),
      ("{review} -- would you call that positive or negative?", "none", "text"),
      ("Classify the tone.\nText: {review}\nLabels:\n{options}\nLabel:", "newline", "text"),
      ("Pick the letter.\n{options}\nWhich describes the opinion in: {review}", "letters", "letters"),
      ("Someone said: {review}. Was the person happy (positive) or unhappy (negative)?", "none", "text"),
      ("Decide if the writer liked it.\n{review}\n{options}\nAnswer with a number.", "numbers", "numbers"),
    ],
    "heldout": [
      ("A guest left this note: {review}. Is the note positive or negative?", "none", "text"),
      ("Tell me the feeling behind this comment, {options}: {review}", "inline", "text"),
      ("Options:\n{options}\nThe comment {review} is best described by which letter?", "letters", "letters"),
      ("Is the opinion here good or bad? {review}\nChoose from:\n{options}", "newline", "text"),
    ],
  },
  "toy_bigger": {
    "observed": [
      ("Which number is bigger, {first} or {second}?", "none", "text"),
      ("Numbers: {first} and {second}\nWhich one is larger?", "none", "text"),
      ("What is the larger number?\nOPTIONS:\n{options}", "dashes", "text"),
      ("Compare {first} and {second}. Which is greater?", "none", "text"),
    ],
    "train": [
      ("I have {first} apples and you have {second}. Who has more? Give the number.", "none", "text"),
      ("Out of these, pick the maximum:\n{options}\nMaximum:", "newline", "text"),
      ("{first} vs {second}: tell me the winner if bigger wins.", "none", "text"),
      ("Letters please.\n{options}\nWhich option is the highest value?", "letters", "letters"),
      ("Consider the values {options}. Which of them is the greatest?", "inline", "text"),
      ("Which is not the smaller one: {first} or {second}?", "none", "text"),
    ],
    "heldout": [
      ("Two scores were posted, {first} and {second}. Which score is higher?", "none", "text"),
      ("{options}\nSelect the letter of the biggest number.", "letters", "letters"),
      ("Between {options}, which comes last when counting up?", "inline", "text"),
      ("Find the max of {first} and {second}.", "none", "text"),
    ],
  },
  "toy_parity": {
    "observed": [
      ("Is {number} even or odd?", "none", "text"),
      ("Number: {number}\nIs this number even or odd?", "none", "text"),
      ("Is the number {number} even or odd?\nOPTIONS:\n{options}", "dashes", "text"),
      ("{number}\nParity ({options}):", "inline", "text"),
    ],
    "train": [
      ("Can {number} be split into two equal whole halves? Answer even or odd.", "none", "text"),
      ("Tell me whether the integer {number} is {options}.", "inline", "text"),
      ("Here is a number for you: {number}. Which kind is it?\n{options}", "newline", "text"),
      ("{options}\nWhich letter fits the number {number}?", "letters", "letters"),
      ("Think about {number}. Divisible by two means even, otherwise odd. So it is:", "none", "text"),
      ("Classify {number}.\n{options}\nReply with the number of your choice.", "numbers", "numbers"),
    ],
    "heldout": [
      ("My locker is number {number}. Is that an even or an odd number?", "none", "text"),
      ("Label the parity of {number}, choosing from {options}.", "inline", "text"),
      ("{options}\nLetter for the value {number}:", "letters", "letters"),
      ("Would {number} be called even, or odd?", "none", "text"),
    ],
  },
  "toy_longer": {
    "observed": [
      ("Which word is longer, {word1} or {word2}?", "none", "text"),
      ("Words: {word1} and {word2}\nWhich word has more letters?", "none", "text"),
      ("Which of these words is longer?\nOPTIONS:\n{options}", "dashes", "text"),
      ("Compare the lengths of {word1} and {word2}. Which is longer?", "none", "text"),
    ],
    "train": [
      ("If you spelled out {word1} and {word2}, which would take more letters?", "none", "text"),
      ("Count the letters in each of {options} and return the longest.", "inline", "text"),
      ("{word1} / {word2}: the one with more characters is", "none", "text"),
      ("{options}\nGive the letter of the longest word.", "letters", "letters"),
      ("Candidates:\n{options}\nLongest candidate:", "newline", "text"),
      ("Which takes longer to write, {word1} or {word2}?", "none", "text"),
    ],
    "heldout": [
      ("A kid wrote {word1} and then {word2}. Which of the two words is the long one?", "none", "text"),
      ("{options}\nWhich letter marks the word with the most characters?", "letters", "letters"),
      ("Longest word among {options}?", "inline", "text"),
      ("Spell {word1} and spell {word2}; which needs more letters?", "none", "text"),
    ],
  },
  "toy_topic": {
    "observed": [
      ("{sentence}\nWhat is the topic of this sentence?\nOPTIONS:\n{options}", "dashes", "text"),
      ("Sentence: {sentence}\nTopic ({options}):", "inline", "text"),
      ("What is this sentence about? {sentence}\nOPTIONS:\n{options}", "dashes", "text"),
      ("Is the following sentence about {options}? {sentence}", "inline", "text"),
    ],
    "train": [
      ("Which section of a newspaper would print this: {sentence}? Sections: {options}.", "inline", "text"),
      ("Categories:\n{options}\nText: {sentence}\nCategory:", "newline", "text"),
      ("{sentence} -- pick a subject from {options}.", "inline", "text"),
      ("{options}\nWhich letter gives the theme of: {sentence}", "letters", "letters"),
      ("Read: {sentence}\nWhat field is this from?\n{options}\nAnswer with its number.", "numbers", "numbers"),
      ("My friend told me that {sentence}. What were they talking about, {options}?", "inline", "text"),
    ],
    "heldout": [
      ("A blog post says {sentence}. Which theme fits it best: {options}?", "inline", "text"),
      ("{options}\nWhich letter is the subject of this line? {sentence}", "letters", "letters"),
      ("Put this line into a category.\n{sentence}\nPossible categories:\n{options}", "newline", "text"),
      ("Guess the area of interest of: {sentence} ({options})", "inline", "text"),
    ],
  },
  "toy_capital": {
    "observed": [
      ("What is the capital of {country}?\nOPTIONS:\n{options}", "dashes", "text"),
      ("Country: {country}\nCapital ({options}):", "inline", "text"),
      ("Which city is the capital of {country}? {options}", "inline", "text"),
      ("Q: What is the capital city of {country}?\nOPTIONS:\n{options}\nA:", "dashes", "text"),
    ],
    "train": [
      ("I am flying to the capital of {country}. Where do I land: {options}?", "inline", "text"),
      ("Cities:\n{options}\nWhich one is the seat of government of {country}?", "newline", "text"),
      ("{options}\nLetter of the capital of {country}:", "letters", "letters"),
      ("Name the main city where the government of {country} sits, from {options}.", "inline", "text"),
      ("{country}'s capital is one of these:\n{options}\nGive its number.", "numbers", "numbers"),
      ("Geography quiz! {country}. Its capital? Choices: {options}", "inline", "text"),
    ],
    "heldout": [
      ("The president of {country} works in which city: {options}?", "inline", "text"),
      ("{options}\nPick the letter naming the capital of {country}.", "letters", "letters"),
      ("Options:\n{options}\nIf you visit the capital of {country}, you are in", "newline", "text"),
      ("Tell me the capital of {country} ({options})", "inline", "text"),
    ],
  },
  "toy_entailment": {
    "observed": [
      ("Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis? {options}", "inline", "text"),
      ("{premise}\nDoes it follow that {hypothesis}\nOPTIONS:\n{options}", "dashes", "text"),
      ("Premise: {premise}\nHypothesis: {hypothesis}\nIs the hypothesis true? yes or no", "none", "text"),
      ("If {premise} is true, is {hypothesis} true?\nOPTIONS:\n{options}", "dashes", "text"),
    ],
    "train": [
      ("We know that {premise} Can we be sure that {hypothesis}? Answer yes or no.", "none", "text"),
      ("Fact: {premise}\nClaim: {hypothesis}\nIs the claim supported?\n{options}", "newline", "text"),
      ("{options}\nGiven {premise} Letter for whether {hypothesis}", "letters", "letters"),
      ("Suppose {premise} Then must it be that {hypothesis} {options}?", "inline", "text"),
      ("{hypothesis} -- is that implied by: {premise}", "none", "text"),
      ("Statement one: {premise} Statement two: {hypothesis} Does one imply two?\n{options}\nNumber:", "numbers", "numbers"),
    ],
    "heldout": [
      ("My friend says {premise} So is it right that {hypothesis} Yes or no?", "none", "text"),
      ("{options}\nLetter: does {premise} guarantee {hypothesis}", "letters", "letters"),
      ("Given only that {premise} would you agree that {hypothesis} ({options})", "inline", "text"),
      ("Evidence: {premise} Conclusion: {hypothesis} Valid?\n{options}", "newline", "text"),
    ],
  },
}  # fmt: skip

_SPACES = {"text": "option_text", "letters": "letters", "numbers": "numbers"}


def demo_instructions(
  tasks: list[str] | None = None, per_set: int | None = None
) -> dict[str, list[Instruction]]:
  """The instructions of each set (`SETS`), for `tasks` (default: every toy task).

  `per_set` keeps only the first N phrasings of each set of each task (default: all).

  Ids are `<task>:<set>_<n>` (e.g. `toy_parity:heldout_3`); each instruction applies to exactly
  one task, `jsonl:<task>`.
  """
  out: dict[str, list[Instruction]] = {s: [] for s in SETS}
  for task, sets in TEMPLATES.items():
    if tasks is not None and task not in tasks:
      continue
    for name in SETS:
      for n, (template, options_format, space) in enumerate(sets[name][:per_set], start=1):
        out[name].append(
          Instruction(
            id=f"{task}:{name}_{n}",
            tasks=(f"jsonl:{task}",),
            template=template,
            options_format=options_format,
            answer_space=_SPACES[space],
            split="observed" if name == "observed" else "unobserved",
            source=SOURCE,
            seen_by=(MODEL_FAMILY,) if name == "observed" else (),
          )
        )
  return out


def write_instruction_files(
  directory: str | os.PathLike, tasks: list[str] | None = None, per_set: int | None = None
) -> dict[str, pathlib.Path]:
  """Writes `<directory>/<set>.jsonl` for each set and re-reads them through the validating loader.

  Returns:
    `{set name: path}`.
  """
  directory = pathlib.Path(directory)
  paths = {}
  for name, instructions in demo_instructions(tasks, per_set).items():
    paths[name] = directory / f"{name}.jsonl"
    write_instructions(instructions, paths[name])
  load_instructions(list(paths.values()))  # validates every line and the uniqueness of ids
  return paths
