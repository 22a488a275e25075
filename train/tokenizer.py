"""Tokenizers: SentencePiece (trained here or published) and their special ids.

Every tokenizer carries its special ids as attributes (`pad_id`, `eos_id`, `bos_id`,
`mask_id`, `sentinel_id(i)`, `num_sentinels`, in a `Specials`); the objectives, the input
pipeline, decoding and the tools read them from the tokenizer, never from constants.

A tokenizer trained here (`config.data.tokenizer="train"`) has the layout of `Specials.trained`:
pad 0, eos 1, unk 2, bos 3, mask 4, then the learned pieces (with byte fallback, so any
text round-trips), and 100 sentinels `<extra_id_0..99>` at the top of the vocabulary
counting down: <extra_id_0> = vocab_size - 1. A published SentencePiece model (T5's 32k
vocabulary) keeps its own pad / eos / unk / bos and gets the same 100 sentinels above its
pieces, as T5 does; train/hf_tokenizer.py reads HF `tokenizer.json` directories.
"""
import dataclasses
import io
import os
import re

import numpy as np
import sentencepiece as spm

# The layout of the tokenizers trained here (Specials.trained).
_PAD, _EOS, _UNK, _BOS, _MASK = 0, 1, 2, 3, 4
MASK_PIECE = "<mask>"
NUM_SENTINELS = 100  # sentinels a SentencePiece tokenizer gets above its pieces
# Embedding tables may be padded past the tokenizer's ids up to a multiple of this (T5's
# 32,100 ids in a 32,128-row table).
VOCAB_PADDING = 128
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


@dataclasses.dataclass(frozen=True)
class Specials:
  """A tokenizer's special ids. A tokenizer without a BOS starts rows with pad (T5's
  decoder start); one without a pad pads with EOS (GPT-2)."""
  pad_id: int
  eos_id: int
  bos_id: int
  mask_id: int | None  # None: no mask token (masked LM needs one)
  sentinel_ids: tuple[int, ...]  # <extra_id_i> = sentinel_ids[i]
  text_ids: tuple[int, int]  # [first, last) ids of ordinary text pieces: what MLM corrupts

  @classmethod
  def trained(cls, vocab_size: int) -> "Specials":
    """The layout of a tokenizer trained here: also what shapes and checks assume before
    any tokenizer is loaded."""
    return cls(_PAD, _EOS, _BOS, _MASK, tuple(vocab_size - 1 - np.arange(NUM_SENTINELS)),
               (_MASK + 1, vocab_size - NUM_SENTINELS))


class Specialised:
  """The special-id attributes every tokenizer has, from its `specials`."""
  specials: Specials
  vocab_size: int  # ids the model's embedding must have rows for (config.data.vocab_size)

  @property
  def pad_id(self) -> int:
    return self.specials.pad_id

  @property
  def eos_id(self) -> int:
    return self.specials.eos_id

  @property
  def bos_id(self) -> int:
    return self.specials.bos_id

  @property
  def mask_id(self) -> int | None:
    return self.specials.mask_id

  @property
  def num_sentinels(self) -> int:
    return len(self.specials.sentinel_ids)

  def sentinel_id(self, i: int) -> int:
    return self.specials.sentinel_ids[i]


def check_vocab_size(ids: int, vocab_size: int, what: str) -> None:
  """The model's vocab_size must hold the tokenizer's `ids`, padded by less than
  VOCAB_PADDING: anything else is a mismatched tokenizer."""
  if not ids <= vocab_size < ids + VOCAB_PADDING:
    raise ValueError(f"{what} has {ids} ids but config.data.vocab_size={vocab_size}; set "
                     f"--config.data.vocab_size={ids} (or up to {VOCAB_PADDING - 1} more, "
                     "padding) or use the tokenizer the model was trained with")


class Tokenizer(Specialised):
  """A SentencePiece model; ids >= sp_size are sentinels."""

  def __init__(self, model_proto: bytes, vocab_size: int, trained: bool = True,
               name: str = "the trained tokenizer"):
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = vocab_size
    self.sp_size = self.sp.get_piece_size()
    if trained:
      if self.sp_size + NUM_SENTINELS != vocab_size:
        raise ValueError(f"tokenizer has {self.sp_size} pieces + {NUM_SENTINELS} sentinels, "
                         f"not vocab_size={vocab_size}")
      self.specials = Specials.trained(vocab_size)
    else:
      check_vocab_size(self.sp_size + NUM_SENTINELS, vocab_size, name)
      self.specials = self._published_specials()

  def _published_specials(self) -> Specials:
    """A published model's own ids; sentinels counting down from just above its pieces."""
    sp, top = self.sp, self.sp_size + NUM_SENTINELS
    pad = sp.pad_id() if sp.pad_id() >= 0 else sp.eos_id()
    bos = sp.bos_id() if sp.bos_id() >= 0 else pad
    mask = sp.piece_to_id(MASK_PIECE)
    mask = None if mask == sp.unk_id() else mask
    controls = [i for i in range(min(self.sp_size, 1000)) if sp.is_control(i) or sp.is_unknown(i)
                or i == mask]
    return Specials(pad, sp.eos_id(), bos, mask, tuple(top - 1 - np.arange(NUM_SENTINELS)),
                    (max(controls, default=-1) + 1, self.sp_size))

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(i) if i < self.sp_size else self.decode([i])

  def encode(self, text: str) -> np.ndarray:
    """Ids of `text` (no EOS); `<extra_id_N>` in the text becomes sentinel N."""
    ids = []
    for i, part in enumerate(_SENTINEL.split(text)):
      ids += [self.sentinel_id(int(part))] if i % 2 else self.sp.encode(part)
    return np.asarray(ids, np.int32)

  def decode(self, ids) -> str:
    """Text of `ids`; stops at the first EOS, drops pad, writes sentinels as <extra_id_N>."""
    out, run, top = [], [], self.sp_size + self.num_sentinels
    for i in map(int, ids):
      if i == self.eos_id:
        break
      if self.sp_size <= i < top:
        out += [self.sp.decode(run), f"<extra_id_{top - 1 - i}>"]
        run = []
      elif i != self.pad_id and i < top:
        run.append(i)
    return "".join(out) + self.sp.decode(run)

  def word_starts(self) -> np.ndarray:
    """[V] bool: ids that begin a word (a piece after whitespace, or punctuation), for
    whole-word masking; the other pieces continue the word before them."""
    starts = np.ones(self.vocab_size, bool)
    for i in range(self.sp_size):
      piece = self.sp.id_to_piece(i)
      if not (self.sp.is_control(i) or self.sp.is_byte(i)) and piece[0] != "\u2581":
        starts[i] = not (piece[0].isalnum() or piece[0] == "_")
    return starts

  def byte_lengths(self) -> np.ndarray:
    """UTF-8 bytes each id decodes to ([V]); 0 for control ids and sentinels."""
    lengths = np.zeros(self.vocab_size, np.int32)
    for i in range(self.sp_size):
      if self.sp.is_byte(i):
        lengths[i] = 1
      elif not (self.sp.is_control(i) or self.sp.is_unknown(i)):
        lengths[i] = len(self.sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return lengths


def _lines(texts, limit: int):
  """Non-blank lines of the documents, at most `limit` of them."""
  count = 0
  for text in texts:
    for line in text.split("\n"):
      if line.strip():
        yield line
        count += 1
        if count >= limit:
          return


def train(texts, vocab_size: int, num_sentences: int) -> bytes:
  """Trains a unigram SentencePiece model on lines of `texts`; returns its serialized proto."""
  if vocab_size <= NUM_SENTINELS + 300:
    raise ValueError(f"config.data.vocab_size={vocab_size} is too small: it must exceed "
                     f"{NUM_SENTINELS} sentinels + 256 byte pieces + specials; use >= 512")
  proto = io.BytesIO()
  try:
    _train_sentencepiece(texts, vocab_size, num_sentences, proto)
  except RuntimeError as e:
    if "Vocabulary size too high" not in str(e):
      raise
    limit = re.search(r"<= (\d+)", str(e))
    raise ValueError(f"the corpus is too small for config.data.vocab_size={vocab_size}: it "
                     f"supports at most {int(limit.group(1)) + NUM_SENTINELS if limit else 'fewer'}"
                     " ids; lower vocab_size or add text") from None
  return proto.getvalue()


def _train_sentencepiece(texts, vocab_size: int, num_sentences: int, proto: io.BytesIO) -> None:
  spm.SentencePieceTrainer.train(
      sentence_iterator=_lines(texts, num_sentences), model_writer=proto,
      vocab_size=vocab_size - NUM_SENTINELS, model_type="unigram",
      pad_id=_PAD, eos_id=_EOS, unk_id=_UNK, bos_id=_BOS,
      user_defined_symbols=[MASK_PIECE], byte_fallback=True,
      # Keep text exactly (code's indentation matters): no normalisation,
      # no dummy prefix, runs of spaces may form pieces.
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
      character_coverage=0.9995, input_sentence_size=num_sentences,
      shuffle_input_sentence=True, max_sentence_length=1 << 14, num_threads=os.cpu_count() or 1,
      minloglevel=2)


def load_or_train(path: str, texts, vocab_size: int, num_sentences: int) -> Tokenizer:
  """The tokenizer cached at `path`, trained first if missing on `texts()` (a callable
  returning str documents, called only then)."""
  if not os.path.exists(path):
    proto = train(texts(), vocab_size, num_sentences)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
      f.write(proto)
    os.replace(tmp, path)  # atomic: a crash never leaves half a model behind
  with open(path, "rb") as f:
    return Tokenizer(f.read(), vocab_size)
