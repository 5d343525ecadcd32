"""Results rows whose option scores cannot be ranked are refused, naming the rows."""

import math

import pytest

from robust_prompt.eval import checks, tables


def _row(e, scores, task="mmlu:x", iid="i1"):
  return dict(
    model="m",
    task=task,
    instruction_id=iid,
    split="observed",
    source="human",
    example_id=f"{task}:{e}",
    option_scores=scores,
    prediction=0,
    gold=0,
    correct=True,
  )


def test_finite_and_generative_rows_pass():
  checks.check_finite_scores(
    [
      _row(0, [-1.0, -2.5, -0.1]),
      _row(1, [-math.inf, -3.0]),  # an impossible option is fine while another is possible
      dict(_row(2, []), prediction="Paris"),  # generative: nothing to rank
      {k: v for k, v in _row(3, [0.0]).items() if k != "option_scores"},
    ]
  )


@pytest.mark.parametrize(
  "scores, problem",
  [
    ([float("nan"), -1.0], r"NaN score for option\(s\) \[0\]"),
    ([-1.0, math.inf], r"\+inf score for option\(s\) \[1\]"),
    ([-math.inf, -math.inf], "every option scores -inf"),
    ([None, -1.0], "non-numeric option scores"),
  ],
)
def test_unrankable_scores_name_task_instruction_and_example(scores, problem):
  rows = [_row(0, [-1.0, -2.0]), _row(1, scores, task="bigbench:strategyqa", iid="human_07")]
  with pytest.raises(checks.NonFiniteScoreError, match=problem) as e:
    checks.check_finite_scores(rows)
  message = str(e.value)
  assert message.startswith("1 results row(s)")
  assert "row 2: task 'bigbench:strategyqa', instruction 'human_07'" in message
  assert "example 'bigbench:strategyqa:1' (model 'm')" in message


def test_all_bad_rows_are_counted_and_the_first_listed():
  rows = [_row(e, [float("nan"), 0.0]) for e in range(8)]
  with pytest.raises(checks.NonFiniteScoreError) as e:
    checks.check_finite_scores(iter(rows))  # any iterable
  message = str(e.value)
  assert message.startswith("8 results row(s)") and "; and 3 more." in message
  assert "example 'mmlu:x:4'" in message and "example 'mmlu:x:5'" not in message


def test_results_table_refuses_nan_scores_instead_of_predicting_option_a():
  # Before this check a NaN row was read as option 0 (np.argmax of [nan, ...] is 0).
  rows = [_row(0, [0.0, -1.0]), dict(_row(1, [float("nan"), -1.0]), prediction=None)]
  with pytest.raises(tables.TableError, match=r"row 2: task 'mmlu:x', instruction 'i1'"):
    tables.tables_from_results(rows)
