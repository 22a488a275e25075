"""Command line: n-gram baselines of an experiment config, in validation bits per byte.

  python -m tools.baselines --config=configs/gpt_tiny.py --order=4 [--discounts=plain]
      [--matched_budget] [--json=/tmp/baselines.json]

Builds (or loads from its cache) the corpus and tokenizer train/main.py uses for the same
`--config.data.*` fields, fits on the train split's rows and scores the validation
split's: the causal-LM rows of `config.data.seq_len` tokens that the models train on and
that the trainer's evaluation scores, so the numbers sit next to a run's bits per byte.
`unigram` is the trainer's add-one baseline (summary.json's unigram_bits_per_byte), fitted
on the train split's bounded sample (the documents the tokenizer trains on);
`kneser-ney` of order k is train/ngram.py's interpolated modified Kneser-Ney. The
n-grams count the whole train split, or with --matched_budget only the rows a run of
the config trains on: its first `train.num_steps` batches, same seed, same shuffle.
"""
import itertools
import json
import sys
import time

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from train import cli, input_pipeline, ngram, objectives, unigram
from train import data as data_lib


def baselines(config: ml_collections.ConfigDict, order: int, discounts: str = "modified",
              matched_budget: bool = False, log=lambda line: None) -> list[dict]:
  """Rows {baseline, order, train_tokens, bits_per_byte, seconds} on the validation split of
  `config`."""
  if order < 1:
    raise ValueError(f"--order={order} must be at least 1")
  data = config.data
  loaded = data_lib.load(config)
  train_docs, val_docs = loaded.documents("train"), loaded.documents("validation")
  tok = loaded.tokenizer

  def rows(documents, train=False):
    # train=False: unshuffled, one pass, every document once, packed as training packs it.
    return input_pipeline.make_dataset(
        documents, tok, objective=objectives.CausalLM(data.seq_len, tok.specials),
        batch_size=config.train.batch_size, seed=config.seed, train=train,
        num_threads=data.num_threads)

  start = time.perf_counter()
  validation = list(rows(val_docs))
  log(f"validation: {sum(int(b['weights'].sum()) for b in validation)} tokens, "
      f"{sum(int(b['target_bytes'].sum()) for b in validation)} bytes")
  results = []

  def add(name, k, train_tokens, bits_per_byte, since):
    results.append({"baseline": name, "order": k, "train_tokens": train_tokens,
                    "bits_per_byte": round(bits_per_byte, 4),
                    "seconds": round(time.perf_counter() - since, 1)})
    log(f"{name} order {k}: {bits_per_byte:.4f} bits/byte")

  unigram_probs = unigram.fit(loaded.sample_texts(), tok)
  add("unigram (add-one)", 1, "sample", unigram.bits_per_byte(unigram_probs, validation), start)
  start = time.perf_counter()
  train_rows = (itertools.islice(rows(train_docs, train=True), config.train.num_steps)
                if matched_budget else rows(train_docs))
  counts = ngram.fit(train_rows, tok.vocab_size, order, tok.bos_id)
  tokens = int(counts.counts[0].sum())
  log(f"counted orders 1..{order} over {tokens} train tokens in "
      f"{time.perf_counter() - start:.1f}s")
  for k in range(1, order + 1):
    since = time.perf_counter()
    add("kneser-ney", k, tokens, ngram.bits_per_byte(ngram.KneserNey(counts, k, discounts),
                                                     validation), since)
  return results


def markdown(rows: list[dict]) -> str:
  keys = list(rows[0])
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  return "\n".join(lines + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows])


def main(argv, flag):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    rows = baselines(flag["config"].value, flag["order"].value, flag["discounts"].value,
                     flag["matched_budget"].value, log=lambda line: print(line, file=sys.stderr))
  except ValueError as e:  # bad config, data or order: one line, as train/main.py
    sys.exit(f"error: {e}")
  print(markdown(rows))
  if flag["json"].value:
    with open(flag["json"].value, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  # Defined here, not at import, so importing this module never clashes with the
  # flags of train/main.py or the other tools.
  _flags = {
      "config": config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                                lock_config=True),
      "order": flags.DEFINE_integer("order", 4, "Highest n-gram order; 1..order are scored."),
      "discounts": flags.DEFINE_enum("discounts", "modified", list(ngram.DISCOUNTS),
                                     "modified: Chen & Goodman's three discounts; plain: one."),
      "matched_budget": flags.DEFINE_boolean(
          "matched_budget", False, "Count only the rows a run of the config trains on."),
      "json": flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")}
  flags.mark_flag_as_required("config")
  app.run(lambda argv: main(argv, _flags), flags_parser=cli.parse_flags)
