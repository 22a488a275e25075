"""Text corpora as TFDS ArrayRecord datasets, built once on this machine and reused.

A corpus is a set of text files, one document per file. The built-in one is the
running interpreter's standard library (`*.py` under sysconfig's stdlib path,
without site-packages): real text on every machine with Python, so the default
run downloads nothing. Documents go to the validation split by a hash of their
relative path, so the split is the same on every machine and every run.
"""
import dataclasses
import glob
import hashlib
import os
import sys
import sysconfig

from absl import logging
import tensorflow_datasets as tfds

BUILTIN = "stdlib"


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Where a corpus's files are and where its built dataset lives."""
  name: str  # directory under data_dir holding the built dataset and tokenizers
  root: str
  paths: tuple[str, ...]  # relative to root, sorted
  validation_percent: int

  def dir(self, data_dir: str) -> str:
    return os.path.join(os.path.expanduser(data_dir), self.name)


def is_validation(relative_path: str, validation_percent: int) -> bool:
  """Deterministic split: the first 8 hex digits of sha256(path), mod 100."""
  bucket = int(hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:8], 16) % 100
  return bucket < validation_percent


def _stdlib_corpus(validation_percent: int) -> Corpus:
  root = sysconfig.get_paths()["stdlib"]
  paths = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if d not in ("site-packages", "dist-packages", "__pycache__"))
    paths += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames
              if f.endswith(".py")]
  name = f"stdlib_py{sys.version_info.major}{sys.version_info.minor}_val{validation_percent}"
  return Corpus(name, root, tuple(sorted(paths)), validation_percent)


def _files_corpus(pattern: str, validation_percent: int) -> Corpus:
  expanded = os.path.abspath(os.path.expanduser(pattern))
  files = sorted(f for f in glob.glob(expanded, recursive=True) if os.path.isfile(f))
  if not files:
    raise ValueError(f"config.data.source={pattern!r} matches no files; give {BUILTIN!r} or a "
                     "glob of UTF-8 text files such as '~/corpus/**/*.txt'")
  if not any(os.path.getsize(f) for f in files):
    raise ValueError(f"config.data.source={pattern!r}: all {len(files)} matching files are "
                     "empty; point it at files that hold text")
  root = os.path.commonpath([os.path.dirname(f) for f in files])
  paths = tuple(os.path.relpath(f, root) for f in files)
  listing = "\n".join(f"{p}:{os.path.getsize(os.path.join(root, p))}" for p in paths)
  digest = hashlib.sha256(f"{root}\n{listing}".encode()).hexdigest()[:12]
  return Corpus(f"text_{digest}_val{validation_percent}", root, paths, validation_percent)


def resolve(source: str, validation_percent: int) -> Corpus:
  """The corpus that `config.data.source` names; fails early on a missing or empty source."""
  if not 0 < validation_percent < 100:
    raise ValueError(f"config.data.validation_percent={validation_percent} must be in 1..99")
  corpus = (_stdlib_corpus(validation_percent) if source == BUILTIN
            else _files_corpus(source, validation_percent))
  num_val = sum(is_validation(p, validation_percent) for p in corpus.paths)
  if num_val in (0, len(corpus.paths)):
    raise ValueError(f"config.data.source={source!r}: {len(corpus.paths)} files give an empty "
                     f"{'validation' if num_val == 0 else 'train'} split at "
                     f"validation_percent={validation_percent}; add files or change the percent")
  return corpus


def read_document(path: str) -> str | None:
  """The file's text; invalid UTF-8 bytes become U+FFFD. None for binary files (NUL bytes)."""
  with open(path, "rb") as f:
    raw = f.read()
  if b"\x00" in raw:
    return None
  return raw.decode("utf-8", errors="replace")


class TextFiles(tfds.core.GeneratorBasedBuilder):
  """One example per non-empty text file: {'path', 'text'}."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, corpus: Corpus, **kwargs):
    self._corpus = corpus
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Text files under {self._corpus.root}",
        features=tfds.features.FeaturesDict({"path": tfds.features.Text(),
                                             "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    return {"train": self._generate_examples(validation=False),
            "validation": self._generate_examples(validation=True)}

  def _generate_examples(self, validation: bool):
    for rel in self._corpus.paths:
      if is_validation(rel, self._corpus.validation_percent) != validation:
        continue
      text = read_document(os.path.join(self._corpus.root, rel))
      if text is None:
        logging.warning("Skipping %s: binary file (NUL bytes), not text.", rel)
      elif text.strip():
        yield rel, {"path": rel, "text": text}


def build(corpus: Corpus, data_dir: str) -> TextFiles:
  """Builds the corpus into `data_dir` unless already built; returns the ready builder."""
  builder = TextFiles(corpus, data_dir=corpus.dir(data_dir), file_format="array_record")
  builder.download_and_prepare()
  for split in ("train", "validation"):
    if builder.info.splits[split].num_examples == 0:
      raise ValueError(f"corpus {corpus.root!r} has no non-empty text documents in its {split} "
                       "split; add text files")
  return builder
