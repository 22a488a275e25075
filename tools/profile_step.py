"""Command line: where the train step's time goes, from a jax.profiler trace.

  python -m tools.profile_step --config=gpt_tiny [--noreference_shape --batch_size=2] \
      [--steps=3] [--trace_dir=/tmp/triform_profile] [--top=25]

Compiles the step (as tools/benchmark does), traces a few steps with
jax.profiler, and joins the trace's per-op times with the compiled HLO: each
op's output shape and the JAX operation it came from. Prints the top ops and the
time per kind (vocabulary projection and loss, attention scores, other matmuls,
the rest). The trace itself stays in --trace_dir for Perfetto (ui.perfetto.dev)
or TensorBoard's profile plugin. Per-op events are what the CPU runtime records;
on TPU and GPU use the trace in those viewers.
"""
import collections
import glob
import gzip
import json
import re

import jax
from absl import app, flags

from model.attention import causal_block_bounds
from tools import benchmark

FLAGS = flags.FLAGS

# `%name = f32[2048,256]{1,0} fusion(...), ..., metadata={op_name="jit(step)/..."`
_HLO_OP = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?op_name="([^"]*)"', re.M)


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (output shape, JAX op name)} of a compiled module's text."""
  ops = {}
  for name, shape, op_name in _HLO_OP.findall(hlo_text):
    ops.setdefault(name, (shape, op_name))
  return ops


def op_seconds(trace_dir: str, names) -> collections.Counter:
  """Total seconds per HLO instruction over the newest Perfetto trace under trace_dir."""
  path = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  total = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      total[e["name"]] += e.get("dur", 0) / 1e6
  return total


def score_shapes(config) -> set[tuple[int, int]]:
  """(queries, keys) of every attention score matrix the step makes: whole rows of each
  pair of row lengths, and each causal block (model/attention.causal_block_bounds)."""
  lengths = benchmark.lengths(config)
  shapes = {(t, s) for t in lengths for s in lengths}
  for length in lengths:
    shapes |= {(end - start, end)
               for start, end in causal_block_bounds(length, config.model.causal_block)}
  return shapes


def kind(shape: str, op_name: str, vocab_size: int, scores: set[tuple[int, int]]) -> str:
  """What part of the model an op belongs to, from its output shape and JAX op;
  `scores` holds the (queries, keys) shapes of attention scores (`score_shapes`)."""
  dims = [int(d) for d in re.findall(r"\d+", shape.split("{")[0].split("[", 1)[-1])]
  if vocab_size in dims:
    return "vocabulary projection and loss"
  if "BKQH,BSKH->BKQS" in op_name or "BKQS,BSKH->BKQH" in op_name:  # model/attention.attend
    return "attention matmuls"
  if len(dims) >= 4 and tuple(dims[-2:]) in scores:
    return "attention scores (softmax, masks)"
  if "dot_general" in op_name:
    return "projection and MLP matmuls"
  return "norms, activations, residuals, optimizer"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = (benchmark.reference_config(FLAGS.config) if FLAGS.reference_shape
            else benchmark.load_config(FLAGS.config))
  config = benchmark.for_this_machine(config)
  config.train.batch_size = FLAGS.batch_size or config.train.batch_size
  timed = benchmark.compile_step(config, benchmark.synthetic_batch(config))
  with jax.profiler.trace(FLAGS.trace_dir, create_perfetto_trace=True):
    wall = sum(timed.run() for _ in range(FLAGS.steps)) / FLAGS.steps
  ops = hlo_ops(timed.step.as_text())
  seconds = op_seconds(FLAGS.trace_dir, ops)
  per_step = {name: s / FLAGS.steps for name, s in seconds.items()}
  total = sum(per_step.values())
  scores = score_shapes(config)
  by_kind = collections.Counter()
  for name, s in per_step.items():
    by_kind[kind(*ops[name], config.data.vocab_size, scores)] += s
  print(f"{FLAGS.config}: {wall * 1e3:.1f} ms per traced step; ops sum to {total * 1e3:.1f} ms "
        "(ops on two threads can overlap; tracing slows the step)\n")
  print("| kind | ms per step | share |\n|---|---|---|")
  for k, s in by_kind.most_common():
    print(f"| {k} | {s * 1e3:.1f} | {s / total:.1%} |")
  print("\n| op | ms per step | output | from |\n|---|---|---|---|")
  for name, s in sorted(per_step.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    shape, op_name = ops[name]
    print(f"| {name} | {s * 1e3:.2f} | {shape.split('{')[0]} | {op_name.split('/', 1)[-1]} |")
  print(f"\ntrace: {FLAGS.trace_dir} (open the .trace.json.gz in ui.perfetto.dev)")


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so tests can import this
  beside other tools."""
  flags.DEFINE_string("config", "gpt_tiny", "A config name under configs/ or a file.")
  flags.DEFINE_bool("reference_shape", True,
                    "Time the config's family at the benchmark's reference shape.")
  flags.DEFINE_integer("batch_size", 0, "Rows per step (0: the config's).")
  flags.DEFINE_integer("steps", 3, "Traced steps.")
  flags.DEFINE_string("trace_dir", "/tmp/triform_profile", "Where the trace goes.")
  flags.DEFINE_integer("top", 25, "How many ops to list.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
