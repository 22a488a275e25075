"""Fuzzes `train.main` with configs drawn at random: each must train or stop with a one-line
`error:` before anything compiles. A traceback, or an error after compiling, is a failure.

  python -m tools.fuzz_config --count=200 [--seed=0] [--workdir=/tmp/triform_fuzz]

Each draw sets one or two numeric fields (configs/common.py declares them with their
ranges) of a tiny run (width 16, 1 layer, rows of 16 tokens, 1 step, on a small corpus of
standard-library files) to a value inside or outside its range, or to a value of the wrong
type, and runs it in this process through the entry point `python -m train.main` uses.
Identical programs compile once (JAX's persistent compilation cache, on for the draws).
Prints one line per draw and a count of the outcomes; exits 1 if any draw failed.
"""
import argparse
import collections
import contextlib
import math
import os
import random
import shutil
import sys
import sysconfig
import tempfile

from absl import flags
import jax

from configs import common
from train import cli, main
from train.experiment import Experiment

# stopped_by_guard: a valid config whose training met a non-finite loss (as
# train.inject_nan_at_step asks) and stopped in one line, as train/guards.py designs.
OUTCOMES = ("trained", "refused", "stopped_by_guard", "error_after_compile", "traceback")
# The tiny run every draw starts from: seconds per compile on a 2-core CPU.
BASE = {"model.num_layers": 1, "model.embed_dim": 16, "model.num_heads": 1, "model.head_dim": 16,
        "model.mlp_dim": 32, "model.max_length": 16, "data.seq_len": 16, "data.vocab_size": 640,
        "data.tokenizer_sentences": 5000, "data.validation_percent": 25, "train.batch_size": 2,
        "train.num_steps": 1, "train.log_every": 1, "train.eval_batches": 1,
        "train.checkpoint_every": 1, "optim.warmup_steps": 1, "sample.num_prompts": 0}


def small_corpus(directory: str) -> str:
  """Copies 16 small standard-library modules into `directory` as text; returns their glob."""
  root = sysconfig.get_paths()["stdlib"]
  names = sorted(f for f in os.listdir(root)
                 if f.endswith(".py") and 3_000 < os.path.getsize(os.path.join(root, f)) < 12_000)
  os.makedirs(directory, exist_ok=True)
  for name in names[:16]:
    shutil.copy(os.path.join(root, name), os.path.join(directory, name[:-3] + ".txt"))
  return os.path.join(directory, "*.txt")


def base_flags(corpus_glob: str, data_dir: str, workdir: str) -> list[str]:
  return ["--config=configs/gpt_tiny.py", f"--workdir={workdir}",
          f"--config.data.source={corpus_glob}", f"--config.data.data_dir={data_dir}",
          *(f"--config.{k}={v}" for k, v in BASE.items())]


def run_main(argv: list[str]) -> tuple[int, str]:
  """(exit code, error line) of `python -m train.main *argv`, run in this process: the flags
  are parsed afresh (config overrides included), as a new process would."""
  sys.argv = ["train.main", *argv]
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # the overrides of the last parse; this one defines its own
  flags.FLAGS.unparse_flags()
  try:
    cli.parse_flags(sys.argv)
    main.main(sys.argv[:1])
  except SystemExit as e:
    return (1, e.code) if isinstance(e.code, str) else (e.code or 0, "")
  return 0, ""


def _bounds(allowed: str) -> list[tuple[str, float, float, str]]:
  """The intervals of an allowed-values string as (open, low, high, close); points as [x, x]."""
  out = []
  for part in (p.strip() for p in allowed.split("|")):
    if part[0] in "[(":
      low, high = (float(b) for b in part[1:-1].split(","))
      out.append((part[0], low, high, part[-1]))
    else:
      out.append(("[", float(part), float(part), "]"))
  return out


def invalid_value(num, rng: random.Random) -> str:
  """A flag value outside `num`'s range, or not of its type."""
  opening, low, _, _ = _bounds(num.allowed)[0]
  _, _, high, closing = _bounds(num.allowed)[-1]
  choices = []
  if math.isfinite(low):
    choices.append(low if opening == "(" else low - (1 if num.is_int else 0.5 + abs(low)))
  if math.isfinite(high):
    choices.append(high if closing == ")" else high + (1 if num.is_int else 0.5 + abs(high)))
  gaps = [(a[2], b[1]) for a, b in zip(_bounds(num.allowed), _bounds(num.allowed)[1:])
          if b[1] - a[2] > 1]
  choices += [(a + b) / 2 for a, b in gaps]  # between -1 and [1, inf): 0
  if num.is_int:
    choices.append(num.default + 0.5)  # the wrong type: a flag parse error
  else:
    choices += [math.nan, math.inf]
  choices.append("many")
  value = rng.choice(choices)
  if isinstance(value, float) and num.is_int and value.is_integer():
    value = int(value)
  return str(value)


def valid_value(path: str, num, rng: random.Random) -> str:
  """A value inside `num`'s range near the tiny run's, so it stays cheap to train."""
  start = BASE.get(path, num.default)
  for _ in range(100):
    if num.is_int:
      value = start + rng.randint(-2, 2)
    elif start:
      value = start * 10 ** rng.uniform(-0.5, 0.5)
    else:
      value = rng.uniform(0, 0.5)
    if num.admits(value):
      return str(value)
  return str(start)


def draw(rng: random.Random, valid_share: float) -> dict[str, str]:
  """{field path: flag value} of one or two fields, each valid with chance `valid_share`."""
  declared = common.numeric_fields()
  paths = rng.sample(sorted(declared), 1 if rng.random() < 0.8 else 2)
  return {p: (valid_value(p, declared[p], rng) if rng.random() < valid_share
              else invalid_value(declared[p], rng)) for p in paths}


@contextlib.contextmanager
def shared_compiles(directory: str):
  """JAX's persistent compilation cache in `directory` while the draws run: a program
  compiled once (the same HLO) is read back, not compiled again."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = [getattr(jax.config, n) for n in names]
  jax.config.update(names[0], directory)
  jax.config.update(names[1], 0)
  try:
    yield
  finally:
    for name, value in zip(names, before):
      jax.config.update(name, value)


@contextlib.contextmanager
def _compile_watch():
  """A list that gets an entry whenever a train step compiles."""
  compiled, original = [], Experiment.compile_train_step

  def watched(self, *args, **kwargs):
    compiled.append(True)
    return original(self, *args, **kwargs)

  Experiment.compile_train_step = watched
  try:
    yield compiled
  finally:
    Experiment.compile_train_step = original


def fuzz(count: int, seed: int, root: str, valid_share: float = 0.15, log=print) -> list[dict]:
  """Runs `count` drawn configs under `root` (corpus, data, workdirs); returns one record
  per draw: {"overrides", "outcome", "message"}."""
  rng = random.Random(seed)
  corpus = small_corpus(os.path.join(root, "texts"))
  data_dir = os.path.join(root, "data")
  records = []
  with shared_compiles(os.path.join(root, "compile_cache")), _compile_watch() as compiled:
    for i in range(count):
      overrides = draw(rng, valid_share)
      argv = base_flags(corpus, data_dir, os.path.join(root, "runs", str(i)))
      argv += [f"--config.{k}={v}" for k, v in overrides.items()]
      compiled.clear()
      try:
        code, message = run_main(argv)
        one_line = message.startswith("error: ") and "\n" not in message
        outcome = ("trained" if code == 0
                   else "stopped_by_guard" if one_line and message.startswith("error: non-finite")
                   else "error_after_compile" if compiled
                   else "refused" if one_line else "traceback")
      except Exception as e:  # pylint: disable=broad-except
        outcome, message = "traceback", f"{type(e).__name__}: {e}"
      records.append({"overrides": overrides, "outcome": outcome, "message": message})
      log(f"{i:4d} {outcome:20s} {overrides} {message}")
  return records


def _main():
  # argparse, not absl: absl's flags here are train.main's, parsed afresh for every draw.
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--count", type=int, default=200, help="configs to draw")
  parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
  parser.add_argument("--root", default=None, help="directory for the corpus, data and "
                      "workdirs (default: a new temporary one)")
  args = parser.parse_args()
  root = args.root or tempfile.mkdtemp(prefix="triform_fuzz_")
  records = fuzz(args.count, args.seed, root)
  counts = collections.Counter(r["outcome"] for r in records)
  print(", ".join(f"{o}: {counts[o]}" for o in OUTCOMES))
  if counts["traceback"] or counts["error_after_compile"]:
    sys.exit(1)


if __name__ == "__main__":
  _main()
