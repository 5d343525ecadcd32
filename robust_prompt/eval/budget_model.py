"""The logistic instruction x example model behind budgeted evaluation (docs/metrics.md).

For a cell (task t, instruction i, example e) with gold label g = g(e) (the index of the correct
option; a single group when labels are unknown, e.g. generative tasks):

    logit P(correct) = mu[t, split(i)] + nu[t, g] + A[i] + delta[t, i] + c[t, i, g] + b[t, e]

* `mu` (task x split) and `nu` (task x gold label) are fixed effects with the weakly
  informative N(0, 2.5^2) prior of logistic regression (Gelman et al., 2008), which keeps a split
  where every evaluated cell is right finite without pulling ordinary ones;
* `A ~ N(0, s2_A[split])`: the part of an instruction's effect shared by every task of a
  benchmark that uses the same instruction id (MMLU's 57 subjects share one instruction set), so
  a subject with few examples borrows strength from the others; absent for an instruction used
  by one task only;
* `delta ~ N(0, s2_delta[t, split])`: how much better or worse the instruction does on the task;
* `c ~ N(0, s2_c[t, split])`: the instruction's *label bias* on the task: a phrasing that makes
  the model favour one option is right on the examples whose answer is that option and wrong on
  the others (on the real grids we have seen, the largest instruction x example interaction);
* `b ~ N(0, s2_b[t])`: the example's difficulty.

Cells are independent Bernoulli given the effects. The variances are estimated, not tuned: the
mode given the variances by Newton's method, alternating with MacKay's fixed-point update of the
variances (the Laplace-approximate marginal likelihood's stationary point, the same as EM's), each
task's variance shrunk towards the pooled value over the benchmark's tasks with `PRIOR_COUNT`
pseudo-effects (so a split with 4 instructions does not have its spread set by 4 numbers alone).

Newton's method and the posterior draws use the structure, so nothing of size `[cells,
parameters]` is built: the example effects enter one column of cells each (diagonal precision)
and are eliminated first; the label biases enter one (label, instruction) group of cells each
and are eliminated next, per label (`[I, I]` blocks); each task's remaining own effects are a
small dense block (`P_t = S + G + I`, S its splits); the shared effects, the only coupling
between tasks, are solved last (`P_s` = instructions shared by several tasks). 57 tasks x 40
instructions x 14k examples fit in seconds.

Shape letters (besides metrics.py's `I`, `E`): `G` label groups of a task, `IG = G * I` the
(label, instruction) groups of cells, which share every effect but the example's, `P_t` / `P_s`
own / shared effects, `R` posterior draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

FIXED_PRIOR_VARIANCE = 2.5**2
PRIOR_COUNT = 4.0
VARIANCE_RANGE = (1e-4, 25.0)
MAX_LABEL_GROUPS = 26
_DRAW_CHUNK_CELLS = 2_000_000  # R * I * E floats per chunk of the posterior draws


@dataclasses.dataclass(frozen=True)
class TaskGrid:
  """One task's possibly partial score grid.

  Attributes:
    task: task name ("mmlu:anatomy"); the part before ':' is the benchmark.
    instruction_ids: [I].
    splits: [I] "observed" / "unobserved".
    correct: [I, E] float, 1.0 / 0.0, NaN where the cell was not evaluated.
    labels: [E] int gold label (correct option index) per example, or None when unknown (a
      negative label also turns the label terms off for the task).
    example_ids: [E] or None (the model does not use them; designs and reports do).
  """

  task: str
  instruction_ids: tuple[str, ...]
  splits: tuple[str, ...]
  correct: np.ndarray
  labels: np.ndarray | None = None
  example_ids: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """Which terms the model has and how hard the fit works.

  Attributes:
    label_bias: include the gold-label terms `nu` and `c`.
    share_instructions: include `A` for instruction ids used by several tasks of a benchmark.
    max_iterations: Newton + variance iterations at most.
    tolerance: stop when the Newton step and the change of every variance's standard deviation
      (in logits; relative above 1) are below it.
  """

  label_bias: bool = True
  share_instructions: bool = True
  max_iterations: int = 300
  tolerance: float = 1e-3


def _softplus(x: np.ndarray) -> np.ndarray:
  return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _expit(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _chol_inverse(a: np.ndarray) -> np.ndarray:
  """Linv = L^-1 for a = L L^T (so a^-1 = Linv^T Linv and Linv^T z ~ N(0, a^-1))."""
  if a.shape[0] == 0:
    return np.zeros((0, 0))
  return np.linalg.inv(np.linalg.cholesky(0.5 * (a + a.T)))


class _Variances:
  """Variance components: named groups of effects, pooled over tasks through a common prior."""

  def __init__(self) -> None:
    self.index: dict[tuple, int] = {}
    self.pool: list[tuple] = []
    self.value = np.ones(0)

  def add(self, key: tuple, pool: tuple) -> int:
    if key not in self.index:
      self.index[key] = len(self.pool)
      self.pool.append(pool)
      self.value = np.append(self.value, 1.0)
    return self.index[key]

  def update(self, squares: np.ndarray, determined: np.ndarray) -> float:
    """New variances from per-group sums of mode^2 and of "determinedness"; returns the largest
    change of a standard deviation (relative above 1, absolute below).

    MacKay's update `s2 = sum m^2 / gamma` with `gamma = sum (1 - posterior var / s2)` (how many
    of the effects the data determine) has EM's fixed point `s2 = mean(m^2 + var)` but reaches it
    in tens of iterations where EM crawls (a variance heading towards 0). The pool's value
    enters as PRIOR_COUNT pseudo-effects.
    """
    new = self.value.copy()
    for p in sorted(set(self.pool)):
      members = np.array([k for k, q in enumerate(self.pool) if q == p])
      pooled = squares[members].sum() / max(determined[members].sum(), 1e-6)
      pooled = float(np.clip(pooled, *VARIANCE_RANGE))
      new[members] = (squares[members] + PRIOR_COUNT * pooled) / (determined[members] + PRIOR_COUNT)
    new = np.clip(new, *VARIANCE_RANGE)
    # Change of the standard deviation, relative above 1 logit and absolute below: a variance
    # heading to 0 stops mattering long before its relative change gets small.
    sd_new, sd_old = np.sqrt(new), np.sqrt(self.value)
    change = float(np.max(np.abs(sd_new - sd_old) / np.maximum(sd_old, 1.0), initial=0.0))
    self.value = new
    return change


class _Task:
  """One task's evaluated cells, the layout of its effects and their current modes.

  `z` [IG, P_t] and `y_map` [IG, P_s] are the 0/1 maps from own and shared effects to the
  (label, instruction) groups (row `g * I + i`); `theta` [P_t] own effects, `c` [IG] label
  biases (zeros without labels), `b` [E] example effects.
  """

  def __init__(
    self,
    grid: TaskGrid,
    shared: dict[str, int],
    variances: _Variances,
    settings: ModelSettings,
  ):
    correct = np.asarray(grid.correct, dtype=np.float64)
    self.grid = grid
    self.n_inst, self.n_ex = correct.shape
    self.missing = np.isnan(correct)
    labels = None if grid.labels is None else np.asarray(grid.labels, dtype=np.int64)
    self.n_groups = 1
    if settings.label_bias and labels is not None and labels.size and labels.min() >= 0:
      self.n_groups = int(labels.max()) + 1
      if not 2 <= self.n_groups <= MAX_LABEL_GROUPS:
        self.n_groups = 1
    self.has_labels = self.n_groups > 1
    self.labels = labels if self.has_labels else np.zeros(self.n_ex, dtype=np.int64)
    # Evaluated cells as flat arrays: only they enter the likelihood (a tenth of the grid at 10%).
    self.cell_i, self.cell_e = np.nonzero(~self.missing)
    self.cell_y = correct[self.cell_i, self.cell_e]
    self.cell_k = self.labels[self.cell_e] * self.n_inst + self.cell_i
    self.observed_sum = np.nansum(correct, axis=1)
    self.n_missing = self.missing.sum(axis=1)
    # Per label group: its examples, and where each evaluated cell sits in its [I, E_g] block.
    self.columns = [np.nonzero(self.labels == g)[0] for g in range(self.n_groups)]
    position = np.zeros(self.n_ex, dtype=np.int64)
    for cols in self.columns:
      position[cols] = np.arange(cols.size)
    cell_g = self.labels[self.cell_e]
    self.group_cells = [np.nonzero(cell_g == g)[0] for g in range(self.n_groups)]
    self.cell_col = position[self.cell_e]
    n_i, n_g = self.n_inst, self.n_groups
    names: list[tuple] = [("mu", s) for s in sorted(set(grid.splits))]
    names += [("nu", g) for g in range(n_g)] if self.has_labels else []
    names += [("delta", i) for i in range(n_i)]
    column = {name: k for k, name in enumerate(names)}
    self.z = np.zeros((n_g * n_i, len(names)))
    self.y_map = np.zeros((n_g * n_i, len(shared)))
    for g in range(n_g):
      for i in range(n_i):
        row = g * n_i + i
        self.z[row, column[("mu", grid.splits[i])]] = 1.0
        self.z[row, column[("delta", i)]] = 1.0
        if self.has_labels:
          self.z[row, column[("nu", g)]] = 1.0
        if grid.instruction_ids[i] in shared:
          self.y_map[row, shared[grid.instruction_ids[i]]] = 1.0
    group = []
    for name in names:
      if name[0] == "delta":
        split = grid.splits[name[1]]
        group.append(variances.add(("delta", grid.task, split), ("delta", split)))
      else:
        group.append(-1)  # fixed effect
    self.group = np.array(group, dtype=np.int64)
    # Label biases: one variance per task and split (the phrasings a model was tuned on may have
    # none while paraphrases have large ones), rows g * I + i.
    self.c_group = np.zeros(0, dtype=np.int64)
    if self.has_labels:
      c_of_split = {
        s: variances.add(("c", grid.task, s), ("c", s)) for s in sorted(set(grid.splits))
      }
      per_inst = np.array([c_of_split[s] for s in grid.splits], dtype=np.int64)
      self.c_group = np.tile(per_inst, n_g)
    self.b_group = variances.add(("b", grid.task), ("b",))
    self.theta = np.zeros(len(names))
    self.c = np.zeros(n_g * n_i)
    self.b = np.zeros(self.n_ex)

  def blocks(self) -> list[slice]:
    """Rows of each label group in the IG vectors."""
    return [slice(g * self.n_inst, (g + 1) * self.n_inst) for g in range(self.n_groups)]

  def kappa(self, phi: np.ndarray, theta=None, c=None) -> np.ndarray:
    """[IG] logit of each (label, instruction) group of cells, without the example effect."""
    theta = self.theta if theta is None else theta
    c = self.c if c is None else c
    return self.z @ theta + self.y_map @ phi + c

  def log_likelihood(self, kappa: np.ndarray, b: np.ndarray) -> float:
    eta = kappa[self.cell_k] + b[self.cell_e]
    return float(np.sum(self.cell_y * eta - _softplus(eta)))

  def weight_blocks(self, w: np.ndarray) -> list[np.ndarray]:
    """Per label group, [I, E_g] dense cell weights (0 where not evaluated)."""
    out = []
    for g, cols in enumerate(self.columns):
      block = np.zeros((self.n_inst, cols.size))
      sel = self.group_cells[g]
      block[self.cell_i[sel], self.cell_col[sel]] = w[sel]
      out.append(block)
    return out

  def w_transpose(self, w_blocks: list[np.ndarray], d_kappa: np.ndarray) -> np.ndarray:
    """[E, ...]: for each example, the sum over its cells of weight x `d_kappa` of the cell."""
    out = np.zeros((self.n_ex,) + d_kappa.shape[1:])
    for cols, block, rows in zip(self.columns, w_blocks, self.blocks()):
      out[cols] = block.T @ d_kappa[rows]
    return out


@dataclasses.dataclass
class _Factors:
  """One task's pieces of the Newton system and of the posterior at the current point.

  Example effects and label biases are eliminated; what is left is in terms of the own effects
  (`a_linv`, `a_inv_b`, `rhs`) and the shared ones (`s_part`, `rs_part`).
  """

  d: np.ndarray  # [E] precision of the example effects given everything else
  w: list  # per label group [I, E_g] cell weights p (1 - p) (0 where not evaluated)
  gb: np.ndarray  # [E] gradient of the example effects
  k: list  # per label group [I, I] precision of the group logits, examples eliminated
  q_linv: list  # per label group [I, I] inverse Cholesky factor of (k + 1/s2_c) (labels only)
  rhs_c: np.ndarray  # [IG] gradient of the label biases, examples eliminated
  a_linv: np.ndarray  # [P_t, P_t] inverse Cholesky factor of the own effects' precision
  a_inv_b: np.ndarray  # [P_t, P_s] A^-1 B, B the own x shared precision
  rhs: np.ndarray  # [P_t] gradient of the own effects, examples and label biases eliminated
  s_part: np.ndarray  # [P_s, P_s] this task's term of the shared effects' precision
  rs_part: np.ndarray  # [P_s] and of their gradient


def _task_factors(t: _Task, phi: np.ndarray, lam: np.ndarray, lam_c: np.ndarray, lam_b: float):
  p = _expit(t.kappa(phi)[t.cell_k] + t.b[t.cell_e])
  w, r = p * (1.0 - p), t.cell_y - p
  d = np.bincount(t.cell_e, w, t.n_ex) + lam_b
  gb = np.bincount(t.cell_e, r, t.n_ex) - lam_b * t.b
  n_ig = t.n_groups * t.n_inst
  wk, rk = np.bincount(t.cell_k, w, n_ig), np.bincount(t.cell_k, r, n_ig)
  w_blocks = t.weight_blocks(w)
  k_eff = np.zeros((n_ig, n_ig))
  g_eff = np.zeros(n_ig)
  k_blocks, q_linvs = [], []
  rhs_c = rk * 0.0
  for cols, wg, rows in zip(t.columns, w_blocks, t.blocks()):
    dg = d[cols]
    kg = np.diag(wk[rows]) - (wg / dg) @ wg.T
    gg = rk[rows] - wg @ (gb[cols] / dg)
    k_blocks.append(kg)
    if t.has_labels:
      # Eliminate this label's biases c: precision kg + lam_c, so Q = (kg + lam_c)^-1 and what is
      # left for the other effects is kg - kg Q kg with gradient gg - kg Q (gg - lam_c c).
      q_linv = _chol_inverse(kg + np.diag(lam_c[rows]))
      q = q_linv.T @ q_linv
      rhs_c[rows] = gg - lam_c[rows] * t.c[rows]
      kq = kg @ q
      k_eff[rows, rows] = kg - kq @ kg
      g_eff[rows] = gg - kq @ rhs_c[rows]
      q_linvs.append(q_linv)
    else:
      k_eff[rows, rows] = kg
      g_eff[rows] = gg
  zk = t.z.T @ k_eff
  a_linv = _chol_inverse(zk @ t.z + np.diag(lam))
  b = zk @ t.y_map
  a_inv_b = a_linv.T @ (a_linv @ b)
  rhs = t.z.T @ g_eff - lam * t.theta
  yk = t.y_map.T @ k_eff
  s_part = yk @ t.y_map - b.T @ a_inv_b
  rs_part = t.y_map.T @ g_eff - a_inv_b.T @ rhs
  return _Factors(d, w_blocks, gb, k_blocks, q_linvs, rhs_c, a_linv, a_inv_b, rhs, s_part, rs_part)


def _missing_moments(t: _Task, kappa: np.ndarray, b: np.ndarray):
  """Sum of p and of p (1 - p) over each instruction's cells not evaluated, for every draw.

  Args:
    t: the task.
    kappa: [R, IG] float32 group logits; b: [R, E] float32 example effects.

  Returns:
    ([R, I], [R, I]) float64. float32 and in-place passes per label group: this is the one
    place that touches every cell once per draw.
  """
  n_draws = kappa.shape[0]
  mean = np.zeros((n_draws, t.n_inst))
  square = np.zeros((n_draws, t.n_inst))
  missing = [t.missing[:, cols].astype(np.float32) for cols in t.columns]
  chunk = max(1, _DRAW_CHUNK_CELLS // max(t.n_inst * t.n_ex, 1))
  for start in range(0, n_draws, chunk):
    r = slice(start, min(n_draws, start + chunk))
    for cols, rows, mask in zip(t.columns, t.blocks(), missing):
      if not cols.size:
        continue
      x = kappa[r, rows][:, :, None] + b[r][:, None, cols]  # [r, I, E_g] logits
      np.negative(x, out=x)
      with np.errstate(over="ignore"):  # exp(large) = inf gives p = 0, as it should
        np.exp(x, out=x)
      x += 1.0
      np.reciprocal(x, out=x)  # p
      x *= mask
      mean[r] += x.sum(axis=2, dtype=np.float64)
      square[r] += np.einsum("rie,rie->ri", x, x, dtype=np.float64)
  return mean, mean - square


def _grid_logits(t: _Task, kappa: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[R, I, E] logits of every cell from [R, IG] group logits and [R, E] example effects."""
  per_group = kappa.reshape(kappa.shape[0], t.n_groups, t.n_inst)
  return np.transpose(per_group[:, t.labels, :], (0, 2, 1)) + b[:, None, :]


class ModelFit:
  """The fitted model of one benchmark's tasks: modes, variances and posterior draws.

  Made by `fit`; `tasks[k]` follows the order of the grids given to it.
  """

  def __init__(self, tasks: list[_Task], phi_group: np.ndarray, variances: _Variances):
    self.tasks = tasks
    self.phi = np.zeros(len(phi_group))
    self.phi_group = phi_group
    self.variances = variances
    self.iterations = 0
    self.converged = False

  def _precisions(self, t: _Task) -> tuple[np.ndarray, np.ndarray, float]:
    """Prior precisions of the own effects [P_t], of the label biases [IG] (zeros without
    labels, where the biases stay 0) and of the example effects."""
    v = self.variances.value
    lam = 1.0 / np.where(t.group >= 0, v[t.group], FIXED_PRIOR_VARIANCE)
    lam_c = 1.0 / v[t.c_group] if t.has_labels else np.zeros(t.c.size)  # c stays 0
    return lam, lam_c, 1.0 / v[t.b_group]

  def _phi_precision(self) -> np.ndarray:
    return 1.0 / self.variances.value[self.phi_group] if self.phi.size else np.zeros(0)

  def _factors(self) -> tuple[list[_Factors], np.ndarray, np.ndarray]:
    """Every task's factors, the shared effects' inverse Cholesky factor and gradient."""
    factors = [_task_factors(t, self.phi, *self._precisions(t)) for t in self.tasks]
    lam_phi = self._phi_precision()
    s = np.diag(lam_phi) + sum((f.s_part for f in factors), np.zeros((self.phi.size,) * 2))
    rs = -lam_phi * self.phi + sum((f.rs_part for f in factors), np.zeros(self.phi.size))
    return factors, _chol_inverse(s), rs

  def _log_posterior(self, state) -> float:
    phi, per_task = state
    total = -0.5 * float(np.sum(self._phi_precision() * phi**2))
    for t, (theta, c, b) in zip(self.tasks, per_task):
      lam, lam_c, lam_b = self._precisions(t)
      total += t.log_likelihood(t.kappa(phi, theta, c), b)
      prior = np.sum(lam * theta**2) + np.sum(lam_c * c**2) + lam_b * np.sum(b**2)
      total -= 0.5 * float(prior)
    return total

  def _newton_step(self, factors, s_linv, rs) -> float:
    """One damped Newton step at fixed variances; returns the largest change of an effect."""
    d_phi = s_linv.T @ (s_linv @ rs)
    steps = []
    for t, f in zip(self.tasks, factors):
      d_theta = f.a_linv.T @ (f.a_linv @ f.rhs) - f.a_inv_b @ d_phi
      d_kappa = t.z @ d_theta + t.y_map @ d_phi
      d_c = np.zeros_like(t.c)
      if t.has_labels:
        for rows, kg, q_linv in zip(t.blocks(), f.k, f.q_linv):
          d_c[rows] = q_linv.T @ (q_linv @ (f.rhs_c[rows] - kg @ d_kappa[rows]))
      d_b = (f.gb - t.w_transpose(f.w, d_kappa + d_c)) / f.d
      steps.append((d_theta, d_c, d_b))

    def moved(scale):
      return self.phi + scale * d_phi, [
        (t.theta + scale * dt, t.c + scale * dc, t.b + scale * db)
        for t, (dt, dc, db) in zip(self.tasks, steps)
      ]

    before = self._log_posterior((self.phi, [(t.theta, t.c, t.b) for t in self.tasks]))
    scale = 1.0
    for _ in range(30):  # the objective is concave: halving finds an ascent step
      state = moved(scale)
      if self._log_posterior(state) >= before - 1e-9 * abs(before):
        break
      scale *= 0.5
    self.phi = state[0]
    for t, (theta, c, b) in zip(self.tasks, state[1]):
      t.theta, t.c, t.b = theta, c, b
    sizes = [np.abs(d_phi)] + [np.abs(x) for step in steps for x in step]
    return scale * float(max((np.max(x, initial=0.0) for x in sizes), default=0.0))

  def _covariances(self, t: _Task, f: _Factors, s_linv: np.ndarray):
    """Posterior variances of the own effects [P_t] and label biases [IG], and the posterior
    covariance of the group logits kappa per label group ([I, I] each)."""
    a_inv = f.a_linv.T @ f.a_linv
    shared = f.a_inv_b @ s_linv.T  # [P_t, P_s]
    var_theta = np.diag(a_inv) + np.sum(shared**2, axis=1)
    # m = z theta + y_map phi; Cov(m) = z A^-1 z^T + V S^-1 V^T with V = y_map - z A^-1 B.
    za = t.z @ f.a_linv.T
    v = (t.y_map - t.z @ f.a_inv_b) @ s_linv.T
    var_c = np.zeros(t.c.size)
    cov_kappa = []
    lam_c = self._precisions(t)[1]
    for g, rows in enumerate(t.blocks()):
      cov_m = za[rows] @ za[rows].T + v[rows] @ v[rows].T
      if not t.has_labels:
        cov_kappa.append(cov_m)
        continue
      # c | m ~ N(c_hat - Q k dm, Q): kappa = m + c moves by (I - Q k) dm = Q diag(lam_c) dm.
      q = f.q_linv[g].T @ f.q_linv[g]
      qk = q @ f.k[g]
      var_c[rows] = np.diag(q) + np.sum((qk @ cov_m) * qk, axis=1)
      ql = q * lam_c[rows][None, :]
      cov_kappa.append(ql @ cov_m @ ql.T + q)
    return var_theta, var_c, cov_kappa

  def _update_variances(self, factors, s_linv) -> float:
    """MacKay's update of every variance at the current mode; returns `_Variances.update`'s."""
    n_groups = len(self.variances.pool)
    squares, determined = np.zeros(n_groups), np.zeros(n_groups)
    value = self.variances.value

    def add(groups, modes, variances):
      np.add.at(squares, groups, modes**2)
      np.add.at(determined, groups, np.clip(1.0 - variances / value[groups], 0.0, 1.0))

    if self.phi.size:
      add(self.phi_group, self.phi, np.sum(s_linv**2, axis=0))  # diag S^-1: column norms
    for t, f in zip(self.tasks, factors):
      var_theta, var_c, cov_kappa = self._covariances(t, f, s_linv)
      own = t.group >= 0
      add(t.group[own], t.theta[own], var_theta[own])
      if t.has_labels:
        add(t.c_group, t.c, var_c)
      var_b = 1.0 / f.d
      for cols, wg, cov in zip(t.columns, f.w, cov_kappa):
        m = (wg / f.d[cols]).T  # [E_g, I]: b moves by -m dkappa
        var_b[cols] += np.sum((m @ cov) * m, axis=1)
      add(np.full(t.n_ex, t.b_group), t.b, var_b)
    return self.variances.update(squares, determined)

  # -- results ------------------------------------------------------------------------------------

  def plugin_accuracy(self) -> list[np.ndarray]:
    """[I] per task: mean over examples of the evaluated value where the cell was evaluated and
    the fitted probability (at the posterior mode) elsewhere."""
    out = []
    for t in self.tasks:
      p = _expit(_grid_logits(t, t.kappa(self.phi)[None], t.b[None]))[0]
      predicted = np.where(t.missing, p, 0.0).sum(axis=1)
      out.append((t.observed_sum + predicted) / max(t.n_ex, 1))
    return out

  def accuracy_draws(self, n_draws: int, seed) -> list[np.ndarray]:
    """[R, I] per task: posterior draws of every instruction's full-grid accuracy.

    A draw takes the effects from the Laplace posterior, jointly (shared effects; each task's
    own given them; label biases given those; example effects given all), then the outcomes of
    the cells not evaluated from Bernoulli(p): their number per instruction from its normal
    approximation (mean sum p, variance sum p (1 - p)) rounded to an integer in the possible
    range, so an instruction right everywhere stays exactly at 1. Evaluated cells keep their
    value. The same seed gives the same draws.
    """
    rng = np.random.default_rng(seed)
    factors, s_linv, _ = self._factors()
    d_phi = s_linv.T @ rng.standard_normal((self.phi.size, n_draws))  # [P_s, R]
    plugin_missing = [
      a * t.n_ex - t.observed_sum for t, a in zip(self.tasks, self.plugin_accuracy())
    ]
    out = []
    for k, (t, f) in enumerate(zip(self.tasks, factors)):
      if not t.n_missing.any():
        out.append(np.broadcast_to(t.observed_sum / max(t.n_ex, 1), (n_draws, t.n_inst)).copy())
        continue
      d_theta = f.a_linv.T @ rng.standard_normal((t.theta.size, n_draws)) - f.a_inv_b @ d_phi
      d_kappa = t.z @ d_theta + t.y_map @ d_phi  # [IG, R]
      if t.has_labels:
        for rows, kg, q_linv in zip(t.blocks(), f.k, f.q_linv):
          noise = q_linv.T @ rng.standard_normal((t.n_inst, n_draws))
          d_kappa[rows] += noise - q_linv.T @ (q_linv @ (kg @ d_kappa[rows]))
      kappa = (t.kappa(self.phi)[:, None] + d_kappa).T.astype(np.float32)  # [R, IG]
      b = t.b[None, :] - (t.w_transpose(f.w, d_kappa) / f.d[:, None]).T
      b = (b + rng.standard_normal(b.shape) / np.sqrt(f.d)).astype(np.float32)  # [R, E]
      mean, var = _missing_moments(t, kappa, b)
      total = mean + np.sqrt(np.maximum(var, 0.0)) * rng.standard_normal(mean.shape)  # [R, I]
      # Recentre on the plug-in: the Gaussian approximation ignores the skew of the effects'
      # posterior, and sigmoid(mode + noise) is pulled towards 1/2 on average (draws would be
      # biased low above 50% even when the model is right; the plug-in, which matches the
      # evaluated cells, is not). Keep the spread and the correlations of the draws.
      total += plugin_missing[k][None, :] - total.mean(axis=0, keepdims=True)
      total = np.clip(np.rint(total), 0.0, t.n_missing[None, :])
      out.append((t.observed_sum[None, :] + total) / t.n_ex)
    return out

  def variance_components(self) -> dict[str, float]:
    """Fitted variances by name: "delta/<task>/<split>", "c/<task>/<split>", "b/<task>", "A/<split>"."""
    return {
      "/".join(str(x) for x in key): float(self.variances.value[k])
      for key, k in self.variances.index.items()
    }


def fit(grids: Sequence[TaskGrid], settings: ModelSettings = ModelSettings()) -> ModelFit:
  """Fits the model jointly to the tasks of one benchmark (see the module docstring).

  Args:
    grids: the tasks; an instruction id used by two or more of them gets a shared effect `A`.
    settings: terms and stopping rule.

  Returns:
    The fit; `fit.converged` says whether the stopping rule was met within `max_iterations`.
  """
  variances = _Variances()
  uses: dict[str, set[str]] = {}
  for g in grids:
    for iid in g.instruction_ids:
      uses.setdefault(iid, set()).add(g.task)
  split_of = {iid: s for g in grids for iid, s in zip(g.instruction_ids, g.splits)}
  shared_ids = sorted(i for i, ts in uses.items() if len(ts) > 1)
  if not settings.share_instructions:
    shared_ids = []
  shared = {iid: k for k, iid in enumerate(shared_ids)}
  tasks = [_Task(g, shared, variances, settings) for g in grids]
  phi_group = [variances.add(("A", split_of[i]), ("A", split_of[i])) for i in shared_ids]
  model = ModelFit(tasks, np.array(phi_group, dtype=np.int64), variances)
  for iteration in range(1, settings.max_iterations + 1):
    factors, s_linv, rs = model._factors()
    step = model._newton_step(factors, s_linv, rs)
    change = model._update_variances(factors, s_linv)
    model.iterations = iteration
    if step < settings.tolerance and change < settings.tolerance:
      model.converged = True
      break
  return model
