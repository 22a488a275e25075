"""Command line: score a trained run on any text: loss, perplexity, bits per byte, accuracy.

  python -m tools.evaluate --config=configs/gpt_tiny.py --workdir=/tmp/triform/gpt_tiny \
      --text_files='~/essays/*.txt' [--json=/tmp/scores.json]
  python -m tools.evaluate --config=... --workdir=... --tfds=lm1b:test \
      --tfds_data_dir=~/tensorflow_datasets [--tfds_text_key=text]

--config (with the run's overrides, as for tools/generate.py) names the run;
its latest checkpoint and tokenizer are loaded. The documents are --text_files
(a glob, or a comma-separated list of files and globs; each file is one document;
empty, blank and binary files are skipped, as the training corpus skips them) or
a split of a TFDS dataset already prepared on disk in a random-access format
(array_record): nothing is downloaded. --tfds takes TFDS's own names and splits,
e.g. `wiki40b/en:1.3.0:validation` or `lm1b:test[:10%]`.

Scoring is the trainer's own evaluation (train/evaluation.py, as `train.main
--mode=eval`): every token of every document, packed in the order given (a
glob's matches sorted by path), is scored exactly once with the run's objective.
For masked LM and span corruption the scored tokens are the objective's targets,
drawn with the fixed evaluation seed, so reruns give the same numbers. Bits per
byte divide the summed loss by the UTF-8 bytes of the text those targets stand for.
"""
import glob
import json
import os
import sys

from absl import app, flags, logging
import ml_collections

from train import cli, corpus, evaluation
from train import data as data_lib
from train.experiment import Experiment
from train.sources import tfds_documents

FLAGS = flags.FLAGS


def _define_flags():
  from ml_collections import config_flags
  config = config_flags.DEFINE_config_file("config", None, "Config of the --workdir run.",
                                           lock_config=True)
  flags.DEFINE_string("workdir", None, "A training run: its latest checkpoint is scored.")
  flags.DEFINE_string("text_files", None, "Glob, or comma-separated files and globs; one "
                      "document per file.")
  flags.DEFINE_string("tfds", None, "NAME:SPLIT of a TFDS dataset prepared on disk.")
  flags.DEFINE_string("tfds_data_dir", None, "Where --tfds is prepared (default: TFDS's).")
  flags.DEFINE_string("tfds_text_key", "text", "The feature of --tfds that holds the text.")
  flags.DEFINE_integer("batch_size", 0, "Rows per evaluation batch (0: the config's "
                       "train.batch_size); the scores do not depend on it.")
  flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
  flags.mark_flags_as_required(["config", "workdir"])
  return config


def _file_paths(spec: str) -> list[str]:
  """The files `spec` names, in its order, each once."""
  paths = []
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    pattern = os.path.expanduser(part)
    if any(c in pattern for c in "*?["):
      matches = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
      if not matches:
        raise ValueError(f"--text_files: {part!r} matches no files")
      paths += matches
    elif os.path.isfile(pattern):
      paths.append(pattern)
    else:
      raise ValueError(f"--text_files: {part!r} is not a file")
  if not paths:
    raise ValueError("--text_files is empty; give a glob or a comma-separated list of files")
  return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def text_file_documents(spec: str) -> tuple[list[dict], list[str]]:
  """([{"text": bytes}] of the files `spec` names, the paths skipped as empty or binary)."""
  documents, skipped = [], []
  for path in _file_paths(spec):
    text = corpus.read_document(path)
    if text is None or not text.strip():
      skipped.append(path)
    else:
      documents.append({"text": text.encode("utf-8")})
  if not documents:
    raise ValueError(f"--text_files={spec!r}: all {len(skipped)} files are empty or binary")
  return documents, skipped


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, text_files: str | None = None,
             tfds_split: str | None = None, tfds_data_dir: str | None = None,
             tfds_text_key: str = "text", batch_size: int = 0) -> dict:
  """The latest checkpoint of `workdir` scored on `text_files` or `tfds_split`."""
  if (text_files is None) == (tfds_split is None):
    raise ValueError("give exactly one of --text_files or --tfds")
  if text_files is not None:
    documents, skipped = text_file_documents(text_files)
    source = f"text files {text_files}"
  else:
    documents, skipped = tfds_documents(tfds_split, tfds_data_dir, tfds_text_key), []
    source = f"tfds {tfds_split}" + (f" in {tfds_data_dir}" if tfds_data_dir else "")
    if not len(documents):
      raise ValueError(f"--tfds={tfds_split!r} holds no documents")
  experiment = Experiment(config)
  state = experiment.restore(workdir)
  tok = data_lib.load(config).tokenizer
  scoring = Experiment(_with_batch_size(config, batch_size)) if batch_size else experiment
  scores = evaluation.score(scoring, state.params, documents, tok)
  text_bytes = sum(len(documents[i]["text"]) for i in range(len(documents)))
  return dict(scores, workdir=workdir, step=int(state.step), source=source,
              documents=len(documents), skipped_files=skipped, text_bytes=text_bytes,
              objective=config.objective,
              scored=scoring.task.describe_scored(config.seed),
              seq_len=config.data.seq_len)


def _with_batch_size(config: ml_collections.ConfigDict, rows: int) -> ml_collections.ConfigDict:
  """`config` evaluating `rows` rows a batch: rows, masks and spans do not depend on how
  rows are grouped into batches, so the scores are the same."""
  config = config.copy_and_resolve_references()
  config.train.batch_size, config.train.microbatches = rows, 1
  return config


def table(result: dict) -> str:
  """The results as a markdown table, and a line on what was scored."""
  share = result["bytes"] / max(result["text_bytes"], 1)
  rows = [("loss (nats per token)", f"{result['loss']:.4f}"),
          ("perplexity", f"{result['perplexity']:.3f}"),
          ("bits per byte", f"{result['bits_per_byte']:.4f}"),
          ("token accuracy", f"{result['accuracy']:.4f}"),
          ("tokens scored", f"{result['tokens']:,}"),
          ("bytes scored", f"{result['bytes']:,} ({share:.1%} of {result['text_bytes']:,} "
                           "bytes of text)"),
          ("documents", f"{result['documents']:,}" + (
              f" ({len(result['skipped_files'])} empty or binary files skipped)"
              if result["skipped_files"] else ""))]
  lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
  return "\n".join(lines + [
      f"Step {result['step']} of {result['workdir']} on {result['source']}, "
      f"{result['objective']} at data.seq_len={result['seq_len']}; scored: "
      f"{result['scored']}."])


def main(argv, config_flag):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # the libraries' INFO lines would bury the table
  try:
    result = evaluate(config_flag.value, FLAGS.workdir, text_files=FLAGS.text_files,
                      tfds_split=FLAGS.tfds, tfds_data_dir=FLAGS.tfds_data_dir,
                      tfds_text_key=FLAGS.tfds_text_key, batch_size=FLAGS.batch_size)
  except ValueError as e:  # bad flags, data or workdir: one line, as train/main.py
    sys.exit(f"error: {e}")
  print(table(result))
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  # Defined here, not at import, so importing this module never clashes with the
  # flags of train/main.py or the other tools.
  _config = _define_flags()
  app.run(lambda argv: main(argv, _config), flags_parser=cli.parse_flags)
