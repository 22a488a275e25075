"""Raw document files: JSONL, Parquet or plain lines, local or on a bucket, maybe compressed.

`expand(pattern)` lists the files a glob names (local paths or any fsspec URL such as
`gs://bucket/c4/*.jsonl.gz`, which needs gcsfs). `read(path, fmt, text_field)` streams one
file's documents, decompressing `.gz` (gzip) and `.zst` (zstandard) on the way, so a file
of any size is read in constant memory. Invalid UTF-8 bytes become U+FFFD and are counted,
never fatal; a file without documents, or a record without the text field, is a one-line
error naming the file (and the fields it has).
"""
import dataclasses
import gzip
import io
import json
import os
from typing import Iterator

import fsspec

FORMATS = ("jsonl", "parquet", "lines")


@dataclasses.dataclass
class Counts:
  """What reading a file found."""
  documents: int = 0
  replaced: int = 0  # documents that held invalid UTF-8 (bytes replaced by U+FFFD)
  bytes: int = 0  # UTF-8 bytes of text read


def expand(pattern: str, what: str = "config.data.source") -> list[str]:
  """The files `pattern` matches, sorted: absolute local paths, or URLs with their protocol."""
  remote = "://" in pattern
  fs, path = fsspec.core.url_to_fs(pattern if remote else os.path.abspath(
      os.path.expanduser(pattern)))
  found = fs.glob(path) if any(c in path for c in "*?[") else [path] * fs.exists(path)
  files = sorted(p for p in found if fs.isfile(p))
  if not files:
    raise ValueError(f"{what}={pattern!r} matches no files; fix the glob (e.g. "
                     "'jsonl:~/corpus/*.jsonl.gz' or 'parquet:gs://bucket/c4/*.parquet')")
  return [fs.unstrip_protocol(p) for p in files] if remote else files


def stat(path: str) -> dict:
  """{"path", "size", "mtime"} of a file: what a source's fingerprint lists."""
  fs, p = fsspec.core.url_to_fs(path)
  info = fs.info(p)
  mtime = info.get("mtime") or info.get("updated") or info.get("LastModified") or ""
  return {"path": path, "size": int(info["size"]), "mtime": str(getattr(mtime, "timestamp",
                                                                          lambda: mtime)())}


def _open(path: str) -> io.BufferedIOBase:
  """A binary stream of the file's decompressed bytes."""
  raw = fsspec.open(path, "rb").open()
  if path.endswith(".gz"):
    return gzip.GzipFile(fileobj=raw)
  if path.endswith(".zst"):
    import zstandard  # only needed for .zst files
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
  return raw


def _decode(raw: bytes, counts: Counts) -> str:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    text = raw.decode("utf-8", errors="replace")
    counts.replaced += 1
  return text


def _jsonl(stream, path: str, text_field: str, counts: Counts) -> Iterator[str]:
  for number, line in enumerate(stream, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(_decode(line, counts))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{number} is not a JSON object ({e}); jsonl: needs one per "
                       "line") from None
    if not isinstance(record, dict) or text_field not in record:
      fields = sorted(record) if isinstance(record, dict) else type(record).__name__
      raise ValueError(f"{path}:{number} has no field config.data.text_field={text_field!r}; "
                       f"its fields are {fields}")
    text = record[text_field]
    if text:
      yield text if isinstance(text, str) else str(text)


def _parquet(stream, path: str, text_field: str, counts: Counts) -> Iterator[str]:
  import pyarrow.parquet as pq  # only needed for parquet: sources
  table = pq.ParquetFile(stream)
  names = table.schema_arrow.names
  if text_field not in names:
    raise ValueError(f"{path} has no column config.data.text_field={text_field!r}; its columns "
                     f"are {sorted(names)}")
  for batch in table.iter_batches(columns=[text_field], batch_size=1024):
    for text in batch.column(0).to_pylist():
      if isinstance(text, bytes):
        text = _decode(text, counts)
      if text:
        yield text


def _lines(stream, path: str, text_field: str, counts: Counts) -> Iterator[str]:
  del path, text_field  # a line is the document
  for line in stream:
    text = _decode(line, counts).rstrip("\r\n")
    if text.strip():
      yield text


_READERS = {"jsonl": _jsonl, "parquet": _parquet, "lines": _lines}


def read(path: str, fmt: str, text_field: str, counts: Counts | None = None) -> Iterator[str]:
  """The documents of one file, in order; fails in one line on a file that holds none."""
  counts = Counts() if counts is None else counts
  with _open(path) as stream:
    if fmt == "parquet":  # parquet reads its footer first: it needs a seekable file
      stream = stream if stream.seekable() else io.BytesIO(stream.read())
    for text in _READERS[fmt](stream, path, text_field, counts):
      counts.documents += 1
      counts.bytes += len(text.encode("utf-8"))
      yield text
  if not counts.documents:
    raise ValueError(f"{path} holds no {fmt} documents (an empty shard); remove it from "
                     "config.data.source's glob")
