"""Tasks: what a batch means to the loss, which metrics a run reports, how its batches are made.

A task supplies, for the step, the summed loss and metric counts of a batch (steps
return sums, so metrics over batches and hosts are exact ratios); for the trainer,
its batches, the metrics it reports, a log line and what it adds to the run's end
(baselines, samples). The step and the trainer never ask which task they run.
Language modelling (any objective of train/objectives.py) is the default task.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from model import FAMILIES, decoding
from train import (classification, input_pipeline, loss, objectives, text_to_text, tokenizer,
                   unigram)


def _prompts(val_docs, tok, num: int, length: int) -> np.ndarray:
  """[num, length] prompts: BOS (as every trained row starts) and the text from the first
  line break past a document's middle."""
  prompts = []
  for i in range(len(val_docs)):
    text = val_docs[i]["text"].decode("utf-8")
    ids = tok.encode(text[text.find("\n", len(text) // 2) + 1:])
    if len(ids) >= length - 1:
      prompts.append([tok.bos_id] + list(ids[:length - 1]))
    if len(prompts) == num:
      break
  return np.stack(prompts)


@dataclasses.dataclass(frozen=True)
class LanguageModeling:
  """Predict the tokens the objective selects; cross-entropy, perplexity, bits per byte."""
  objective: objectives.Objective  # its sizes; the pipeline makes one with the tokenizer
  config: ml_collections.ConfigDict
  # Sums the step returns: all are counts or sums of per-token values.
  SUMS = ("nll", "tokens", "correct", "bytes")
  LOSS = ("nll", "tokens")  # the loss is SUMS[LOSS[0]] / SUMS[LOSS[1]]

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LanguageModeling":
    task = cls(objectives.make(config), config)
    task.validate()
    return task

  def validate(self) -> None:
    """Raises ValueError naming the field and the fix for settings this task cannot use."""
    c = self.config
    scored, chunk = self.scored_length, c.train.loss_chunk
    if chunk < 0 or (chunk and scored % chunk):
      raise ValueError(f"config.train.loss_chunk={chunk} must divide the {scored} positions "
                       f"per row that the loss scores; use a divisor of {scored}, or 0 for all")
    s = c.sample
    if (self.samples_continuations and s.num_prompts > 0
        and s.prompt_tokens + s.new_tokens > c.model.max_length):
      raise ValueError(f"config.sample.prompt_tokens + new_tokens = "
                       f"{s.prompt_tokens + s.new_tokens} exceeds config.model.max_length="
                       f"{c.model.max_length}; shorten them")

  # ---------------------------------------------------------------- shapes and cost
  def example_shapes(self) -> dict:
    """{field: (length, dtype)} of one example: the objective's, and the target bytes."""
    fields = dict(self.objective.example_shapes())
    fields["target_bytes"] = (fields["targets"][0], np.dtype(np.int32))
    return fields

  @property
  def lengths(self) -> tuple[int, int]:
    """(decoder or only-stack row length, encoder row length or 0)."""
    return self.objective.lengths

  @property
  def bidirectional_prefix(self) -> bool:
    """Whether a decoder's rows carry a prefix read both ways (its cost differs)."""
    return self.objective.bidirectional_prefix

  def describe_scored(self, seed: int) -> str:
    return self.objective.describe_scored(seed)

  @property
  def max_scored(self) -> int:
    """Positions per row the loss projects onto the vocabulary (0: all of them)."""
    return self.objective.max_scored if self.config.train.score_selected_only else 0

  @property
  def scored_length(self) -> int:
    """Positions per row whose logits the loss makes."""
    return self.max_scored or self.lengths[0]

  @property
  def samples_continuations(self) -> bool:
    """Whether the run ends with sampled continuations (its family continues prompts)."""
    return FAMILIES[self.config.model.family].GENERATION == "continuation"

  # ---------------------------------------------------------------- the step
  def metric_sums(self, model, batch: dict, rngs=None) -> dict:
    """Sums over the batch of the weighted cross-entropy ("nll") and of what metrics count.

    Only the positions the objective can score are projected onto the vocabulary
    (`max_scored`, see train/loss.py), `config.train.loss_chunk` of them at a time if set.
    """
    sums = loss.target_sums(model, batch, self.max_scored, self.config.train, rngs)
    return dict(sums, bytes=batch["target_bytes"].sum().astype(jnp.float32))

  # ---------------------------------------------------------------- batches
  def dataset(self, documents, tok: tokenizer.Tokenizer, *, train: bool):
    """This host's batches of `documents` ({"text": str or bytes} each).

    Training reads the shuffled, repeated stream, split between hosts as
    config.data.shard_by says. Evaluation reads every token once, in order (see
    train/evaluation.py), and every host reads all the documents and keeps its rows
    of each batch: split by documents, hosts could end with different numbers of
    batches, and one would wait forever in the eval step's all-reduce.
    """
    c = self.config
    return input_pipeline.make_dataset(
        documents, tok, objective=objectives.make(c, tok),
        batch_size=c.train.batch_size // jax.process_count(), seed=c.seed, train=train,
        num_threads=c.data.num_threads, shard_by=c.data.shard_by if train else "rows")

  # ---------------------------------------------------------------- reports
  def summarize(self, sums: dict) -> dict:
    """Loss, perplexity, bits per byte and token accuracy from the summed counts."""
    tokens = max(float(sums["tokens"]), 1.0)
    mean = float(sums["nll"]) / tokens
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)),
            "bits_per_byte": float(sums["nll"]) / math.log(2) / max(float(sums["bytes"]), 1.0),
            "accuracy": float(sums["correct"]) / tokens}

  def result(self, sums: dict) -> dict:
    """summarize's metrics with the counts they are over (tokens and bytes scored)."""
    return dict(self.summarize(sums), tokens=round(float(sums["tokens"])),
                bytes=round(float(sums["bytes"])))

  def train_metrics(self, sums: dict) -> dict:
    """What a training interval reports (accuracy is an evaluation metric here)."""
    values = self.summarize(sums)
    values.pop("accuracy")
    return values

  @staticmethod
  def log_line(result: dict) -> str:
    return (f"loss {result['loss']:.4f}, bits/byte {result['bits_per_byte']:.4f}, "
            f"accuracy {result['accuracy']:.3f}")

  def finish(self, *, graphdef, params, data, eval_batches, timer) -> dict:
    """The end-of-run extras: a unigram baseline on the same batches and sampled
    continuations; {"metrics": for validation_full, "summary": for summary.json}."""
    with timer("unigram_baseline"):
      unigram_bpb = unigram.bits_per_byte(unigram.fit(data.sample_texts(), data.tokenizer),
                                          eval_batches)
    samples = []
    s = self.config.sample
    if s.num_prompts > 0 and self.samples_continuations:
      with timer("samples"):
        prompts = _prompts(data.documents("validation"), data.tokenizer, s.num_prompts,
                           s.prompt_tokens)
        # Every host gathers the whole params (sharded across hosts on a pod) and samples
        # on its own devices.
        params = multihost_utils.process_allgather(params, tiled=True)
        out = decoding.generate(
            graphdef, params, jnp.asarray(prompts), jnp.full(len(prompts), prompts.shape[1]),
            jax.random.key(s.seed), max_new_tokens=s.new_tokens, temperature=s.temperature,
            eos_id=data.tokenizer.eos_id, pad_id=data.tokenizer.pad_id)
        samples = [{"prompt": data.tokenizer.decode(p), "continuation": data.tokenizer.decode(o)}
                   for p, o in zip(prompts, np.asarray(out))]
    return {"metrics": {"unigram_bits_per_byte": unigram_bpb},
            "summary": {"unigram_bits_per_byte": unigram_bpb, "samples": samples}}

  @staticmethod
  def summary(initial: dict | None, final: dict) -> dict:
    """summary.json's fields from the first and the final evaluation."""
    return {"initial_bits_per_byte": initial and initial["bits_per_byte"],
            "initial_loss": initial and initial["loss"],
            "final_bits_per_byte": final["bits_per_byte"], "final_loss": final["loss"],
            "final_perplexity": final["perplexity"], "final_accuracy": final["accuracy"],
            "eval_tokens": final["tokens"]}


# config.task.name -> the task class (each has from_config).
TASKS = {"language_modeling": LanguageModeling, "classification": classification.Classification,
         "text_to_text": text_to_text.TextToText}


def make(config: ml_collections.ConfigDict):
  """The task of `config` (config.task.name; language modelling with its objective by
  default), its settings checked."""
  name = config.task.name if "task" in config else "language_modeling"
  if name not in TASKS:
    raise ValueError(f"config.task.name={name!r} is not one of {sorted(TASKS)}")
  return TASKS[name].from_config(config)
