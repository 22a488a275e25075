"""The benchmark's `gpu` section: our train step in bf16 on an NVIDIA GPU next to HF
transformers' PyTorch GPT-2, in one run on one machine.

  python -m tools.benchmark --sections=gpu [--gpu_configs=gpt_small,gpt_medium
      --gpu_batch=16 --gpu_steps=10]

Each config (GPT-2 small, 124M, and medium, 355M: rows of 1024 random token ids, no dropout,
AdamW with gradient clipping) trains as
  - ours: bf16 compute, fp32 parameters and AdamW moments, attention as plain einsums or
    through cuDNN's fused kernel (`model.attention=cudnn`, told the mask is causal);
  - `GPT2LMHeadModel` of the same shape with `attn_implementation="sdpa"`: fp32 weights under
    bf16 autocast, fused AdamW, under `torch.compile` (and eager: --gpu_systems).
Each system runs in its own process, one after another (JAX and PyTorch each take the GPU's
memory their own way): build, WARMUP steps (the compiles), then --gpu_steps steps, each timed
to its end; the median. One FLOP formula for all (the model's own count, model/build.py);
MFU against the chip's published dense bf16 peak (train/hardware.py). A system that fails
(a kernel this GPU or library lacks) gets a row with its error instead of figures.
"""
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 3
# key -> (label, framework, attention for ours / how PyTorch runs the peer)
SYSTEMS = {
    "triform_einsum": ("triform, einsum attention", "triform", "einsum"),
    "triform_cudnn": ("triform, cuDNN attention", "triform", "cudnn"),
    "torch_eager": ("HF GPT-2, PyTorch eager, SDPA", "torch", "eager"),
    "torch_compile": ("HF GPT-2, torch.compile, SDPA", "torch", "compiled"),
}


def gpu_config(name: str, batch: int, attention: str, overrides: str = ""):
  """Config `name` at `batch` rows in bf16 compute over fp32 parameters, with `attention`
  and `overrides` ("model.scan_layers=False,..."; values as Python literals)."""
  from tools import benchmark
  config = benchmark.load_config(name)
  config.train.batch_size = batch
  config.model.update(dtype="bfloat16", param_dtype="float32", attention=attention)
  for override in filter(None, overrides.split(",")):
    path, value = override.split("=")
    section, field = path.split(".")
    config[section][field] = ast.literal_eval(value)
  return config


def _triform(name: str, attention: str, batch: int, steps: int, overrides: str) -> dict:
  import jax
  from tools import benchmark
  from train.experiment import Experiment
  config = gpu_config(name, batch, attention, overrides)
  timed = benchmark.compile_step(config, benchmark.synthetic_batch(config))
  for _ in range(WARMUP - 1):  # compile_step ran the first
    timed.run()
  seconds = [timed.run() for _ in range(steps)]
  memory = jax.devices()[0].memory_stats() or {}
  return {"step_s": statistics.median(seconds), "first_loss": timed.loss,
          # Every system's FLOPs are the default config's (causal blocks skip the same
          # masked scores flash attention skips), so MFU compares work done per second.
          "compile_s": timed.compile_seconds,
          "flops": Experiment(gpu_config(name, batch, "einsum")).flops_per_step,
          "rows": batch, "length": config.data.seq_len, "device": jax.devices()[0].device_kind,
          "peak_memory_gib": memory.get("peak_bytes_in_use", 0) / 2**30}


def _torch(name: str, how: str, batch: int, steps: int, overrides: str) -> dict:
  del overrides  # ours only
  import torch
  import transformers
  from train.experiment import Experiment
  config = gpu_config(name, batch, "einsum")  # the same shapes, for the FLOP count
  m, device = config.model, "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=config.data.vocab_size, n_positions=m.max_length, n_embd=m.embed_dim,
      n_layer=m.num_layers, n_head=m.num_heads, n_inner=m.mlp_dim, resid_pdrop=0.0,
      embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")).to(device).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.learning_rate,
                                betas=(0.9, 0.95), weight_decay=0.1, fused=device == "cuda")
  forward = torch.compile(model) if how == "compiled" else model
  ids = torch.randint(10, config.data.vocab_size, (batch, config.data.seq_len), device=device)

  def step():
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = forward(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())  # waits for the step

  start = time.perf_counter()
  first_loss = step()
  for _ in range(WARMUP - 1):
    step()
  warmup = time.perf_counter() - start
  seconds = []
  for _ in range(steps):
    begin = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - begin)
  cuda = device == "cuda"
  return {"step_s": statistics.median(seconds), "first_loss": first_loss, "compile_s": warmup,
          "flops": Experiment(config).flops_per_step, "rows": batch,
          "length": config.data.seq_len,
          "device": torch.cuda.get_device_name() if cuda else "cpu",
          "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
          "attention": model.config._attn_implementation}


def worker(system: str, name: str, batch: int, steps: int, overrides: str) -> None:
  """Runs one system on one config; answers on stdout in a line starting with 'GPU '."""
  _, framework, how = SYSTEMS[system]
  run = _triform if framework == "triform" else _torch
  print("GPU " + json.dumps(run(name, how, batch, steps, overrides)), flush=True)


def _run_worker(system: str, name: str, batch: int, steps: int, overrides: str) -> dict:
  env = dict(os.environ)
  if SYSTEMS[system][1] == "torch":  # its FLOP count must not take the GPU for JAX
    env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-m", "tools.benchmark_gpu", system, name, str(batch),
                         str(steps), overrides], cwd=ROOT, env=env, text=True,
                        capture_output=True, check=False)
  answers = [line for line in proc.stdout.splitlines() if line.startswith("GPU ")]
  if proc.returncode or not answers:
    # The exception's own line: the last that names an error, else the last line.
    lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["no output"]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b", line)]
    return {"error": (errors or lines)[-1][:300]}
  return json.loads(answers[-1][len("GPU "):])


def gpu_section(configs, systems, batch: int, steps: int, overrides: str = "") -> list[dict]:
  """One row per config and system: median step time, tokens/s, MFU, warm-up (compile) time,
  peak GPU memory, and tokens/s against the fastest PyTorch peer of the same config."""
  from train import hardware
  rows = []
  for name in configs:
    for system in systems:
      result = _run_worker(system, name, batch, steps, overrides)
      print(f"{name}, {system}: {result}", file=sys.stderr, flush=True)
      row = {"config": name, "system": SYSTEMS[system][0], "step_s": None,
             "tokens_per_s": None, "gflops_per_step": None, "mfu": None, "first_loss": None,
             "warmup_s": None, "peak_memory_gib": None, "vs_fastest_peer": None,
             "error": result.get("error")}
      if "step_s" in result:
        seconds, peak = result["step_s"], hardware.published_peak(result["device"])
        row.update(step_s=round(seconds, 4),
                   tokens_per_s=round(result["rows"] * result["length"] / seconds),
                   gflops_per_step=round(result["flops"] / 1e9, 1),
                   mfu=peak and round(result["flops"] / seconds / peak, 3),
                   first_loss=round(result["first_loss"], 3),
                   warmup_s=round(result["compile_s"], 1),
                   peak_memory_gib=round(result["peak_memory_gib"], 1))
      rows.append(row)
    ours = lambda row: row["system"].startswith("triform")
    peers = [r["tokens_per_s"] for r in rows
             if r["config"] == name and r["tokens_per_s"] and not ours(r)]
    for row in rows:
      if row["config"] == name and row["tokens_per_s"] and peers and ours(row):
        row["vs_fastest_peer"] = f"{row['tokens_per_s'] / max(peers):.2f}x"
  return rows


if __name__ == "__main__":
  worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
