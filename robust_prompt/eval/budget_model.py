"""The logistic instruction x example model behind budgeted evaluation (docs/metrics.md).

For a cell (task t, instruction i, example e) with gold label g = g(e) (the index of the correct
option; one group when labels are unknown or the task is generative):

    logit P(correct) = mu[t, split(i)] + nu[t, g] + delta[t, i] + c[t, i, g]
                       + A[i] + C[i, g]                 (only for instructions shared by tasks)
                       + b[t, e]

* `mu` (task x split) and `nu` (task x gold label) are fixed effects (weak N(0, 10^2) priors, only
  to keep all-correct tasks finite);
* `delta ~ N(0, s2_delta[t, split])`: how much better or worse an instruction does on the task;
* `c ~ N(0, s2_c[t])`: the instruction's *label bias* (a phrasing that makes the model favour
  one option is right on the examples whose answer is that option and wrong on the others; on
  real grids this is the largest instruction x example interaction);
* `A ~ N(0, s2_A[split])`, `C ~ N(0, s2_C)`: the part of an instruction's effect (and label
  bias) shared by every task of a benchmark that uses the same instruction id (MMLU's 57
  subjects share one instruction set), so a subject with few examples borrows strength;
* `b ~ N(0, s2_b[t])`: the example's difficulty.

Cells are independent Bernoulli given the effects. The variances are estimated by Laplace EM
(the mode given the variances by Newton's method, then each variance set to the mean of
`mode^2 + posterior variance` over its effects, shrunk towards the pooled value over the tasks
with `PRIOR_COUNT` pseudo-effects), so nothing is tuned by hand.

Newton's method and the posterior draws use the structure: example effects enter one cell row
each (their precision is diagonal), so they are eliminated first; each task's own effects form a
small dense block (`P_t = 2 + G + I + I G`); the shared effects are the only coupling between
tasks and are solved last (`P_s = I_shared (1 + G)`). Nothing of size `[cells, parameters]` is
ever built, so 57 tasks x 40 instructions x 14k examples fit in seconds.

Shape letters (besides metrics.py's `I`, `E`): `G` label groups of a task, `IG = G * I` the
(label, instruction) groups of cells that share every effect but the example's, `P` parameters
of a block, `R` posterior draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

FIXED_PRIOR_VARIANCE = 100.0
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
    labels: [E] int gold label (correct option index) per example, or None when unknown; -1 for
      an unknown label turns the label-bias terms off for the task.
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
    label_bias: include the instruction x gold-label terms (`nu`, `c`, `C`).
    share_instructions: include the shared `A`, `C` for instruction ids used by several tasks of
      one benchmark.
    max_iterations: Newton + EM iterations at most.
    tolerance: stop when the Newton step and the relative change of every variance are below it.
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
  """Linv with a = L L^T, Linv = L^-1 (so a^-1 = Linv^T Linv and Linv^T z ~ N(0, a^-1))."""
  if a.shape[0] == 0:
    return np.zeros((0, 0))
  chol = np.linalg.cholesky(a)
  return np.linalg.inv(chol)


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
    """New variances from per-group sums of mode^2 and of "well-determinedness"; returns the
    largest relative change.

    MacKay's fixed point `s2 = sum m^2 / gamma`, `gamma = sum (1 - posterior var / s2)` (the
    number of effects the data determine): the same fixed point as EM's `s2 = mean(m^2 + var)`
    but reached in a few iterations where EM crawls (a variance heading towards 0). A pooled
    prior adds PRIOR_COUNT pseudo-effects at the pool's value.
    """
    new = self.value.copy()
    for p in sorted(set(self.pool)):
      members = np.array([k for k, q in enumerate(self.pool) if q == p])
      pooled = squares[members].sum() / max(determined[members].sum(), 1e-6)
      pooled = float(np.clip(pooled, *VARIANCE_RANGE))
      new[members] = (squares[members] + PRIOR_COUNT * pooled) / (determined[members] + PRIOR_COUNT)
    new = np.clip(new, *VARIANCE_RANGE)
    change = float(np.max(np.abs(new - self.value) / self.value)) if new.size else 0.0
    self.value = new
    return change


class _Task:
  """One task's evaluated cells, its effects' layout (`Z`, `Y` maps to the IG cell groups) and
  state (own effects `theta`, example effects `b`)."""

  def __init__(
    self,
    grid: TaskGrid,
    shared: dict[str, int],
    n_shared_labels: int,
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
    self.labels = labels if self.n_groups > 1 else np.zeros(self.n_ex, dtype=np.int64)
    # Evaluated cells as flat arrays: only they enter the likelihood (a tenth of the grid at 10%).
    self.cell_i, self.cell_e = np.nonzero(~self.missing)
    self.cell_y = correct[self.cell_i, self.cell_e]
    self.cell_k = self.labels[self.cell_e] * self.n_inst + self.cell_i
    self.observed_sum = np.nansum(correct, axis=1)
    self.n_missing = self.missing.sum(axis=1)
    # Per label group g: its examples, and where each evaluated cell sits in its [I, E_g] block.
    self.columns = [np.nonzero(self.labels == g)[0] for g in range(self.n_groups)]
    position = np.zeros(self.n_ex, dtype=np.int64)
    for cols in self.columns:
      position[cols] = np.arange(cols.size)
    cell_g = self.labels[self.cell_e]
    self.group_cells = [np.nonzero(cell_g == g)[0] for g in range(self.n_groups)]
    self.cell_col = position[self.cell_e]
    n_i, n_g = self.n_inst, self.n_groups
    splits = sorted(set(grid.splits))
    # Own effects: mu per split, nu per label group, delta per instruction, c per (label, inst).
    names: list[tuple] = [("mu", s) for s in splits]
    if n_g > 1:
      names += [("nu", g) for g in range(n_g)]
    names += [("delta", i) for i in range(n_i)]
    if n_g > 1:
      names += [("c", g, i) for g in range(n_g) for i in range(n_i)]
    column = {name: k for k, name in enumerate(names)}
    self.z = np.zeros((n_g * n_i, len(names)))
    self.y_map = np.zeros((n_g * n_i, len(shared) * (1 + n_shared_labels)))
    for g in range(n_g):
      for i in range(n_i):
        row = g * n_i + i
        self.z[row, column[("mu", grid.splits[i])]] = 1.0
        self.z[row, column[("delta", i)]] = 1.0
        if n_g > 1:
          self.z[row, column[("nu", g)]] = 1.0
          self.z[row, column[("c", g, i)]] = 1.0
        k = shared.get(grid.instruction_ids[i])
        if k is not None:
          self.y_map[row, k] = 1.0  # A[k]
          if n_g > 1 and n_shared_labels:
            self.y_map[row, len(shared) + k * n_shared_labels + g] = 1.0  # C[k, g]
    group = []
    for name in names:
      if name[0] == "delta":
        split = grid.splits[name[1]]
        group.append(variances.add(("delta", grid.task, split), ("delta", split)))
      elif name[0] == "c":
        group.append(variances.add(("c", grid.task), ("c",)))
      else:
        group.append(-1)
    self.group = np.array(group, dtype=np.int64)
    self.b_group = variances.add(("b", grid.task), ("b",))
    self.theta = np.zeros(len(names))
    self.b = np.zeros(self.n_ex)

  def kappa(self, phi: np.ndarray) -> np.ndarray:
    """[IG] linear predictor of each (label, instruction) group without the example effect."""
    return self.z @ self.theta + self.y_map @ phi

  def cell_eta(self, kappa: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n] logits of the evaluated cells."""
    return kappa[self.cell_k] + b[self.cell_e]

  def log_likelihood(self, eta: np.ndarray) -> float:
    return float(np.sum(self.cell_y * eta - _softplus(eta)))

  def weight_blocks(self, w: np.ndarray) -> list[np.ndarray]:
    """Per label group, [I, E_g] dense cell weights (0 where not evaluated)."""
    blocks = []
    for g, cols in enumerate(self.columns):
      block = np.zeros((self.n_inst, cols.size))
      sel = self.group_cells[g]
      block[self.cell_i[sel], self.cell_col[sel]] = w[sel]
      blocks.append(block)
    return blocks

  def w_transpose(self, blocks: list[np.ndarray], d_kappa: np.ndarray) -> np.ndarray:
    """[E, ...] sum over an example's cells of weight x change of its group predictor."""
    out = np.zeros((self.n_ex,) + d_kappa.shape[1:])
    for g, (cols, block) in enumerate(zip(self.columns, blocks)):
      out[cols] = block.T @ d_kappa[g * self.n_inst : (g + 1) * self.n_inst]
    return out


@dataclasses.dataclass
class _Factors:
  """What Newton's method, the EM update and the draws need at one point of one task."""

  d: np.ndarray  # [E] precision of the example effects given the rest
  w: list  # per label group [I, E_g] Bernoulli weights of the cells (0 where not evaluated)
  gb: np.ndarray  # [E] gradient of the example effects
  k: np.ndarray  # [IG, IG] precision of the cell-group predictors, example effects eliminated
  gk: np.ndarray  # [IG] matching gradient
  a_linv: np.ndarray  # [P_t, P_t] inverse Cholesky factor of the own effects' precision
  a_inv_b: np.ndarray  # [P_t, P_s]
  rhs: np.ndarray  # [P_t]


def _task_factors(t: _Task, phi: np.ndarray, lam: np.ndarray, lam_b: float) -> _Factors:
  kappa = t.kappa(phi)
  p = _expit(t.cell_eta(kappa, t.b))
  w, r = p * (1.0 - p), t.cell_y - p
  d = np.bincount(t.cell_e, w, t.n_ex) + lam_b
  gb = np.bincount(t.cell_e, r, t.n_ex) - lam_b * t.b
  n_i, n_ig = t.n_inst, t.n_groups * t.n_inst
  wk, rk = np.bincount(t.cell_k, w, n_ig), np.bincount(t.cell_k, r, n_ig)
  blocks = t.weight_blocks(w)
  k = np.zeros((n_ig, n_ig))
  gk = np.zeros(n_ig)
  for g, (cols, wg) in enumerate(zip(t.columns, blocks)):
    dg = d[cols]
    block = slice(g * n_i, (g + 1) * n_i)
    k[block, block] = np.diag(wk[block]) - (wg / dg) @ wg.T
    gk[block] = rk[block] - wg @ (gb[cols] / dg)
  zk = t.z.T @ k
  a = zk @ t.z + np.diag(lam)
  a_linv = _chol_inverse(0.5 * (a + a.T))
  a_inv = a_linv.T @ a_linv
  rhs = t.z.T @ gk - lam * t.theta
  return _Factors(d, blocks, gb, k, gk, a_linv, a_inv @ (zk @ t.y_map), rhs)


def _grid_logits(t: _Task, kappa: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[R, I, E] logits of every cell from [R, IG] group predictors and [R, E] example effects."""
  per_group = kappa.reshape(kappa.shape[0], t.n_groups, t.n_inst)
  return np.transpose(per_group[:, t.labels, :], (0, 2, 1)) + b[:, None, :]


class ModelFit:
  """The fitted model of one benchmark's tasks: modes, variances and posterior draws.

  Build with `fit`. `tasks[k]` follows the order of the grids passed to `fit`.
  """

  def __init__(self, tasks: list[_Task], phi: np.ndarray, phi_group: np.ndarray, variances):
    self.tasks = tasks
    self.phi = phi
    self.phi_group = phi_group
    self.variances = variances
    self.iterations = 0
    self.converged = False

  # -- the pieces of one Newton / EM iteration ----------------------------------------------------

  def _precisions(self, t: _Task) -> tuple[np.ndarray, float]:
    variance = np.where(t.group >= 0, self.variances.value[t.group], FIXED_PRIOR_VARIANCE)
    lam = 1.0 / variance
    return lam, 1.0 / float(self.variances.value[t.b_group])

  def _phi_precision(self) -> np.ndarray:
    return 1.0 / self.variances.value[self.phi_group] if self.phi.size else np.zeros(0)

  def _factors(self):
    factors = [self._factors_of(t) for t in self.tasks]
    lam_phi = self._phi_precision()
    s = np.diag(lam_phi)
    rs = -lam_phi * self.phi
    for t, f in zip(self.tasks, factors):
      b = t.z.T @ f.k @ t.y_map
      s += t.y_map.T @ f.k @ t.y_map - b.T @ f.a_inv_b
      rs += t.y_map.T @ f.gk - f.a_inv_b.T @ f.rhs
    s_linv = _chol_inverse(0.5 * (s + s.T))
    return factors, s_linv, rs

  def _factors_of(self, t: _Task) -> _Factors:
    lam, lam_b = self._precisions(t)
    return _task_factors(t, self.phi, lam, lam_b)

  def _log_posterior(self, thetas, bs, phi) -> float:
    total = -0.5 * float(np.sum(self._phi_precision() * phi**2))
    for t, theta, b in zip(self.tasks, thetas, bs):
      lam, lam_b = self._precisions(t)
      kappa = t.z @ theta + t.y_map @ phi
      total += t.log_likelihood(t.cell_eta(kappa, b))
      total -= 0.5 * (float(np.sum(lam * theta**2)) + lam_b * float(np.sum(b**2)))
    return total

  def _newton_step(self, factors, s_linv, rs) -> float:
    """One damped Newton step at fixed variances; returns the largest parameter change."""
    d_phi = s_linv.T @ (s_linv @ rs)
    steps = []
    for t, f in zip(self.tasks, factors):
      a_inv = f.a_linv.T @ f.a_linv
      d_theta = a_inv @ f.rhs - f.a_inv_b @ d_phi
      d_kappa = t.z @ d_theta + t.y_map @ d_phi
      steps.append((d_theta, (f.gb - t.w_transpose(f.w, d_kappa)) / f.d))
    before = self._log_posterior(
      [t.theta for t in self.tasks], [t.b for t in self.tasks], self.phi
    )
    scale = 1.0
    for _ in range(30):
      thetas = [t.theta + scale * s[0] for t, s in zip(self.tasks, steps)]
      bs = [t.b + scale * s[1] for t, s in zip(self.tasks, steps)]
      phi = self.phi + scale * d_phi
      if self._log_posterior(thetas, bs, phi) >= before - 1e-9 * abs(before):
        break
      scale *= 0.5
    for t, theta, b in zip(self.tasks, thetas, bs):
      t.theta, t.b = theta, b
    self.phi = phi
    sizes = [np.max(np.abs(scale * d_phi), initial=0.0)]
    sizes += [max(np.max(np.abs(scale * a), initial=0), np.max(np.abs(scale * b), initial=0))
              for a, b in steps]  # fmt: skip
    return float(max(sizes))

  def _em_update(self, factors, s_linv) -> float:
    """Updates the variances at the current mode (see `_Variances.update`); returns the largest
    relative change."""
    n_groups = len(self.variances.pool)
    squares, determined = np.zeros(n_groups), np.zeros(n_groups)
    value = self.variances.value

    def add(groups, modes, variances):
      np.add.at(squares, groups, modes**2)
      np.add.at(determined, groups, np.clip(1.0 - variances / value[groups], 0.0, 1.0))

    if self.phi.size:
      add(self.phi_group, self.phi, np.sum(s_linv**2, axis=0))  # diag S^-1: column norms
    for t, f in zip(self.tasks, factors):
      var_theta, cov_kappa = self._posterior_cov(t, f, s_linv)
      own = t.group >= 0
      add(t.group[own], t.theta[own], var_theta[own])
      var_b = 1.0 / f.d
      for g, (cols, wg) in enumerate(zip(t.columns, f.w)):
        block = slice(g * t.n_inst, (g + 1) * t.n_inst)
        m = (wg / f.d[cols]).T  # [E_g, I]
        var_b[cols] += np.sum((m @ cov_kappa[block, block]) * m, axis=1)
      add(np.full(t.n_ex, t.b_group), t.b, var_b)
    return self.variances.update(squares, determined)

  @staticmethod
  def _posterior_cov(t: _Task, f: _Factors, s_linv: np.ndarray):
    """diag Cov(own effects) [P_t] and Cov(cell-group predictors) [IG, IG]."""
    a_inv = f.a_linv.T @ f.a_linv
    shared = f.a_inv_b @ s_linv.T  # [P_t, P_s]
    var_theta = np.diag(a_inv) + np.sum(shared**2, axis=1)
    v = (t.y_map - t.z @ f.a_inv_b) @ s_linv.T  # [IG, P_s]
    cov_kappa = t.z @ a_inv @ t.z.T + v @ v.T
    return var_theta, cov_kappa

  # -- results ------------------------------------------------------------------------------------

  def plugin_accuracy(self) -> list[np.ndarray]:
    """[I] per task: the mean over examples of the evaluated value, or of the fitted probability
    (at the posterior mode) where the cell was not evaluated."""
    out = []
    for t in self.tasks:
      p = _expit(_grid_logits(t, t.kappa(self.phi)[None], t.b[None]))[0]
      predicted = np.where(t.missing, p, 0.0).sum(axis=1)
      out.append((t.observed_sum + predicted) / max(t.n_ex, 1))
    return out

  def accuracy_draws(self, n_draws: int, seed) -> list[np.ndarray]:
    """[R, I] per task: draws of the full-grid accuracy of every instruction.

    Each draw takes the effects from the Laplace posterior (a joint Gaussian draw: shared, then
    each task's own given them, then the examples' given both) and the not-evaluated cells'
    outcomes from Bernoulli(p): their number per instruction is drawn from its normal
    approximation (mean sum p, variance sum p (1 - p)), rounded to an integer in the possible
    range, so an instruction that is always right stays exactly at 1. Evaluated cells keep their
    value. The same seed gives the same draws.
    """
    rng = np.random.default_rng(seed)
    factors, s_linv, _ = self._factors()
    d_phi = s_linv.T @ rng.standard_normal((self.phi.size, n_draws))  # [P_s, R]
    out = []
    for t, f in zip(self.tasks, factors):
      if not t.n_missing.any():
        out.append(np.broadcast_to(t.observed_sum / max(t.n_ex, 1), (n_draws, t.n_inst)).copy())
        continue
      d_theta = f.a_linv.T @ rng.standard_normal((t.theta.size, n_draws)) - f.a_inv_b @ d_phi
      d_kappa = t.z @ d_theta + t.y_map @ d_phi  # [IG, R]
      kappa = (t.kappa(self.phi)[:, None] + d_kappa).T  # [R, IG]
      # Example effects given the rest: mean shifted by the change of their cells' predictors.
      b = t.b[None, :] - (t.w_transpose(f.w, d_kappa) / f.d[:, None]).T
      b = b + rng.standard_normal(b.shape) / np.sqrt(f.d)  # [R, E]
      chunk = max(1, _DRAW_CHUNK_CELLS // max(t.n_inst * t.n_ex, 1))
      acc = np.empty((n_draws, t.n_inst))
      for start in range(0, n_draws, chunk):
        r = slice(start, min(n_draws, start + chunk))
        p = np.where(t.missing[None], _expit(_grid_logits(t, kappa[r], b[r])), 0.0)
        mean, var = p.sum(axis=2), (p * (1.0 - p)).sum(axis=2)
        total = np.rint(mean + np.sqrt(var) * rng.standard_normal(mean.shape))
        total = np.clip(total, 0.0, t.n_missing[None, :])
        acc[r] = (t.observed_sum[None, :] + total) / t.n_ex
      out.append(acc)
    return out

  def variance_components(self) -> dict[str, float]:
    """Fitted variances by name ("delta/mmlu:anatomy/observed", "b/mmlu:anatomy", "A/observed")."""
    return {
      "/".join(str(x) for x in key): float(self.variances.value[k])
      for key, k in self.variances.index.items()
    }


def fit(grids: Sequence[TaskGrid], settings: ModelSettings = ModelSettings()) -> ModelFit:
  """Fits the model jointly to the tasks of one benchmark (see the module docstring).

  Args:
    grids: the tasks; instruction ids used by two or more of them share `A` (and `C`).
    settings: terms and stopping rule.

  Returns:
    The fit; `fit.converged` tells whether the stopping rule was met within `max_iterations`.
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
  n_shared_labels = 0
  if settings.label_bias and shared_ids:
    sizes = []
    for g in grids:
      if g.labels is not None and len(g.labels) and np.min(g.labels) >= 0:
        sizes.append(int(np.max(g.labels)) + 1)
    n_shared_labels = max([s for s in sizes if 2 <= s <= MAX_LABEL_GROUPS], default=0)
  tasks = [_Task(g, shared, n_shared_labels, variances, settings) for g in grids]
  phi_group = [variances.add(("A", split_of[i]), ("A", split_of[i])) for i in shared_ids]
  if n_shared_labels:
    phi_group += [variances.add(("C",), ("C",))] * (len(shared_ids) * n_shared_labels)
  model = ModelFit(tasks, np.zeros(len(phi_group)), np.array(phi_group, dtype=np.int64), variances)
  for iteration in range(1, settings.max_iterations + 1):
    factors, s_linv, rs = model._factors()
    step = model._newton_step(factors, s_linv, rs)
    change = model._em_update(factors, s_linv)
    model.iterations = iteration
    if step < settings.tolerance and change < settings.tolerance:
      model.converged = True
      break
  return model
