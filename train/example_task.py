"""What the fine-tuning tasks share: examples read by split, one example a row, and batches.

Training batches: the training examples shuffled by the config's seed, repeated, each host
taking every process_count()-th. Evaluation batches: every validation example once, in
order, padded to whole global batches with rows that weigh nothing, each host keeping
every process_count()-th row (so all hosts run the same number of eval steps).
"""
import abc
import math

import grain
import jax
import ml_collections
import numpy as np

from train import tokenizer


class ExampleTask(abc.ABC):
  """A task over `examples` ({split: [example, ...]}); subclasses say how one is encoded
  and what a padding row is."""

  def __init__(self, config: ml_collections.ConfigDict, examples: dict):
    self.config, self._examples = config, examples

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict):
    return cls(config)

  def examples(self, split: str) -> list[dict]:
    return self._examples[split]

  @abc.abstractmethod
  def encode(self, example: dict, tok: tokenizer.Tokenizer) -> dict:
    """One example as a row: a dict of fixed-shape arrays."""

  @abc.abstractmethod
  def padding_row(self, row: dict) -> dict:
    """A row shaped like `row` that the loss and the metrics give no weight."""

  @property
  def scored_length(self) -> int:
    """Positions per row whose logits the loss makes (tools/plan.py sizes them)."""
    return self.max_scored or self.lengths[0]

  @property
  def host_rows(self) -> int:
    return self.config.train.batch_size // jax.process_count()

  def training_examples(self) -> grain.MapDataset:
    """This host's share of the shuffled, endlessly repeated training examples."""
    hosts = jax.process_count()
    source = grain.MapDataset.source(self.examples("train"))
    return source.shuffle(seed=self.config.seed).repeat()[jax.process_index()::hosts]

  def dataset(self, documents, tok: tokenizer.Tokenizer, *, train: bool):
    """This host's batches of the task's examples (`documents`, the pretraining text, are
    not read)."""
    del documents
    if train:
      encode = lambda example: self.encode(example, tok)
      return self.training_examples().map(encode).batch(
          self.host_rows, drop_remainder=True).to_iter_dataset()
    encoded = [self.encode(e, tok) for e in self.examples("validation")]
    size = self.config.train.batch_size
    encoded += [self.padding_row(encoded[0])] * (math.ceil(len(encoded) / size) * size
                                                 - len(encoded))
    mine, rows = encoded[jax.process_index()::jax.process_count()], self.host_rows
    return [{k: np.stack([r[k] for r in mine[i:i + rows]]) for k in mine[0]}
            for i in range(0, len(mine), rows)]
