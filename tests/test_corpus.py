"""The corpus: deterministic, disjoint splits; clear errors for missing, empty or binary sources."""
import os
import subprocess
import sys

import pytest

from train import corpus


def _split_paths(builder, split):
  docs = builder.as_data_source(split)
  return {docs[i]["path"].decode() for i in range(len(docs))}


def test_splits_are_disjoint_cover_all_files_and_rebuild_identically(built, text_dir, tmp_path):
  c, builder, _ = built
  train, val = _split_paths(builder, "train"), _split_paths(builder, "validation")
  assert train and val and not train & val
  assert train | val == {p.name for p in text_dir.glob("*.txt")}
  rebuilt = corpus.build(corpus.resolve(str(text_dir / "*.txt"), 10), str(tmp_path))
  assert _split_paths(rebuilt, "train") == train
  assert _split_paths(rebuilt, "validation") == val


def test_split_follows_the_path_hash_in_any_process(built):
  c, builder, _ = built
  assert _split_paths(builder, "validation") == {p for p in c.paths if corpus.is_validation(p, 10)}
  # A fresh interpreter with another hash seed puts every path on the same side.
  code = ("import sys; from train.corpus import is_validation; "
          "print(''.join('1' if is_validation(p, 10) else '0' for p in sys.argv[1:]))")
  out = subprocess.run([sys.executable, "-c", code, *c.paths], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONHASHSEED="123"), check=True).stdout.strip()
  assert out == "".join("1" if corpus.is_validation(p, 10) else "0" for p in c.paths)


def test_builtin_corpus_is_the_stdlib_without_site_packages():
  c = corpus.resolve(corpus.BUILTIN, 5)
  assert len(c.paths) > 500
  assert all(p.endswith(".py") and "site-packages" not in p for p in c.paths)
  assert "os.py" in c.paths


def test_missing_source_names_the_field(tmp_path):
  with pytest.raises(ValueError, match=r"config.data.source=.*matches no files"):
    corpus.resolve(str(tmp_path / "nothing" / "*.txt"), 5)


def test_empty_files_are_rejected(tmp_path):
  for i in range(5):
    (tmp_path / f"{i}.txt").write_text("")
  with pytest.raises(ValueError, match="are empty"):
    corpus.resolve(str(tmp_path / "*.txt"), 5)


def test_a_single_file_cannot_fill_both_splits(tmp_path):
  (tmp_path / "only.txt").write_text("some text\n")
  with pytest.raises(ValueError, match="split at validation_percent"):
    corpus.resolve(str(tmp_path / "*.txt"), 5)


def test_invalid_utf8_is_replaced_and_binary_files_are_skipped(tmp_path):
  (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
  (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02binary")
  for i in range(40):
    (tmp_path / f"doc{i}.txt").write_text(f"document number {i}\n")
  builder = corpus.build(corpus.resolve(str(tmp_path / "*.txt"), 50), str(tmp_path / "data"))
  texts = {}
  for split in ("train", "validation"):
    docs = builder.as_data_source(split)
    texts.update({docs[i]["path"].decode(): docs[i]["text"].decode() for i in range(len(docs))})
  assert "binary.txt" not in texts
  assert texts["latin1.txt"] == "caf\ufffd au lait\n"
  assert len(texts) == 41
