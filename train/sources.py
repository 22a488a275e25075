"""Where documents come from: one interface for every kind of source.

A DocumentSource gives a random-access sequence of documents ({"text": str or bytes})
per split and a stable `cache_key`: the directory under `config.data.data_dir` that
holds what is built from it (the prepared dataset, its tokenizers), the same for the
same documents on every machine. `resolve(config.data)` picks the source a config names;
train/data.py loads any of them the same way.

Sources here, by the scheme that names them in `config.data.source`:
- `stdlib` and a plain glob: text files, one document per file (train/corpus.py builds
  them once into ArrayRecord);
- `jsonl:GLOB`, `parquet:GLOB`, `lines:GLOB`: records of raw files, local or on a bucket
  (train/records.py), converted once into ArrayRecord shards (train/shards.py);
- `prepared:DIR`: shards that `python -m tools.prepare_data` wrote;
- `tfds:NAME[/CONFIG][:VERSION]`: a TFDS dataset already prepared on disk (read, never
  downloaded).
`config.data.mixture` mixes several of them (train/mixture.py).
"""
import hashlib
import json
import os
from typing import Protocol, Sequence

import ml_collections
import tensorflow_datasets as tfds

from train import corpus, records, shards


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

  def __init__(self, name: str, data_dir: str | None, text_key: str = "text",
               split_names: dict[str, str] | None = None):
    self.name, self.text_key = name, text_key
    self.data_dir = os.path.expanduser(data_dir) if data_dir else None
    self.split_names = split_names or {}  # "train"/"validation" -> the dataset's own names
    self.cache_key = "tfds_" + name.replace("/", "_").replace(":", "_")
    self._builder = None

  def prepare(self, data_dir: str | None = None) -> None:
    del data_dir  # read where it was prepared
    if self.data_dir and "://" in self.data_dir:
      check_bucket_reads(self.data_dir, "config.data.tfds_data_dir")
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

  @property
  def builder(self):
    """The prepared read-only builder (its info and its splits as data sources)."""
    if self._builder is None:
      self.prepare()
    return self._builder

  def split(self, name: str) -> TextField:
    name = self.split_names.get(name, name)
    builder = self.builder  # its own errors (not prepared, no such feature) pass as they are
    try:
      return TextField(builder.as_data_source(split=name), self.text_key)
    except (ValueError, KeyError) as e:  # an unknown split, or a bad slice
      raise ValueError(f"TFDS dataset {self.name!r} has no split {name!r} ({e}); it has "
                       f"{sorted(builder.info.splits)}: set config.data.train_split / "
                       "validation_split") from None

  def fingerprint(self) -> dict:
    return {"tfds": self.name, "version": str(self.builder.info.version),
            "data_dir": str(self._builder.data_dir), "text_key": self.text_key,
            "splits": _split_sizes(self._builder)}


def check_bucket_reads(url: str, field: str) -> None:
  """Fails in one line when this machine cannot read the ArrayRecord files under `url`:
  listing needs fsspec's filesystem for the protocol, reading needs an ArrayRecord built
  with that file system (the wheels since 0.5 read gs:// themselves)."""
  import fsspec
  from array_record.python import array_record_module
  protocol = url.split("://")[0]
  try:
    fsspec.filesystem(protocol)
  except (ImportError, ValueError) as e:
    raise ValueError(f"{field}={url!r}: cannot list {protocol}:// here ({e}); "
                     f"`pip install {'gcsfs' if protocol == 'gs' else 'fsspec[' + protocol + ']'}`"
                     ) from None
  with open(array_record_module.__file__, "rb") as f:
    reads_gcs = b"gs://" in f.read()
  if protocol != "gs" or not reads_gcs:
    raise ValueError(f"{field}={url!r}: the installed ArrayRecord cannot read {protocol}:// "
                     "paths; copy the data to a local disk (gcloud storage cp -r) or mount the "
                     "bucket with gcsfuse and give the local path")


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


class RecordFiles:
  """`jsonl:`, `parquet:` or `lines:` files (local or fsspec URLs), converted once into
  ArrayRecord shards under data_dir/cache_key; split train/validation by record hash."""

  def __init__(self, fmt: str, pattern: str, text_field: str, validation_percent: int):
    self.fmt, self.text_field, self.validation_percent = fmt, text_field, validation_percent
    self.paths = records.expand(pattern, f"config.data.source={fmt}:")
    # The same files (names and sizes) and settings give the same key on every machine.
    listing = json.dumps([self.paths, [records.stat(p)["size"] for p in self.paths],
                          fmt, text_field])
    digest = hashlib.sha256(listing.encode("utf-8")).hexdigest()[:12]
    self.cache_key = f"{fmt}_{digest}_val{validation_percent}"
    self._dir = self._manifest = None

  def prepare(self, data_dir: str) -> None:
    self._dir = os.path.join(os.path.expanduser(data_dir), self.cache_key)
    self._manifest = shards.prepare(self.paths, self.fmt, self.text_field, self._dir,
                                    self.validation_percent)

  def split(self, name: str) -> shards.ShardDocuments:
    if self._manifest is None:
      raise RuntimeError("call prepare(data_dir) before reading a split")
    return shards.ShardDocuments(self._dir, self._manifest, name)

  def fingerprint(self) -> dict:
    return {"format": self.fmt, "text_field": self.text_field,
            "validation_percent": self.validation_percent,
            "files": [records.stat(p) for p in self.paths]}


class PreparedShards:
  """The output directory of `python -m tools.prepare_data`, read where it is."""

  def __init__(self, directory: str):
    self.dir = os.path.abspath(os.path.expanduser(directory))
    self._manifest = shards.read_manifest(self.dir)
    digest = hashlib.sha256(json.dumps(self._manifest, sort_keys=True).encode()).hexdigest()
    self.cache_key = f"prepared_{digest[:12]}"

  def prepare(self, data_dir: str) -> None:
    del data_dir  # already prepared where it is

  def split(self, name: str) -> shards.ShardDocuments:
    return shards.ShardDocuments(self.dir, self._manifest, name)

  def fingerprint(self) -> dict:
    files = sorted(f for f in os.listdir(self.dir) if f.endswith(".array_record"))
    return {"prepared": self.dir,
            "files": [records.stat(os.path.join(self.dir, f)) for f in files]}


SCHEMES = ("jsonl", "parquet", "lines", "prepared", "tfds")


def resolve_one(spec: str, data: ml_collections.ConfigDict) -> DocumentSource:
  """The source one `config.data.source` string names; fails early, in one line."""
  scheme, _, rest = spec.partition(":")
  if not rest or "/" in scheme or scheme in ("gs", "s3", "http", "https", "file"):
    if "://" in spec:
      raise ValueError(f"config.data.source={spec!r}: a bucket path needs a scheme that says "
                       "how to read it: jsonl:, parquet: or lines:")
    return BuiltFiles(corpus.resolve(spec, data.validation_percent))
  if scheme in records.FORMATS:
    return RecordFiles(scheme, rest, data.text_field, data.validation_percent)
  if scheme == "prepared":
    return PreparedShards(rest)
  if scheme == "tfds":
    return PreparedTfds(rest, data.tfds_data_dir or None, data.text_field,
                        {"train": data.train_split, "validation": data.validation_split})
  raise ValueError(f"config.data.source={spec!r}: unknown scheme {scheme!r}; use one of "
                   f"{', '.join(s + ':' for s in SCHEMES)}, {corpus.BUILTIN!r} or a file glob")


def resolve(data: ml_collections.ConfigDict) -> DocumentSource:
  """The source `config.data` names (`mixture` when set, else `source`); fails early on a
  missing or empty one, or a bad setting."""
  from train import mixture  # mixes the sources this module resolves
  if not 0 < data.validation_percent < 100:
    raise ValueError(f"config.data.validation_percent={data.validation_percent} must be in "
                     "1..99")
  if not data.text_field:
    raise ValueError("config.data.text_field is empty; name the field that holds the text")
  if data.mixture:
    return mixture.Mixture.from_config(data, resolve_one)
  return resolve_one(data.source, data)


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
