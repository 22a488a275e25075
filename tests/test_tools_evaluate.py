"""tools/evaluate.py: every token scored once, the same numbers as --mode=eval, TFDS splits."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.conftest import command_line, tiny_config
from tools import evaluate as evaluate_tool
from train import data as data_lib
from train import evaluation, trainer
from train.experiment import Experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = ("loss", "perplexity", "bits_per_byte", "accuracy", "tokens", "bytes")


class TriformEvalTexts(tfds.core.GeneratorBasedBuilder):
  """A user's TFDS text dataset, its text under "content", prepared without TensorFlow."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, texts, **kwargs):
    self._texts = texts
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"content": tfds.features.Text(), "number": tfds.features.Scalar(np.int32)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    for i, text in enumerate(self._texts):
      yield i, {"content": text, "number": i}


@pytest.fixture(scope="module")
def run(text_dir, data_dir, tmp_path_factory):
  """(config, workdir, validation file paths in the split's order) of a 2-step gpt_tiny run."""
  config = tiny_config(text_dir, data_dir, "gpt_tiny")
  config.train.num_steps = config.train.checkpoint_every = 2
  config.train.eval_batches, config.sample.num_prompts = 1, 0
  workdir = str(tmp_path_factory.mktemp("gpt_tiny"))
  trainer.train(config, workdir)
  source = data_lib.load(config).source
  val = source.split("validation")
  paths = [os.path.join(source.files.root, val[i]["path"].decode()) for i in range(len(val))]
  return config, workdir, paths


def _scores(result):
  return {k: result[k] for k in SCORES}


def test_cli_on_the_validation_files_gives_eval_modes_numbers(run, tmp_path):
  config, workdir, paths = run
  empty, binary = tmp_path / "empty.txt", tmp_path / "image.txt"
  empty.write_text(" \n")
  binary.write_bytes(b"GIF89a\x00\x01")
  # Skipped as the training corpus skips them; a file named twice is read once.
  files = ",".join(paths + [str(empty), paths[0], str(binary)])
  out = tmp_path / "scores.json"
  result = subprocess.run([sys.executable, "-m", "tools.evaluate",
                           *command_line("gpt_tiny", config, workdir), f"--text_files={files}",
                           f"--json={out}"], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(out.read_text())
  expected = trainer.evaluate_workdir(config, workdir)  # what --mode=eval prints
  assert _scores(scores) == _scores(expected)
  assert scores["step"] == 2 and scores["documents"] == len(paths)
  assert scores["skipped_files"] == [str(empty), str(binary)]
  # Causal LM scores every byte of the text.
  assert scores["bytes"] == scores["text_bytes"] == sum(os.path.getsize(p) for p in paths)
  assert f"| bits per byte | {scores['bits_per_byte']:.4f} |" in result.stdout
  assert f"| tokens scored | {scores['tokens']:,} |" in result.stdout
  assert "scored: every token of every document and its EOS" in result.stdout


def _packed_tokens(batches):
  """Every token the rows hold (segment id > 0), in order."""
  return np.concatenate([b["targets"][b["segment_ids"] > 0] for b in batches])


@pytest.mark.parametrize("name", ["gpt_tiny", "lstm_tiny", "bert_tiny", "t5_tiny"])
def test_every_token_is_scored_once_with_each_familys_default_objective(text_dir, data_dir,
                                                                         name):
  config = tiny_config(text_dir, data_dir, name)
  documents, _ = evaluate_tool.text_file_documents(str(text_dir / "b*.txt"))
  tok = data_lib.load(config).tokenizer
  ids = [np.append(tok.encode(d["text"].decode()), tok.eos_id) for d in documents]
  text_tokens, text_bytes = sum(map(len, ids)), sum(len(d["text"]) for d in documents)
  experiment = Experiment(config)  # an untrained model: scoring needs no checkpoint
  # The trainer reads one dataset again at each full evaluation, never holding it.
  dataset = experiment.task.dataset(documents, tok, train=False)
  batches = list(dataset)
  weights = np.concatenate([b["weights"].ravel() for b in batches])
  scores = evaluation.score(experiment, experiment.create_state().params, documents, tok)
  assert scores["tokens"] == weights.sum() and np.isfinite(scores["loss"])
  if config.objective != "span_corruption":  # its rows keep the text in no single field
    np.testing.assert_array_equal(_packed_tokens(batches), np.concatenate(ids))
  if config.objective == "causal_lm":
    assert (scores["tokens"], scores["bytes"]) == (text_tokens, text_bytes)
  else:
    # The objective's targets, drawn the same way on every pass over the same dataset.
    again = list(dataset)
    for first, second in zip(batches, again, strict=True):
      for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert 0.1 < scores["bytes"] / text_bytes < 0.2
    if config.objective == "mlm":
      assert 0.1 < scores["tokens"] / text_tokens < 0.2


def test_a_tfds_split_is_scored_like_the_same_documents_as_files(run, tmp_path):
  config, workdir, paths = run
  # The run's own corpus is a TFDS dataset on disk: its validation split is --mode=eval's.
  corpus_dir = os.path.join(config.data.data_dir, data_lib.load(config).source.cache_key)
  own = evaluate_tool.evaluate(config, workdir, tfds_split="text_files:validation",
                               tfds_data_dir=corpus_dir)
  assert _scores(own) == _scores(trainer.evaluate_workdir(config, workdir))
  # A user's dataset, its text under another key, batched differently.
  texts = [open(p, encoding="utf-8").read() for p in paths[:3]]
  TriformEvalTexts(texts, data_dir=str(tmp_path / "tfds"), file_format="array_record"
                   ).download_and_prepare()
  split = dict(tfds_split="triform_eval_texts:test", tfds_data_dir=str(tmp_path / "tfds"),
               tfds_text_key="content")
  stored = evaluate_tool.tfds_documents(split["tfds_split"], split["tfds_data_dir"], "content")
  order = [texts.index(stored[i]["text"].decode()) for i in range(len(stored))]
  theirs = evaluate_tool.evaluate(config, workdir, **split, batch_size=8)
  as_files = evaluate_tool.evaluate(config, workdir,
                                    text_files=",".join(paths[i] for i in order))
  assert theirs["tokens"] == as_files["tokens"] and theirs["bytes"] == as_files["bytes"]
  for k in ("loss", "accuracy"):
    assert theirs[k] == pytest.approx(as_files[k], rel=1e-6)
  assert len(evaluate_tool.tfds_documents("triform_eval_texts:test[:2]",
                                          split["tfds_data_dir"], "content")) == 2
  with pytest.raises(ValueError, match=r"--tfds_text_key='text' is not a feature of "
                                       r"'triform_eval_texts'; it has \['content', 'number'\]"):
    evaluate_tool.tfds_documents("triform_eval_texts:test", split["tfds_data_dir"], "text")
  with pytest.raises(ValueError, match="feature 'number' of 'triform_eval_texts' is a Scalar"):
    evaluate_tool.tfds_documents("triform_eval_texts:test", split["tfds_data_dir"], "number")
  with pytest.raises(ValueError, match="Unknown split 'validation'"):
    evaluate_tool.tfds_documents("triform_eval_texts:validation", split["tfds_data_dir"],
                                 "content")


def test_bad_sources_fail_early_in_one_line(run, tmp_path):
  config, workdir, _ = run
  empty_dir = tmp_path / "no_datasets"
  empty_dir.mkdir()
  result = subprocess.run([sys.executable, "-m", "tools.evaluate",
                           *command_line("gpt_tiny", config, workdir), "--tfds=lm1b:test",
                           f"--tfds_data_dir={empty_dir}"],
                          cwd=ROOT, capture_output=True, text=True)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert last.startswith(f"error: TFDS dataset 'lm1b' is not prepared in {empty_dir}; this "
                         "tool never downloads"), last
  assert not os.listdir(empty_dir)  # nothing fetched or created
  cases = {"give exactly one of --text_files or --tfds": {},
           "must be NAME:SPLIT": {"tfds_split": "lm1b"},
           "matches no files": {"text_files": str(tmp_path / "*.md")},
           "is not a file": {"text_files": str(tmp_path / "missing.txt")}}
  for message, kwargs in cases.items():
    with pytest.raises(ValueError, match=message):
      evaluate_tool.evaluate(config, workdir, **kwargs)
  with pytest.raises(ValueError, match="give exactly one"):
    evaluate_tool.evaluate(config, workdir, text_files="a.txt", tfds_split="lm1b:test")
