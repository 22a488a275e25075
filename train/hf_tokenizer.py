"""Published tokenizers: an HF `tokenizer.json` directory (through the `tokenizers` library),
or a SentencePiece `.model` file; `published(path, vocab_size)` opens either.

Special ids come from the directory's `tokenizer_config.json` / `special_tokens_map.json`
(pad, eos, bos, mask tokens; `<extra_id_N>` sentinels among the added tokens), so text
encodes to exactly the ids `transformers`' tokenizer gives on the same files.
"""
import json
import os

import numpy as np
import tokenizers

from train import tokenizer as spm_tokenizer

HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
            "merges.txt", "spiece.model", "vocab.txt", "added_tokens.json")
_BYTE_PIECE = "<0x"


def _token(value) -> str | None:
  """A special token's text, given as a string or as {"content": ...}."""
  return value.get("content") if isinstance(value, dict) else value


def _special_tokens(directory: str) -> dict:
  """{"pad_token": "<pad>", ...} from the directory's tokenizer config files."""
  found = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      with open(path) as f:
        config = json.load(f)
      for key in ("pad_token", "eos_token", "bos_token", "mask_token", "unk_token"):
        found.setdefault(key, _token(config.get(key)))
  return found


class HFTokenizer(spm_tokenizer.Specialised):
  """An HF fast tokenizer (`tokenizer.json`) with the triform tokenizer interface."""

  def __init__(self, directory: str, vocab_size: int):
    self.directory = directory
    self.tok = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    self.vocab_size = vocab_size
    size = self.tok.get_vocab_size(with_added_tokens=True)
    spm_tokenizer.check_vocab_size(size, vocab_size, f"the tokenizer in {directory}")
    self.size = size
    names = _special_tokens(directory)
    ids = {k: self.tok.token_to_id(v) if v else None for k, v in names.items()}
    if ids.get("eos_token") is None:
      raise ValueError(f"the tokenizer in {directory} names no eos_token (tokenizer_config.json)"
                       "; a run needs one to end documents")
    eos = ids["eos_token"]
    pad = ids.get("pad_token") if ids.get("pad_token") is not None else eos
    bos = ids.get("bos_token") if ids.get("bos_token") is not None else pad
    sentinels = []
    while (i := self.tok.token_to_id(f"<extra_id_{len(sentinels)}>")) is not None:
      sentinels.append(i)
    special = {i for i in ids.values() if i is not None} | set(sentinels) | {
        i for i, t in self.tok.get_added_tokens_decoder().items() if t.special}
    low = [i for i in special if i < size // 2]
    high = [i for i in special if i >= size // 2]
    self.special_ids = special
    self.specials = spm_tokenizer.Specials(pad, eos, bos, ids.get("mask_token"), tuple(sentinels),
                                           (max(low, default=-1) + 1, min(high, default=size)))
    self.byte_level = self.tok.decoder is not None and "ByteLevel" in type(self.tok.decoder
                                                                           ).__name__

  def encode(self, text: str) -> np.ndarray:
    """Ids of `text`, no special tokens added (the pipeline appends EOS itself)."""
    return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids) -> str:
    """Text of `ids` up to the first EOS, without pad; sentinels written as <extra_id_N>."""
    kept = []
    for i in map(int, ids):
      if i == self.eos_id:
        break
      if i != self.pad_id and i < self.size:
        kept.append(i)
    return self.tok.decode(kept, skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    return self.tok.id_to_token(i) or ""

  def word_starts(self) -> np.ndarray:
    """[V] bool: ids that begin a word (after whitespace, Ġ / ▁, or not a letter or digit)."""
    starts = np.ones(self.vocab_size, bool)
    for i in range(self.size):
      piece = self.id_to_piece(i)
      if piece and i not in self.special_ids and piece[0] not in "\u0120\u2581 ":
        starts[i] = not (piece[0].isalnum() or piece[0] == "_")
    return starts

  def byte_lengths(self) -> np.ndarray:
    """[V] UTF-8 bytes each id decodes to; 0 for special ids and padding rows."""
    lengths = np.zeros(self.vocab_size, np.int32)
    for i in range(self.size):
      piece = self.id_to_piece(i)
      if i in self.special_ids or not piece:
        continue
      if self.byte_level:  # GPT-2: each character of a piece stands for one byte
        lengths[i] = len(piece)
      elif piece.startswith(_BYTE_PIECE) and piece.endswith(">") and len(piece) == 6:
        lengths[i] = 1
      else:
        lengths[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return lengths


def published(path: str, vocab_size: int):
  """The tokenizer at `path`: an HF directory with tokenizer.json, or a SentencePiece model."""
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
      raise ValueError(f"config.data.tokenizer={path!r} is a directory without tokenizer.json; "
                       "give an HF tokenizer directory or a SentencePiece .model file")
    return HFTokenizer(path, vocab_size)
  if not os.path.isfile(path):
    raise ValueError(f"config.data.tokenizer={path!r} does not exist; give 'train', a "
                     "SentencePiece .model file or an HF tokenizer directory")
  with open(path, "rb") as f:
    proto = f.read()
  try:
    return spm_tokenizer.Tokenizer(proto, vocab_size, trained=False,
                                   name=f"config.data.tokenizer={path!r}")
  except RuntimeError as e:  # not a SentencePiece model
    raise ValueError(f"config.data.tokenizer={path!r} is not a SentencePiece model ({e})"
                     ) from None
