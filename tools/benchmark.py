"""Benchmarks measured side by side in one process, printed as Markdown tables.

  python -m tools.benchmark --sections=compile [--json=/tmp/benchmark.json]

Sections:
  compile   compile time of the full train step (forward, backward, AdamW) for
            each family at 2 and 24 layers, scanned and unrolled: with scanned
            layers it should stay flat in depth.
  pipeline  examples/s of the input pipeline (one host, its configured read
            threads) against examples/s the train step consumes on this
            machine, for each objective at the tiny and published sizes (on the
            built-in corpus and its 4096-id tokenizer).
  step      the train step at one shape for every family (vocab 8192, width 256,
            4 layers (T5: 4 + 4), 4 heads, MLP 1024, length 256 (T5: 256 in, 64
            out), batch 8, fp32, AdamW): median step time, tokens/s, model FLOPs
            per step and MFU against a jitted fp32 matmul measured in this process.
  decode    generated tokens/s with the key/value cache and by recomputing the
            whole sequence per token (greedy, batch 4, 32-token prompts), for the
            decoder and the encoder-decoder at tiny and published sizes.
"""
import importlib
import itertools
import json
import statistics
import time

import jax
import ml_collections
from absl import app, flags

from configs import common
from model import FAMILIES, model_config
from train import corpus, input_pipeline, objectives, optim, sharding, tokenizer
from train import state as state_lib
from train import step as step_lib
from tools import aot_compile

_SECTIONS = flags.DEFINE_list("sections", ["compile"], "Which benchmarks to run.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def _config(family: str, num_layers: int, scan: bool) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.model.family = family
  c.objective = {"encoder": "mlm", "decoder": "causal_lm", "lstm": "causal_lm",
                 "encoder_decoder": "span_corruption"}[family]
  c.model.num_layers, c.model.scan_layers = num_layers, scan
  c.model.embed_dim, c.model.num_heads, c.model.head_dim, c.model.mlp_dim = 256, 4, 64, 1024
  if family == "encoder_decoder":
    c.model.position = "relative"
  c.data.vocab_size, c.data.seq_len, c.train.batch_size = 8192, 256, 8
  return c


def compile_seconds(config: ml_collections.ConfigDict) -> float:
  """Wall time to lower and compile the jitted train step on the local devices."""
  cfg = model_config(config)
  mesh = sharding.make_mesh(config.mesh)
  rules = config.sharding.rules
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  abstract, shardings = state_lib.state_shardings(cfg, tx, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  batch = aot_compile.abstract_batch(config, batch_sharding)
  step = step_lib.jit_train_step(state_lib.model_graphdef(cfg), tx, 0, False, shardings,
                                 batch_sharding, rules=rules)
  start = time.perf_counter()
  step.lower(abstract, batch).compile()
  return time.perf_counter() - start


def compile_section() -> list[dict]:
  rows = []
  for family in FAMILIES:
    for scan in (True, False):
      seconds = {depth: compile_seconds(_config(family, depth, scan)) for depth in (2, 24)}
      rows.append({"family": family, "layers": "scanned" if scan else "unrolled",
                   "compile_s_2_layers": round(seconds[2], 2),
                   "compile_s_24_layers": round(seconds[24], 2),
                   "ratio_24_to_2": round(seconds[24] / seconds[2], 2)})
  return rows


def _train_documents(config: ml_collections.ConfigDict):
  data_corpus = corpus.resolve(config.data.source, config.data.validation_percent)
  return corpus.build(data_corpus, config.data.data_dir).as_data_source("train")


def pipeline_examples_per_second(config, tok, documents, num_batches: int = 40) -> float:
  """Examples/s one host's pipeline yields, after a warm-up of 5 batches."""
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


def train_step_seconds(config: ml_collections.ConfigDict, batch: dict, steps: int) -> float:
  """Median wall time of the compiled train step on `batch`, after one warm-up step."""
  cfg = model_config(config)
  mesh = sharding.make_mesh(config.mesh)
  rules = config.sharding.rules
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  _, shardings = state_lib.state_shardings(cfg, tx, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  state = state_lib.create_state(cfg, tx, 0, shardings)
  step = step_lib.jit_train_step(state_lib.model_graphdef(cfg), tx, 0, False, shardings,
                                 batch_sharding, rules=rules)
  batch = sharding.to_global(batch, batch_sharding)
  times = []
  for _ in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times[1:])


# (config file, rows per timed step): published sizes are timed on 2 rows, as one CPU
# step of their full batch would take minutes.
PIPELINE_CONFIGS = (("gpt_tiny", 32), ("gpt_prefixlm_tiny", 32), ("bert_tiny", 32),
                    ("t5_tiny", 32), ("t5_lm_tiny", 32), ("gpt_small", 2), ("bert_base", 2),
                    ("t5_base", 2))


def pipeline_section() -> list[dict]:
  rows = []
  for name, step_rows in PIPELINE_CONFIGS:
    config = importlib.import_module(f"configs.{name}").get_config()
    config.data.vocab_size = 4096
    tok, _ = tokenizer.load_tokenizer(config)
    documents = _train_documents(config)
    pipeline_rate = pipeline_examples_per_second(config, tok, documents)
    config.train.batch_size = step_rows
    batch = next(iter(input_pipeline.make_dataset(
        documents, tok, objective=objectives.make(config, tok), batch_size=step_rows, seed=0,
        train=True)))
    step_rate = step_rows / train_step_seconds(config, batch, steps=3)
    rows.append({"config": name, "objective": config.objective,
                 "pipeline_examples_per_s": round(pipeline_rate, 1),
                 "step_examples_per_s": round(step_rate, 2),
                 "pipeline_ahead_x": round(pipeline_rate / step_rate, 1)})
  return rows


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
    config = importlib.import_module(f"configs.{name}").get_config()
    config.model.dtype = "float32"
    cfg = model_config(config)
    graphdef, params = nnx.split(build_model(cfg, 0), nnx.Param)
    inputs = jax.random.randint(jax.random.key(0), (4, 32), 5, 1000)
    lengths = jax.numpy.full((4,), 32)
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


STEP_SHAPE = dict(embed_dim=256, num_heads=4, head_dim=64, mlp_dim=1024, num_layers=4)
STEP_FAMILIES = (("gpt_tiny", 256), ("bert_tiny", 256), ("t5_tiny", 256))


def step_section() -> list[dict]:
  from model import train_flops_per_row
  from train import hardware
  peak = hardware.measured_matmul_peak()
  rows = []
  for name, seq_len in STEP_FAMILIES:
    config = importlib.import_module(f"configs.{name}").get_config()
    config.model.update(STEP_SHAPE)
    config.model.max_length = seq_len
    config.data.vocab_size, config.data.seq_len, config.train.batch_size = 8192, seq_len, 8
    cfg = model_config(config)
    objective = objectives.make(config)
    lengths = ((objective.targets_length, seq_len) if cfg.family == "encoder_decoder"
               else (seq_len, 0))
    batch = _synthetic_batch(config, objective)
    seconds = train_step_seconds(config, batch, steps=5)
    flops = config.train.batch_size * train_flops_per_row(cfg, *lengths)
    tokens = config.train.batch_size * sum(lengths)
    rows.append({"config": name, "objective": config.objective,
                 "step_s": round(seconds, 4), "tokens_per_s": round(tokens / seconds),
                 "gflops_per_step": round(flops / 1e9, 2),
                 "mfu_vs_matmul_peak": round(flops / seconds / peak, 3),
                 "matmul_peak_gflops": round(peak / 1e9, 1)})
  return rows


def _synthetic_batch(config, objective) -> dict:
  """A batch of the objective over random text ids, one document per row."""
  import numpy as np
  from train import noise
  rng = np.random.default_rng(0)
  examples = []
  for i in range(config.train.batch_size):
    length = objective.raw_length
    row = {"targets": rng.integers(objectives.FIRST_TEXT_ID, 4000, length).astype(np.int32),
           "targets_segment_ids": np.ones(length, np.int32),
           "targets_positions": np.arange(length, dtype=np.int32)}
    example = objective(row, noise.example_rng(0, i))
    example["target_bytes"] = (example["weights"] > 0).astype(np.int32) * 3
    examples.append(example)
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


SECTIONS = {"compile": compile_section, "pipeline": pipeline_section, "step": step_section,
            "decode": decode_section}


def markdown(rows: list[dict]) -> str:
  keys = list(rows[0])
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown sections {unknown}; choose from {sorted(SECTIONS)}")
  results = {}
  for name in _SECTIONS.value:
    results[name] = SECTIONS[name]()
    print(f"\n## {name} ({jax.devices()[0].platform}, {jax.device_count()} devices)\n")
    print(markdown(results[name]))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
