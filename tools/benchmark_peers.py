"""The benchmark's `peers` section: our train step next to what users would otherwise run,
measured side by side in one run on one machine.

  python -m tools.benchmark --sections=peers [--peer_rounds=3 --peer_steps=12]

Every system trains at the reference shape (vocab 8192, width 256, 4 layers (T5: 4 + 4),
4 heads of 64, MLP 1024, length 256 (every T5: 256 in, and the target length our span
corruption gives them), batch 8, fp32, AdamW with gradient clipping, no dropout, random
tokens): our jitted step for each family, HF transformers' PyTorch GPT-2, BERT (masked LM,
15% of positions) and T5, each eager and under `torch.compile`, and a plain PyTorch GPT
written here with `scaled_dot_product_attention`.

Each system runs in its own worker process, so its peak RSS is its own; the rows also give
its resident memory once its framework is imported (the runtime's share) and, for ours, the
compiled step's buffers (arguments, outputs and temporaries, from XLA's memory analysis). A
worker builds its model, runs 3 warm-up steps (the compile, for the jitted and compiled ones)
and waits; then the rounds go through every system in turn, each timing --peer_steps steps,
so the machine's load weighs on all alike. Tokens/s count the rows' tokens (T5: its 256 input
tokens). One FLOP formula serves all (model/build.py's train_flops_per_row, with each system's
own lengths and the positions its output head projects: HF's BERT projects every position,
ours the masked ones), so GFLOP/s compares work done per second where the shapes differ. Our
rows also show the step's matmul floor (tools/matmul_floor.py: its products, each timed alone
in the worker after the rounds and after its peak RSS is read, summed) and how far the step
is above it, and the same products timed in PyTorch (torch.einsum, in the same worker):
the floor our step would have with PyTorch's kernels, set beside the PyTorch peers' whole
steps. Every row ends with an fp32 2048 x 2048 matmul in the system's own framework
(XLA's or torch's), timed last, and the section's header names the CPU: our development
machine has run on hosts whose vector units differ in width, which moved XLA:CPU's products
by 2x and PyTorch's steps far less (docs/performance.md).

Each system runs in the environment its users' runs get: ours as train/main.py restarts
itself (glibc told to use huge pages, train/host_memory.py), PyTorch's in the environment the
benchmark was started in.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from train import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, WIDTH, LAYERS, HEADS, MLP, LENGTH, BATCH = 8192, 256, 4, 4, 1024, 256, 8
MLM_RATE = 0.15
WARMUP = 3
# What our tiny configs change from the peers' architectures, set back to theirs here:
# HF's GPT-2 and BERT learn position tables (gpt_tiny and bert_tiny use rotary ones).
SAME_AS_PEERS = {"gpt": {"position": "learned"}, "bert": {"position": "learned"}, "t5": {}}
# label -> (kind, model): kind "triform", "eager", "compiled" or "plain".
SYSTEMS = {
    "triform GPT": ("triform", "gpt"),
    "HF GPT-2, PyTorch eager": ("eager", "gpt"),
    "HF GPT-2, torch.compile": ("compiled", "gpt"),
    "plain PyTorch GPT, eager": ("plain", "gpt"),
    "triform BERT (MLM)": ("triform", "bert"),
    "HF BERT (MLM), PyTorch eager": ("eager", "bert"),
    "HF BERT (MLM), torch.compile": ("compiled", "bert"),
    "triform T5": ("triform", "t5"),
    "HF T5, PyTorch eager": ("eager", "t5"),
    "HF T5, torch.compile": ("compiled", "t5"),
}


# ---------------------------------------------------------------------------- workers


def _resident_mib() -> float | None:
  """This process's resident memory now (Linux), in MiB."""
  try:
    with open("/proc/self/status", encoding="utf-8") as status:
      return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))
  except OSError:
    return None


def _import_framework(kind: str) -> None:
  """What the system's step needs imported (its runtime's share of the memory)."""
  if kind == "triform":
    from tools import benchmark, matmul_floor  # noqa: F401
    from train.experiment import Experiment  # noqa: F401
  else:
    import torch  # noqa: F401
    import transformers  # noqa: F401


def _triform_worker(model: str):
  """(one-step function returning the loss, lengths (decoder or encoder row, encoder row of
  an encoder-decoder), scored positions per row, a function measuring the step's matmul
  floor in seconds (XLA's kernels, then PyTorch's), the compiled step's buffers in bytes)."""
  from tools import benchmark, matmul_floor
  from train.experiment import Experiment
  config = benchmark.for_this_machine(benchmark.reference_config(f"{model}_tiny"))
  config.model.update(SAME_AS_PEERS[model])
  timed = benchmark.compile_step(config, benchmark.synthetic_batch(config))
  experiment = Experiment(config)

  def floor():
    import torch
    torch.set_num_threads(os.cpu_count())  # as the PyTorch workers run
    return [matmul_floor.floor_seconds(experiment.jit_train_step(), timed.state, timed.batch,
                                       timer=timer)
            for timer in (matmul_floor.time_product, matmul_floor.time_product_in_torch)]

  def step():
    timed.run()
    return timed.loss
  return step, experiment.task.lengths, experiment.task.max_scored, floor, timed.memory_bytes


def _hf_model(model: str):
  import transformers
  if model == "gpt":
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
        n_inner=MLP, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
  if model == "bert":
    return transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=MLP, max_position_embeddings=LENGTH, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0))
  return transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=VOCAB, d_model=WIDTH, d_kv=WIDTH // HEADS, d_ff=MLP, num_layers=LAYERS,
      num_decoder_layers=LAYERS, num_heads=HEADS, dropout_rate=0.0, pad_token_id=0,
      decoder_start_token_id=0))


def _plain_gpt():
  """A GPT in plain PyTorch: pre-norm blocks, fused QKV, SDPA causal attention, tied head."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
      self.qkv, self.out = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
      self.mlp = nn.Sequential(nn.Linear(WIDTH, MLP), nn.GELU(approximate="tanh"),
                               nn.Linear(MLP, WIDTH))

    def forward(self, x):
      # x: [B, T, D]
      b, t, d = x.shape
      # [B, T, 3 D] -> 3 x [B, N, T, H]
      q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
      attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
      x = x + self.out(attended.transpose(1, 2).reshape(b, t, d))
      return x + self.mlp(self.norm2(x))

  class Gpt(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed, self.positions = nn.Embedding(VOCAB, WIDTH), nn.Embedding(LENGTH, WIDTH)
      for table in (self.embed.weight, self.positions.weight):  # GPT-2's scale, not N(0, 1)
        nn.init.normal_(table, std=0.02)
      self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
      self.norm = nn.LayerNorm(WIDTH)

    def forward(self, input_ids, labels):
      # input_ids, labels: [B, T]
      x = self.embed(input_ids) + self.positions(torch.arange(input_ids.shape[1]))
      for block in self.blocks:
        x = block(x)
      # [B, T, V]
      logits = self.norm(x) @ self.embed.weight.T
      loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
      return type("Output", (), {"loss": loss})

  return Gpt()


def t5_lengths() -> tuple[int, int]:
  """(targets, inputs) of our span corruption at the reference shape; the peers' T5 takes
  the same lengths, so every system computes the same tokens."""
  from tools import benchmark
  from train import objectives
  return objectives.make(benchmark.reference_config("t5_tiny")).lengths


def _torch_batch(model: str) -> dict:
  import torch
  rng = np.random.default_rng(0)
  ids = lambda *shape: torch.from_numpy(rng.integers(10, VOCAB, shape))
  inputs = ids(BATCH, LENGTH)
  if model == "gpt":
    return {"input_ids": inputs, "labels": inputs}
  if model == "bert":
    selected = torch.from_numpy(rng.random((BATCH, LENGTH)) < MLM_RATE)
    return {"input_ids": torch.where(selected, 4, inputs),
            "labels": torch.where(selected, inputs, -100)}
  return {"input_ids": inputs, "labels": ids(BATCH, t5_lengths()[0])}


def torch_worker(kind: str, model: str):
  """As _triform_worker, for a PyTorch model: forward, backward, clip, AdamW."""
  import torch
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  module = _plain_gpt() if kind == "plain" else _hf_model(model)
  module.train()
  optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, betas=(0.9, 0.95),
                                weight_decay=0.1)
  forward = torch.compile(module) if kind == "compiled" else module
  batch = _torch_batch(model)

  def step():
    loss = forward(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())  # waits for the step
  # Every position goes through the output head (HF's BERT projects them all).
  return step, t5_lengths() if model == "t5" else (LENGTH, 0), 0, None, None


def _flops_per_step(model: str, lengths, scored: int) -> float:
  from model import model_config
  from model.build import train_flops_per_row
  from tools import benchmark
  cfg = model_config(benchmark.reference_config(f"{model}_tiny"))
  return BATCH * train_flops_per_row(cfg, lengths[0], lengths[1], scored)


def worker(label: str) -> None:
  """Builds `label`'s step, warms it up, then times the steps each stdin line asks for;
  answers on stdout in lines starting with 'PEER '."""
  kind, model = SYSTEMS[label]
  start = time.perf_counter()
  _import_framework(kind)
  runtime_mib = _resident_mib()
  step, lengths, scored, floor, buffers = (_triform_worker(model) if kind == "triform"
                                           else torch_worker(kind, model))
  losses = [step() for _ in range(WARMUP)]
  ready = {"setup_s": time.perf_counter() - start, "loss": losses[0],
           "flops": _flops_per_step(model, lengths, scored), "lengths": list(lengths),
           "runtime_mib": runtime_mib, "step_buffers_mib": buffers and buffers / 2**20}
  print("PEER " + json.dumps(ready), flush=True)
  for line in sys.stdin:
    seconds = []
    for _ in range(int(line)):
      begin = time.perf_counter()
      step()
      seconds.append(time.perf_counter() - begin)
    print("PEER " + json.dumps(seconds), flush=True)
  # The peak before the floor, whose compiles and buffers are the benchmark's, not the step's.
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print("PEER " + json.dumps({"peak_rss_mib": peak_mib, "matmul_floors_s": floor and floor(),
                              "matmul_peak_flops": framework_matmul_peak(kind)}), flush=True)


def framework_matmul_peak(kind: str, size: int = 2048) -> float:
  """FLOP/s of an fp32 [size, size] matmul in the system's framework: XLA's (jitted) for
  ours, torch's for the others. Their ratio says how far the products alone set the race.
  Called last: train.hardware imports JAX, which a PyTorch worker has not loaded before."""
  from train import hardware
  if kind == "triform":
    return hardware.measured_matmul_peak(size)
  import torch
  a = torch.ones(size, size)
  return 2 * size**3 / hardware.shortest_seconds(lambda: a @ a, repeats=5)


# ---------------------------------------------------------------------------- the section


def _answer(proc) -> object:
  for line in proc.stdout:
    if line.startswith("PEER "):
      return json.loads(line[len("PEER "):])
  raise RuntimeError(f"peer worker failed: {proc.stderr.read()[-3000:]}")


def peers_section(rounds: int, steps: int) -> list[dict]:
  """One row per system: median step time, tokens/s, GFLOP/s, warm-up time, peak RSS; and
  for ours, the ratio to the fastest peer of its family."""
  workers, ready = {}, {}
  for label in SYSTEMS:  # one at a time, so no warm-up competes with another
    environ = (host_memory.with_huge_pages(os.environ) if SYSTEMS[label][0] == "triform"
               else host_memory.users_environ(os.environ))
    workers[label] = subprocess.Popen(
        [sys.executable, "-m", "tools.benchmark_peers", label], cwd=ROOT, env=environ,
        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready[label] = _answer(workers[label])
    print(f"{label}: ready {ready[label]}", file=sys.stderr, flush=True)
  times = {label: [] for label in SYSTEMS}
  for _ in range(rounds):
    for label, proc in workers.items():
      proc.stdin.write(f"{steps}\n")
      proc.stdin.flush()
      times[label] += _answer(proc)
  rows = []
  for label, proc in workers.items():
    proc.stdin.close()
    last = _answer(proc)
    if proc.wait():
      raise RuntimeError(f"{label}: worker failed: {proc.stderr.read()[-3000:]}")
    seconds = statistics.median(times[label])
    rows.append({"system": label, "step_s": round(seconds, 4),
                 "tokens_per_s": round(BATCH * LENGTH / seconds),
                 "gflop_per_s": round(ready[label]["flops"] / seconds / 1e9, 1),
                 "lengths": "+".join(str(n) for n in ready[label]["lengths"] if n),
                 "warmup_s": round(ready[label]["setup_s"], 1),
                 "runtime_rss_mib": ready[label]["runtime_mib"] and round(
                     ready[label]["runtime_mib"]),
                 "step_buffers_mib": ready[label]["step_buffers_mib"] and round(
                     ready[label]["step_buffers_mib"]),
                 "peak_rss_mib": round(last["peak_rss_mib"]),
                 "matmul_peak_gflop_per_s": round(last["matmul_peak_flops"] / 1e9),
                 "matmul_floor_s": None, "vs_floor": None, "matmul_floor_torch_s": None,
                 "vs_fastest_peer": None})
    if last["matmul_floors_s"]:
      floor, floor_in_torch = last["matmul_floors_s"]
      rows[-1].update(matmul_floor_s=round(floor, 4), vs_floor=f"{seconds / floor:.2f}x",
                      matmul_floor_torch_s=round(floor_in_torch, 4))
  for row in rows:
    kind, model = SYSTEMS[row["system"]]
    if kind == "triform":
      fastest = max(r["tokens_per_s"] for r in rows
                    if SYSTEMS[r["system"]] != (kind, model) and SYSTEMS[r["system"]][1] == model)
      row["vs_fastest_peer"] = f"{row['tokens_per_s'] / fastest:.2f}x"
  return rows


if __name__ == "__main__":
  worker(sys.argv[1])
