"""Command line: where the train step's time goes, from a jax.profiler trace.

  python -m tools.profile_step --config=gpt_tiny [--noreference_shape --batch_size=2] \
      [--steps=3] [--trace_dir=/tmp/triform_profile] [--top=25]
  python -m tools.profile_step --peer="HF GPT-2, PyTorch eager" [--steps=3]

Compiles the step (as tools/benchmark does), traces a few steps with
jax.profiler, and joins the trace's per-op times with the compiled HLO: each
op's output shape and the JAX operation it came from. Prints the top ops and the
time per kind (vocabulary projection and loss, attention scores, other matmuls,
the rest). The trace itself stays in --trace_dir for Perfetto (ui.perfetto.dev)
or TensorBoard's profile plugin. Per-op events are what the CPU runtime records;
on TPU and GPU use the trace in those viewers.

With --peer (a system of tools/benchmark_peers.py), the same kinds are also measured for
that PyTorch step with torch.profiler (each op's own time, by aten op and input shapes) and
printed beside ours; ours is then its family's tiny config at the reference shape with the
peers' architecture (benchmark_peers.SAME_AS_PEERS), so both steps compute the same model.
"""
import collections
import glob
import gzip
import json
import re
import time

from train import host_memory

if __name__ == "__main__":  # before JAX loads: profile the step as train.main runs it
  host_memory.restart_with_huge_pages()

import jax
from absl import app, flags

from model.attention import causal_block_bounds
from tools import benchmark, benchmark_peers

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


TORCH_MATMULS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})


def torch_kind(op: str, shapes, vocab_size: int, scores: set[tuple[int, int]]) -> str:
  """`kind` of a torch.profiler op from its aten name and input shapes. A fused attention
  kernel (SDPA's) counts whole, softmax included, as attention matmuls; batched products
  arise only in attention in these models."""
  if any(vocab_size in s for s in shapes):
    return "vocabulary projection and loss"
  if "attention" in op or op in ("aten::bmm", "aten::baddbmm"):
    return "attention matmuls"
  if any(len(s) >= 4 and tuple(s[-2:]) in scores for s in shapes):
    return "attention scores (softmax, masks)"
  if op in TORCH_MATMULS:
    return "projection and MLP matmuls"
  return "norms, activations, residuals, optimizer"


def torch_op_seconds(label: str, steps: int) -> tuple[float, collections.Counter]:
  """(wall seconds per step, {(aten op, input shapes): its own seconds per step}) of a
  benchmark_peers PyTorch system under torch.profiler, after the peers' warm-up steps."""
  import torch  # pylint: disable=import-outside-toplevel
  system, model = benchmark_peers.SYSTEMS[label]
  step = benchmark_peers.torch_worker(system, model)[0]
  for _ in range(benchmark_peers.WARMUP):
    step()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                              record_shapes=True) as profile:
    start = time.perf_counter()
    for _ in range(steps):
      step()
    wall = (time.perf_counter() - start) / steps
  by_op = collections.Counter()
  for event in profile.key_averages(group_by_input_shape=True):
    shapes = tuple(tuple(s) for s in event.input_shapes if isinstance(s, (list, tuple)))
    by_op[event.key, shapes] += event.self_cpu_time_total / 1e6 / steps
  return wall, by_op


def triform_config():
  """The config --config names, or with --peer its family's tiny config built like the
  peer's model."""
  if FLAGS.peer:
    torch_systems = [k for k, (s, _) in benchmark_peers.SYSTEMS.items() if s != "triform"]
    if FLAGS.peer not in torch_systems:
      raise app.UsageError(f"--peer={FLAGS.peer!r} is not a PyTorch system of "
                           f"tools/benchmark_peers.py: {', '.join(torch_systems)}")
    if FLAGS.config or not FLAGS.reference_shape or FLAGS.batch_size:
      raise app.UsageError("--peer profiles both steps at the reference shape; drop --config, "
                           "--noreference_shape and --batch_size")
    model = benchmark_peers.SYSTEMS[FLAGS.peer][1]
    config = benchmark.reference_config(f"{model}_tiny")
    config.model.update(benchmark_peers.SAME_AS_PEERS[model])
    return f"{model}_tiny", config
  name = FLAGS.config or "gpt_tiny"
  config = (benchmark.reference_config(name) if FLAGS.reference_shape
            else benchmark.load_config(name))
  config.train.batch_size = FLAGS.batch_size or config.train.batch_size
  return name, config


def print_beside_peer(by_kind: collections.Counter, wall: float, vocab_size: int,
                      scores: set[tuple[int, int]]) -> collections.Counter:
  """Profiles --peer and prints its seconds per kind beside ours (`by_kind`, `wall`);
  returns its seconds per (aten op, input shapes)."""
  peer_wall, peer_ops = torch_op_seconds(FLAGS.peer, FLAGS.steps)
  peer = collections.Counter()
  for (op, shapes), s in peer_ops.items():
    peer[torch_kind(op, shapes, vocab_size, scores)] += s
  print(f"\n{FLAGS.peer}: {peer_wall * 1e3:.1f} ms per profiled step; its ops' own times "
        f"sum to {sum(peer.values()) * 1e3:.1f} ms\n")
  print(f"| kind | triform ms | {FLAGS.peer} ms | triform / peer |\n|---|---|---|---|")
  for k in sorted(by_kind.keys() | peer.keys(), key=lambda k: -by_kind[k]):
    ratio = f"{by_kind[k] / peer[k]:.2f}" if peer[k] else ""
    print(f"| {k} | {by_kind[k] * 1e3:.1f} | {peer[k] * 1e3:.1f} | {ratio} |")
  print(f"| whole step (wall) | {wall * 1e3:.1f} | {peer_wall * 1e3:.1f} | "
        f"{wall / peer_wall:.2f} |")
  return peer_ops


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name, config = triform_config()
  config = benchmark.for_this_machine(config)
  timed = benchmark.compile_step(config, benchmark.synthetic_batch(config))
  with jax.profiler.trace(FLAGS.trace_dir, create_perfetto_trace=True):
    wall = sum(timed.run() for _ in range(FLAGS.steps)) / FLAGS.steps
  ops = hlo_ops(timed.step.as_text())
  seconds = op_seconds(FLAGS.trace_dir, ops)
  per_step = {op: s / FLAGS.steps for op, s in seconds.items()}
  total = sum(per_step.values())
  scores = score_shapes(config)
  by_kind = collections.Counter()
  for op, s in per_step.items():
    by_kind[kind(*ops[op], config.data.vocab_size, scores)] += s
  print(f"{name}: {wall * 1e3:.1f} ms per traced step; ops sum to {total * 1e3:.1f} ms "
        "(ops on two threads can overlap; tracing slows the step)\n")
  print("| kind | ms per step | share |\n|---|---|---|")
  for k, s in by_kind.most_common():
    print(f"| {k} | {s * 1e3:.1f} | {s / total:.1%} |")
  peer_ops = print_beside_peer(by_kind, wall, config.data.vocab_size, scores) if FLAGS.peer else {}
  print("\n| op | ms per step | output | from |\n|---|---|---|---|")
  for op, s in sorted(per_step.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    shape, op_name = ops[op]
    print(f"| {op} | {s * 1e3:.2f} | {shape.split('{')[0]} | {op_name.split('/', 1)[-1]} |")
  if peer_ops:
    print(f"\n| {FLAGS.peer} op | ms per step | inputs |\n|---|---|---|")
    for (op, shapes), s in peer_ops.most_common(FLAGS.top):
      print(f"| {op} | {s * 1e3:.2f} | {' '.join(str(list(x)) for x in shapes)} |")
  print(f"\ntrace: {FLAGS.trace_dir} (open the .trace.json.gz in ui.perfetto.dev)")


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so tests can import this
  beside other tools."""
  flags.DEFINE_string("config", "", "A config name under configs/ or a file (default "
                      "gpt_tiny).")
  flags.DEFINE_string("peer", "", "A PyTorch system of tools/benchmark_peers.py to profile "
                      "beside our step of the same family, e.g. 'HF GPT-2, PyTorch eager'.")
  flags.DEFINE_bool("reference_shape", True,
                    "Time the config's family at the benchmark's reference shape.")
  flags.DEFINE_integer("batch_size", 0, "Rows per step (0: the config's).")
  flags.DEFINE_integer("steps", 3, "Traced steps.")
  flags.DEFINE_string("trace_dir", "/tmp/triform_profile", "Where the trace goes.")
  flags.DEFINE_integer("top", 25, "How many ops to list.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
