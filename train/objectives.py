"""Objectives: transforms from packed token rows to model inputs, targets and loss weights.

A packed row (from grain's concat-then-split) holds `targets` [R] with
`targets_segment_ids` (0 = padding) and `targets_positions` [R], where R is the
objective's `raw_length`. Every objective returns `targets` and `weights` (the
loss weight of each target) plus the inputs its family's model reads
(`model.FAMILIES[family].INPUTS`). Random choices come from the generator the
pipeline passes in, keyed by (config seed, global example index).
"""
import dataclasses

import ml_collections
import numpy as np

from train import noise
from train.tokenizer import BOS_ID, EOS_ID, MASK_ID, NUM_SENTINELS, PAD_ID, Tokenizer

# The first id that is ordinary text: ids below are pad, eos, unk, bos, mask.
FIRST_TEXT_ID = MASK_ID + 1


def _shift_right(targets: np.ndarray, segment_ids: np.ndarray, start: int) -> np.ndarray:
  """Decoder inputs: targets shifted right by one, `start` at each segment's first position."""
  # [T]
  inputs = np.roll(targets, 1)
  starts = segment_ids != np.roll(segment_ids, 1)
  starts[0] = True
  inputs[starts] = start
  return inputs


def _pad(x: np.ndarray, length: int) -> np.ndarray:
  return np.pad(x, (0, length - len(x))).astype(np.int32)


def _one_segment(length: int, used: int) -> tuple[np.ndarray, np.ndarray]:
  """(positions, segment_ids) of a row whose first `used` slots hold one example."""
  return _pad(np.arange(used), length), _pad(np.ones(used), length)


def causal_lm(row: dict) -> dict:
  """Next-token prediction: inputs are targets shifted right, BOS at each segment start."""
  # [T] each
  targets, segment_ids = row["targets"], row["targets_segment_ids"]
  return {"inputs": _shift_right(targets, segment_ids, BOS_ID), "targets": targets,
          "positions": row["targets_positions"], "segment_ids": segment_ids,
          "weights": (segment_ids > 0).astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class CausalLM:
  """GPT: predict every token from the ones before it, within its document."""
  seq_len: int
  families = ("decoder",)
  max_scored = 0  # every position

  @property
  def raw_length(self) -> int:
    return self.seq_len

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    del rng
    return causal_lm(row)


@dataclasses.dataclass(frozen=True)
class MaskedLM:
  """BERT: select `rate` of the text tokens, corrupt them 80/10/10, predict them."""
  seq_len: int
  rate: float
  vocab_size: int
  word_starts: np.ndarray | None  # [V] bool, for whole-word masking
  families = ("encoder",)

  @property
  def raw_length(self) -> int:
    return self.seq_len

  @property
  def max_scored(self) -> int:
    """Most positions a row can have selected (noise.mlm_mask selects round(rate * n) of n <= T)."""
    return int(round(self.rate * self.seq_len))

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    # [T] each
    tokens, segment_ids = row["targets"], row["targets_segment_ids"]
    first_sentinel = self.vocab_size - NUM_SENTINELS
    candidates = (tokens >= FIRST_TEXT_ID) & (tokens < first_sentinel) & (segment_ids > 0)
    starts = None
    if self.word_starts is not None:
      new_segment = segment_ids != np.roll(segment_ids, 1)
      starts = self.word_starts[tokens] | new_segment
    inputs, selected = noise.mlm_mask(tokens, candidates, rng, rate=self.rate, mask_id=MASK_ID,
                                      random_ids=(FIRST_TEXT_ID, first_sentinel),
                                      word_starts=starts)
    return {"inputs": inputs, "targets": tokens, "positions": row["targets_positions"],
            "segment_ids": segment_ids, "weights": selected.astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class SpanCorruption:
  """T5: drop random spans from a raw row; the encoder reads the rest with one sentinel per
  span, the decoder writes the spans after their sentinels."""
  seq_len: int  # encoder inputs, filled exactly by a full raw row
  density: float
  mean_span: float
  vocab_size: int
  families = ("encoder_decoder",)
  max_scored = 0  # every target position

  @property
  def raw_length(self) -> int:
    return noise.raw_length(self.seq_len, self.density, self.mean_span)[0]

  @property
  def targets_length(self) -> int:
    return noise.raw_length(self.seq_len, self.density, self.mean_span)[1]

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    # A raw row is one example, documents and all, as in T5's pretraining mixture.
    # [R] -> [n]
    tokens = row["targets"][row["targets_segment_ids"] > 0]
    if len(tokens) < 2:  # nothing to corrupt: an all-padding example, scored nowhere
      tokens = np.full(2, PAD_ID, np.int32)
    mask = noise.noise_mask(len(tokens), self.density, self.mean_span, rng)
    sentinels = self.vocab_size - 1 - np.arange(NUM_SENTINELS)
    inputs, targets = noise.corrupt_spans(tokens, mask, sentinels, EOS_ID)
    return _encoder_decoder_example(inputs, targets, self.seq_len, self.targets_length,
                                    scored=row["targets_segment_ids"].any())


@dataclasses.dataclass(frozen=True)
class PrefixLM:
  """Split a raw row at a random point; predict the suffix from the prefix, which is read
  bidirectionally (a decoder's prefix positions attend both ways; an encoder-decoder
  encodes the prefix). The T5 paper's "prefix LM" and encoder-decoder "LM" objectives."""
  seq_len: int
  family: str
  families = ("decoder", "encoder_decoder")
  max_scored = 0  # every target position

  @property
  def raw_length(self) -> int:
    # An encoder-decoder appends EOS to the prefix and to the suffix.
    return self.seq_len if self.family == "decoder" else self.seq_len - 1

  @property
  def targets_length(self) -> int:
    return self.seq_len

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    # [R] -> [n]
    tokens = row["targets"][row["targets_segment_ids"] > 0]
    n = len(tokens)
    split = int(rng.integers(1, n)) if n > 1 else n
    if self.family == "encoder_decoder":
      return _encoder_decoder_example(np.append(tokens[:split], EOS_ID),
                                      np.append(tokens[split:], EOS_ID), self.seq_len,
                                      self.seq_len, scored=n > 1)
    positions, segment_ids = _one_segment(self.seq_len, n)
    targets = _pad(tokens, self.seq_len)
    # Input position t holds token t - 1: positions 0..split see the whole prefix.
    prefix = (np.arange(self.seq_len) <= split) & (segment_ids > 0)
    weights = (np.arange(self.seq_len) >= split) & (segment_ids > 0)
    return {"inputs": _shift_right(targets, segment_ids, BOS_ID), "targets": targets,
            "positions": positions, "segment_ids": segment_ids,
            "prefix": prefix.astype(np.int32), "weights": weights.astype(np.float32)}


def _encoder_decoder_example(inputs: np.ndarray, targets: np.ndarray, inputs_length: int,
                             targets_length: int, scored: bool) -> dict:
  """One example padded into an encoder row and a decoder row (decoder start: pad, as T5)."""
  enc_positions, enc_segments = _one_segment(inputs_length, len(inputs))
  positions, segment_ids = _one_segment(targets_length, len(targets))
  targets = _pad(targets, targets_length)
  return {"encoder_inputs": _pad(inputs, inputs_length), "encoder_positions": enc_positions,
          "encoder_segment_ids": enc_segments,
          "inputs": _shift_right(targets, segment_ids, PAD_ID), "targets": targets,
          "positions": positions, "segment_ids": segment_ids,
          "weights": ((segment_ids > 0) & scored).astype(np.float32)}


NAMES = ("causal_lm", "mlm", "span_corruption", "prefix_lm")
FAMILY_OBJECTIVES = {"decoder": ("causal_lm", "prefix_lm"), "encoder": ("mlm",),
                     "encoder_decoder": ("span_corruption", "prefix_lm"),
                     "lstm": ("causal_lm",)}


def row_lengths(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(decoder or only-stack row length, encoder row length or 0) of the config's batches."""
  if config.model.family == "encoder_decoder":
    return make(config).targets_length, config.data.seq_len
  return config.data.seq_len, 0


def scored_length(config: ml_collections.ConfigDict) -> int:
  """Positions per row that the loss projects onto the vocabulary."""
  return make(config).max_scored or row_lengths(config)[0]


def make(config: ml_collections.ConfigDict, tokenizer: Tokenizer | None = None):
  """The objective of `config` (its sizes only, if `tokenizer` is None: for shapes and checks)."""
  name, seq_len, n = config.objective, config.data.seq_len, config.noise
  vocab = config.data.vocab_size
  if name == "causal_lm":
    return CausalLM(seq_len)
  if name == "mlm":
    starts = None
    if n.whole_word_masking and tokenizer is not None:
      starts = tokenizer.word_starts()
    return MaskedLM(seq_len, n.mlm_rate, vocab, starts)
  if name == "span_corruption":
    return SpanCorruption(seq_len, n.noise_density, n.mean_span_length, vocab)
  if name == "prefix_lm":
    return PrefixLM(seq_len, config.model.family)
  raise ValueError(f"config.objective={name!r} is not one of {NAMES}")
