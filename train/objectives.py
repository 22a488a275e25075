"""Objectives: transforms from packed token rows to model inputs, targets and loss weights.

A packed row (from grain's concat-then-split) holds `targets` [R] with
`targets_segment_ids` (0 = padding) and `targets_positions` [R], where R is the
objective's `raw_length`. Every objective returns `targets` and `weights` (the
loss weight of each target) plus the inputs its family's model reads
(`model.FAMILIES[family].INPUTS`). Random choices come from the generator the
pipeline passes in, keyed by (config seed, global example index).

`OBJECTIVES` is the registry: each class says which families it fits, how it is
built from a config, the row lengths it makes, how many positions per row it scores,
whether a decoder row has a bidirectional prefix, and what its scored tokens are.
Nothing outside this file branches on an objective's name.
"""
import abc
import dataclasses
import functools

import ml_collections
import numpy as np

from model import FAMILIES
from train import noise
from train.tokenizer import Specials, Tokenizer


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


def _encoded(config: ml_collections.ConfigDict) -> bool:
  """Whether config's family reads its inputs with an encoder (reads `encoder_inputs`)."""
  return "encoder_inputs" in FAMILIES[config.model.family].INPUTS


def causal_lm(row: dict, bos_id: int) -> dict:
  """Next-token prediction: inputs are targets shifted right, BOS at each segment start."""
  # [T] each
  targets, segment_ids = row["targets"], row["targets_segment_ids"]
  return {"inputs": _shift_right(targets, segment_ids, bos_id), "targets": targets,
          "positions": row["targets_positions"], "segment_ids": segment_ids,
          "weights": (segment_ids > 0).astype(np.float32)}


_EVAL_SEED = ("drawn with the fixed evaluation seed (config.seed={seed}, the validation stream): "
              "the same on every run")


class Objective(abc.ABC):
  """What every objective tells about itself; subclasses set the class fields."""
  NAME: str
  FAMILIES: tuple[str, ...]  # the model families whose inputs it makes
  bidirectional_prefix = False  # a decoder's rows carry a `prefix` read both ways
  max_scored = 0  # positions per row the loss may score (0: every position)
  seq_len: int
  specials: Specials  # the tokenizer's special ids

  @property
  def raw_length(self) -> int:
    """Tokens of a packed row before the objective applies."""
    return self.seq_len

  @property
  def lengths(self) -> tuple[int, int]:
    """(decoder or only-stack row length, encoder row length or 0) of its examples."""
    return self.seq_len, 0

  def example_shapes(self) -> dict:
    """{field: (length, dtype)} of one example, from a dummy row of text tokens."""
    row = {"targets": np.full(self.raw_length, self.specials.text_ids[0], np.int32),
           "targets_segment_ids": np.ones(self.raw_length, np.int32),
           "targets_positions": np.arange(self.raw_length, dtype=np.int32)}
    example = self(row, noise.example_rng(0, 0))
    return {k: (len(v), v.dtype) for k, v in example.items()}

  @classmethod
  @abc.abstractmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer=None) -> "Objective":
    """The objective `config` describes, with `tokenizer`'s special ids (and word starts
    where it needs them); without one, the layout of a tokenizer trained here."""

  @abc.abstractmethod
  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    """One example (model inputs, `targets`, `weights`) of a packed row."""

  @abc.abstractmethod
  def describe_scored(self, seed: int) -> str:
    """What the scored tokens of an evaluation are, in words."""


@dataclasses.dataclass(frozen=True)
class CausalLM(Objective):
  """GPT: predict every token from the ones before it, within its document."""
  seq_len: int
  specials: Specials
  NAME = "causal_lm"
  FAMILIES = ("decoder", "lstm")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer=None) -> "CausalLM":
    return cls(config.data.seq_len, specials_of(config, tokenizer))

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    del rng
    return causal_lm(row, self.specials.bos_id)

  def describe_scored(self, seed: int) -> str:
    return ("every token of every document and its EOS, each predicted from the tokens before "
            "it in its row (a document longer than a row goes on in the next row, without the "
            "earlier context)")


@dataclasses.dataclass(frozen=True)
class MaskedLM(Objective):
  """BERT: select `rate` of the text tokens, corrupt them 80/10/10, predict them.

  An encoder-decoder (`encoded`) reads the corrupted row, documents and all, in its encoder
  and writes the whole original row from its decoder: the T5 paper's "BERT-style"
  denoising objective (Raffel et al. 2020, section 3.3.1), where every target is scored.
  """
  seq_len: int
  rate: float
  vocab_size: int
  word_starts: np.ndarray | None  # [V] bool, for whole-word masking
  specials: Specials
  encoded: bool = False  # an encoder-decoder's example: corrupted in, original out
  NAME = "mlm"
  FAMILIES = ("encoder", "encoder_decoder")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer=None) -> "MaskedLM":
    n = config.noise
    starts = tokenizer.word_starts() if n.whole_word_masking and tokenizer is not None else None
    specials = specials_of(config, tokenizer)
    if specials.mask_id is None:
      raise ValueError(f"config.data.tokenizer={config.data.tokenizer!r} has no mask token; "
                       "config.objective='mlm' needs one (use a BERT tokenizer or 'train')")
    return cls(config.data.seq_len, n.mlm_rate, config.data.vocab_size, starts, specials,
               _encoded(config))

  @property
  def raw_length(self) -> int:
    # An encoder-decoder appends EOS to the corrupted and to the original row.
    return self.seq_len - 1 if self.encoded else self.seq_len

  @property
  def lengths(self) -> tuple[int, int]:
    return self.seq_len, self.seq_len if self.encoded else 0

  @property
  def max_scored(self) -> int:
    """Most positions a row can have selected (noise.mlm_mask selects round(rate * n) of n <= T);
    an encoder-decoder scores every target (0)."""
    return 0 if self.encoded else int(round(self.rate * self.seq_len))

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    # [T] each
    tokens, segment_ids = row["targets"], row["targets_segment_ids"]
    first_text, end_text = self.specials.text_ids
    candidates = (tokens >= first_text) & (tokens < end_text) & (segment_ids > 0)
    starts = None
    if self.word_starts is not None:
      new_segment = segment_ids != np.roll(segment_ids, 1)
      starts = self.word_starts[tokens] | new_segment
    inputs, selected = noise.mlm_mask(tokens, candidates, rng, rate=self.rate,
                                      mask_id=self.specials.mask_id,
                                      random_ids=(first_text, end_text),
                                      word_starts=starts)
    if self.encoded:
      real, eos = segment_ids > 0, self.specials.eos_id
      return encoder_decoder_example(np.append(inputs[real], eos), np.append(tokens[real], eos),
                                      self.seq_len, self.seq_len, self.specials.pad_id,
                                      scored=real.any())
    return {"inputs": inputs, "targets": tokens, "positions": row["targets_positions"],
            "segment_ids": segment_ids, "weights": selected.astype(np.float32)}

  def describe_scored(self, seed: int) -> str:
    if self.encoded:
      return (f"every token of the original row and its EOS, written from the row with "
              f"{self.rate:.0%} of its text tokens corrupted, " + _EVAL_SEED.format(seed=seed))
    return f"the masked-LM targets, {self.rate:.0%} of the text tokens, " + _EVAL_SEED.format(
        seed=seed)


@dataclasses.dataclass(frozen=True)
class SpanCorruption(Objective):
  """T5: drop random spans from a raw row; the encoder reads the rest with one sentinel per
  span, the decoder writes the spans after their sentinels. A decoder-only model reads the
  corrupted inputs and then writes the targets in one row (the T5 paper's decoder and prefix
  LM with the denoising objective), the inputs read both ways unless `causal_prefix`."""
  seq_len: int  # encoder inputs, filled exactly by a full raw row; a decoder's whole row
  density: float
  mean_span: float
  vocab_size: int
  specials: Specials
  decoder: bool = False  # one decoder row holds inputs and targets
  causal_prefix: bool = False  # a decoder reads the inputs causally
  NAME = "span_corruption"
  FAMILIES = ("decoder", "encoder_decoder")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer=None) -> "SpanCorruption":
    n = config.noise
    specials = specials_of(config, tokenizer)
    if not specials.sentinel_ids:
      raise ValueError(f"config.data.tokenizer={config.data.tokenizer!r} has no <extra_id_N> "
                       "sentinels; config.objective='span_corruption' needs them (use a T5 "
                       "tokenizer or 'train')")
    decoder = not _encoded(config)
    return cls(config.data.seq_len, n.noise_density, n.mean_span_length, config.data.vocab_size,
               specials, decoder, decoder and config.decoder_prefix == "causal")

  @functools.cached_property
  def inputs_length(self) -> int:
    """The corrupted inputs' length: the encoder's row, or the most that fits in a decoder's
    row beside the targets it makes."""
    length = self.seq_len
    while self.decoder and length + self._lengths(length)[1] > self.seq_len:
      length -= 1
    return length

  def _lengths(self, inputs_length: int) -> tuple[int, int]:
    return noise.raw_length(inputs_length, self.density, self.mean_span)

  @property
  def raw_length(self) -> int:
    return self._lengths(self.inputs_length)[0]

  @property
  def targets_length(self) -> int:
    return self._lengths(self.inputs_length)[1]

  @property
  def lengths(self) -> tuple[int, int]:
    return (self.seq_len, 0) if self.decoder else (self.targets_length, self.seq_len)

  @property
  def bidirectional_prefix(self) -> bool:
    return self.decoder and not self.causal_prefix

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    # A raw row is one example, documents and all, as in T5's pretraining mixture.
    # [R] -> [n]
    tokens = row["targets"][row["targets_segment_ids"] > 0]
    if len(tokens) < 2:  # nothing to corrupt: an all-padding example, scored nowhere
      tokens = np.full(2, self.specials.pad_id, np.int32)
    mask = noise.noise_mask(len(tokens), self.density, self.mean_span, rng)
    sentinels = np.asarray(self.specials.sentinel_ids)
    inputs, targets = noise.corrupt_spans(tokens, mask, sentinels, self.specials.eos_id)
    scored = row["targets_segment_ids"].any()
    if self.decoder:
      return decoder_example(np.concatenate([inputs, targets]), len(inputs), self.seq_len,
                              self.specials.bos_id, bidirectional=not self.causal_prefix,
                              scored=scored)
    return encoder_decoder_example(inputs, targets, self.seq_len, self.targets_length,
                                    self.specials.pad_id, scored)

  def describe_scored(self, seed: int) -> str:
    return (f"the span-corruption targets (noise density {self.density}, mean span "
            f"{self.mean_span}; with a sentinel per span and EOS, which stand for no bytes), "
            + _EVAL_SEED.format(seed=seed))


@dataclasses.dataclass(frozen=True)
class PrefixLM(Objective):
  """Split a raw row at a random point; predict the suffix from the prefix, which is read
  bidirectionally (a decoder's prefix positions attend both ways; an encoder-decoder
  encodes the prefix). The T5 paper's "prefix LM" and encoder-decoder "LM" objectives."""
  seq_len: int
  encoded: bool  # the prefix goes to an encoder (the family reads `encoder_inputs`)
  specials: Specials
  causal_prefix: bool = False  # a decoder reads the prefix causally (scoring only the suffix)
  NAME = "prefix_lm"
  FAMILIES = ("decoder", "encoder_decoder")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer=None) -> "PrefixLM":
    encoded = _encoded(config)
    return cls(config.data.seq_len, encoded, specials_of(config, tokenizer),
               causal_prefix=not encoded and config.decoder_prefix == "causal")

  @property
  def bidirectional_prefix(self) -> bool:
    return not (self.encoded or self.causal_prefix)

  @property
  def raw_length(self) -> int:
    # An encoder-decoder appends EOS to the prefix and to the suffix.
    return self.seq_len - 1 if self.encoded else self.seq_len

  @property
  def targets_length(self) -> int:
    return self.seq_len

  @property
  def lengths(self) -> tuple[int, int]:
    return self.seq_len, self.seq_len if self.encoded else 0

  def __call__(self, row: dict, rng: np.random.Generator) -> dict:
    # [R] -> [n]
    tokens = row["targets"][row["targets_segment_ids"] > 0]
    n = len(tokens)
    split = int(rng.integers(1, n)) if n > 1 else n
    if self.encoded:
      eos = self.specials.eos_id
      return encoder_decoder_example(np.append(tokens[:split], eos),
                                      np.append(tokens[split:], eos), self.seq_len,
                                      self.seq_len, self.specials.pad_id, scored=n > 1)
    return decoder_example(tokens, split, self.seq_len, self.specials.bos_id,
                            bidirectional=not self.causal_prefix)

  def describe_scored(self, seed: int) -> str:
    return "each row's suffix after a random split point, " + _EVAL_SEED.format(seed=seed)


def decoder_example(tokens: np.ndarray, split: int, length: int, bos_id: int,
                     bidirectional: bool, scored: bool = True) -> dict:
  """A decoder row of `tokens` [n <= length] scoring tokens[split:] given tokens[:split],
  which it reads both ways (a `prefix` field) if `bidirectional`, else causally."""
  positions, segment_ids = _one_segment(length, len(tokens))
  targets = _pad(tokens, length)
  example = {"inputs": _shift_right(targets, segment_ids, bos_id), "targets": targets,
             "positions": positions, "segment_ids": segment_ids,
             "weights": ((np.arange(length) >= split) & (segment_ids > 0) & scored
                         ).astype(np.float32)}
  if bidirectional:
    # Input position t holds token t - 1: positions 0..split see the whole given part.
    example["prefix"] = ((np.arange(length) <= split) & (segment_ids > 0)).astype(np.int32)
  return example


def encoder_decoder_example(inputs: np.ndarray, targets: np.ndarray, inputs_length: int,
                             targets_length: int, pad_id: int, scored: bool) -> dict:
  """One example padded into an encoder row and a decoder row (decoder start: pad, as T5)."""
  enc_positions, enc_segments = _one_segment(inputs_length, len(inputs))
  positions, segment_ids = _one_segment(targets_length, len(targets))
  targets = _pad(targets, targets_length)
  return {"encoder_inputs": _pad(inputs, inputs_length), "encoder_positions": enc_positions,
          "encoder_segment_ids": enc_segments,
          "inputs": _shift_right(targets, segment_ids, pad_id), "targets": targets,
          "positions": positions, "segment_ids": segment_ids,
          "weights": ((segment_ids > 0) & scored).astype(np.float32)}


def specials_of(config: ml_collections.ConfigDict, tokenizer: Tokenizer | None) -> Specials:
  """`tokenizer`'s special ids, or (no tokenizer yet: shapes and checks) the layout of one
  trained here."""
  return tokenizer.specials if tokenizer is not None else Specials.trained(
      config.data.vocab_size)


# A family's first fitting objective is its default: GPT's, T5's, BERT's.
OBJECTIVES = {o.NAME: o for o in (CausalLM, SpanCorruption, PrefixLM, MaskedLM)}


def fitting(family: str) -> tuple[str, ...]:
  """The objectives that make `family`'s inputs, the family's default first."""
  return tuple(name for name, o in OBJECTIVES.items() if family in o.FAMILIES)


def make(config: ml_collections.ConfigDict, tokenizer: Tokenizer | None = None) -> Objective:
  """The objective of `config` (its sizes only, if `tokenizer` is None: for shapes and checks).

  Raises ValueError naming the fix for an unknown objective or one its family cannot train.
  """
  name, family = config.objective, config.model.family
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective={name!r} is not one of {tuple(OBJECTIVES)}")
  if family not in OBJECTIVES[name].FAMILIES:
    raise ValueError(f"config.objective={name!r} does not fit config.model.family="
                     f"{family!r}; choose one of {fitting(family)}")
  if config.decoder_prefix not in ("bidirectional", "causal"):
    raise ValueError(f"config.decoder_prefix={config.decoder_prefix!r} is not 'bidirectional' "
                     "or 'causal'")
  return OBJECTIVES[name].from_config(config, tokenizer)
