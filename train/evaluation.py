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

from train import sharding


def evaluate(eval_step, params, eval_batches, batch_sharding, names, fetch_every: int = 64
             ) -> dict:
  """Sums of `names` (the task's SUMS) over `eval_batches`, added on the host in float64.

  Each step's sums are float32 on the device; adding them up there would stop
  counting tokens exactly past 2**24. They are fetched `fetch_every` steps at a
  time, so the devices are not kept waiting for the host after every batch.
  """
  if sharding.programs_may_interleave():
    fetch_every = 1  # one step at a time: see sharding.programs_may_interleave
  total, pending = dict.fromkeys(names, 0.0), []

  def fetch():
    for sums in jax.device_get(pending):
      for k in names:
        total[k] += float(sums[k])
    pending.clear()

  for batch in eval_batches:
    pending.append(eval_step(params, sharding.to_global(batch, batch_sharding)))
    if len(pending) == fetch_every:
      fetch()
  fetch()
  return total


def score(experiment, params, documents, tok) -> dict:
  """The task's metrics (for language modelling: loss, perplexity, bits per byte, token
  accuracy) and its sums, of `params` (laid out on the experiment's mesh) on every token
  of `documents` ({"text": ...} each).

  For language modelling `tokens` counts the targets the objective scores (all of them
  for causal LM; the selected ones for masked LM; the span targets, sentinels and EOS
  for span corruption) and `bytes` the UTF-8 bytes of text they stand for.
  """
  task = experiment.task
  eval_step = experiment.jit_eval_step(jax.tree.map(lambda x: x.sharding, params))
  sums = evaluate(eval_step, params, task.dataset(documents, tok, train=False),
                  experiment.batch_sharding, task.SUMS)
  return task.result(sums)
