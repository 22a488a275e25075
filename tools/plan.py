"""Command line: which mesh layouts of a config fit a TPU slice, and how long a step would take.

  python -m tools.plan --config=configs/t5_xl_pod.py --topology=v5e:16x16 \
      [--config.train.batch_size=1024 ...]

From shapes alone, in seconds and without libtpu: for each layout (data, fsdp,
tensor) the slice's torus can be cut into, one chip's share of the parameters,
gradients and AdamW moments (sharded by config.sharding.rules on that mesh,
exactly), plus an estimate of the activations the backward pass keeps under
config.model.remat and of the logits; and the time the step's model FLOPs take
at the chip's published bf16 peak at 40% and 60% MFU. Communication is not
modelled, so the step time is the same for every layout; the layouts are
ranked by how much they communicate (data, then more fsdp, then more tensor),
and the first that fits is proposed, with the tools/aot_compile command that
confirms it by the real compile (minutes).
"""
import dataclasses
import itertools
import math
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import AbstractMesh
from ml_collections import config_flags

from model.attention import causal_block_pairs
from model.layers import ACTIVATIONS
from train import cli, hardware, sharding
from train.experiment import Experiment

GiB = hardware.GiB
MFU_TARGETS = (0.4, 0.6)
# What the backward pass keeps, from the most to the least (stack_activation_bytes).
REMAT_STRENGTH = ("none", "dots", "dots_no_batch", "full")
NOTHING_FITS = ("add chips, shrink the batch, set config.train.microbatches or a stronger "
                "config.model.remat")


def layouts(topology: hardware.Topology, max_tensor: int = 16) -> list[tuple[int, int, int]]:
  """(data, fsdp, tensor) sizes that give each mesh axis whole sides of the torus (what
  jax.make_mesh can place on TPU chips), tensor at most `max_tensor`, least communication
  first: pure data, then more fsdp, then more tensor."""
  found = set()
  for owners in itertools.product(range(3), repeat=len(topology.shape)):
    sizes = [1, 1, 1]
    for side, owner in zip(topology.shape, owners):
      sizes[owner] *= side
    if sizes[2] <= max_tensor:
      found.add(tuple(sizes))
  return sorted(found, key=lambda s: (s[2], s[1]))


def _bytes(tree) -> int:
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def state_bytes(experiment: Experiment) -> tuple[int, int]:
  """(params + AdamW state, params alone): one chip's shards on the experiment's mesh, as
  the run lays them out. Raises ValueError if a sharded dimension does not divide."""
  shard = lambda x, s: jax.ShapeDtypeStruct(s.shard_shape(x.shape), x.dtype)
  sharded = jax.tree.map(shard, experiment.abstract_state, experiment.state_shardings)
  return _bytes(sharded), _bytes(sharded.params)


def shapes_only(config: ml_collections.ConfigDict, sizes=(1, 1, 1)) -> Experiment:
  """`config` on an abstract mesh of `sizes` (data, fsdp, tensor): shapes, no devices."""
  return Experiment(config, mesh=AbstractMesh(tuple(sizes), sharding.MESH_AXES))


def _divided(n: int, t: int) -> float:
  """n split over t shards, or whole where t does not divide it (the rules check decides)."""
  return n / t if n % t == 0 else n


def stack_activation_bytes(cfg, remat: str, rows: int, length: int, tensor: int,
                           layers: int, cross_length: int = 0, causal: bool = False) -> float:
  """Bytes one chip keeps for the backward pass of one stack, plus one layer's working set.

  Counts the tensors a layer makes ([rows, length, ...]; heads, MLP width split
  over `tensor`), by what the remat policy saves: none, every intermediate;
  dots, matmul outputs; dots_no_batch, the weight matmuls' outputs (not the
  attention scores); full, only the layer's input. Attention is XLA's (scores
  in bf16, softmax in float32), not a fused kernel. The [T, D] buffer counts
  are fitted to compiled steps: against the TPU compiler's temporaries for
  T5-XL and a 1.3B GPT under data, fsdp and tensor layouts, the estimate came
  out between 0.6x (tensor-parallel T5, whose replicated [T, D] activations
  XLA keeps more copies of) and 1.6x (tensor-parallel GPT at 64 rows per chip).
  `causal` self-attention keeps scores only for the key blocks it computes.
  """
  c = np.dtype(cfg.dtype).itemsize
  d, h, t, s = cfg.embed_dim, cfg.head_dim, length, length
  n, k = _divided(cfg.num_heads, tensor), _divided(cfg.kv_heads, tensor)
  f, gated = _divided(cfg.mlp_dim, tensor), ACTIVATIONS[cfg.activation][1]
  up = (2 if gated else 1) * f * t * c  # wi (and wi_linear) outputs

  def attention(keys, pairs):
    projections = (2 * n * h * t + 2 * k * h * keys) * c  # q, attention output; k, v
    scores = n * pairs * c  # the QK^T matmul output
    softmax = n * pairs * (4 + c)  # float32 softmax and the bf16 probabilities
    return projections, scores, softmax

  proj, scores, softmax = attention(s, causal_block_pairs(t, cfg.causal_block if causal else 0))
  every = 10 * d * t * c + proj + scores + softmax + up + (2 if gated else 1) * f * t * c
  dots = 3 * d * t * c + proj + scores + up
  no_batch = 3 * d * t * c + proj - n * h * t * c + up
  if cross_length:
    cproj, cscores, csoftmax = attention(cross_length, t * cross_length)
    every += 3 * d * t * c + cproj + cscores + csoftmax
    dots += 2 * d * t * c + cproj + cscores
    no_batch += 2 * d * t * c + cproj - n * h * t * c
  saved = {"none": every, "dots": dots, "dots_no_batch": no_batch, "full": d * t * c}[remat]
  # The backward pass of one layer holds its recomputed intermediates and their gradients.
  working = every if remat == "none" else 2 * every
  # Outside the layers: embeddings, norms, their cotangents (about 16 [T, D] buffers per
  # stack in compiled steps), and a relative-position bias [heads, T, S] in float32.
  outside = 16 * d * t * c + (n * t * s * (4 + c) if cfg.position == "relative" else 0)
  return rows * (layers * saved + working + outside)


def activation_bytes(experiment: Experiment, rows: int, tensor: int) -> float:
  """One chip's activations for `rows` rows (per microbatch), all stacks and the logits."""
  cfg, config = experiment.model_cfg, experiment.config
  total = sum(stack_activation_bytes(cfg, cfg.remat, rows, s.length, tensor, s.layers,
                                     cross_length=s.cross_length, causal=s.causal)
              for s in experiment.stacks)
  # Logits [rows, positions alive at once, V] in float32, their log-softmax and gradient, and
  # the matmul output: the scored positions (train/loss.py), or a chunk of them.
  alive = config.train.loss_chunk or experiment.task.scored_length
  vocab = _divided(cfg.vocab_size, tensor)
  return total + rows * alive * vocab * (4 + 4 + np.dtype(cfg.dtype).itemsize)


def layer_weight_bytes(experiment: Experiment) -> int:
  """Bytes of the largest layer's weights in the compute dtype (what FSDP gathers at once)."""
  cfg = experiment.model_cfg
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim
  attention = d * h * (2 * n + 2 * k)
  mlp = d * f * (3 if ACTIVATIONS[cfg.activation][1] else 2)
  cross = attention if any(s.cross_length for s in experiment.stacks) else 0
  return (attention + cross + mlp) * np.dtype(cfg.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class Layout:
  data: int
  fsdp: int
  tensor: int
  problem: str = ""  # why it cannot run; empty if it can
  rows: int = 0  # per chip, per microbatch
  state: float = 0.0  # bytes: params + AdamW moments
  grads: float = 0.0
  gathered: float = 0.0  # FSDP: one layer's weights, gathered (double-buffered)
  activations: float = 0.0

  @property
  def total(self) -> float:
    return self.state + self.grads + self.gathered + self.activations


def estimate(config: ml_collections.ConfigDict, sizes: tuple[int, int, int]) -> Layout:
  """One chip's memory for `config` on a mesh of `sizes` (data, fsdp, tensor)."""
  data, fsdp, tensor = sizes
  batch, micro = config.train.batch_size, config.train.microbatches
  shards = sharding.batch_divisor(AbstractMesh(tuple(sizes), sharding.MESH_AXES),
                                  sharding.rules(config))
  if batch % (shards * micro):
    return Layout(*sizes, problem=f"batch {batch} does not split into {shards} shards"
                  + (f" x {micro} microbatches" if micro > 1 else ""))
  try:
    experiment = shapes_only(config, sizes)
    state, params = state_bytes(experiment)
  except ValueError as e:
    return Layout(*sizes, problem=str(e).split(";")[0])
  rows = batch // shards // micro
  # float32 gradients like the params; accumulated microbatches add a second copy.
  grads = params * (2 if micro > 1 else 1)
  gathered = 2 * layer_weight_bytes(experiment) / tensor if fsdp > 1 else 0
  return Layout(*sizes, rows=rows, state=state, grads=grads, gathered=gathered,
                activations=activation_bytes(experiment, rows, tensor))


@dataclasses.dataclass(frozen=True)
class Plan:
  topology: hardware.Topology
  layouts: list[Layout]
  model_flops: float  # per chip per step
  best: Layout | None  # the first layout (least communication) that fits

  def step_seconds(self, mfu: float) -> float:
    return self.model_flops / (self.topology.peak_flops * mfu)


def plan(config: ml_collections.ConfigDict, topology: hardware.Topology) -> Plan:
  flops = shapes_only(config).flops_per_step / topology.chips  # a bad config fails here
  rows = [estimate(config, sizes) for sizes in layouts(topology)]
  fitting = [r for r in rows if not r.problem and r.total <= topology.usable_bytes]
  return Plan(topology, rows, flops, fitting[0] if fitting else None)


def changes_that_fit(config: ml_collections.ConfigDict, topology: hardware.Topology,
                     sizes: tuple[int, int, int], scale: float = 1.0) -> list[str]:
  """Flags that the estimates say make `config`, on a mesh of `sizes`, fit `topology`: the
  least-communicating other layout, the fewest more microbatches, the weakest stronger
  remat (one change each, with its estimate). `scale` multiplies every estimate: a
  compile's measured need over the estimate for `sizes`, so the estimates' error cancels.
  """
  def changed(section, field, value):
    c = config.copy_and_resolve_references()
    c[section][field] = value
    return c

  def first_fitting(candidates):
    for overrides, candidate, at in candidates:
      layout = estimate(candidate, at)
      if not layout.problem and layout.total * scale <= topology.usable_bytes:
        return f"{overrides} (estimated {layout.total * scale / GiB:.2f} GiB)"
    return None

  batch, micro = config.train.batch_size, config.train.microbatches
  meshes = ((" ".join(f"--config.mesh.{a}={n}" for a, n in zip(sharding.MESH_AXES, other)),
             config, other) for other in layouts(topology) if other != tuple(sizes))
  microbatches = ((f"--config.train.microbatches={m}", changed("train", "microbatches", m), sizes)
                  for m in (micro * 2**k for k in range(1, batch.bit_length())) if m <= batch)
  remats = ((f"--config.model.remat={r}", changed("model", "remat", r), sizes)
            for r in REMAT_STRENGTH[REMAT_STRENGTH.index(config.model.remat) + 1:])
  return [fix for fix in map(first_fitting, (meshes, microbatches, remats)) if fix]


def format_plan(p: Plan, config: ml_collections.ConfigDict) -> str:
  t, experiment = p.topology, shapes_only(config)
  cfg = experiment.model_cfg
  length, encoder_length = experiment.task.lengths
  tokens = f"{encoder_length} + {length}" if encoder_length else f"{length}"
  lines = [f"{t.name} ({t.accelerator_type}): {t.chips} chips of {t.spec.device_kind}, "
           f"{t.spec.usable_gib:g} GiB usable HBM, {t.peak_flops / 1e12:.0f} TFLOP/s bf16 peak",
           f"{cfg.family}, remat {cfg.remat}, batch {config.train.batch_size} rows of {tokens} "
           f"tokens, {config.train.microbatches} microbatch(es)",
           "step time (model FLOPs at the peak, no communication): "
           + ", ".join(f"{p.step_seconds(m):.3g} s at {m:.0%} MFU" for m in MFU_TARGETS),
           "",
           "| data | fsdp | tensor | rows/chip | state | grads | gathered | activations | "
           f"total GiB | fits {t.spec.usable_gib:g} |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  g = lambda b: f"{b / GiB:.2f}"
  for r in p.layouts:
    head = f"| {r.data} | {r.fsdp} | {r.tensor} |"
    if r.problem:
      lines.append(f"{head} - | - | - | - | - | - | no: {r.problem} |")
      continue
    fits = "yes" if r.total <= t.usable_bytes else "no"
    lines.append(f"{head} {r.rows} | {g(r.state)} | {g(r.grads)} | {g(r.gathered)} | "
                 f"{g(r.activations)} | {g(r.total)} | {fits} |")
  lines.append("")
  if p.best:
    mesh = " ".join(f"--config.mesh.{axis}={size}" for axis, size in
                    zip(sharding.MESH_AXES, (p.best.data, p.best.fsdp, p.best.tensor)))
    lines += [f"proposed: {mesh} (estimated {g(p.best.total)} GiB per chip)",
              f"confirm by the real compile (minutes): python -m tools.aot_compile "
              f"--config=... --topology={t.name} {mesh}"]
  else:
    lines.append(f"no layout fits: {NOTHING_FITS}")
  return "\n".join(lines)


def what_to_change(config: ml_collections.ConfigDict, topology: hardware.Topology,
                   needed: int | None, at_least: bool = False) -> str:
  """How far the step overflows one chip's usable HBM, and the changes the estimates say fit.

  The estimates are scaled by `needed` (the bytes a compile asked for; `at_least`: a
  lower bound, as in the compiler's refusal) over the estimate for config's own layout,
  so that the estimates' error for this model cancels.
  """
  sizes = sharding.mesh_shape(config.mesh, topology.chips)
  own = estimate(config, sizes).total
  if needed:
    over = f"{'at least ' * at_least}{(needed - topology.usable_bytes) / GiB:.2f} GiB more than"
  else:  # known only to need more than there is, and at least the estimate
    over, needed = "more than", max(topology.usable_bytes + 1, own)
  changes = changes_that_fit(config, topology, sizes, needed / own if own else 1.0)
  fixes = ("try " + ", or ".join(changes) if changes else
           f"no single change is estimated to fit: {NOTHING_FITS}, or several together")
  return (f"one chip needs {over} the {topology.spec.usable_gib:g} GiB usable on "
          f"{topology.spec.device_kind}; {fixes} (python -m tools.plan compares every layout)")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("topology", None, f"TPU slice: {hardware.TOPOLOGY_HELP}.")
  flags.mark_flags_as_required(["config", "topology"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  try:
    topology = hardware.parse_topology(flags.FLAGS.topology)
    hardware.quiet_libtpu(topology)
    result = plan(config, topology)
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(format_plan(result, config))
  if not result.best:
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
