"""`train(config, workdir)`: run one experiment, or resume it where it stopped.

Reads top to bottom: checks, data, model and shardings, restore, compile, loop,
final evaluation and samples. Callable from Python (Colab, tests) as well as
from train/main.py.
"""
import contextlib
import dataclasses
import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from model import count_params, model_config
from model import decoding
from train import corpus, hardware, input_pipeline, objectives, optim, sharding, tokenizer
from train import unigram
from train import state as state_lib
from train import step as step_lib
from train import evaluation, validation
from train import guards
from train.checkpoint import Checkpointer
from train.metrics import MetricsWriter, add_sums, summarize


class PhaseTimer:
  """Wall time of each named phase of the run."""

  def __init__(self):
    self.seconds = {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    start = time.perf_counter()
    yield
    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _prompts(val_docs, tok, num: int, length: int) -> np.ndarray:
  """[num, length] prompts: BOS (as every trained row starts) and the text from the first
  line break past a document's middle."""
  prompts = []
  for i in range(len(val_docs)):
    text = val_docs[i]["text"].decode("utf-8")
    ids = tok.encode(text[text.find("\n", len(text) // 2) + 1:])
    if len(ids) >= length - 1:
      prompts.append([tokenizer.BOS_ID] + list(ids[:length - 1]))
    if len(prompts) == num:
      break
  return np.stack(prompts)


@dataclasses.dataclass
class _Data:
  train_docs: object
  val_docs: object
  tok: tokenizer.Tokenizer
  objective: object
  pipeline: dict  # make_dataset's arguments but the source and `train`
  eval_batches: list


def _data(config, data_corpus, timer) -> _Data:
  """Corpus, tokenizer, objective, and the whole validation split as fixed batches."""
  with timer("corpus"):
    builder = corpus.build(data_corpus, config.data.data_dir)
  train_docs, val_docs = builder.as_data_source("train"), builder.as_data_source("validation")
  with timer("tokenizer"):
    tok, _ = tokenizer.for_corpus(data_corpus.dir(config.data.data_dir), train_docs, config.data)
  pipeline = evaluation.pipeline_args(config, tok)
  with timer("eval_data"):
    eval_batches = list(evaluation.batches(config, val_docs, tok))
  return _Data(train_docs, val_docs, tok, pipeline["objective"], pipeline, eval_batches)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Metrics of the latest checkpoint in `workdir` on the whole validation split.

  Reads the checkpoint and writes nothing: the run can go on training after.
  tools/evaluate.py scores other text the same way (train/evaluation.py).
  """
  timer = PhaseTimer()
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple((name, axes) for name, axes in config.sharding.rules)
  validation.validate(config, sharding.batch_divisor(mesh, rules))
  data_corpus = corpus.resolve(config.data.source, config.data.validation_percent)
  graphdef, state = state_lib.restore_state(config, workdir)
  with timer("corpus"):
    builder = corpus.build(data_corpus, config.data.data_dir)
  val_docs = builder.as_data_source("validation")
  with timer("tokenizer"):
    tok, _ = tokenizer.for_corpus(data_corpus.dir(config.data.data_dir),
                                  builder.as_data_source("train"), config.data)
  with timer("eval"):
    result = evaluation.score(config, graphdef, state.params, val_docs, tok)
  return dict(result, step=int(state.step), split="validation_full", eval_tokens=result["tokens"],
              phase_seconds={k: round(v, 2) for k, v in timer.seconds.items()})


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the summary."""
  timer = PhaseTimer()
  # ---------------------------------------------------------------- checks
  # Everything that can be wrong with the flags fails here, before any
  # corpus is built, anything is compiled or the workdir is touched.
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple((name, axes) for name, axes in config.sharding.rules)
  validation.validate(config, sharding.batch_divisor(mesh, rules))
  data_corpus = corpus.resolve(config.data.source, config.data.validation_percent)
  model_cfg = model_config(config)
  validation.check_workdir_config(workdir, config)
  logging.info("Mesh %s over %d devices, %d hosts.", dict(mesh.shape), mesh.size,
               jax.process_count())

  # ---------------------------------------------------------------- data
  data = _data(config, data_corpus, timer)
  train_docs, val_docs, tok = data.train_docs, data.val_docs, data.tok
  train_iter = iter(input_pipeline.make_dataset(train_docs, train=True, **data.pipeline))
  eval_batches = data.eval_batches
  periodic_eval = (eval_batches if config.train.eval_batches < 0
                   else eval_batches[:config.train.eval_batches])

  # ---------------------------------------------------------------- model, optimizer, shardings
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  lr_schedule = optim.learning_rate_schedule(config.optim, config.train.num_steps)
  abstract, shardings = state_lib.state_shardings(model_cfg, tx, mesh, rules)
  graphdef = state_lib.model_graphdef(model_cfg)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  num_params = count_params(model_cfg)
  step_flops = step_lib.model_flops_per_step(config)
  tokens_per_step = config.train.batch_size * sum(objectives.row_lengths(config))
  peak, peak_source = hardware.peak_flops_per_device()
  logging.info("%s: %.2fM parameters, %.1f GFLOPs per step; peak %.1f GFLOP/s per device (%s).",
               config.model.family, num_params / 1e6, step_flops / 1e9, peak / 1e9, peak_source)

  # ---------------------------------------------------------------- restore or initialise
  # Order: (1) the newest readable checkpoint in this workdir (onto this mesh,
  # whatever mesh wrote it), (2) a fresh init from the seed.
  checkpointer = Checkpointer.for_run(workdir, config)
  with timer("init_or_restore"):
    latest, state = checkpointer.restore_latest_readable(abstract, shardings, train_iter)
    if latest is None:
      state = state_lib.create_state(model_cfg, tx, config.seed, shardings)
    else:
      logging.info("Resuming from the checkpoint at step %d.", latest)
  start_step = int(state.step)

  # ---------------------------------------------------------------- compile
  # Ahead-of-time: the compiled step rejects any other shape, so it never recompiles.
  batch_spec = {k: jax.ShapeDtypeStruct((config.train.batch_size,) + v.shape[1:], v.dtype,
                                        sharding=batch_sharding)
                for k, v in eval_batches[0].items()}
  with timer("compile"):
    train_step = step_lib.jit_train_step(
        graphdef, tx, config.seed, config.model.dropout_rate > 0, shardings, batch_sharding,
        config.train.microbatches, config.train.inject_nan_at_step, rules=rules,
        scoring=step_lib.scoring(config)).lower(state, batch_spec).compile()
    eval_step = step_lib.jit_eval_step(
        graphdef, shardings.params, batch_sharding, rules=rules,
        scoring=step_lib.scoring(config)).lower(state.params, batch_spec).compile()

  # ---------------------------------------------------------------- train loop
  writer = MetricsWriter(workdir, config.objective)
  context = lambda step: {"tokens_seen": step * tokens_per_step,
                          "flops_seen": step * step_flops}

  def run_eval(step, batches, split="validation"):
    with timer("eval"):
      sums = evaluation.evaluate(eval_step, state.params, batches, batch_sharding)
    result = summarize(sums)
    writer.write(step, split, result, **context(step))
    logging.info("step %d %s: loss %.4f, bits/byte %.4f, accuracy %.3f", step, split,
                 result["loss"], result["bits_per_byte"], result["accuracy"])
    return dict(result, tokens=round(sums["tokens"]))  # over all hosts' batches

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
        values = dict(summarize(sums), learning_rate=float(lr_schedule(step - 1)),
                      grad_norm=float(sums["grad_norm"]) / interval_steps,
                      nonfinite_steps=int(sums["nonfinite"]),
                      step_time=seconds / interval_steps, tokens_per_sec=tokens_per_sec,
                      mfu=interval_steps / seconds * step_flops / (peak * mesh.size))
        values.pop("accuracy")
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

  # ---------------------------------------------------------------- final evaluation and samples
  final = run_eval(final_step, eval_batches, split="validation_full")
  with timer("unigram_baseline"):
    unigram_bpb = unigram.bits_per_byte(unigram.fit(corpus.texts(train_docs), tok), eval_batches)
  writer.write(final_step, "validation_full", {"unigram_bits_per_byte": unigram_bpb},
               **context(final_step))
  samples = []
  if config.sample.num_prompts > 0 and model_cfg.family == "decoder":
    with timer("samples"):
      prompts = _prompts(val_docs, tok, config.sample.num_prompts, config.sample.prompt_tokens)
      # Every host gathers the whole params (sharded across hosts on a pod) and samples
      # on its own devices.
      params = multihost_utils.process_allgather(state.params, tiled=True)
      out = decoding.generate(
          graphdef, params, jnp.asarray(prompts),
          jnp.full(len(prompts), prompts.shape[1]), jax.random.key(config.sample.seed),
          max_new_tokens=config.sample.new_tokens, temperature=config.sample.temperature)
      samples = [{"prompt": tok.decode(p), "continuation": tok.decode(o)}
                 for p, o in zip(prompts, np.asarray(out))]
  writer.close()

  summary = {"step": final_step, "params": num_params,
             "initial_bits_per_byte": initial and initial["bits_per_byte"],
             "initial_loss": initial and initial["loss"],
             "final_bits_per_byte": final["bits_per_byte"], "final_loss": final["loss"],
             "final_perplexity": final["perplexity"], "final_accuracy": final["accuracy"],
             "unigram_bits_per_byte": unigram_bpb, "eval_tokens": final["tokens"],
             "phase_seconds": {k: round(v, 2) for k, v in timer.seconds.items()},
             "samples": samples}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
  return summary
