"""The documents and tokenizer of a config: the one loader the trainer, evaluation and tools share."""
import contextlib
import dataclasses
import hashlib
import os

import ml_collections

from train import hf_tokenizer, sources, tokenizer


TRAIN = "train"  # config.data.tokenizer: train a SentencePiece model on the source


@dataclasses.dataclass
class Data:
  """A prepared document source and its tokenizer: trained on (a sample of) its train split,
  or a published one (config.data.tokenizer)."""
  source: sources.DocumentSource
  tokenizer: tokenizer.Specialised
  tokenizer_path: str
  sample_lines: int  # config.data.tokenizer_sentences: the sample's size in non-blank lines
  _sample: list[str] | None = dataclasses.field(default=None, repr=False)

  def documents(self, split: str):
    return self.source.split(split)

  def fingerprint(self) -> dict:
    """The source's fingerprint and the tokenizer's (its file's hash): what a resume must
    find unchanged (train/data_fingerprint.py)."""
    with open(self.tokenizer_path, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    return {"source": self.source.fingerprint(),
            "tokenizer": {"file": os.path.basename(self.tokenizer_path), "sha256": digest}}

  def sample_texts(self) -> list[str]:
    """The train split's bounded sample (read once): what the tokenizer and the unigram
    baseline read."""
    if self._sample is None:
      self._sample = sources.sample_texts(self.documents("train"), self.sample_lines)
    return self._sample


def load(config: ml_collections.ConfigDict, timer=None,
         source: sources.DocumentSource | None = None) -> Data:
  """Prepares `config.data.source` (or `source`, already resolved from it), built once under
  config.data.data_dir, and its tokenizer (trained once on the train split's sample, then
  cached next to the data) or the published tokenizer config.data.tokenizer names.
  `timer(phase)` times the "corpus" and "tokenizer" phases."""
  timer = timer or (lambda name: contextlib.nullcontext())
  data = config.data
  source = sources.resolve(data) if source is None else source
  published = None
  if data.tokenizer != TRAIN:  # checked before the corpus is built
    published = hf_tokenizer.published(data.tokenizer, data.vocab_size)
  with timer("corpus"):
    source.prepare(data.data_dir)
  directory = os.path.join(os.path.expanduser(data.data_dir), source.cache_key)
  os.makedirs(directory, exist_ok=True)  # sources read in place have no directory of their own
  if published is not None:
    return Data(source, published, os.path.expanduser(data.tokenizer), data.tokenizer_sentences)
  path = os.path.join(directory, f"spm_unigram_{data.vocab_size}.model")
  loaded = Data(source, None, path, data.tokenizer_sentences)
  with timer("tokenizer"):
    loaded.tokenizer = tokenizer.load_or_train(path, loaded.sample_texts,
                                               data.vocab_size, data.tokenizer_sentences)
  return loaded
