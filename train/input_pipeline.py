"""grain pipeline: documents -> tokens + EOS -> packed rows -> objective -> per-host batches.

With `shard_by="documents"` (the default, for pods) each host reads only its
share of the documents: whole ArrayRecord shards of its own where the source has at
least one per host (train/shards.py), else every `shard_count`-th document. A mixture
(train/mixture.py) gives its own endless stream, of which each host takes every
`shard_count`-th example. With `shard_by="rows"`
every host reads the one global stream and keeps its block of rows of each
global batch: the batches then do not depend on the number of hosts.
Shuffling is grain's index shuffle seeded from the config (a different order
each epoch), so the stream depends only on the seed and the position in it,
and the iterator state can be checkpointed and restored exactly. The
objective's random choices for row i of host h are keyed by the config seed and
the global example index i * shard_count + h.
"""
import grain
import grain.experimental as grain_exp
import jax
import numpy as np

from train import noise
from train.tokenizer import Tokenizer


class _Tokenize(grain.transforms.Map):
  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer = tokenizer

  def map(self, example):
    text = example["text"].decode("utf-8") if isinstance(example["text"], bytes) else example["text"]
    return {"targets": np.append(self.tokenizer.encode(text), np.int32(self.tokenizer.eos_id))}


class _ApplyObjective(grain.transforms.MapWithIndex):
  def __init__(self, objective, seed: int, stream: int, shard_index: int, shard_count: int):
    self.objective, self.seed, self.stream = objective, seed, stream
    self.shard_index, self.shard_count = shard_index, shard_count

  def map_with_index(self, index: int, row):
    global_index = index * self.shard_count + self.shard_index
    return self.objective(row, noise.example_rng(self.seed, global_index, self.stream))


class _TargetBytes(grain.transforms.Map):
  """Bytes of text behind each scored target, for bits per byte."""

  def __init__(self, byte_lengths: np.ndarray):
    self.byte_lengths = byte_lengths

  def map(self, row):
    row["target_bytes"] = self.byte_lengths[row["targets"]] * (row["weights"] > 0)
    return row


def _pad_batch(batch_size: int):
  """Pads a short final batch with all-padding rows (weight 0) so shapes never change."""
  def pad(batch):
    missing = batch_size - len(batch["targets"])
    return {k: np.pad(v, [(0, missing)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
  return pad


def _host_rows(index: int, count: int):
  """This host's block of rows of a global batch."""
  def take(batch):
    rows = len(batch["targets"]) // count
    return {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}
  return take


def make_dataset(source, tokenizer: Tokenizer, *, objective, batch_size: int, seed: int,
                 train: bool, num_threads: int = 2, shard_index: int | None = None,
                 shard_count: int | None = None, shard_by: str = "documents"
                 ) -> grain.IterDataset:
  """Batches of `batch_size` examples of `objective` (train/objectives.py) for this host
  (shard defaults: this JAX process)."""
  host_index = jax.process_index() if shard_index is None else shard_index
  host_count = jax.process_count() if shard_count is None else shard_count
  # Documents are split between hosts, or every host reads them all ("rows").
  by_rows = shard_by == "rows"
  shard_index, shard_count = (0, 1) if by_rows else (host_index, host_count)
  if by_rows:
    batch_size *= host_count
  if train and hasattr(source, "stream"):  # a mixture: shuffled and repeated part by part
    docs = source.stream(seed)[shard_index::shard_count]
  else:
    own = source.for_host(shard_index, shard_count) if hasattr(source, "for_host") else None
    # Whole shards per host where the source has enough of them, else every count-th document.
    docs = (grain.MapDataset.source(own) if own is not None and shard_count > 1
            else grain.MapDataset.source(source)[shard_index::shard_count])
    if train:
      docs = docs.shuffle(seed=seed).repeat()
  tokens = docs.map(_Tokenize(tokenizer)).to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=64))
  rows = grain_exp.ConcatThenSplitIterDataset(tokens,
                                              length_struct={"targets": objective.raw_length})
  # Validation draws its masks from another stream than training's.
  examples = rows.map_with_index(_ApplyObjective(objective, seed, int(not train), shard_index,
                                                 shard_count))
  examples = examples.map(_TargetBytes(tokenizer.byte_lengths()))
  batches = examples.batch(batch_size, drop_remainder=train)
  if not train:
    batches = batches.map(_pad_batch(batch_size))
  return batches.map(_host_rows(host_index, host_count)) if by_rows else batches
