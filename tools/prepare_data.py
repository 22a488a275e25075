"""Command line: turn large raw documents into ArrayRecord shards a run can read.

  python -m tools.prepare_data --input='jsonl:gs://bucket/c4/*.jsonl.gz' \
      --output=/data/c4_prepared --text_field=text --workers=8
  python -m train.main --config=configs/gpt_small.py \
      --config.data.source=prepared:/data/c4_prepared

Each input file becomes a train and a validation shard (split by record hash, as a
`jsonl:` / `parquet:` / `lines:` source does), written by `--workers` processes with a
progress line per shard. Killed, it resumes when run again: finished shards are kept.
"""
import sys

from absl import app, flags, logging

from train import cli, records, shards

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so tests can import this."""
  flags.DEFINE_string("input", None, "FORMAT:GLOB of the raw files, FORMAT one of "
                      f"{', '.join(records.FORMATS)}; local paths or gs:// URLs.")
  flags.DEFINE_string("output", None, "Local directory for the shards (config.data.source="
                      "prepared:DIR reads it).")
  flags.DEFINE_string("text_field", "text", "The JSONL field / Parquet column with the text.")
  flags.DEFINE_integer("validation_percent", 5, "Share of documents held out, by record hash.")
  flags.DEFINE_integer("workers", 2, "Worker processes converting files in parallel.")

def prepare(spec: str, output: str, text_field: str, validation_percent: int,
            workers: int) -> dict:
  """Checks the flags in one line each, then converts; returns the manifest."""
  fmt, _, pattern = spec.partition(":")
  if fmt not in records.FORMATS or not pattern:
    raise ValueError(f"--input={spec!r} must be FORMAT:GLOB with FORMAT one of "
                     f"{', '.join(records.FORMATS)}")
  if "://" in output:
    raise ValueError(f"--output={output!r} must be a local directory (ArrayRecord is written "
                     "locally); copy it to a bucket after, or write to a gcsfuse mount")
  if not 0 < validation_percent < 100:
    raise ValueError(f"--validation_percent={validation_percent} must be in 1..99")
  if workers < 1:
    raise ValueError(f"--workers={workers} must be at least 1")
  paths = records.expand(pattern, "--input")
  return shards.prepare(paths, fmt, text_field, output, validation_percent, workers)


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  try:
    manifest = prepare(FLAGS.input, FLAGS.output, FLAGS.text_field, FLAGS.validation_percent,
                       FLAGS.workers)
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(f"{FLAGS.output}: {manifest['train']} train and {manifest['validation']} validation "
        f"documents in {len(manifest['shards'])} shards; {manifest['replaced']} held invalid "
        "UTF-8. Train on it with --config.data.source=prepared:" + FLAGS.output)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["input", "output"])
  app.run(main, flags_parser=cli.parse_flags)
