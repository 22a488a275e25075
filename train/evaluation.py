"""Scoring a model on every token of a set of documents, each exactly once.

The trainer's periodic and final evaluations, `train.main --mode=eval` and
tools/evaluate.py all read their batches and add their sums here. Documents are
tokenized (with EOS) in the order given, packed into rows of the objective's
length (concat-then-split: a document longer than the rest of a row continues in
the next one), the objective applied with the validation stream of the config
seed (masks and spans are the same on every run), and batched, the last batch
padded with weight-0 rows. Nothing is shuffled, repeated or dropped, so every
token lands in exactly one row.
"""
import jax
import ml_collections

from train import input_pipeline, objectives, sharding, validation
from train import step as step_lib
from train.metrics import summarize
from train.tokenizer import Tokenizer

# Sums the eval step returns; all are counts or sums of per-token values.
SUMS = ("nll", "tokens", "correct", "bytes")


def pipeline_args(config: ml_collections.ConfigDict, tok: Tokenizer) -> dict:
  """input_pipeline.make_dataset's arguments for `config`, but the documents and `train`."""
  return dict(tokenizer=tok, objective=objectives.make(config, tok),
              batch_size=config.train.batch_size // jax.process_count(), seed=config.seed,
              num_threads=config.data.num_threads, shard_by=config.data.shard_by)


def batches(config: ml_collections.ConfigDict, documents, tok: Tokenizer):
  """This host's evaluation batches of `documents` (a sequence of {"text": str or bytes}):
  every token once, in order (see the module docstring).

  Every host reads all the documents and keeps its rows of each batch, whatever
  config.data.shard_by says for training: split by documents, hosts could end with
  different numbers of batches, and one would wait forever in the eval step's all-reduce.
  """
  return input_pipeline.make_dataset(documents, train=False,
                                     **dict(pipeline_args(config, tok), shard_by="rows"))


def evaluate(eval_step, params, eval_batches, batch_sharding, fetch_every: int = 64) -> dict:
  """Sums of SUMS over `eval_batches`, added on the host in float64.

  Each step's sums are float32 on the device; adding them up there would stop
  counting tokens exactly past 2**24. They are fetched `fetch_every` steps at a
  time, so the devices are not kept waiting for the host after every batch.
  """
  if sharding.programs_may_interleave():
    fetch_every = 1  # one step at a time: see sharding.programs_may_interleave
  total, pending = dict.fromkeys(SUMS, 0.0), []

  def fetch():
    for sums in jax.device_get(pending):
      for k in SUMS:
        total[k] += float(sums[k])
    pending.clear()

  for batch in eval_batches:
    pending.append(eval_step(params, sharding.to_global(batch, batch_sharding)))
    if len(pending) == fetch_every:
      fetch()
  fetch()
  return total


def score(config: ml_collections.ConfigDict, graphdef, params, documents, tok: Tokenizer) -> dict:
  """Loss, perplexity, bits per byte, token accuracy, and the tokens and bytes they are
  over, of `params` (laid out on `config.mesh`) on every token of `documents`.

  `tokens` counts the targets the objective scores (all of them for causal LM; the
  selected ones for masked LM; the span targets, sentinels and EOS for span
  corruption) and `bytes` the UTF-8 bytes of text they stand for.
  """
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple((name, axes) for name, axes in config.sharding.rules)
  validation.validate(config, sharding.batch_divisor(mesh, rules))
  batch_sharding = sharding.batch_sharding(mesh, rules)
  eval_step = step_lib.jit_eval_step(graphdef, jax.tree.map(lambda x: x.sharding, params),
                                     batch_sharding, rules=rules,
                                     scoring=step_lib.scoring(config))
  sums = evaluate(eval_step, params, batches(config, documents, tok), batch_sharding)
  return dict(summarize(sums), tokens=round(sums["tokens"]), bytes=round(sums["bytes"]))
