"""Benchmarks measured side by side in one process, printed as Markdown tables.

  python -m tools.benchmark [--sections=step,variants,decode,compile]
      [--configs=configs/my_experiment.py,...] [--json=/tmp/benchmark.json]

Sections (the default runs all four in about 10 minutes on a 2-core CPU):
  step      the full jitted train step (forward, backward, AdamW) of each family
            and its default objective: at the reference shape (vocab 8192, width
            256, 4 layers (T5: 4 + 4), 4 heads, MLP 1024, length 256 (T5: 256 in,
            64 out), batch 8), at the tiny configs, at the small/base configs
            (batch 2 on CPU), and at any --configs. Median step time after a
            warm-up, tokens/s, model FLOPs per step (the model's own count), MFU
            against the peak (a jitted fp32 matmul measured in this process on
            CPU; the published bf16 peak on TPU/GPU), compile time, the step's
            memory as XLA lays it out, and the input pipeline's examples/s next
            to what the step consumes. On CPU every model computes in fp32.
  variants  each optimisation of the step, on and off, timed in turns in one run at
            the reference shape: the ratio is the speedup it buys.
  decode    generated tokens/s with the key/value cache and by recomputing the
            whole sequence per token (greedy, batch 4, 32-token prompts).
  compile   compile time of the train step at 2 and 24 scanned layers per family
            (--compile_unrolled: unrolled too, which grows with depth).
  pipeline  the input pipeline alone for every objective at the tiny and published
            sizes (the step section shows it for the configs it times).
  data      a generated JSONL corpus of --data_gb GB: tools.prepare_data MB/s with 1 and
            2 workers, pipeline vs step rows/s, peak RSS of training on 1x and 4x
            (tools/benchmark_data.py).
  peers     our step at the reference shape next to HF transformers' PyTorch GPT-2, BERT and
            T5 (eager and torch.compile) and a plain PyTorch GPT, each in its own process,
            timed in rounds (tools/benchmark_peers.py).
  gpu       on an NVIDIA GPU: gpt_small and gpt_medium in bf16 (einsum and cuDNN attention)
            next to HF's PyTorch GPT-2 with SDPA under torch.compile (eager too with
            --gpu_systems); tokens/s and MFU against the published bf16 peak
            (tools/benchmark_gpu.py).
"""
import dataclasses
import importlib
import importlib.util
import itertools
import json
import resource
import statistics
import sys
import time

from train import host_memory

if __name__ == "__main__":  # before JAX loads: glibc reads its tunables only at start
  host_memory.restart_with_huge_pages()

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from model import model_config
from train import data as data_lib
from train import hardware, input_pipeline, noise, objectives, sharding
from train.experiment import Experiment

MiB = 2**20
REFERENCE_SHAPE = dict(embed_dim=256, num_heads=4, head_dim=64, mlp_dim=1024, num_layers=4,
                       max_length=256)
REFERENCE = (("gpt_tiny", "gpt"), ("bert_tiny", "bert"), ("t5_tiny", "t5"))
TINY = ("gpt_tiny", "bert_tiny", "t5_tiny", "lstm_tiny")
SMALL = ("gpt_small", "bert_base", "t5_base")
SMALL_BATCH = 2  # rows per step of the published sizes on CPU


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
  """A config by module name under configs/ (gpt_tiny) or by file path."""
  if not name_or_path.endswith(".py"):
    return importlib.import_module(f"configs.{name_or_path}").get_config()
  spec = importlib.util.spec_from_file_location("benchmark_config", name_or_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def reference_config(name: str) -> ml_collections.ConfigDict:
  """The tiny config of a family at the reference shape."""
  config = load_config(name)
  config.model.update(REFERENCE_SHAPE)
  config.data.vocab_size, config.data.seq_len, config.train.batch_size = 8192, 256, 8
  return config


def for_this_machine(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """fp32 compute on CPU, whose peak is an fp32 matmul; one host, the local devices."""
  if jax.devices()[0].platform == "cpu":
    config.model.dtype = "float32"
  return config


def small_config(name: str) -> ml_collections.ConfigDict:
  """A published size (SMALL) for this machine: on CPU, SMALL_BATCH rows a step."""
  config = for_this_machine(load_config(name))
  if jax.devices()[0].platform == "cpu":
    config.train.batch_size = SMALL_BATCH
  return config


def synthetic_batch(config: ml_collections.ConfigDict) -> dict:
  """A global batch of the objective over random text ids, one document per row."""
  objective = objectives.make(config)
  rng = np.random.default_rng(0)
  first_text, end_text = objective.specials.text_ids
  top = min(end_text, 30_000)
  examples = []
  for i in range(config.train.batch_size):
    length = objective.raw_length
    row = {"targets": rng.integers(first_text, top, length).astype(np.int32),
           "targets_segment_ids": np.ones(length, np.int32),
           "targets_positions": np.arange(length, dtype=np.int32)}
    example = objective(row, noise.example_rng(0, i))
    example["target_bytes"] = (example["weights"] > 0).astype(np.int32) * 3
    examples.append(example)
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@dataclasses.dataclass
class CompiledStep:
  """A compiled train step with its state and batch, ready to be timed."""
  step: object
  state: object
  batch: dict
  compile_seconds: float
  memory_bytes: int
  loss: float = float("nan")  # of the warm-up step

  def run(self) -> float:
    """One step, returning its wall time."""
    start = time.perf_counter()
    self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start


def compile_step(config: ml_collections.ConfigDict, batch: dict) -> CompiledStep:
  """The train step of `config` (its state from seed 0) compiled for `batch` and run once
  (the warm-up)."""
  experiment = Experiment(config)
  state = experiment.create_state(0)
  batch = sharding.to_global(batch, experiment.batch_sharding)
  start = time.perf_counter()
  compiled = experiment.jit_train_step().lower(state, batch).compile()
  seconds = time.perf_counter() - start
  host_memory.release_freed_memory()
  m = compiled.memory_analysis()
  memory = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes +
            m.temp_size_in_bytes)
  timed = CompiledStep(compiled, state, batch, seconds, memory)
  timed.state, metrics = compiled(state, batch)
  timed.loss = float(metrics["loss"])
  return timed


def time_in_turns(steps: dict[str, CompiledStep], rounds: int) -> dict[str, float]:
  """Median step seconds of each, timed one step each in turn, so that the machine's load
  at any moment weighs on all of them alike."""
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, timed in steps.items():
      times[name].append(timed.run())
  return {name: statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------------------- step


def pipeline_examples_per_second(config, tok, documents, num_batches: int = 20) -> float:
  """Examples/s one host's input pipeline yields on its own, after 5 warm-up batches."""
  dataset = input_pipeline.make_dataset(documents, tok, objective=objectives.make(config, tok),
                                        batch_size=config.train.batch_size, seed=0, train=True,
                                        num_threads=config.data.num_threads)
  it = iter(dataset)
  for _ in itertools.islice(it, 5):
    pass
  start = time.perf_counter()
  for _ in itertools.islice(it, num_batches):
    pass
  return num_batches * config.train.batch_size / (time.perf_counter() - start)


def _pipeline_rate(config: ml_collections.ConfigDict) -> float:
  """The input pipeline's examples/s for `config`'s objective and batch on the built-in
  corpus (its 4096-id tokenizer: the rate does not depend on the vocabulary)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.vocab_size = 4096
  data = data_lib.load(config)
  return pipeline_examples_per_second(config, data.tokenizer, data.documents("train"))


def step_row(label: str, config: ml_collections.ConfigDict, peak: float, *, pipeline: bool,
             steps: int) -> dict:
  timed = compile_step(config, synthetic_batch(config))
  seconds = time_in_turns({label: timed}, steps)[label]
  flops = Experiment(config).flops_per_step
  rows_per_s = config.train.batch_size / seconds
  row = {"config": label, "objective": config.objective,
         "batch": f"{config.train.batch_size}x{'+'.join(map(str, lengths(config)))}",
         "step_s": round(seconds, 4),
         "tokens_per_s": round(config.train.batch_size * sum(lengths(config)) / seconds),
         "gflops_per_step": round(flops / 1e9, 2), "mfu": round(flops / seconds / peak, 3),
         "compile_s": round(timed.compile_seconds, 1),
         "step_memory_mib": round(timed.memory_bytes / MiB),
         "pipeline_ahead_x": None}
  if pipeline:
    row["pipeline_ahead_x"] = round(_pipeline_rate(config) / rows_per_s, 1)
  return row


def lengths(config) -> tuple[int, ...]:
  """The row lengths of a batch: (length,), or (targets, inputs) for an encoder-decoder."""
  return tuple(n for n in objectives.make(config).lengths if n)


def step_section() -> list[dict]:
  peak, source = hardware.peak_flops_per_device()
  peak *= jax.local_device_count()
  print(f"peak: {peak / 1e9:.1f} GFLOP/s ({source})", file=sys.stderr)
  steps = flags.FLAGS.steps
  rows = [step_row(f"{label} (reference shape)", for_this_machine(reference_config(name)), peak,
                   pipeline=False, steps=steps) for name, label in REFERENCE]
  rows += [step_row(name, for_this_machine(load_config(name)), peak, pipeline=True, steps=steps)
           for name in TINY]
  rows += [step_row(name, small_config(name), peak, pipeline=True, steps=min(steps, 3))
           for name in SMALL]
  rows += [step_row(path, for_this_machine(load_config(path)), peak, pipeline=False, steps=steps)
           for path in flags.FLAGS.configs]
  for row in rows:
    row["peak_gflops"] = round(peak / 1e9, 1)
  return rows


# ---------------------------------------------------------------------------- variants


def _model(**fields):
  return lambda config: config.model.update(fields)


def _train(**fields):
  return lambda config: config.train.update(fields)


@dataclasses.dataclass(frozen=True)
class Variant:
  """An optimisation or option of the step, timed on and off at the reference shape."""
  what: str
  config: str  # which reference config
  on: object = None  # config change for "on" (None: the default is on)
  off: object = None  # config change for "off"


VARIANTS = (
    Variant("accuracy from the loss's max (off: separate argmax)", "gpt_tiny",
            off=_train(accuracy_from_max=False)),
    Variant("masked LM projects only its selected positions", "bert_tiny",
            off=_train(score_selected_only=False)),
    Variant("einsum attention (off: jax.nn.dot_product_attention)", "gpt_tiny",
            off=_model(attention="jax_nn")),
    Variant("einsum attention (off: jax.nn.dot_product_attention)", "bert_tiny",
            off=_model(attention="jax_nn")),
    Variant("einsum attention (off: jax.nn.dot_product_attention)", "t5_tiny",
            off=_model(attention="jax_nn")),
    Variant("norm gradient barrier", "gpt_tiny", off=_model(norm_grad_barrier=False)),
    Variant("norm gradient barrier", "bert_tiny", off=_model(norm_grad_barrier=False)),
    Variant("norm gradient barrier", "t5_tiny", off=_model(norm_grad_barrier=False)),
    Variant("causal attention in blocks of 128 queries (off: whole rows)", "gpt_tiny",
            off=_model(causal_block=0)),
    Variant("tanh GELU (off: erf GELU)", "gpt_tiny", off=_model(activation="gelu")),
    Variant("loss in chunks of 64 positions (off: whole rows)", "gpt_tiny",
            on=_train(loss_chunk=64)),
    Variant("scanned layers (off: unrolled)", "gpt_tiny", on=_model(scan_layers=True),
            off=_model(scan_layers=False)),
    Variant("remat full (off: none)", "gpt_tiny", on=_model(remat="full"),
            off=_model(remat="none")),
)


def variants_section() -> list[dict]:
  rows = []
  for v in VARIANTS:
    configs = {}
    for side, change in (("on", v.on), ("off", v.off)):
      configs[side] = for_this_machine(reference_config(v.config))
      if change:
        change(configs[side])
    batch = synthetic_batch(configs["on"])
    steps = {side: compile_step(configs[side], batch) for side in ("on", "off")}
    seconds = time_in_turns(steps, flags.FLAGS.steps)
    rows.append({"optimisation": v.what, "family": configs["on"].model.family,
                 "off_step_s": round(seconds["off"], 4), "on_step_s": round(seconds["on"], 4),
                 "speedup_x": round(seconds["off"] / seconds["on"], 3),
                 "first_loss_difference": float(
                     f"{abs(steps['on'].loss - steps['off'].loss):.2g}")})
  return rows


# ---------------------------------------------------------------------------- decode


def _seconds(fn) -> float:
  """Wall time of fn() after one untimed call (which compiles)."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


# (config, new tokens): published sizes generate fewer tokens, as recomputation is slow.
DECODE_CONFIGS = (("gpt_tiny", 64), ("t5_tiny", 64), ("gpt_small", 16), ("t5_base", 16))


def decode_section() -> list[dict]:
  from flax import nnx
  from model import build_model, decoding
  rows = []
  for name, new_tokens in DECODE_CONFIGS:
    config = for_this_machine(load_config(name))
    cfg = model_config(config)
    graphdef, params = nnx.split(build_model(cfg, 0), nnx.Param)
    inputs = jax.random.randint(jax.random.key(0), (4, 32), 5, 1000)
    lengths = jnp.full((4,), 32)
    cached = _seconds(lambda: decoding.generate(graphdef, params, inputs, lengths,
                                                jax.random.key(0), max_new_tokens=new_tokens))
    full = _seconds(lambda: decoding.greedy_without_cache(graphdef, params, inputs, lengths,
                                                          max_new_tokens=new_tokens)[0])
    tokens = 4 * new_tokens
    rows.append({"config": name, "new_tokens_per_row": new_tokens,
                 "cached_tokens_per_s": round(tokens / cached, 1),
                 "recompute_tokens_per_s": round(tokens / full, 1),
                 "speedup_x": round(full / cached, 2)})
  return rows


# ---------------------------------------------------------------------------- compile


def _compile_config(name: str, num_layers: int, scan: bool) -> ml_collections.ConfigDict:
  """Tiny config `name` at the reference shape, `num_layers` deep (each stack)."""
  c = reference_config(name)
  c.model.update(num_layers=num_layers, num_decoder_layers=0, scan_layers=scan)
  return c


def compile_seconds(config: ml_collections.ConfigDict) -> float:
  """Wall time to lower and compile the jitted train step on the local devices."""
  experiment = Experiment(config)
  start = time.perf_counter()
  experiment.compile_train_step()
  return time.perf_counter() - start


def compile_section() -> list[dict]:
  rows = []
  for name in TINY:
    for scan in (True, False) if flags.FLAGS.compile_unrolled else (True,):
      seconds = {depth: compile_seconds(_compile_config(name, depth, scan))
                 for depth in (2, 24)}
      rows.append({"family": load_config(name).model.family,
                   "layers": "scanned" if scan else "unrolled",
                   "compile_s_2_layers": round(seconds[2], 2),
                   "compile_s_24_layers": round(seconds[24], 2),
                   "ratio_24_to_2": round(seconds[24] / seconds[2], 2)})
  return rows


# ---------------------------------------------------------------------------- pipeline

PIPELINE_CONFIGS = ("gpt_tiny", "gpt_prefixlm_tiny", "bert_tiny", "t5_tiny", "t5_lm_tiny",
                    "gpt_small", "bert_base", "t5_base")


def pipeline_section() -> list[dict]:
  return [{"config": name, "objective": load_config(name).objective,
           "batch": load_config(name).train.batch_size,
           "pipeline_examples_per_s": round(_pipeline_rate(load_config(name)), 1)}
          for name in PIPELINE_CONFIGS]


def data_section() -> list[dict]:
  from tools import benchmark_data  # it builds on this module's steps and pipeline rates
  return benchmark_data.data_section()


def peers_section() -> list[dict]:
  from tools import benchmark_peers  # its workers build on this module's steps
  return benchmark_peers.peers_section(flags.FLAGS.peer_rounds, flags.FLAGS.peer_steps)


def gpu_section() -> list[dict]:
  from tools import benchmark_gpu  # its workers build on this module's steps
  return benchmark_gpu.gpu_section(flags.FLAGS.gpu_configs, flags.FLAGS.gpu_systems,
                                   flags.FLAGS.gpu_batch, flags.FLAGS.gpu_steps,
                                   flags.FLAGS.gpu_overrides)


SECTIONS = {"step": step_section, "variants": variants_section, "decode": decode_section,
            "compile": compile_section, "pipeline": pipeline_section, "data": data_section,
            "peers": peers_section, "gpu": gpu_section}


def markdown(rows: list[dict]) -> str:
  keys = list(rows[0])
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  lines += ["| " + " | ".join("" if r[k] is None else str(r[k]) for k in keys) + " |"
            for r in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  unknown = sorted(set(flags.FLAGS.sections) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown sections {unknown}; choose from {sorted(SECTIONS)}")
  results = {}
  for name in flags.FLAGS.sections:
    start = time.perf_counter()
    results[name] = SECTIONS[name]()
    platform = jax.devices()[0].platform
    host = f"; {hardware.cpu_description()}" if platform == "cpu" else ""
    print(f"\n## {name} ({platform}, {jax.device_count()} devices, "
          f"{time.perf_counter() - start:.0f} s{host})\n")
    print(markdown(results[name]), flush=True)
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(f"\npeak host memory (this process): {peak_rss / MiB:.0f} MiB")
  results["peak_host_memory_mib"] = round(peak_rss / MiB)
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so others can import this."""
  flags.DEFINE_list("sections", ["step", "variants", "decode", "compile"],
                    "Which benchmarks to run.")
  flags.DEFINE_list("configs", [], "More config files for the step section, timed at their "
                    "own batch size.")
  flags.DEFINE_integer("steps", 7, "Timed steps per measurement (after one warm-up); 3 for the "
                       "published sizes.")
  flags.DEFINE_bool("compile_unrolled", False,
                    "compile section: also unrolled layers (minutes at 24 layers).")
  flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
  flags.DEFINE_float("data_gb", 2.0, "data section: GB of JSONL to generate (and 4x that).")
  flags.DEFINE_integer("peer_rounds", 3, "peers section: rounds through every system.")
  flags.DEFINE_integer("peer_steps", 12, "peers section: timed steps per system per round.")
  flags.DEFINE_list("gpu_configs", ["gpt_small", "gpt_medium"], "gpu section: the configs.")
  flags.DEFINE_list("gpu_systems", ["triform_einsum", "triform_cudnn", "torch_compile"],
                    "gpu section: systems among triform_einsum, triform_cudnn, torch_eager, "
                    "torch_compile.")
  flags.DEFINE_integer("gpu_batch", 16, "gpu section: rows per step.")
  flags.DEFINE_string("gpu_overrides", "", "gpu section: changes to our configs, e.g. "
                      "'model.scan_layers=False,model.norm_grad_barrier=False'.")
  flags.DEFINE_integer("gpu_steps", 10, "gpu section: timed steps per system and config.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
