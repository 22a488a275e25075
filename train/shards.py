"""Raw document files -> ArrayRecord shards with random access, split train/validation.

Input file k becomes `train-k.array_record` and `validation-k.array_record` (one record per
document, UTF-8), written under a temporary name and renamed, then marked done by
`k.done.json` (its counts). A killed run is resumed by running it again: finished shards
are kept, unfinished ones rewritten. Document j of an input goes to validation by a hash of
(the input's name, j), so the split is the same on every machine and with any number of
workers. `manifest.json` is written last: a directory with one is complete.
"""
import dataclasses
import hashlib
import json
import multiprocessing
import os
import time

from absl import logging
from array_record.python import array_record_data_source, array_record_module

from train import records

MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Job:
  """One input file to convert."""
  index: int
  path: str
  name: str  # the path relative to the inputs' common root: what the split hashes
  fmt: str
  text_field: str
  validation_percent: int
  out_dir: str


def is_validation(name: str, position: int, validation_percent: int) -> bool:
  digest = hashlib.sha256(f"{name}#{position}".encode("utf-8")).hexdigest()
  return int(digest[:8], 16) % 100 < validation_percent


def _shard_path(out_dir: str, split: str, index: int) -> str:
  return os.path.join(out_dir, f"{split}-{index:05d}.array_record")


def _done_path(out_dir: str, index: int) -> str:
  return os.path.join(out_dir, f"{index:05d}.done.json")


def convert(job: Job) -> dict:
  """Writes one input's two shards (unless already done); returns its counts."""
  done = _done_path(job.out_dir, job.index)
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  counts, tmp = records.Counts(), {}
  writers = {}
  for split in ("train", "validation"):
    tmp[split] = f"{_shard_path(job.out_dir, split, job.index)}.tmp.{os.getpid()}"
    # group_size 1: every record is read on its own, so random access costs one read.
    writers[split] = array_record_module.ArrayRecordWriter(tmp[split], "group_size:1")
  sizes, finished = {"train": 0, "validation": 0}, False
  try:
    for position, text in enumerate(records.read(job.path, job.fmt, job.text_field, counts)):
      split = "validation" if is_validation(job.name, position, job.validation_percent) else "train"
      writers[split].write(text.encode("utf-8"))
      sizes[split] += 1
    finished = True
  finally:
    for writer in writers.values():
      writer.close()
    if not finished:  # leave no half-written shard behind
      for path in tmp.values():
        os.remove(path)
  for split in tmp:
    os.replace(tmp[split], _shard_path(job.out_dir, split, job.index))
  result = dict(sizes, input=job.path, replaced=counts.replaced, bytes=counts.bytes)
  with open(done + ".tmp", "w") as f:
    json.dump(result, f)
  os.replace(done + ".tmp", done)
  return result


def prepare(paths: list[str], fmt: str, text_field: str, out_dir: str, validation_percent: int,
            workers: int = 1) -> dict:
  """Converts `paths` into shards under `out_dir` with `workers` processes (resuming a run
  that was killed); returns the manifest."""
  manifest_path = os.path.join(out_dir, MANIFEST)
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      return json.load(f)
  os.makedirs(out_dir, exist_ok=True)
  root = os.path.commonpath([os.path.dirname(p) for p in paths]) if len(paths) > 1 else (
      os.path.dirname(paths[0]))
  jobs = [Job(k, p, os.path.relpath(p, root), fmt, text_field, validation_percent, out_dir)
          for k, p in enumerate(paths)]
  results, start, total = [None] * len(jobs), time.perf_counter(), 0
  if workers > 1:
    # spawn: a fresh interpreter per worker (forking a process that may hold JAX is unsafe).
    pool = multiprocessing.get_context("spawn").Pool(workers)
    done = pool.imap_unordered(convert, jobs)
  else:
    pool, done = None, map(convert, jobs)
  try:
    for finished, result in enumerate(done, 1):
      results[next(j.index for j in jobs if j.path == result["input"])] = result
      total += result["bytes"]
      seconds = time.perf_counter() - start
      logging.info("prepare_data: %d/%d shards, %.1f MB, %.1f MB/s", finished, len(jobs),
                   total / 1e6, total / 1e6 / max(seconds, 1e-9))
  finally:
    if pool is not None:
      pool.close()
      pool.join()
  replaced = sum(r["replaced"] for r in results)
  if replaced:
    logging.warning("%d documents held invalid UTF-8; their bad bytes became U+FFFD.", replaced)
  manifest = {"format": fmt, "text_field": text_field, "validation_percent": validation_percent,
              "shards": results, "replaced": replaced,
              "train": sum(r["train"] for r in results),
              "validation": sum(r["validation"] for r in results)}
  for split in ("train", "validation"):
    if not manifest[split]:
      raise ValueError(f"{len(paths)} {fmt} files give an empty {split} split at "
                       f"config.data.validation_percent={validation_percent}; add documents "
                       "or change the percent")
  with open(manifest_path + ".tmp", "w") as f:
    json.dump(manifest, f)
  os.replace(manifest_path + ".tmp", manifest_path)
  return manifest


class ShardDocuments:
  """The documents of one split of a prepared directory, {"text": bytes} by index."""

  def __init__(self, out_dir: str, manifest: dict, split: str, paths: list[str] | None = None):
    self.paths = paths if paths is not None else [
        _shard_path(out_dir, split, k) for k, shard in enumerate(manifest["shards"])
        if shard[split]]
    self.records = array_record_data_source.ArrayRecordDataSource(self.paths)

  def for_host(self, index: int, count: int) -> "ShardDocuments | None":
    """The documents of every `count`-th shard from `index`: a host that reads them opens
    only its own files. None when there are fewer shards than hosts."""
    if len(self.paths) < count:
      return None
    return ShardDocuments("", {}, "", self.paths[index::count])

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict:
    return {"text": self.records[index]}


def read_manifest(out_dir: str) -> dict:
  """The manifest of a prepared directory; a one-line error when it is not complete."""
  path = os.path.join(out_dir, MANIFEST)
  if not os.path.exists(path):
    raise ValueError(f"{out_dir!r} holds no complete prepared data ({MANIFEST} is missing); "
                     "run `python -m tools.prepare_data --input=... --output="
                     f"{out_dir}` to finish it")
  with open(path) as f:
    return json.load(f)
