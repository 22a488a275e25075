"""Command line: compare architectures from config files, as a table, plots and scaling fits.

  python -m tools.compare run --configs=configs/gpt_tiny.py,configs/t5_tiny.py \
      --out=/tmp/compare [--budget=flops:2e14] [--seeds=0,1,2] \
      [--override=train.batch_size=16 ...] [--sweep=model.num_layers=1,2,4 ...]
  python -m tools.compare read --workdirs=gs://bucket/runs/a,/tmp/runs/b --out=/tmp/compare

`run` trains every (config, sweep point, budget, seed) one after another on this machine,
each in its own workdir under --out/runs (rerunning the command resumes or skips what is
done; a SIGTERM saves the current run and exits 75, as train.main does), then reads them
as `read` does. `read` collects what finished (or running) workdirs
logged, wherever they were trained. Both write --out/table.{md,csv,json}, a plot of
validation bits per byte against tokens, FLOPs and wall time per comparability group
(tools/compare_runs.py says which numbers compare), and, when the runs span at least three
sizes, fit.json and loss_vs_params.png (L(N) = E + A / N^alpha), plus isoflop.png when
several FLOP budgets each span three sizes (tools/scaling.py).

Downstream (`--finetune=TASK[,TASK...]`, built-in tasks of train/task_data.py such as
stdlib_package): every pretrained run is then fine-tuned on each task from its final
checkpoint with the same budget (configs/common.finetuning: steps, batch, learning rate),
in the workdir `<run>-ft-<TASK>` beside it, and the table gains the task's accuracy and
macro-F1 (`read` looks for those workdirs too). Task metrics compare across objectives.

Budgets (`--budget=KIND:VALUE[,VALUE...]`) set `train.num_steps` per run: `tokens` and
`flops` (training FLOPs by the model's own count, the figure MFU uses) divide by what one
step takes; `seconds` divides by the train step's time measured here before the run
(compile, evaluation and input excluded). Several values make a budget axis, as for
isoFLOP curves. Evaluation and logging then happen about `--evals` times per run.
"""
import csv
import itertools
import json
import math
import os
import statistics

from absl import app, flags, logging
from etils import epath
import ml_collections

from configs import common
from tools import compare_plots, compare_runs, scaling
from train import cli, guards, task_data
from train.experiment import Experiment

FLAGS = flags.FLAGS
BUDGET_KINDS = ("tokens", "flops", "seconds")


def parse_budget(spec: str) -> tuple[str, list[float]]:
  """("flops", [1e14, 2e14]) of "flops:1e14,2e14"; ("", []) for none."""
  if not spec:
    return "", []
  kind, _, values = spec.partition(":")
  try:
    numbers = [float(v) for v in values.split(",")]
  except ValueError:
    numbers = []
  if kind not in BUDGET_KINDS or not numbers or min(numbers) <= 0:
    raise ValueError(f"--budget={spec!r} must be KIND:VALUE[,VALUE...] with KIND one of "
                     f"{', '.join(BUDGET_KINDS)} and positive values, e.g. flops:2e14")
  return kind, numbers


def parse_sweep(spec: str) -> tuple[list[str], list[list[str]]]:
  """(["model.embed_dim", "model.mlp_dim"], [["64", "256"], ["128", "512"]]) of
  "model.embed_dim+model.mlp_dim=64+256,128+512": fields swept together, one point a comma."""
  fields, _, values = spec.partition("=")
  names = fields.split("+")
  points = [v.split("+") for v in values.split(",") if v]
  if not values or any(len(p) != len(names) for p in points):
    raise ValueError(f"--sweep={spec!r} must be FIELD[+FIELD...]=V[+V...],... with one value "
                     "per field at each point, e.g. model.num_layers=1,2,4")
  return names, points


def set_field(config: ml_collections.ConfigDict, name: str, text: str) -> None:
  """config.<name> = text read as the field's type (as --config.<name>=text would)."""
  *parents, leaf = name.split(".")
  node = config
  try:
    for p in parents:
      node = node[p]
    current = node[leaf]
  except KeyError:
    raise ValueError(f"{name!r} is not a config field") from None
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"{name}={text!r} is not a boolean")
    value = text.lower() in ("true", "1")
  elif isinstance(current, (int, float, str)):
    try:
      value = type(current)(float(text)) if isinstance(current, int) else type(current)(text)
    except ValueError:
      raise ValueError(f"{name}={text!r} is not a {type(current).__name__}") from None
    if isinstance(current, int) and value != float(text):
      raise ValueError(f"{name}={text!r} is not an integer")
  else:
    raise ValueError(f"{name} holds a {type(current).__name__}; set it in a config file")
  node[leaf] = value


def _step_seconds(config: ml_collections.ConfigDict) -> float:
  """The median time of the config's train step on this machine, after a warm-up."""
  from tools import benchmark  # imports torch-free, but compiles: only when a budget needs it
  step = benchmark.compile_step(config, benchmark.synthetic_batch(config))
  return statistics.median(step.run() for _ in range(3))


def steps_for_budget(config: ml_collections.ConfigDict, kind: str, value: float) -> int:
  """train.num_steps that spends `value` of `kind` on `config`."""
  if kind == "seconds":
    per_step = _step_seconds(config)
  else:
    experiment = Experiment(config)
    per_step = experiment.tokens_per_step if kind == "tokens" else experiment.flops_per_step
  return max(1, math.floor(value / per_step + 1e-9))


def planned_runs(base: dict[str, ml_collections.ConfigDict], overrides: list[str],
                 sweeps: list[str], budget: str, seeds: list[int], evals: int):
  """[(name, config, budget value or None)] of every run, its fields set and checked."""
  kind, values = parse_budget(budget)
  sweep_axes = [parse_sweep(s) for s in sweeps]
  runs = []
  for label, config in base.items():
    for override in overrides:
      name, _, text = override.partition("=")
      set_field(config, name, text)
    for point in itertools.product(*[points for _, points in sweep_axes]):
      for budget_value in values or [None]:
        for seed in seeds:
          c = ml_collections.ConfigDict(config.to_dict())
          parts = [label]
          for (names, _), chosen in zip(sweep_axes, point):
            for field, text in zip(names, chosen):
              set_field(c, field, text)
              parts.append(f"{field.split('.')[-1]}{text}")
          if budget_value is not None:
            c.train.num_steps = steps_for_budget(c, kind, budget_value)
            parts.append(f"{kind}{budget_value:g}")
          c.seed = seed
          every = max(1, c.train.num_steps // evals)
          c.train.eval_every = c.train.log_every = every
          c.train.checkpoint_every = c.train.num_steps
          Experiment(c)  # every config checked before the first run starts
          runs.append(("-".join(parts) + f"-seed{seed}", c, budget_value))
  return runs


def train_all(plans: list[tuple[ml_collections.ConfigDict, str]]) -> None:
  """Trains each (config, workdir) in turn; a finished workdir is left as it is, an
  interrupted one resumes."""
  from train import trainer
  for i, (config, workdir) in enumerate(plans):
    name = os.path.basename(workdir)
    if os.path.exists(os.path.join(workdir, "summary.json")):
      logging.info("[%d/%d] %s: finished before, kept", i + 1, len(plans), name)
      continue
    logging.info("[%d/%d] %s: %d steps", i + 1, len(plans), name, config.train.num_steps)
    trainer.train(config, workdir)


def finetune_workdir(workdir: str, task: str) -> str:
  """Where the fine-tuning of the run in `workdir` on `task` lives: beside it."""
  return f"{workdir.rstrip('/')}-ft-{task}"


def finetune_config(pretrained: ml_collections.ConfigDict, task: str, workdir: str,
                    overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The pretrained run's config fine-tuned on built-in `task` from `workdir`'s checkpoint,
  with the same budget for every run (configs/common.finetuning, then `overrides`)."""
  c = ml_collections.ConfigDict(pretrained.to_dict())
  common.finetuning(c, None)
  c.task.data = task
  c.model.num_classes = len(task_data.class_names(task, ""))
  c.init_from = workdir
  for override in overrides:
    name, _, text = override.partition("=")
    set_field(c, name, text)
  Experiment(c)  # checked before any run starts
  return c


def downstream(workdir: str, tasks: list[str]) -> dict:
  """{"TASK accuracy": ..., "TASK macro_f1": ...} of the run's fine-tunings that finished."""
  metrics = {}
  for task in tasks:
    path = epath.Path(finetune_workdir(workdir, task)) / "summary.json"
    if path.exists():
      summary = json.loads(path.read_text())
      metrics.update({f"{task} {name}": summary[f"final_{name}"]
                      for name in ("accuracy", "macro_f1") if f"final_{name}" in summary})
      metrics[f"{task} majority"] = summary.get("majority_accuracy")
  return metrics


def write_outputs(runs: list[compare_runs.Run], out: str, budgets: dict | None = None) -> dict:
  """table.{md,csv,json}, plots and fits of `runs` in `out`; returns table.json's content."""
  os.makedirs(out, exist_ok=True)
  grouped = compare_runs.group_seeds(runs)
  rows = [compare_runs.row(seeds) for seeds in grouped]
  groups = compare_runs.mark_comparable(rows, grouped)
  with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
    f.write(compare_runs.markdown(rows, groups))
  cols = compare_runs.columns(rows)
  with open(os.path.join(out, "table.csv"), "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow([k for k, _ in cols])
    writer.writerows([[r.get(k) for k, _ in cols] for r in rows])
  plots = compare_plots.learning_curves(rows, grouped, groups, out)
  result = {"rows": rows, "groups": groups}
  result.update(fits(rows, groups, out, budgets or {}))
  result["plots"] = plots + result.get("plots", [])
  with open(os.path.join(out, "table.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result


def fits(rows: list[dict], groups: dict, out: str, budgets: dict) -> dict:
  """Scaling fits within the largest comparability group that spans three sizes or more:
  {} if none does. `budgets` maps a workdir to its FLOP budget (run mode)."""
  candidates = [[r for r in rows if r["group"] == g and r["eval_loss"] is not None]
                for g in groups]
  candidates = [c for c in candidates if len({r["non_embedding_params"] for r in c}) >= 3]
  if not candidates:
    return {}
  members = max(candidates, key=len)
  points = [(r["non_embedding_params"], r["eval_loss"]) for r in members]
  result = {"fit_group": members[0]["group"]}
  try:
    result["fit"] = scaling.fit_loss_vs_params(*zip(*points))
  except (ValueError, RuntimeError) as e:  # too few points, or no convergence: said, not fatal
    result["fit"] = {"error": str(e)}
  fit = result["fit"] if "alpha" in result["fit"] else None
  result["plots"] = [compare_plots.loss_vs_params(points, fit, out)]
  budgeted = [{"budget": budgets[r["workdirs"][0]], "params": r["non_embedding_params"],
               "loss": r["eval_loss"]} for r in members if budgets.get(r["workdirs"][0])]
  if len({b["budget"] for b in budgeted}) >= 2:
    result["isoflop"] = scaling.isoflop_optima(budgeted)
    result["plots"].append(compare_plots.isoflop(budgeted, result["isoflop"], out))
  with open(os.path.join(out, "fit.json"), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in result.items() if k != "plots"}, f, indent=2)
  return result


def main(argv):
  if len(argv) != 2 or argv[1] not in ("run", "read"):
    raise app.UsageError("usage: python -m tools.compare run|read --out=DIR ...")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(cli.QuietLibraries())
  try:
    budgets = {}
    if argv[1] == "run":
      if not FLAGS.configs:
        raise ValueError("run needs --configs=a.py,b.py")
      from tools import benchmark
      base = {os.path.splitext(os.path.basename(p))[0]: benchmark.load_config(p)
              for p in FLAGS.configs}
      runs = planned_runs(base, FLAGS.override, FLAGS.sweep, FLAGS.budget,
                          [int(s) for s in FLAGS.seeds], FLAGS.evals)
      workdirs = [os.path.join(FLAGS.out, "runs", name) for name, _, _ in runs]
      # Every config, fine-tunings included, is checked before the first run starts.
      finetunes = [(finetune_config(config, task, workdir, FLAGS.finetune_override),
                    finetune_workdir(workdir, task))
                   for (_, config, _), workdir in zip(runs, workdirs) for task in FLAGS.finetune]
      train_all([(config, w) for (_, config, _), w in zip(runs, workdirs)] + finetunes)
      budgets = {w: b for w, (_, _, b) in zip(workdirs, runs)
                 if FLAGS.budget.startswith("flops:")}
    else:
      if not FLAGS.workdirs:
        raise ValueError("read needs --workdirs=a,b (local or gs:// paths)")
      workdirs = FLAGS.workdirs
    read = [compare_runs.read_run(w) for w in workdirs]
    for run in read:
      run.downstream = downstream(run.workdir, FLAGS.finetune)
    result = write_outputs(read, FLAGS.out, budgets)
  except (ValueError, guards.NonFiniteError) as e:  # bad input, a diverged run: one line
    raise SystemExit(f"error: {e}")
  except guards.Preempted as e:  # the run saved its step; the same command resumes it
    logging.warning("%s", e)
    raise SystemExit(guards.PREEMPTED_EXIT_CODE)
  print(open(os.path.join(FLAGS.out, "table.md"), encoding="utf-8").read())
  for name in ("fit", "isoflop"):
    if name in result:
      print(f"{name}: {json.dumps(result[name])}")
  print(f"Wrote {FLAGS.out}/table.md, table.csv, table.json and {len(result['plots'])} plots.")


def define_flags() -> None:
  flags.DEFINE_string("out", None, "Directory for the table, plots and (run) the workdirs.")
  flags.DEFINE_list("configs", [], "run: config files (or names under configs/).")
  flags.DEFINE_list("workdirs", [], "read: workdirs of finished or running train.main runs.")
  flags.DEFINE_multi_string("override", [], "run: FIELD=VALUE set on every config.")
  flags.DEFINE_multi_string("sweep", [], "run: FIELD[+FIELD]=V[+V],... (two flags: a grid).")
  flags.DEFINE_string("budget", "", "run: tokens|flops|seconds:VALUE[,VALUE...] per run.")
  flags.DEFINE_list("seeds", ["0"], "run: seeds of each configuration.")
  flags.DEFINE_integer("evals", 8, "run: evaluations per run (the curves' points).")
  flags.DEFINE_list("finetune", [], "Built-in tasks to fine-tune every run on (run), or whose "
                    "fine-tunings to read beside each workdir (read).")
  flags.DEFINE_multi_string("finetune_override", [], "run: FIELD=VALUE set on every "
                            "fine-tuning config (the same for all runs).")
  flags.mark_flag_as_required("out")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
