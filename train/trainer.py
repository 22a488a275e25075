"""`train(config, workdir)`: run one experiment, or resume it where it stopped.

Reads top to bottom: checks (the Experiment, train/experiment.py), data, cost,
restore, compile, loop, final evaluation and the task's extras. Callable from Python (Colab, tests) as well as
from train/main.py.
"""
import contextlib
import itertools
import json
import os
import time

from absl import logging
import jax
import ml_collections

from train import data as data_lib
from train import data_fingerprint
from train import evaluation, guards, hardware, sharding, sources, validation, workdir_lock
from train.checkpoint import Checkpointer
from train.experiment import Experiment
from train.init_from import InitFrom, latest_state
from train.metrics import MetricsWriter, add_sums


class PhaseTimer:
  """Wall time of each named phase of the run."""

  def __init__(self):
    self.seconds = {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    start = time.perf_counter()
    yield
    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _rounded(timer: PhaseTimer) -> dict:
  return {k: round(v, 2) for k, v in timer.seconds.items()}


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Metrics of the latest checkpoint in `workdir` on the whole validation split.

  Reads the checkpoint and writes nothing: the run can go on training after.
  tools/evaluate.py scores other text the same way (train/evaluation.py).
  """
  timer = PhaseTimer()
  experiment = Experiment(config)
  source = sources.resolve(config.data)
  state = experiment.restore(workdir)
  data = data_lib.load(config, timer, source)
  with timer("eval"):
    result = evaluation.score(experiment, state.params, data.documents("validation"),
                              data.tokenizer)
  return dict(result, step=int(state.step), split="validation_full", eval_tokens=result["tokens"],
              phase_seconds=_rounded(timer))


def train(config: ml_collections.ConfigDict, workdir: str, *,
          accept_changed_data: bool = False) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the summary.
  A resume on data other than the run began with stops, unless `accept_changed_data`."""
  # ---------------------------------------------------------------- checks
  # Everything that can be wrong with the flags fails here, before any
  # corpus is built, anything is compiled or the workdir is touched.
  if "://" in workdir:
    raise ValueError(f"--workdir={workdir}: a URL cannot be a workdir yet (its lock, config and "
                     "metrics are written with local file calls); give a local directory, or "
                     "one all hosts share (an NFS mount such as Filestore)")
  experiment = Experiment(config)
  source = sources.resolve(config.data)
  # A run that has a checkpoint resumes from it and never reads init_from again.
  init_from = (InitFrom.check(config.init_from, experiment.abstract_params)
               if config.init_from and latest_state(workdir) is None else None)
  # One run writes a workdir: a second one (on this host index) stops here.
  with workdir_lock.WorkdirLock(workdir, jax.process_index()) as lock:
    return _train_locked(experiment, source, workdir, lock, accept_changed_data, init_from)


def _train_locked(experiment: Experiment, source: sources.DocumentSource, workdir: str,
                  lock: workdir_lock.WorkdirLock, accept_changed_data: bool,
                  init_from: InitFrom | None) -> dict:
  """train()'s run, in a workdir this process holds."""
  config, timer = experiment.config, PhaseTimer()
  mesh, task = experiment.mesh, experiment.task
  logging.info("Mesh %s over %d devices, %d hosts.", dict(mesh.shape), mesh.size,
               jax.process_count())

  # ---------------------------------------------------------------- data
  # Bad data (a missing text field, an empty shard, a mismatched tokenizer) fails here,
  # before the workdir is written.
  data = data_lib.load(config, timer, source)
  validation.check_workdir_config(workdir, config)
  data_fingerprint.check(workdir, data.fingerprint(), accept_changed_data)
  train_iter = iter(task.dataset(data.documents("train"), data.tokenizer, train=True))
  # Each full evaluation reads the validation split again (the same batches every time);
  # only the periodic evaluations' config.train.eval_batches batches stay in memory.
  eval_batches = task.dataset(data.documents("validation"), data.tokenizer, train=False)
  with timer("eval_data"):
    periodic_eval = (eval_batches if config.train.eval_batches < 0
                     else list(itertools.islice(eval_batches, config.train.eval_batches)))

  # ---------------------------------------------------------------- model and cost
  step_flops, tokens_per_step = experiment.flops_per_step, experiment.tokens_per_step
  peak, peak_source = hardware.peak_flops_per_device()
  logging.info("%s: %.2fM parameters, %.1f GFLOPs per step; peak %.1f GFLOP/s per device (%s).",
               config.model.family, experiment.num_params / 1e6, step_flops / 1e9, peak / 1e9,
               peak_source)

  # ---------------------------------------------------------------- restore or initialise
  # Order: (1) the newest readable checkpoint in this workdir (onto this mesh,
  # whatever mesh wrote it), so a fine-tuning run resumes and never reloads init_from;
  # (2) the init-from checkpoint's parameters (config.init_from) over a fresh state;
  # (3) a fresh init from the seed.
  checkpointer = Checkpointer.for_run(workdir, config, lock)
  with timer("init_or_restore"):
    latest, state = checkpointer.restore_latest_readable(
        experiment.abstract_state, experiment.state_shardings, train_iter)
    if latest is not None:
      logging.info("Resuming from the checkpoint at step %d.", latest)
    else:
      state = experiment.create_state()
      if config.init_from:  # checked above, unless this workdir's checkpoints were unreadable
        init_from = init_from or InitFrom.check(config.init_from, experiment.abstract_params)
        init_from.log()
        state = state.replace(params=init_from.restore(
            state.params, experiment.state_shardings.params))
  start_step = int(state.step)

  # ---------------------------------------------------------------- compile
  # Ahead-of-time: the compiled step rejects any other shape, so it never recompiles.
  with timer("compile"):
    train_step = experiment.compile_train_step(state)
    eval_step = experiment.compile_eval_step(state.params)
  batch_sharding = experiment.batch_sharding

  # ---------------------------------------------------------------- train loop
  writer = MetricsWriter(workdir, config.objective)
  context = lambda step: {"tokens_seen": step * tokens_per_step,
                          "flops_seen": step * step_flops}

  def run_eval(step, batches, split="validation"):
    with timer("eval"):
      sums = evaluation.evaluate(eval_step, state.params, batches, batch_sharding, task.SUMS)
    writer.write(step, split, task.summarize(sums), **context(step))
    result = task.result(sums)  # over all hosts' batches
    logging.info("step %d %s: %s", step, split, task.log_line(result))
    return result

  initial = run_eval(start_step, periodic_eval) if start_step == 0 else None
  interval_sums, interval_steps, interval_start = None, 0, time.perf_counter()
  sigterm = guards.SigtermFlag()
  with sigterm.installed(), contextlib.closing(checkpointer):
    for step in range(start_step + 1, config.train.num_steps + 1):
      with timer("train"):
        batch = sharding.to_global(next(train_iter), batch_sharding)
        state, metrics = train_step(state, batch)
        interval_sums, interval_steps = add_sums(interval_sums, metrics), interval_steps + 1
      preempted = sigterm.received or checkpointer.reached_preemption(step)
      log_now = step % config.train.log_every == 0 or step == config.train.num_steps
      if log_now or preempted or checkpointer.manager.should_save(step):
        # A host sync, at most once per log or save interval: nothing non-finite is saved.
        guards.check_finite(interval_sums, config.train.skip_nonfinite)
      checkpointer.save(step, state, train_iter, config, force=preempted)
      if log_now or preempted:
        sums = jax.device_get(interval_sums)
        seconds = time.perf_counter() - interval_start
        tokens_per_sec = interval_steps * tokens_per_step / seconds
        values = dict(task.train_metrics(sums),
                      learning_rate=float(experiment.lr_schedule(step - 1)),
                      grad_norm=float(sums["grad_norm"]) / interval_steps,
                      nonfinite_steps=int(sums["nonfinite"]),
                      step_time=seconds / interval_steps, tokens_per_sec=tokens_per_sec,
                      mfu=interval_steps / seconds * step_flops / (peak * mesh.size))
        writer.write(step, "train", values, **context(step))
        eta = (config.train.num_steps - step) * seconds / interval_steps
        logging.info("step %d/%d: loss %.4f, %.0f tokens/s, %.0f%% MFU, lr %.2e, ETA %dm%02ds",
                     step, config.train.num_steps, values["loss"], tokens_per_sec,
                     100 * values["mfu"], values["learning_rate"], eta // 60, eta % 60)
        interval_sums, interval_steps, interval_start = None, 0, time.perf_counter()
      if preempted:
        raise guards.Preempted(step)
      if step % config.train.eval_every == 0 and step != config.train.num_steps:
        run_eval(step, periodic_eval)
    final_step = int(state.step)
    if checkpointer.latest_step() != final_step:
      checkpointer.save(final_step, state, train_iter, config, force=True)

  # ---------------------------------------------------------------- final evaluation and extras
  final = run_eval(final_step, eval_batches, split="validation_full")
  extras = task.finish(graphdef=experiment.graphdef, params=state.params, data=data,
                       eval_batches=eval_batches, timer=timer)
  writer.write(final_step, "validation_full", extras["metrics"], **context(final_step))
  writer.close()

  summary = {"step": final_step, "params": experiment.num_params,
             **task.summary(initial, final), **extras["summary"],
             "phase_seconds": _rounded(timer)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
  return summary
