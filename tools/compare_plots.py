"""tools/compare's pictures (matplotlib, no display needed): learning curves and scaling fits.

One figure per comparability group (tools/compare_runs.py), so bits per byte of different
objectives never share an axis: evaluation bits per byte against tokens, training FLOPs
and wall time, a line per configuration (the seeds' mean) and a band from their minimum
to maximum.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from tools import scaling  # noqa: E402

AXES = (("tokens_seen", "training tokens"), ("flops_seen", "training FLOPs"),
        ("wall_time", "wall time (s)"))


def _log_x(ax) -> None:
  """A log x axis labelled at 1, 2 and 5 times each power of ten: readable whether the data
  span less than a decade (matplotlib would label nothing) or several."""
  ax.set_xscale("log")
  ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
  ax.xaxis.set_minor_formatter(matplotlib.ticker.LogFormatterSciNotation(
      labelOnlyBase=False, minor_thresholds=(np.inf, np.inf)))


def _evaluations(run) -> list[dict]:
  """The run's periodic evaluations: one set of validation rows throughout (the whole split
  scored at the end is another set, so it is left to the table)."""
  periodic = [r for r in run.curve if r["split"] == "validation"]
  return periodic or run.curve


def _curves(seeds) -> dict:
  """{x name: (x, mean, low, high)} over the evaluation steps every seed reached."""
  curves = [_evaluations(run) for run in seeds]
  steps = sorted(set.intersection(*[{r["step"] for r in curve} for curve in curves]))
  out = {}
  for name, _ in AXES:
    xs, ys = [], []
    for step in steps:
      points = [next(r for r in reversed(curve) if r["step"] == step) for curve in curves]
      xs.append(np.mean([p[name] for p in points]))
      ys.append([p["bits_per_byte"] for p in points])
    ys = np.asarray(ys).reshape(len(steps), len(seeds))
    out[name] = (np.asarray(xs), ys.mean(1), ys.min(1), ys.max(1))
  return out


def learning_curves(rows: list[dict], grouped_runs: list, groups: dict, out_dir: str) -> list:
  """Writes bits_per_byte_<group>.png per comparability group; returns the paths."""
  paths = []
  for letter, what in groups.items():
    members = [(r, seeds) for r, seeds in zip(rows, grouped_runs) if r["group"] == letter]
    fig, axes = plt.subplots(1, len(AXES), figsize=(4.2 * len(AXES), 3.4), sharey=True)
    # Ten colours repeat after ten lines: then twenty, so that no two runs share one.
    palette = plt.cm.tab10.colors if len(members) <= 10 else plt.cm.tab20.colors
    for (r, seeds), color in zip(members, palette * (1 + len(members) // 20)):
      curves = _curves(seeds)
      for ax, (name, _) in zip(axes, AXES):
        x, mean, low, high = curves[name]
        if name != "wall_time":  # log axes: the evaluation before training sits at 0
          keep = x > 0
          x, mean, low, high = x[keep], mean[keep], low[keep], high[keep]
        line, = ax.plot(x, mean, marker="o", markersize=3, label=r["label"], color=color)
        if len(seeds) > 1:
          ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, (name, title) in zip(axes, AXES):
      ax.set_xlabel(title)
      if name != "wall_time":
        _log_x(ax)
      ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation bits per byte (periodic evaluations)")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center left",
               bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"group {letter}: {what['objective']} on {what['data.source']}", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out_dir, f"bits_per_byte_{letter}.png")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)
  return paths


def _save_loss_vs_params(fig, ax, path: str) -> str:
  """Labels a final-loss-against-size figure (log x), writes it to `path` and closes it."""
  ax.set_xscale("log")
  ax.set_xlabel("non-embedding parameters")
  ax.set_ylabel("final eval loss")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def loss_vs_params(points: list[tuple[float, float]], fit: dict | None, out_dir: str) -> str:
  """Final loss against non-embedding parameters (log x), with the fitted curve if any."""
  fig, ax = plt.subplots(figsize=(5, 3.6))
  n = np.array([p for p, _ in points])
  ax.scatter(n, [loss for _, loss in points], color="k", zorder=3, label="runs")
  if fit:
    grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
    ax.plot(grid, fit["E"] + fit["A"] / grid ** fit["alpha"],
            label=f"E + A/N^α: α = {fit['alpha']:.3f}, E = {fit['E']:.3f}")
  return _save_loss_vs_params(fig, ax, os.path.join(out_dir, "loss_vs_params.png"))


def isoflop(runs: list[dict], optima: dict, out_dir: str) -> str:
  """Loss against parameters, a curve per FLOP budget, with each budget's fitted vertex."""
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for budget in sorted({r["budget"] for r in runs}):
    points = sorted((r["params"], r["loss"]) for r in runs if r["budget"] == budget)
    line, = ax.plot(*zip(*points), marker="o", markersize=3, label=f"C = {budget:.2g}")
    vertex = next((o for o in optima["budgets"] if o["budget"] == budget and o["params_opt"]),
                  None)
    if vertex:
      ax.scatter([vertex["params_opt"]], [vertex["loss_opt"]], marker="*", s=90,
                 color=line.get_color(), zorder=3)
  return _save_loss_vs_params(fig, ax, os.path.join(out_dir, "isoflop.png"))


def bits_vs_tokens(tokens: list, bits: list, ngram: list | None, fitted: dict,
                   out_dir: str) -> str:
  """Final bits per byte of one model against its training tokens (log x), the n-gram's at
  the same tokens if given, their fitted curves, and where the model overtakes."""
  fig, ax = plt.subplots(figsize=(5, 3.6))
  d = np.asarray(tokens, np.float64)
  beats = fitted.get("model_beats_ngram_from_tokens")
  grid = np.geomspace(d.min() / 1.5, max(d.max() * 1.5, (beats or 0) * 1.5), 200)
  for name, points, marker in (("model", bits, "o"), ("ngram", ngram, "s")):
    if points is None:
      continue
    dots = ax.scatter(d, points, marker=marker, zorder=3, label=f"{name} runs")
    if name in fitted:
      fit = fitted[name]
      ax.plot(grid, scaling.power_law(fit, grid), color=dots.get_facecolor()[0],
              label=f"{name}: E + A/D^α, α = {fit['alpha']:.3f}, E = {fit['E']:.3f}")
  if beats:
    ax.axvline(beats, color="gray", linestyle=":", label=f"model ahead from {beats:.3g} tokens")
  _log_x(ax)
  ax.set_xlabel("training tokens")
  ax.set_ylabel("final validation bits per byte")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(out_dir, "bits_vs_tokens.png")
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
