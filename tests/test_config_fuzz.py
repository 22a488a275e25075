"""Configs drawn at random train or stop in one line before compiling; a resume on changed
data stops unless accepted. Both run `train.main`'s entry point in this process
(tools/fuzz_config.py); `python -m tools.fuzz_config --count=200` runs the long version
(docs/reliability.md)."""
import collections
import json
import os

import pytest

from tools import fuzz_config
from train import data_fingerprint
from train.workdir_lock import WorkdirLock

# Invalid draws only (each stops in milliseconds); the test below trains the tiny run
# itself, and the tool's draws include valid ones that train (docs/reliability.md).
DRAWS = 200


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  with fuzz_config.shared_compiles(str(tmp_path_factory.mktemp("compile_cache"))):
    yield


def test_drawn_configs_train_or_stop_in_one_line_before_compiling(tmp_path, compile_cache):
  records = fuzz_config.fuzz(DRAWS, seed=0, root=str(tmp_path), valid_share=0.0)
  counts = collections.Counter(r["outcome"] for r in records)
  bad = [r for r in records if r["outcome"] in ("traceback", "error_after_compile")]
  assert not bad, bad
  assert counts["refused"] == DRAWS
  for r in records:  # the message names a field it drew, or the section that holds it
    assert any(f"config.{p.split('.')[0]}" in r["message"] for p in r["overrides"]), r


def test_a_resume_on_changed_data_stops_unless_accepted(tmp_path, compile_cache):
  corpus = fuzz_config.small_corpus(str(tmp_path / "texts"))
  workdir = str(tmp_path / "run")
  argv = fuzz_config.base_flags(corpus, str(tmp_path / "data"), workdir)
  assert fuzz_config.run_main(argv) == (0, "")
  with WorkdirLock(workdir):  # eval mode reads a workdir another run holds
    assert fuzz_config.run_main(argv + ["--mode=eval"]) == (0, "")
  changed = sorted(os.listdir(tmp_path / "texts"))[3]
  with open(tmp_path / "texts" / changed, "a") as f:
    f.write("\n# one more line\n")
  code, message = fuzz_config.run_main(argv)
  assert code == 1 and "\n" not in message
  assert message.startswith("error: the data changed since this workdir's run began (")
  assert f"source/files/{changed}: [" in message and "--accept_changed_data" in message
  assert fuzz_config.run_main(argv + ["--accept_changed_data"]) == (0, "")
  with open(os.path.join(workdir, data_fingerprint.FILE)) as f:
    record = json.load(f)
  (accepted,) = record["accepted_changes"]
  assert any(c.startswith(f"source/files/{changed}: ") for c in accepted["changes"])
  assert record["fingerprint"]["source"]["files"][changed][0] == os.path.getsize(
      tmp_path / "texts" / changed)  # the accepted data is what later resumes compare with


def test_the_fingerprint_is_stable_and_names_each_change():
  before = {"source": {"files": {"a.txt": [10, 5], "b.txt": [3, 5]}}, "tokenizer": {"sha256": "x"}}
  assert data_fingerprint.differences(before, before) == []
  after = {"source": {"files": {"a.txt": [11, 6]}}, "tokenizer": {"sha256": "y"}}
  assert data_fingerprint.differences(before, after) == [
      "source/files/a.txt: [10, 5] -> [11, 6]", "source/files/b.txt: [3, 5] -> missing",
      "tokenizer/sha256: x -> y"]
