"""Real data sources: JSONL / Parquet / line files, TFDS, prepared shards, mixtures, their
errors; a mixture run through train.main killed and resumed bit-exactly."""
import glob
import gzip
import json
import os
import subprocess
import sys

import fsspec
from fsspec.implementations.memory import MemoryFileSystem
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
import zstandard

from configs import common
from tests.conftest import tiny_config
from tests.test_reliability import _start, _start_signalled, _train_records
from tools import prepare_data
from train import hf_tokenizer, mixture, records, sources, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paragraphs(text_dir, limit=None):
  """Real text documents: the blank-line separated paragraphs of the test corpus."""
  docs = []
  for name in sorted(os.listdir(text_dir)):
    with open(os.path.join(text_dir, name), encoding="utf-8") as f:
      docs += [p for p in f.read().split("\n\n") if p.strip() and "\x00" not in p]
  return docs[:limit]


def _data_config(source, data_dir, **fields):
  c = common.base_config().data
  c.source, c.data_dir, c.validation_percent = source, data_dir, 10
  c.update(fields)
  return c


def _all_texts(source):
  return sorted(source.split(s)[i]["text"].decode("utf-8")
                for s in ("train", "validation") for i in range(len(source.split(s))))


@pytest.fixture(scope="module")
def raw(tmp_path_factory, text_dir):
  """The same documents as JSONL (plain, gzip, zstd), Parquet and lines: {name: (spec, docs)}."""
  root = tmp_path_factory.mktemp("raw")
  docs = [d.replace("\n", " ") for d in _paragraphs(text_dir, 400)]
  halves = [docs[:200], docs[200:]]
  out = {}
  for name, opener in (("jsonl", open), ("jsonl.gz", gzip.open),
                       ("jsonl.zst", lambda p, m: zstandard.open(p, m))):
    os.makedirs(root / name)
    for k, half in enumerate(halves):
      with opener(root / name / f"part{k}.{name}", "wt") as f:
        f.writelines(json.dumps({"id": i, "content": d}) + "\n" for i, d in enumerate(half))
    out[name] = (f"jsonl:{root / name}/*.{name}", docs)
  os.makedirs(root / "parquet")
  for k, half in enumerate(halves):
    pq.write_table(pa.table({"id": range(len(half)), "content": half}),
                   root / "parquet" / f"part{k}.parquet")
  out["parquet"] = (f"parquet:{root}/parquet/*.parquet", docs)
  with open(root / "docs.txt", "w") as f:
    f.write("\n".join(docs) + "\n")
  out["lines"] = (f"lines:{root}/docs.txt", docs)
  return root, out


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "lines"])
def test_record_files_hold_every_document_once(raw, data_dir, kind):
  spec, docs = raw[1][kind]
  source = sources.resolve(_data_config(spec, data_dir, text_field="content"))
  source.prepare(data_dir)
  assert _all_texts(source) == sorted(docs)
  # The split is by record hash: ~10% held out, the same on a second resolve.
  held_out = len(source.split("validation"))
  assert 0.05 * len(docs) < held_out < 0.15 * len(docs)
  again = sources.resolve(_data_config(spec, data_dir, text_field="content"))
  assert again.cache_key == source.cache_key and again.fingerprint() == source.fingerprint()


def test_fingerprint_and_key_follow_the_files(tmp_path, data_dir):
  path = tmp_path / "a.jsonl"
  path.write_text('{"text": "one two"}\n{"text": "three"}\n')
  os.utime(path, (1_000_000, 1_000_000))
  source = sources.resolve(_data_config(f"jsonl:{path}", data_dir))
  first = source.fingerprint()
  assert first == sources.resolve(_data_config(f"jsonl:{path}", data_dir)).fingerprint()
  path.write_text('{"text": "one two"}\n{"text": "seven"}\n')  # same size, new mtime
  assert source.fingerprint() != first
  path.write_text('{"text": "one two"}\n{"text": "three four"}\n')  # another size
  assert sources.resolve(_data_config(f"jsonl:{path}", data_dir)).cache_key != source.cache_key


def test_invalid_utf8_is_replaced_and_counted(tmp_path, data_dir):
  path = tmp_path / "bad.jsonl"
  lines = [json.dumps({"text": f"document {i} " * 3}).encode() for i in range(40)]
  lines[7] = b'{"text": "caf\xe9 au lait"}'  # Latin-1, not UTF-8
  path.write_bytes(b"\n".join(lines) + b"\n")
  counts = records.Counts()
  texts = list(records.read(str(path), "jsonl", "text", counts))
  assert (counts.documents, counts.replaced) == (40, 1)
  assert texts[7] == "caf\ufffd au lait"
  source = sources.resolve(_data_config(f"jsonl:{path}", data_dir))
  source.prepare(data_dir)
  assert source._manifest["replaced"] == 1


class MemoryBucket(MemoryFileSystem):
  """gs:// URLs served from this process's memory: listed, opened and stat'ed through fsspec
  as gcsfs serves a real bucket, without a network."""
  protocol = ("gs",)
  store, pseudo_dirs = {}, [""]

  @classmethod
  def _strip_protocol(cls, path):
    return super()._strip_protocol("memory://" + path[len("gs://"):]
                                   if path.startswith("gs://") else path)

  def unstrip_protocol(self, name):
    return "gs://" + name.lstrip("/")


@pytest.fixture
def bucket():
  fsspec.register_implementation("gs", MemoryBucket, clobber=True)
  yield MemoryBucket()
  MemoryBucket.store.clear()
  MemoryBucket.pseudo_dirs[:] = [""]
  MemoryBucket.clear_instance_cache()
  fsspec.register_implementation("gs", "gcsfs.GCSFileSystem", clobber=True)


@pytest.mark.parametrize("kind", ["jsonl.gz", "parquet"])
def test_files_on_a_bucket_read_as_the_same_files_on_disk(raw, bucket, data_dir, tmp_path, kind):
  spec, docs = raw[1][kind]
  fmt, _, pattern = spec.partition(":")
  for path in glob.glob(pattern):
    bucket.pipe(f"gs://corpus/{kind}/{os.path.basename(path)}", open(path, "rb").read())
  url = f"{fmt}:gs://corpus/{kind}/*.{kind}"
  local = sources.resolve(_data_config(spec, data_dir, text_field="content"))
  local.prepare(data_dir)
  remote = sources.resolve(_data_config(url, data_dir, text_field="content"))
  remote.prepare(data_dir)
  assert remote.cache_key != local.cache_key
  assert [f["path"] for f in remote.fingerprint()["files"]] == [
      f"gs://corpus/{kind}/part{k}.{kind}" for k in range(2)]
  # The same documents, split the same way (by file name and position).
  for split in ("train", "validation"):
    documents = remote.split(split), local.split(split)
    assert len(documents[0]) == len(documents[1])
    assert all(documents[0][i] == documents[1][i] for i in range(len(documents[1])))
  assert _all_texts(remote) == sorted(docs)
  manifest = prepare_data.prepare(url, str(tmp_path / "prepared"), "content", 10, workers=1)
  assert manifest["train"] + manifest["validation"] == len(docs)


def test_bad_sources_fail_in_one_line(raw, tmp_path, data_dir):
  root = raw[0]
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  cases = [
      ("ftp:x", {}, r"unknown scheme 'ftp'; use one of jsonl:, parquet:, lines:, prepared:, tfds:"),
      (f"jsonl:{tmp_path}/nothing/*.jsonl", {}, r"matches no files"),
      (f"jsonl:{root}/jsonl/*.jsonl", {"text_field": "body"},
       r"has no field config.data.text_field='body'; its fields are \['content', 'id'\]"),
      (f"parquet:{root}/parquet/*.parquet", {"text_field": "body"},
       r"has no column config.data.text_field='body'; its columns are \['content', 'id'\]"),
      (f"jsonl:{empty}", {}, r"holds no jsonl documents \(an empty shard\)"),
      ("tfds:not_built_here", {"tfds_data_dir": str(tmp_path)},
       r"not prepared in .*`tfds build not_built_here --file_format=array_record"),
      ("tfds:x", {"tfds_data_dir": "s3://b/tfds"},
       r"'s3://b/tfds': (cannot list s3:// here|the installed ArrayRecord cannot read s3://)"),
      ("stdlib", {"mixture": (("stdlib", -1.0),)}, r"weight -1.0 of 'stdlib' must be a finite"),
      ("stdlib", {"mixture": (("stdlib", 0.0), ("stdlib", 0))}, r"the weights are all zero"),
  ]
  for spec, fields, message in cases:
    with pytest.raises(ValueError, match=message) as e:
      source = sources.resolve(_data_config(spec, data_dir, **fields))
      source.prepare(str(tmp_path / "unused"))
    assert "\n" not in str(e.value)
  # A failed conversion leaves no half-written shard behind.
  assert [f for _, _, files in os.walk(tmp_path / "unused") for f in files] == []


class TriformTestDocs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS dataset with its own split and feature names, built in the test."""
  VERSION = tfds.core.Version("1.0.0")
  DOCS: list[str] = []

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"content": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"fit": self._generate_examples(0), "heldout": self._generate_examples(1)}

  def _generate_examples(self, part):
    for i, doc in enumerate(self.DOCS):
      if (i % 10 == 0) == bool(part):
        yield i, {"content": doc}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, text_dir):
  directory = str(tmp_path_factory.mktemp("tfds"))
  TriformTestDocs.DOCS = _paragraphs(text_dir, 300)
  TriformTestDocs(data_dir=directory, file_format="array_record").download_and_prepare()
  return directory


def test_tfds_source_reads_its_own_splits(tfds_dir, data_dir):
  data = _data_config("tfds:triform_test_docs:1.0.0", data_dir, tfds_data_dir=tfds_dir,
                      text_field="content", train_split="fit", validation_split="heldout")
  source = sources.resolve(data)
  source.prepare(data_dir)
  assert (len(source.split("train")), len(source.split("validation"))) == (270, 30)
  held_out = source.split("validation")
  assert sorted(held_out[i]["text"].decode() for i in range(30)) == sorted(
      TriformTestDocs.DOCS[::10])
  assert {name: split["examples"] for name, split in source.fingerprint()["splits"].items()} == {
      "fit": 270, "heldout": 30}
  data.validation_split = "val"
  with pytest.raises(ValueError, match=r"has no split 'val'.*\['fit', 'heldout'\]"):
    sources.resolve(data).split("validation")


def test_prepare_data_with_workers_resumes_and_is_a_source(raw, tmp_path, data_dir):
  spec, docs = raw[1]["jsonl.gz"]
  out = tmp_path / "prepared"
  result = subprocess.run([sys.executable, "-m", "tools.prepare_data", f"--input={spec}",
                           f"--output={out}", "--text_field=content", "--workers=2"],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0 and "2/2 shards" in result.stderr, result.stderr[-2000:]
  # As after a kill following the first shard: the finished shard is kept, the rest redone.
  kept = out / "train-00000.array_record"
  mtime = os.path.getmtime(kept)
  for name in ("manifest.json", "00001.done.json", "train-00001.array_record"):
    os.remove(out / name)
  prepare_data.prepare(spec, str(out), "content", 5, workers=1)
  assert os.path.getmtime(kept) == mtime and (out / "train-00001.array_record").exists()
  source = sources.resolve(_data_config(f"prepared:{out}", data_dir))
  assert _all_texts(source) == sorted(docs)


def test_mixture_shares_are_the_weights():
  weights = [0.5, 0.3, 0.15, 0.05]
  picks = mixture.selection(weights, 10_000)
  shares = np.bincount(picks, minlength=4) / 10_000
  np.testing.assert_allclose(shares, weights, atol=0.01)  # the bound: 1 point


def test_mixture_stream_is_a_function_of_seed_and_index(raw, text_dir, data_dir):
  specs = [raw[1]["jsonl.gz"][0], str(text_dir / "*.txt")]  # paragraphs vs whole files
  data = _data_config("stdlib", data_dir, text_field="content",
                      mixture=((specs[0], 3.0), (specs[1], 1.0)))
  source = sources.resolve(data)
  source.prepare(data_dir)
  train = source.split("train")
  again = sources.resolve(data)
  again.prepare(data_dir)
  stream, same, other = train.stream(0), again.split("train").stream(0), train.stream(1)
  first = [stream[i]["text"] for i in range(200)]
  assert first == [same[i]["text"] for i in range(200)]
  assert first != [other[i]["text"] for i in range(200)]
  part_texts = [{train.parts[k][i]["text"] for i in range(len(train.parts[k]))} for k in (0, 1)]
  parts = [0 if t in part_texts[0] else 1 for t in first]
  np.testing.assert_array_equal(parts, mixture.selection([3.0, 1.0], 200))


@pytest.mark.slow
def test_mixture_run_killed_and_resumed_is_bit_exact(raw, tfds_dir, text_dir, data_dir, tmp_path):
  """Five kinds of source in one mixture through train.main, killed after step 5 (its
  checkpoint at step 3): the rerun redoes the steps after its checkpoint with bit-identical
  losses (the same examples from the middle of the mixture) and finishes."""
  c = tiny_config(text_dir, data_dir)
  c.data.text_field, c.data.tfds_data_dir = "content", tfds_dir
  c.data.train_split, c.data.validation_split = "fit", "heldout"
  c.data.mixture = ((raw[1]["jsonl.gz"][0], 0.3), (raw[1]["parquet"][0], 0.2),
                    (raw[1]["lines"][0], 0.2), ("tfds:triform_test_docs:1.0.0", 0.2),
                    (str(text_dir / "*.txt"), 0.1))
  c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 6, 1, 3
  c.train.eval_every, c.sample.num_prompts = 100, 0
  workdir = str(tmp_path / "run")
  proc = _start_signalled("gpt_tiny", c, workdir, step=5, sig="SIGKILL")
  _, err = proc.communicate()
  assert proc.returncode == -9, err[-2000:]
  assert "mixture: tfds:triform_test_docs:1.0.0 weight 0.2000, realised share 0.2000" in err
  before = {r["step"]: r["loss"] for r in _train_records(workdir)}
  assert sorted(before) == [1, 2, 3, 4, 5]
  resumed = _start("gpt_tiny", c, workdir)
  _, err = resumed.communicate()
  assert resumed.returncode == 0, err[-2000:]
  records_after = _train_records(workdir)[5:]  # the records the rerun appended
  steps = [r["step"] for r in records_after]
  # It resumes from the newest checkpoint the kill left complete (step 3, or an earlier one
  # when the kill came before its write finished) and redoes every step after it.
  assert steps == list(range(steps[0], 7)) and 2 <= steps[0] <= 4  # from a checkpoint
  assert {r["step"]: r["loss"] for r in records_after if r["step"] <= 5} == {
      s: before[s] for s in range(steps[0], 6)}


def test_tokenizer_sample_reads_a_bounded_prefix(raw, data_dir):
  spec, docs = raw[1]["jsonl.gz"]
  source = sources.resolve(_data_config(spec, data_dir, text_field="content"))
  source.prepare(data_dir)
  read = []

  class Counting:
    def __init__(self, documents):
      self.documents = documents

    def __len__(self):
      return len(self.documents)

    def __getitem__(self, i):
      read.append(i)
      return self.documents[i]

  sample = sources.sample_texts(Counting(source.split("train")), max_lines=10)
  assert len(sample) == 10 and read == list(range(10))  # one line per record here


def test_published_sentencepiece_model_and_mismatch(built, text_dir, data_dir, tmp_path):
  corpus_, _, trained = built
  path = os.path.join(corpus_.dir(data_dir), "spm.model")
  published = hf_tokenizer.published(path, trained.vocab_size)
  assert published.specials == trained.specials  # a model trained here keeps its layout
  text = "def f(x):\n    return x  <extra_id_3>"
  np.testing.assert_array_equal(published.encode(text), trained.encode(text))
  # Through train.main's entry: one line, before anything is built or the workdir made.
  c = tiny_config(text_dir, data_dir)
  c.data.tokenizer, c.data.vocab_size = path, trained.vocab_size + 128
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=rf"has {trained.vocab_size} ids but "
                                       rf"config.data.vocab_size={trained.vocab_size + 128}"):
    trainer.train(c, str(workdir))
  c.data.tokenizer, c.data.source = "train", "ftp:x"
  with pytest.raises(ValueError, match="unknown scheme 'ftp'"):
    trainer.train(c, str(workdir))
  assert not workdir.exists()


def test_each_host_reads_its_own_shards(raw, data_dir):
  spec, docs = raw[1]["jsonl"]  # two files: two shards per split
  source = sources.resolve(_data_config(spec, data_dir, text_field="content"))
  source.prepare(data_dir)
  train = source.split("train")
  hosts = [train.for_host(h, 2) for h in range(2)]
  assert [len(h.paths) for h in hosts] == [1, 1] and hosts[0].paths != hosts[1].paths
  texts = [[h[i]["text"] for i in range(len(h))] for h in hosts]
  assert sorted(texts[0] + texts[1]) == sorted(train[i]["text"] for i in range(len(train)))
  assert train.for_host(0, 3) is None  # more hosts than shards: documents are strided
