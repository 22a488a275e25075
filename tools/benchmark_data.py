"""The benchmark's `data` section: preparing and reading a large JSONL corpus.

  python -m tools.benchmark --sections=data [--data_gb=2]

Writes a JSONL corpus of --data_gb GB (and one 4x as large) on this machine from the
built-in corpus's files (nothing downloaded), then measures:
  - `tools.prepare_data` throughput in MB/s of JSONL read, with 1 and 2 worker processes,
    and the peak RSS of its process tree;
  - the input pipeline's rows/s over the prepared shards for gpt_small next to the rows/s
    gpt_small's train step consumes on this machine;
  - the peak RSS of `train.main` (gpt_tiny, a few steps) on the 1x and 4x corpora: what grows
    with the corpus, if anything.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl import flags
import ml_collections

from tools import benchmark
from train import corpus
from train import data as data_lib

MB = 1e6
SHARDS_PER_X = 8  # JSONL files per 1x corpus: work for the workers to share
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(directory: str, total_bytes: int, shards: int) -> int:
  """`shards` JSONL files of the built-in corpus's documents, repeated (with a copy number)
  until they hold `total_bytes`; returns the bytes written."""
  os.makedirs(directory, exist_ok=True)
  builtin = corpus.resolve(corpus.BUILTIN, 5)
  texts = [t for t in (corpus.read_document(os.path.join(builtin.root, p))
                       for p in builtin.paths) if t and t.strip()]
  written, copy, i = 0, 0, 0
  for shard in range(shards):
    with open(os.path.join(directory, f"part-{shard:05d}.jsonl"), "w", encoding="utf-8") as f:
      while written < total_bytes * (shard + 1) / shards:
        line = json.dumps({"text": texts[i], "copy": copy}) + "\n"
        f.write(line)
        written += len(line.encode("utf-8"))
        i += 1
        if i == len(texts):
          i, copy = 0, copy + 1
  return written


def _run_measured(command: list[str]) -> tuple[float, int]:
  """(wall seconds, peak RSS in bytes of the process and the children it waited for)."""
  start = time.perf_counter()
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.perf_counter() - start
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode()[-2000:]}")
  return seconds, usage.ru_maxrss * 1024


def _prepare(jsonl_dir: str, out_dir: str, workers: int) -> tuple[float, int]:
  return _run_measured([sys.executable, "-m", "tools.prepare_data",
                        f"--input=jsonl:{jsonl_dir}/*.jsonl", f"--output={out_dir}",
                        f"--workers={workers}", "--validation_percent=1"])


def _train_rss(prepared: str, data_dir: str, workdir: str, steps: int = 20) -> int:
  """Peak RSS in bytes of `train.main` (gpt_tiny) through its first `steps` train steps: it is
  stopped there by SIGTERM (a preemption: it saves and exits 75), before the final evaluation
  over the whole validation split, which would take longer than the training here."""
  proc = subprocess.Popen([
      sys.executable, "-m", "train.main", "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
      f"--config.data.source=prepared:{prepared}", f"--config.data.data_dir={data_dir}",
      "--config.train.num_steps=100000", f"--config.train.log_every={steps}",
      "--config.train.eval_every=100000", "--config.train.eval_batches=5",
      "--config.train.checkpoint_every=100000", "--config.sample.num_prompts=0"],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  tail = []
  for line in proc.stderr:
    tail = (tail + [line])[-40:]
    if f"step {steps}/" in line:
      proc.send_signal(signal.SIGTERM)
  _, status, usage = os.wait4(proc.pid, 0)
  if os.waitstatus_to_exitcode(status) != 75:
    raise RuntimeError(f"train.main on {prepared} failed: {''.join(tail)}")
  return usage.ru_maxrss * 1024


def data_section() -> list[dict]:
  size = int(flags.FLAGS.data_gb * 1e9)
  rows = []
  with tempfile.TemporaryDirectory(prefix="triform_bench_data_") as tmp:
    sizes = {x: write_jsonl(os.path.join(tmp, f"jsonl_{x}x"), x * size, x * SHARDS_PER_X)
             for x in (1, 4)}
    for workers in (1, 2):
      seconds, rss = _prepare(os.path.join(tmp, "jsonl_1x"),
                              os.path.join(tmp, f"prepared_1x_w{workers}"), workers)
      rows.append({"measure": f"prepare_data, {workers} worker(s), {sizes[1] / MB:.0f} MB JSONL",
                   "value": f"{sizes[1] / MB / seconds:.1f} MB/s",
                   "peak_rss_mib": round(rss / benchmark.MiB)})
      print(rows[-1], file=sys.stderr, flush=True)
    _prepare(os.path.join(tmp, "jsonl_4x"), os.path.join(tmp, "prepared_4x"), 2)
    for x in (1, 4):
      rss = _train_rss(os.path.join(tmp, "prepared_1x_w1" if x == 1 else "prepared_4x"),
                       os.path.join(tmp, "cache"), os.path.join(tmp, f"run_{x}x"))
      rows.append({"measure": f"train.main gpt_tiny 20 steps on the {x}x corpus "
                              f"({sizes[x] / MB:.0f} MB JSONL)",
                   "value": "", "peak_rss_mib": round(rss / benchmark.MiB)})
      print(rows[-1], file=sys.stderr, flush=True)

    # The pipeline with a 4096-id tokenizer trained on the corpus (the rate does not depend
    # on the vocabulary, and the generated corpus is too small for 50,257 trained pieces).
    config = benchmark.small_config("gpt_small")
    pipeline_config = ml_collections.ConfigDict(config.to_dict())
    pipeline_config.data.source = f"prepared:{os.path.join(tmp, 'prepared_1x_w1')}"
    pipeline_config.data.data_dir = os.path.join(tmp, "cache")
    pipeline_config.data.vocab_size = 4096
    loaded = data_lib.load(pipeline_config)
    pipeline = benchmark.pipeline_examples_per_second(pipeline_config, loaded.tokenizer,
                                                      loaded.documents("train"))
    print(f"pipeline: {pipeline:.0f} rows/s", file=sys.stderr, flush=True)
    peak, _ = benchmark.hardware.peak_flops_per_device()
    step = benchmark.step_row("gpt_small", config, peak, pipeline=False, steps=3)
    consumed = config.train.batch_size / step["step_s"]
    rows.append({"measure": f"input pipeline rows/s, gpt_small ({config.train.batch_size}x"
                            f"{config.data.seq_len}), prepared 1x",
                 "value": f"{pipeline:.0f} rows/s vs {consumed:.2f} rows/s the step consumes",
                 "peak_rss_mib": None})
  return rows
