"""Where documents come from: one interface for every kind of source.

A DocumentSource gives a random-access sequence of documents ({"text": str or bytes})
per split and a stable `cache_key`: the directory under `config.data.data_dir` that
holds what is built from it (the prepared dataset, its tokenizers), the same for the
same documents on every machine. `resolve(config.data)` picks the source a config names;
train/data.py loads any of them the same way.

Sources here: the built-in corpus and file globs (train/corpus.py builds them once into
ArrayRecord), and a TFDS dataset already prepared on disk (read, never downloaded).
"""
import os
from typing import Protocol, Sequence

import ml_collections
import tensorflow_datasets as tfds

from train import corpus


class DocumentSource(Protocol):
  cache_key: str  # a directory name: the same documents, the same key

  def prepare(self, data_dir: str) -> None:
    """Builds (once) or checks whatever `split` reads; fails early, in one line."""

  def split(self, name: str) -> Sequence[dict]:
    """The documents of split `name` ("train", "validation"), each {"text": ...}."""

  def fingerprint(self) -> dict:
    """What `split` reads, as JSON (after `prepare`): files with their sizes and mtimes, or
    a dataset's name, version and split sizes. The same for the same data; different when
    a file changes (train/data_fingerprint.py compares it on resume)."""


class BuiltFiles:
  """Text files, one document per file (the built-in corpus or a glob), split by path hash
  and built once into an ArrayRecord dataset under data_dir/cache_key."""

  def __init__(self, files: corpus.Corpus):
    self.files = files
    self.cache_key = files.name
    self._builder = None

  def prepare(self, data_dir: str) -> None:
    self._builder = corpus.build(self.files, data_dir)

  def split(self, name: str):
    if self._builder is None:
      raise RuntimeError("call prepare(data_dir) before reading a split")
    return self._builder.as_data_source(name)

  def fingerprint(self) -> dict:
    """The raw files (path: [bytes, mtime]) and the built splits the run reads (cached
    under data_dir by cache_key, so a rebuild elsewhere fingerprints the same)."""
    if self._builder is None:
      raise RuntimeError("call prepare(data_dir) before fingerprinting")
    files = {}
    for path in self.files.paths:
      stat = os.stat(os.path.join(self.files.root, path))
      files[path] = [stat.st_size, int(stat.st_mtime)]
    return {"root": self.files.root, "files": files, "built": _split_sizes(self._builder)}


class TextField:
  """A TFDS data source's `key` feature as the {"text": ...} documents the pipeline reads."""

  def __init__(self, source, key: str):
    self.source, self.key = source, key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    return {"text": self.source[index][self.key]}


class PreparedTfds:
  """A TFDS dataset prepared on disk in a random-access format (array_record).

  Reads only what is on disk (never downloads or prepares: a dataset's own builder
  code may download), and fails early, in one line, when the dataset, its split or
  its text feature is missing.
  """

  def __init__(self, name: str, data_dir: str | None, text_key: str = "text"):
    self.name, self.text_key = name, text_key
    self.data_dir = os.path.expanduser(data_dir) if data_dir else None
    self.cache_key = "tfds_" + name.replace("/", "_").replace(":", "_")
    self._builder = None

  def prepare(self, data_dir: str | None = None) -> None:
    del data_dir  # read where it was prepared
    where = self.data_dir or "TFDS's default data directory (~/tensorflow_datasets, $TFDS_DATA_DIR)"
    try:
      builder = tfds.core.read_only_builder.builder_from_files(self.name, data_dir=self.data_dir)
    except tfds.core.DatasetNotFoundError:
      raise ValueError(
          f"TFDS dataset {self.name!r} is not prepared in {where}; this tool never downloads: "
          f"prepare it first (`tfds build {self.name.split(':')[0]} --file_format=array_record"
          f"{' --data_dir=' + self.data_dir if self.data_dir else ''}`) or fix --tfds_data_dir"
      ) from None
    file_format = builder.info.file_format
    if file_format not in tfds.core.FileFormat.with_random_access():
      raise ValueError(f"TFDS dataset {self.name!r} in {builder.data_dir} is stored as "
                       f"{file_format.value}, which has no random access; rebuild it with "
                       "--file_format=array_record")
    features = builder.info.features
    if self.text_key not in features.keys():
      raise ValueError(f"--tfds_text_key={self.text_key!r} is not a feature of {self.name!r}; "
                       f"it has {sorted(features.keys())}")
    if not isinstance(features[self.text_key], tfds.features.Text):
      raise ValueError(f"--tfds_text_key={self.text_key!r}: feature {self.text_key!r} of "
                       f"{self.name!r} is a {type(features[self.text_key]).__name__}, not Text")
    self._builder = builder

  def fingerprint(self) -> dict:
    if self._builder is None:
      self.prepare()
    return {"tfds": self.name, "version": str(self._builder.info.version),
            "text_key": self.text_key, "splits": _split_sizes(self._builder)}

  def split(self, name: str) -> TextField:
    if self._builder is None:
      self.prepare()
    try:
      return TextField(self._builder.as_data_source(split=name), self.text_key)
    except ValueError as e:  # an unknown split, or a bad slice
      raise ValueError(f"--tfds={self.name}:{name!r}: {e}") from None


def _split_sizes(builder) -> dict:
  """{split: {"examples": n, "bytes": n}} as the dataset's info records them."""
  return {name: {"examples": int(info.num_examples), "bytes": int(info.num_bytes)}
          for name, info in sorted(builder.info.splits.items())}


def _name_and_split(spec: str) -> tuple[str, str]:
  """("wiki40b/en:1.3.0", "test[:10%]") of "wiki40b/en:1.3.0:test[:10%]": the split follows the
  last colon outside brackets."""
  depth, cut = 0, -1
  for i, c in enumerate(spec):
    depth += (c == "[") - (c == "]")
    if c == ":" and depth == 0:
      cut = i
  return (spec[:cut], spec[cut + 1:]) if cut > 0 else ("", "")


def tfds_documents(spec: str, data_dir: str | None, text_key: str) -> TextField:
  """The documents of split `spec` ("NAME:SPLIT", TFDS's own names and slices) of a TFDS
  dataset prepared under `data_dir`."""
  name, split = _name_and_split(spec)
  if not name or not split:
    raise ValueError(f"--tfds={spec!r} must be NAME:SPLIT, e.g. lm1b:test")
  return PreparedTfds(name, data_dir, text_key).split(split)


def resolve(data: ml_collections.ConfigDict) -> DocumentSource:
  """The source `config.data.source` names; fails early on a missing or empty one."""
  return BuiltFiles(corpus.resolve(data.source, data.validation_percent))


def sample_texts(documents, max_lines: int) -> list[str]:
  """The texts of `documents` in order, up to the one that brings their non-blank lines to
  `max_lines`: the bounded sample tokenizer training and the unigram baseline read."""
  texts, lines = [], 0
  for i in range(len(documents)):
    text = documents[i]["text"]
    texts.append(text.decode("utf-8") if isinstance(text, bytes) else text)
    lines += sum(1 for line in texts[-1].split("\n") if line.strip())
    if lines >= max_lines:
      break
  return texts
