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
several FLOP budgets each span three sizes (tools/scaling.py). When one model ran at four
token budgets or more, its final bits per byte are fitted against tokens too (tokens_fit,
bits_vs_tokens.png); three sizes at three budgets get the joint fit of size and tokens.

`--ngram=ORDER` puts beside every causal-LM run the Kneser-Ney n-gram counted over the
very rows that run trained on (tools/baselines.py --matched_budget), and the tokens fit
then says from how many tokens (and seconds) the model beats the n-gram.

Downstream (`--finetune=TASK[,TASK...]`, built-in tasks of train/task_data.py such as
stdlib_package or stdlib_function_name): every pretrained run is then fine-tuned on each task from its final
checkpoint with the same budget (configs/common.finetuning: steps, batch, learning rate),
in the workdir `<run>-ft-<TASK>` beside it, and the table gains the task's accuracy and
macro-F1, or for a text-to-text task its token accuracy, exact match, BLEU, chrF and ROUGE-L
(`read` looks for those workdirs too). Task metrics compare across objectives.

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

from train import host_memory

if __name__ == "__main__":  # before JAX loads: glibc reads its tunables only at start
  host_memory.restart_with_huge_pages()

from absl import app, flags, logging
from etils import epath
import ml_collections

from configs import common
from tools import compare_plots, compare_runs, scaling
from train import cli, guards, task_data, text_metrics
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
  short_names = {settings[1]: name for name, settings in common.FINETUNING_TASKS.items()}
  common.finetuning(c, short_names.get(task))
  c.task.data = task
  if c.task.name == "classification":
    c.model.num_classes = len(task_data.class_names(task, ""))
  c.init_from = workdir
  for override in overrides:
    name, _, text = override.partition("=")
    set_field(c, name, text)
  Experiment(c)  # checked before any run starts
  return c


def downstream(workdir: str, tasks: list[str]) -> dict:
  """{"TASK accuracy": ..., "TASK macro_f1": ...} of the run's fine-tunings that finished
  (a text-to-text task: token accuracy, and its generations' scores, "TASK chrf", ...)."""
  metrics = {}
  for task in tasks:
    path = epath.Path(finetune_workdir(workdir, task)) / "summary.json"
    if path.exists():
      summary = json.loads(path.read_text())
      metrics.update({f"{task} {name}": summary[f"final_{name}"]
                      for name in ("accuracy", "macro_f1") if f"final_{name}" in summary})
      metrics.update({f"{task} {name}": summary[name]
                      for name in text_metrics.METRICS if name in summary})
      if "majority_accuracy" in summary:
        metrics[f"{task} majority"] = summary["majority_accuracy"]
  return metrics


def ngram_baselines(runs: list[compare_runs.Run], order: int) -> None:
  """Sets each causal-LM run's n-gram figure: interpolated Kneser-Ney of `order`, counted
  over the rows the run trained on (its batches, seed and shuffle: tools/baselines.py
  --matched_budget) and scored on the validation rows its bits per byte come from."""
  from tools import baselines
  scored = {}
  for run in runs:
    if run.config["objective"] != "causal_lm":
      continue  # other objectives score other tokens: an n-gram's figure would not compare
    config = compare_runs.config_of(run)
    key = json.dumps([config.data.to_dict(), config.seed, config.train.batch_size,
                      config.train.num_steps], sort_keys=True)
    if key not in scored:
      logging.info("%d-gram over the rows of %s", order, run.label)
      scored[key] = baselines.baselines(config, order, matched_budget=True)[-1]["bits_per_byte"]
    run.ngram_bits_per_byte = scored[key]


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
  result.update(fits(rows, grouped, out, budgets or {}))
  result["plots"] = plots + result.get("plots", [])
  with open(os.path.join(out, "table.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result


def _alike(rows: list[dict], grouped: list, fields: set) -> list[list[dict]]:
  """The rows with a final figure, in sets whose configs differ only in `fields`."""
  sets = {}
  for r, seeds in zip(rows, grouped):
    if r["bits_per_byte"] is not None and r["eval_loss"] is not None:
      sets.setdefault(compare_runs.key_without(seeds[0], fields), []).append(r)
  return list(sets.values())


def fits(rows: list[dict], grouped: list, out: str, budgets: dict) -> dict:
  """Scaling fits, written to fit.json with their plots: over sizes at equal tokens
  (`size_fit`), over sizes and FLOP budgets (`isoflop_fit`), over training tokens at one
  size (`tokens_fit`) and over both size and tokens (`joint_fit`), each over runs that
  differ only in what the fit varies (a learning-rate sweep is never fitted); {} if no
  runs allow any."""
  same_steps = _alike(rows, grouped, compare_runs.SIZE_FIELDS)
  sizes_and_budgets = _alike(rows, grouped,
                             compare_runs.SIZE_FIELDS | compare_runs.BUDGET_FIELDS)
  budgets_only = _alike(rows, grouped, compare_runs.BUDGET_FIELDS)
  result = {}
  for fit in (size_fit(same_steps, out), isoflop_fit(sizes_and_budgets, out, budgets),
              tokens_fit(budgets_only, out), joint_fit(sizes_and_budgets)):
    result["plots"] = result.get("plots", []) + fit.pop("plots", [])
    result.update(fit)
  if len(result) == 1 and not result["plots"]:
    return {}
  with open(os.path.join(out, "fit.json"), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in result.items() if k != "plots"}, f, indent=2)
  return result


def tokens_fit(alike: list[list[dict]], out: str) -> dict:
  """bits/byte = E + A / D^alpha over the training tokens D of one model trained at four
  budgets or more (the largest set of `alike` rows, which differ only in their budget),
  and, where those rows have n-gram figures, the same fit of the n-gram and the tokens
  (and seconds at the model's speed) from which the model beats it. {} where no model
  has four budgets."""
  candidates = [m for m in alike if len({r["tokens_seen"] for r in m}) >= 4]
  if not candidates:
    return {}
  members = sorted(max(candidates, key=len), key=lambda r: r["tokens_seen"])
  tokens = [r["tokens_seen"] for r in members]
  result = {"tokens_fit": {"rows": [r["label"] for r in members]}}
  fitted = result["tokens_fit"]
  try:
    fitted["model"] = scaling.fit_power_law(tokens, [r["bits_per_byte"] for r in members], "D")
    if all(r["ngram_bits_per_byte"] is not None for r in members):
      fitted["ngram"] = scaling.fit_power_law(
          tokens, [r["ngram_bits_per_byte"] for r in members], "D")
      at = scaling.crossing(fitted["model"], fitted["ngram"], low=tokens[0])
      speed = compare_runs.median([r["tokens_per_sec"] for r in members])
      fitted["model_beats_ngram_from_tokens"] = at
      fitted["model_beats_ngram_from_seconds"] = at and speed and at / speed
  except (ValueError, RuntimeError) as e:  # said, not fatal
    fitted["error"] = str(e)
  ngram = [r["ngram_bits_per_byte"] for r in members] if "ngram" in fitted else None
  result["plots"] = [compare_plots.bits_vs_tokens(
      tokens, [r["bits_per_byte"] for r in members], ngram, fitted, out)]
  return result


def joint_fit(alike: list[list[dict]]) -> dict:
  """bits/byte = E + A / N^alpha + B / D^beta over the largest set of `alike` rows (which
  differ only in size and budget) with three sizes and three token counts, and, where four
  token counts of those rows have n-gram figures, the tokens from which the model at any
  size (E + B / D^beta) beats the n-gram fitted over the same tokens. {} where no set
  spans both."""
  spans = lambda c, key: len({r[key] for r in c}) >= 3
  candidates = [c for c in alike
                if len(c) >= 6 and spans(c, "non_embedding_params") and spans(c, "tokens_seen")]
  if not candidates:
    return {}
  members = max(candidates, key=len)
  fitted = {"rows": [r["label"] for r in members]}
  try:
    fitted["model"] = scaling.fit_loss_vs_params_and_tokens(
        *zip(*[(r["non_embedding_params"], r["tokens_seen"], r["bits_per_byte"])
               for r in members]))
    ngram = sorted({r["tokens_seen"]: r["ngram_bits_per_byte"] for r in members
                    if r["ngram_bits_per_byte"] is not None}.items())
    if len(ngram) >= 4:
      fitted["ngram"] = scaling.fit_power_law(*zip(*ngram), "D")
      fitted["any_size_beats_ngram_from_tokens"] = scaling.crossing(
          scaling.any_size_limit(fitted["model"]), fitted["ngram"], low=ngram[0][0])
  except (ValueError, RuntimeError) as e:  # said, not fatal
    fitted["error"] = str(e)
  return {"joint_fit": fitted}


def size_fit(alike: list[list[dict]], out: str) -> dict:
  """L(N) over the largest set of `alike` rows (which differ only in size: the same steps of
  the same batch) that spans three sizes or more. {} if no set does."""
  candidates = [c for c in alike if len({r["non_embedding_params"] for r in c}) >= 3]
  if not candidates:
    return {}
  members = max(candidates, key=len)
  points = [(r["non_embedding_params"], r["eval_loss"]) for r in members]
  result = {"fit_group": members[0]["group"], "fit_rows": [r["label"] for r in members]}
  try:
    result["fit"] = scaling.fit_power_law(*zip(*points))
  except (ValueError, RuntimeError) as e:  # too few points, or no convergence: said, not fatal
    result["fit"] = {"error": str(e)}
  fit = result["fit"] if "alpha" in result["fit"] else None
  result["plots"] = [compare_plots.loss_vs_params(points, fit, out)]
  return result


def isoflop_fit(alike: list[list[dict]], out: str, budgets: dict) -> dict:
  """isoFLOP optima over the largest set of `alike` rows (which differ only in size and
  budget) that ran at several FLOP budgets (`budgets`: workdir -> budget, run mode)."""
  candidates = [[{"budget": budgets[r["workdirs"][0]], "params": r["non_embedding_params"],
                  "loss": r["eval_loss"]} for r in c if budgets.get(r["workdirs"][0])]
                for c in alike]
  candidates = [c for c in candidates if len({b["budget"] for b in c}) >= 2]
  if not candidates:
    return {}
  budgeted = max(candidates, key=len)
  optima = scaling.isoflop_optima(budgeted)
  return {"isoflop": optima, "plots": [compare_plots.isoflop(budgeted, optima, out)]}


def main(argv):
  if len(argv) != 2 or argv[1] not in ("run", "read"):
    raise app.UsageError("usage: python -m tools.compare run|read --out=DIR ...")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(cli.QuietLibraries())
  try:
    if FLAGS.ngram < 0:
      raise ValueError(f"--ngram={FLAGS.ngram} must be an n-gram order of 1 or more (0: none)")
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
    if FLAGS.ngram:
      ngram_baselines(read, FLAGS.ngram)
    result = write_outputs(read, FLAGS.out, budgets)
  except (ValueError, guards.NonFiniteError) as e:  # bad input, a diverged run: one line
    raise SystemExit(f"error: {e}")
  except guards.Preempted as e:  # the run saved its step; the same command resumes it
    logging.warning("%s", e)
    raise SystemExit(guards.PREEMPTED_EXIT_CODE)
  print(open(os.path.join(FLAGS.out, "table.md"), encoding="utf-8").read())
  for name in ("fit", "isoflop", "tokens_fit", "joint_fit"):
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
  flags.DEFINE_integer("ngram", 0, "Also score each causal-LM run's Kneser-Ney n-gram of this "
                       "order, counted over the same training rows (0: none).")
  flags.DEFINE_multi_string("finetune_override", [], "run: FIELD=VALUE set on every "
                            "fine-tuning config (the same for all runs).")
  flags.mark_flag_as_required("out")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
