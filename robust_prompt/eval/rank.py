"""Rank classification: the score modes and the prediction rule.

The scores come from `PromptedModel.option_log_probs` (`model/prompted.py`): the input runs
once per (instruction, example) row and all `O` options of the row are scored against it (for
T5 in ONE decoder row sharing the start position), unlike a loop of teacher-forced forwards per
option (e.g. lm-evaluation-harness's).

Score modes (`SCORE_MODES`), all log-domain and per option `o` of row `b`:

* `sum` (default): `sum_s log p(y_s | y_<s, x)` over the option's tokens including EOS,
  teacher-forced (the Hugging Face `labels` convention; equals `robust-prompt score`).
* `mean`: the same sum divided by the option's token count (length-normalised).
* `greedy_prefix`: the rule of the original robustness study (Sun et al. 2023, "Evaluating the
  Zero-shot Robustness of Instruction-tuned Language Models", jiudingsun01/InstructionEval,
  `metrics.LogitsMetric.classify`). There the model first decodes greedily (`generate`, at most
  32 new tokens) and the per-step softmax distributions of that *greedy* decode are kept. Option
  `o` (tokenised with EOS) scores `prod_{k < n} p_k(y^o_k)`, where `p_k` is the distribution at
  step `k` conditioned on the GREEDY prefix `g_<k` (not on the option's own prefix) and
  `n = min(min_o len(y^o), len(g), 32)`: only the first `n` tokens are compared, with `n` the
  length of the SHORTEST option of the example (EOS included) and `len(g)` the number of greedy
  steps up to and including the greedy EOS. We return the log of that product,
  `sum_{k < n} log p_k(y^o_k)` (the same ranking, without float underflow). Difference from the
  original: there `len(g)` is the longest greedy decode in the *batch* (generation stops when all
  rows finished); here it is the row's own, i.e. the original with batch size 1, so that results
  do not depend on batching.

Ties: the prediction is the LOWEST option index among the maximal scores (`np.argmax` keeps the
first maximum, as `torch.argmax` did in the original study). Padded (dummy) options score -inf.
"""

from __future__ import annotations

import numpy as np

from robust_prompt.model.prompted import SCORE_MODES
from robust_prompt.model.scoring import GREEDY_PREFIX_MAX_STEPS

__all__ = ["GREEDY_PREFIX_MAX_STEPS", "SCORE_MODES", "predict"]


def predict(scores: np.ndarray, num_options: int) -> int:
  """The predicted option: highest score, lowest index on ties (`np.argmax` keeps the first)."""
  return int(np.argmax(np.asarray(scores)[:num_options]))
