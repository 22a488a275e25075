"""Benchmarks measured side by side in one process, printed as Markdown tables.

  python -m tools.benchmark --sections=compile [--json=/tmp/benchmark.json]

Sections:
  compile  compile time of the full train step (forward, backward, AdamW) for
           each family at 2 and 24 layers, scanned and unrolled: with scanned
           layers it should stay flat in depth.
"""
import json
import time

import jax
import ml_collections
from absl import app, flags

from configs import common
from model import FAMILIES, model_config
from train import optim, sharding
from train import state as state_lib
from train import step as step_lib

_SECTIONS = flags.DEFINE_list("sections", ["compile"], "Which benchmarks to run.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def _config(family: str, num_layers: int, scan: bool) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.model.family = family
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
  names = FAMILIES[cfg.family].INPUTS + ("targets", "weights", "target_bytes")
  row = jax.ShapeDtypeStruct((config.train.batch_size, config.data.seq_len), "int32",
                             sharding=batch_sharding)
  batch = {name: row for name in names}
  step = step_lib.jit_train_step(state_lib.model_graphdef(cfg), tx, 0, False, shardings,
                                 batch_sharding)
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


SECTIONS = {"compile": compile_section}


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
