"""SentencePiece tokenizer with fixed special ids and T5-style sentinels.

Ids: pad 0, eos 1, unk 2, bos 3, mask 4, then the learned pieces (with byte
fallback, so any text round-trips), and 100 sentinels `<extra_id_0..99>` at
the top of the vocabulary counting down: <extra_id_0> = vocab_size - 1.
"""
import io
import os
import re

import numpy as np
import sentencepiece as spm

PAD_ID, EOS_ID, UNK_ID, BOS_ID, MASK_ID = 0, 1, 2, 3, 4
MASK_PIECE = "<mask>"
NUM_SENTINELS = 100
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


class Tokenizer:
  """Encodes text to ids and back; ids >= sp_size are sentinels."""

  def __init__(self, model_proto: bytes, vocab_size: int):
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = vocab_size
    self.sp_size = self.sp.get_piece_size()
    # The special ids, for code that should not assume their values.
    self.pad_id, self.eos_id, self.bos_id, self.mask_id = PAD_ID, EOS_ID, BOS_ID, MASK_ID
    if self.sp_size + NUM_SENTINELS != vocab_size:
      raise ValueError(f"tokenizer has {self.sp_size} pieces + {NUM_SENTINELS} sentinels, "
                       f"not vocab_size={vocab_size}")

  def sentinel_id(self, i: int) -> int:
    return self.vocab_size - 1 - i

  def encode(self, text: str) -> np.ndarray:
    """Ids of `text` (no EOS); `<extra_id_N>` in the text becomes sentinel N."""
    ids = []
    for i, part in enumerate(_SENTINEL.split(text)):
      ids += [self.sentinel_id(int(part))] if i % 2 else self.sp.encode(part)
    return np.asarray(ids, np.int32)

  def decode(self, ids) -> str:
    """Text of `ids`; stops at the first EOS, drops pad, writes sentinels as <extra_id_N>."""
    out, run = [], []
    for i in map(int, ids):
      if i == EOS_ID:
        break
      if i >= self.sp_size:
        out += [self.sp.decode(run), f"<extra_id_{self.vocab_size - 1 - i}>"]
        run = []
      elif i != PAD_ID:
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
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=BOS_ID,
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
