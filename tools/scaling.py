"""Scaling-law fits for tools/compare: loss against size, and compute-optimal size per budget.

- `fit_power_law`: L(x) = E + A / x^alpha, for final loss against non-embedding parameters
  N (Kaplan et al. 2020 fit the same form without E; Chinchilla's approach 3 adds the
  irreducible term E) or against training tokens D at one size.
- `fit_loss_vs_params_and_tokens`: L(N, D) = E + A / N^alpha + B / D^beta over runs that
  vary both size and tokens (Chinchilla's approach 3); its limit at any size, E + B / D^beta,
  is the best any size of the model does with D tokens.
- `crossing`: the x from which one fitted curve stays below another (where a model
  overtakes a baseline fitted the same way).
- `isoflop_optima`: Chinchilla's approach 2 (Hoffmann et al. 2022): at each FLOP budget, a
  parabola in log N through the runs of that budget; its vertex is the compute-optimal
  size N*(C), with D* = C / (6 N*) tokens. Then N* = k C^a is fitted across budgets.
Intervals are 95% ones from the fit's covariance and Student's t with n - p degrees of
freedom (so five points and three parameters give wide, honest intervals).
"""
import math

import numpy as np
from scipy import optimize, stats


def _interval(value: float, stderr: float, dof: int) -> list[float] | None:
  """The 95% interval of a fitted value; None where the fit leaves no degree of freedom."""
  if dof < 1 or not math.isfinite(stderr):
    return None
  half = float(stats.t.ppf(0.975, dof) * stderr)
  return [float(value) - half, float(value) + half]


def fit_power_law(xs, losses, variable: str = "N") -> dict:
  """{E, A, alpha, their 95% intervals, rmse} of L(x) = E + A / x^alpha (least squares);
  `variable` names x in the form ("N": parameters, "D": tokens).

  Fitted in terms of log A so that A's scale (often 1e2..1e6) does not hamper the solver.
  Needs at least four points of at least three values of x (three parameters, one degree
  of freedom left for an interval).
  """
  n, loss = np.asarray(xs, np.float64), np.asarray(losses, np.float64)
  form = f"L({variable}) = E + A / {variable}^alpha"
  if len(n) < 4 or len(np.unique(n)) < 3:
    raise ValueError(f"a fit of {form} needs at least 4 runs of at least 3 values of "
                     f"{variable}; got {len(n)} runs of {len(np.unique(n))}")
  model = lambda x, e, log_a, alpha: e + np.exp(log_a - alpha * np.log(x))
  # Start from E just below the best loss and a line through the extremes in log-log.
  e0 = 0.9 * loss.min()
  slope = np.polyfit(np.log(n), np.log(np.maximum(loss - e0, 1e-9)), 1)
  p0 = (e0, slope[1], max(-slope[0], 1e-3))
  (e, log_a, alpha), cov = optimize.curve_fit(
      model, n, loss, p0=p0, bounds=([0.0, -50.0, 0.0], [np.inf, 50.0, 5.0]), maxfev=20_000)
  err = np.sqrt(np.diag(cov))
  dof = len(n) - 3
  log_a_interval = _interval(log_a, err[1], dof)
  residuals = loss - model(n, e, log_a, alpha)
  return {"form": form, "E": float(e), "A": float(np.exp(log_a)),
          "alpha": float(alpha), "E_95": _interval(e, err[0], dof),
          "A_95": log_a_interval and [float(np.exp(v)) for v in log_a_interval],
          "alpha_95": _interval(alpha, err[2], dof), "points": len(n),
          "rmse": float(np.sqrt(np.mean(residuals ** 2)))}


def fit_loss_vs_params_and_tokens(params, tokens, losses) -> dict:
  """{E, A, alpha, B, beta, their 95% intervals, rmse} of L(N, D) = E + A / N^alpha +
  B / D^beta (least squares, in log A and log B). Needs three sizes, three token counts and
  at least six runs (five parameters, one degree of freedom left for an interval)."""
  n, d = np.asarray(params, np.float64), np.asarray(tokens, np.float64)
  loss = np.asarray(losses, np.float64)
  if len(n) < 6 or len(np.unique(n)) < 3 or len(np.unique(d)) < 3:
    raise ValueError(f"a fit of L(N, D) needs at least 6 runs of at least 3 sizes and 3 token "
                     f"counts; got {len(n)} runs of {len(np.unique(n))} sizes and "
                     f"{len(np.unique(d))} token counts")
  model = lambda x, e, log_a, alpha, log_b, beta: (
      e + np.exp(log_a - alpha * np.log(x[0])) + np.exp(log_b - beta * np.log(x[1])))
  p0 = (0.5 * loss.min(), np.log(loss.max()) + 3.0, 0.3, np.log(loss.max()) + 3.0, 0.3)
  fitted, cov = optimize.curve_fit(model, (n, d), loss, p0=p0, maxfev=50_000,
                                   bounds=([0.0, -50.0, 0.0, -50.0, 0.0],
                                           [np.inf, 50.0, 5.0, 50.0, 5.0]))
  e, log_a, alpha, log_b, beta = fitted
  err = np.sqrt(np.diag(cov))
  dof = len(n) - 5
  exp_interval = lambda i: (lambda v: v and [float(np.exp(x)) for x in v])(
      _interval(fitted[i], err[i], dof))
  residuals = loss - model((n, d), *fitted)
  return {"form": "L(N, D) = E + A / N^alpha + B / D^beta", "E": float(e),
          "A": float(np.exp(log_a)), "alpha": float(alpha), "B": float(np.exp(log_b)),
          "beta": float(beta), "E_95": _interval(e, err[0], dof), "A_95": exp_interval(1),
          "alpha_95": _interval(alpha, err[2], dof), "B_95": exp_interval(3),
          "beta_95": _interval(beta, err[4], dof), "points": len(n),
          "rmse": float(np.sqrt(np.mean(residuals ** 2)))}


def any_size_limit(joint: dict) -> dict:
  """The L(D) = E + B / D^beta that a joint fit approaches as the size grows without bound."""
  return {"E": joint["E"], "A": joint["B"], "alpha": joint["beta"]}


def power_law(fit: dict, x):
  """A fitted curve's value(s) at x."""
  return fit["E"] + fit["A"] / np.asarray(x, np.float64) ** fit["alpha"]


def crossing(fit: dict, other: dict, low: float, high: float = 1e15) -> float | None:
  """The x in [low, high] from which curve `fit` lies below curve `other` for good: `low`
  if it already does there, None if it never gets below within the range."""
  gap = lambda log_x: float(power_law(fit, np.exp(log_x)) - power_law(other, np.exp(log_x)))
  grid = np.linspace(np.log(low), np.log(high), 400)
  gaps = np.array([gap(g) for g in grid])
  if gaps[-1] >= 0:
    return None
  above = np.nonzero(gaps >= 0)[0]
  if not len(above):
    return float(low)
  i = above[-1]  # the last grid point still above: the crossing lies just after it
  return float(np.exp(optimize.brentq(gap, grid[i], grid[i + 1])))


def isoflop_optima(runs) -> dict:
  """Compute-optimal sizes from runs {"budget", "params", "loss"} at several FLOP budgets.

  Each budget with runs of at least three sizes gets a parabola of loss in log N; a vertex
  outside the sizes tried is reported but marked `extrapolated`. With at least two budgets,
  N* = k C^a is fitted through the vertices in log-log (a's interval needs three).
  """
  budgets = {}
  for r in runs:
    budgets.setdefault(float(r["budget"]), []).append((float(r["params"]), float(r["loss"])))
  optima = []
  for budget, points in sorted(budgets.items()):
    sizes = sorted({p for p, _ in points})
    if len(sizes) < 3:
      continue
    x = np.log([p for p, _ in points])
    y = np.array([loss for _, loss in points])
    curvature, slope, intercept = np.polyfit(x, y, 2)
    if curvature <= 0:  # no minimum: the budget's runs do not bracket an optimum
      optima.append({"budget": budget, "params_opt": None, "reason": "loss is not convex in "
                     "log N at this budget; try sizes on both sides of the optimum"})
      continue
    log_opt = -slope / (2 * curvature)
    n_opt = float(np.exp(log_opt))
    tokens = budget / (6 * n_opt)
    optima.append({"budget": budget, "params_opt": n_opt, "tokens_opt": tokens,
                   "tokens_per_param": tokens / n_opt,
                   "loss_opt": float(np.polyval([curvature, slope, intercept], log_opt)),
                   "extrapolated": not sizes[0] <= n_opt <= sizes[-1]})
  fitted = [o for o in optima if o["params_opt"]]
  result = {"method": "isoFLOP parabolas (Chinchilla approach 2)", "budgets": optima}
  if len(fitted) >= 2:
    log_c = np.log([o["budget"] for o in fitted])
    log_n = np.log([o["params_opt"] for o in fitted])
    fit = stats.linregress(log_c, log_n) if len(fitted) >= 3 else None
    a, log_k = (fit.slope, fit.intercept) if fit else np.polyfit(log_c, log_n, 1)
    result["params_opt_vs_budget"] = {
        "form": "N* = k C^a", "a": float(a), "k": float(np.exp(log_k)),
        "a_95": _interval(a, fit.stderr, len(fitted) - 2) if fit else None}
  return result
