"""tools/benchmark and tools/profile_step: their pieces on shrunk models (timings are never
asserted: the machine is shared)."""
import os
import subprocess
import sys

import pytest

from tools import benchmark, benchmark_peers, profile_step
from train import hardware, objectives
from train.experiment import Experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHRUNK = dict(benchmark.REFERENCE_SHAPE, embed_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
              num_layers=2)


@pytest.fixture(name="shrunk")
def _shrunk(monkeypatch):
  monkeypatch.setattr(benchmark, "REFERENCE_SHAPE", SHRUNK)


@pytest.mark.parametrize("variant", benchmark.VARIANTS, ids=lambda v: f"{v.what}-{v.config}")
def test_every_variant_is_a_valid_config_on_both_sides(variant):
  for change in (variant.on, variant.off):
    config = benchmark.reference_config(variant.config)
    if change:
      change(config)
    Experiment(config)  # checks the model, objective and task settings


@pytest.mark.parametrize("family", ["gpt_tiny", "bert_tiny", "t5_tiny", "lstm_tiny"])
def test_synthetic_batches_have_the_objectives_shapes(family):
  config = benchmark.reference_config(family)
  batch = benchmark.synthetic_batch(config)
  length = objectives.make(config).lengths[0]
  assert batch["targets"].shape == (8, length) and batch["weights"].sum() > 0
  assert benchmark.lengths(config)[0] == length


@pytest.fixture(scope="module")
def compiled_on() -> dict:
  """config (as JSON) -> its compiled step on its synthetic batch: cases whose "on" side is
  the same config (gpt_tiny as it is, for two of those below) compile it once."""
  return {}


@pytest.mark.parametrize("what", ["accuracy from the loss's max (off: separate argmax)",
                                  "masked LM projects only its selected positions",
                                  "einsum attention (off: jax.nn.dot_product_attention)"])
def test_optimisations_leave_the_loss_unchanged(shrunk, compiled_on, what):
  """On and off compute the same first-step loss (fp32: within 1e-5 relative)."""
  variant = next(v for v in benchmark.VARIANTS if v.what == what)
  on = benchmark.for_this_machine(benchmark.reference_config(variant.config))
  off = benchmark.for_this_machine(benchmark.reference_config(variant.config))
  if variant.off:
    variant.off(off)
  batch = benchmark.synthetic_batch(on)
  if on.to_json() not in compiled_on:
    compiled_on[on.to_json()] = benchmark.compile_step(on, batch)
  steps = {"on": compiled_on[on.to_json()], "off": benchmark.compile_step(off, batch)}
  assert steps["on"].loss == pytest.approx(steps["off"].loss, rel=1e-5)
  seconds = benchmark.time_in_turns(steps, rounds=2)
  assert set(seconds) == {"on", "off"} and min(seconds.values()) > 0


def test_profile_step_accounts_for_the_step_by_kind(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "tools.profile_step", "--config=bert_tiny", "--noreference_shape",
       "--batch_size=2", "--steps=1", f"--trace_dir={tmp_path}", "--top=5"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  kinds = {}
  for line in result.stdout.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) == 3 and cells[2].endswith("%"):
      kinds[cells[0]] = float(cells[2][:-1])
  assert "vocabulary projection and loss" in kinds and "projection and MLP matmuls" in kinds
  assert sum(kinds.values()) == pytest.approx(100, abs=0.5)


def test_profile_kinds_know_causal_blocks():
  """Score matrices of causal blocks ([..., 128, 896] at length 1024) count as attention
  scores, whatever the stacking of layers in front; the attention einsums as its matmuls."""
  config = benchmark.load_config("gpt_small")
  scores = profile_step.score_shapes(config)
  assert {(1024, 1024), (128, 128), (128, 896), (128, 1024)} <= scores
  kind = lambda shape, op="jvp()/exp": profile_step.kind(shape, op, 50257, scores)
  assert kind("f32[12,2,12,128,896]{4,3,2,1,0}") == "attention scores (softmax, masks)"
  assert kind("f32[2,12,128,640]") == "attention scores (softmax, masks)"
  assert kind("f32[2,12,128,100]") == "norms, activations, residuals, optimizer"
  assert kind("f32[2,12,128,64]", "jvp()/BKQS,BSKH->BKQH/dot_general") == "attention matmuls"
  assert kind("f32[2048,50257]") == "vocabulary projection and loss"


def test_profile_kinds_of_a_pytorch_step():
  """The peer's ops fall into our kinds, from their aten names and input shapes, and their
  own times account for most of the profiled step."""
  scores = {(256, 256)}
  kind = lambda op, *shapes: profile_step.torch_kind(op, shapes, 8192, scores)
  assert kind("aten::mm", (2048, 256), (256, 8192)) == "vocabulary projection and loss"
  assert kind("aten::_log_softmax", (2048, 8192)) == "vocabulary projection and loss"
  assert kind("aten::_scaled_dot_product_flash_attention_for_cpu", (8, 4, 256, 64)) == (
      "attention matmuls")
  assert kind("aten::bmm", (32, 256, 64), (32, 64, 256)) == "attention matmuls"
  assert kind("aten::_softmax", (8, 4, 256, 256)) == "attention scores (softmax, masks)"
  assert kind("aten::addmm", (768,), (2048, 256), (256, 768)) == "projection and MLP matmuls"
  assert kind("aten::native_layer_norm", (8, 256, 256)) == (
      "norms, activations, residuals, optimizer")
  wall, seconds = profile_step.torch_op_seconds("HF GPT-2, PyTorch eager", steps=1)
  kinds = {profile_step.torch_kind(op, shapes, 8192, scores) for op, shapes in seconds}
  assert {"vocabulary projection and loss", "attention matmuls",
          "projection and MLP matmuls"} <= kinds
  assert 0.5 * wall < sum(seconds.values()) < 1.05 * wall


def test_gpu_section_runs_ours_and_the_peer_with_one_flop_count_and_names_failures():
  """On CPU: each system in its own process; our cuDNN attention fails in one line there."""
  from tools import benchmark_gpu
  rows = benchmark_gpu.gpu_section(["gpt_tiny"], ["triform_einsum", "triform_cudnn",
                                                  "torch_eager"], batch=2, steps=1)
  ours, cudnn, peer = rows
  assert "config.model.attention='cudnn' needs an NVIDIA GPU" in cudnn["error"]
  assert cudnn["tokens_per_s"] is None and cudnn["vs_fastest_peer"] is None
  for row in (ours, peer):
    # step_s is rounded to 0.1 ms, tokens_per_s computed before rounding.
    assert row["error"] is None
    assert row["tokens_per_s"] == pytest.approx(2 * 128 / row["step_s"], rel=1e-2)
  assert ours["gflops_per_step"] == peer["gflops_per_step"] > 0
  assert ours["vs_fastest_peer"] == f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x"
  assert ours["mfu"] is None  # no published peak for a CPU


def test_cpu_description_names_the_generation_and_vector_width(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  core = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
          "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512bw\n")
  cpuinfo.write_text(core.format(n=0) + "\n" + core.format(n=1).replace("avx512f ", ""))
  cores = os.cpu_count()
  assert hardware.cpu_description(str(cpuinfo)) == (
      f"AMD EPYC (family 25, model 17), {cores} cores, AVX-512")
  cpuinfo.write_text(core.format(n=0).replace(" avx512f avx512bw", ""))
  assert hardware.cpu_description(str(cpuinfo)).endswith(f"{cores} cores, AVX2")
  cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")  # ARM: no x86 flags
  assert hardware.cpu_description(str(cpuinfo)).endswith(f", {cores} cores")
  assert hardware.cpu_description(str(tmp_path / "absent")).endswith(f"{cores} cores")


def test_shortest_seconds_calls_once_untimed_then_keeps_the_shortest(monkeypatch):
  calls, clock = [], iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # timed calls: 3, 1, 2 s
  monkeypatch.setattr(hardware.time, "perf_counter", lambda: next(clock))
  assert hardware.shortest_seconds(lambda: calls.append(1), repeats=3) == 1.0
  assert len(calls) == 4


@pytest.mark.parametrize("kind", ["triform", "eager"])
def test_framework_matmul_peak_times_the_frameworks_product(kind, monkeypatch):
  timed = []
  monkeypatch.setattr(hardware, "shortest_seconds",
                      lambda run, repeats: timed.append(run()) or 0.5)
  if kind == "triform":
    hardware.measured_matmul_peak.cache_clear()
  flops = benchmark_peers.framework_matmul_peak(kind, size=4)
  hardware.measured_matmul_peak.cache_clear()
  assert flops == 2 * 4**3 / 0.5
  # [4, 4] of ones times itself: every entry is 4, in the framework's own array type.
  assert type(timed[0]).__module__.split(".")[0] == ("jaxlib" if kind == "triform" else "torch")
  assert float(timed[0].sum()) == 4 * 4 * 4
