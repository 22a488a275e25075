"""tools/aot_compile (the real train step compiled for a TPU slice, on this CPU) and tools/plan.

Compiling needs libtpu (`pip install -e ".[tpu]"`); those tests skip without it.
"""
import importlib
import importlib.util
import math
import re
import subprocess
import sys

import pytest

from tools import aot_compile, plan
from train import hardware

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason='needs libtpu: pip install -e ".[tpu]"')


def small(name="gpt_tiny", **model):
  """configs/<name>.py at width 256 and depth 2: wide enough that matmuls dominate the FLOPs."""
  c = importlib.import_module(f"configs.{name}").get_config()
  c.model.update({**dict(num_layers=2, embed_dim=256, num_heads=4, head_dim=64, mlp_dim=1024),
                  **model})
  c.data.vocab_size, c.data.seq_len, c.train.batch_size = 1024, 128, 8
  return c


@pytest.fixture(scope="module")
def v5e_2x2():
  topology = hardware.parse_topology("v5e:2x2")
  return topology, aot_compile.topology_devices(topology)


@pytest.mark.parametrize("name, chips, kind", [
    ("v5e:16x16", 256, "TPU v5 lite"), ("v6e:2x4", 8, "TPU v6 lite"), ("v4:4x4x8", 128, "TPU v4"),
    ("v5p:2x2x1", 4, "TPU v5"), ("v5p:4x8x8", 256, "TPU v5")])
def test_published_topologies_parse(name, chips, kind):
  topology = hardware.parse_topology(name)
  assert (topology.chips, topology.spec.device_kind) == (chips, kind)


@pytest.mark.parametrize("name", ["v5e:3x3", "v5e:32x32", "v5e:4x4x4", "v4:3x4x4", "v4:8x4x4",
                                  "v3:4x4", "v5litepod-16", ""])
def test_unknown_topologies_fail_naming_the_choices(name):
  with pytest.raises(ValueError, match=r"topology .* v5e:AxB or v6e:AxB"):
    hardware.parse_topology(name)


@needs_libtpu
def test_compiled_step_fits_and_its_flops_match_the_model_count(v5e_2x2):
  topology, devices = v5e_2x2
  config = small()
  report = aot_compile.measure(config, topology, devices)
  assert report.mesh == {"data": 4, "fsdp": 1, "tensor": 1}
  for field in ("arguments", "outputs", "aliased", "temporaries", "code"):
    assert getattr(report, field) > 0, field
  assert report.fits and report.total < topology.usable_bytes
  # XLA also counts what train_flops_per_row leaves out: softmax, norms, activation
  # functions, the loss's log-softmax, gradient clipping and the AdamW update (6% here).
  assert 1.0 < report.compiled_flops / report.model_flops < 1.10
  # The plan's state shards are what the compiled step takes, less the batch's shards (up to
  # the padding of small arrays to TPU tiles).
  batch = sum(math.prod(x.shape) * x.dtype.itemsize
              for x in plan.shapes_only(config).batch_spec.values())
  assert plan.estimate(config, (4, 1, 1)).state == pytest.approx(report.arguments - batch // 4,
                                                                 rel=1e-3)


@needs_libtpu
def test_scanned_layers_are_counted_from_unrolled_compiles(v5e_2x2):
  topology, devices = v5e_2x2
  report = aot_compile.measure(small(num_layers=3, scan_layers=True), topology, devices)
  assert 1.0 < report.counted_flops / report.model_flops < 1.10
  assert report.compiled_flops < 0.6 * report.counted_flops  # XLA counts the loop body once


@needs_libtpu
def test_full_remat_recomputes_the_forward_pass(v5e_2x2):
  topology, devices = v5e_2x2
  report = aot_compile.measure(small("t5_tiny", remat="full"), topology, devices)
  # Forward + backward is 3 forwards; recomputing the layers' forward adds up to one more.
  assert 1.15 < report.compiled_flops / report.model_flops < 1.40


def run_tool(tool, *flags):
  return subprocess.run([sys.executable, "-m", f"tools.{tool}", *flags], capture_output=True,
                        text=True, timeout=600, check=False)


@pytest.mark.parametrize("flags, message", [
    (["--topology=v5e:3x3"], "error: topology 'v5e:3x3' is not a v5e slice"),
    pytest.param(["--topology=v5e:2x2", "--config.mesh.data=3"],
                 "error: config.mesh={'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices",
                 marks=needs_libtpu),
    pytest.param(["--topology=v5e:2x2", "--config.train.batch_size=6"],
                 "error: config.train.batch_size=6 does not divide into the 4 batch shards",
                 marks=needs_libtpu),
])
def test_bad_topology_mesh_or_batch_fail_in_one_line(flags, message):
  result = run_tool("aot_compile", "--config=configs/gpt_tiny.py", *flags)
  assert result.returncode != 0
  assert result.stderr.strip().startswith(message)
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@needs_libtpu
def test_a_step_that_does_not_fit_fails_saying_by_how_much_and_what_to_change():
  result = run_tool("aot_compile", "--config=configs/gpt_tiny.py", "--topology=v5e:2x2",
                    "--config.train.batch_size=2048", "--config.data.seq_len=1024",
                    "--config.model.max_length=1024", "--config.model.num_layers=4")
  assert result.returncode == 1
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  # The compiler refuses it (44.13 GiB of temporaries with libtpu 0.0.42.1); 4 microbatches
  # then compile to 12.52 GiB.
  assert re.fullmatch(
      r"error: the TPU compiler refused the step: RESOURCE_EXHAUSTED: .*; one chip needs at "
      r"least [\d.]+ GiB more than the 15.75 GiB usable on TPU v5 lite; try "
      r"--config.train.microbatches=\d+ \(estimated [\d.]+ GiB\).*", result.stderr.strip())


@pytest.mark.parametrize("name, sizes, batch, needed, change", [
    # Activations dominate, and the compile (say) needed 1.5 x the usable HBM: half the rows
    # at a time fit.
    ("small", (4, 1, 1), 2048, 1.5, "--config.train.microbatches=2"),
    # State: 1.3B parameters with AdamW replicated on each chip, unknown by how much.
    ("gpt_1b_pod", (4, 1, 1), 16, None,
     "--config.mesh.data=1 --config.mesh.fsdp=4 --config.mesh.tensor=1"),
])
def test_what_to_change_scales_the_plan_to_the_measured_need(name, sizes, batch, needed, change):
  config = small() if name == "small" else importlib.import_module(f"configs.{name}").get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = sizes
  config.train.batch_size = batch
  topology = hardware.parse_topology("v5e:2x2")
  message = plan.what_to_change(config, topology,
                                       needed and int(needed * topology.usable_bytes))
  over = f"{(needed - 1) * 15.75:.2f} GiB more than" if needed else "more than"
  assert message.startswith(f"one chip needs {over} the 15.75 GiB usable on TPU v5 lite; try "
                            f"{change} (estimated "), message


def test_plan_proposes_the_least_communicating_layout_that_fits():
  config = small()
  result = plan.plan(config, hardware.parse_topology("v5e:2x2"))
  sizes = [(r.data, r.fsdp, r.tensor) for r in result.layouts]
  assert sizes == [(4, 1, 1), (2, 2, 1), (1, 4, 1), (2, 1, 2), (1, 2, 2), (1, 1, 4)]
  assert (result.best.data, result.best.fsdp, result.best.tensor) == (4, 1, 1)
  replicated, sharded = result.layouts[0], result.layouts[2]
  assert sharded.state < replicated.state / 3  # every matrix split 4 ways over fsdp
  assert result.step_seconds(0.4) == pytest.approx(1.5 * result.step_seconds(0.6))


def test_plan_says_why_a_layout_cannot_run():
  config = small(num_heads=2, head_dim=128)
  config.train.batch_size = 2
  problems = {(r.data, r.fsdp, r.tensor): r.problem
              for r in plan.plan(config, hardware.parse_topology("v5e:2x2")).layouts}
  assert problems[(4, 1, 1)] == "batch 2 does not split into 4 shards"
  assert "dimension 2 is split over mesh axes ('tensor',)" in problems[(1, 1, 4)]
  assert problems[(2, 1, 2)] == ""


def test_plan_rejects_a_model_that_fits_no_layout():
  config = importlib.import_module("configs.t5_xl_pod").get_config()
  result = plan.plan(config, hardware.parse_topology("v5e:1x1"))
  assert result.best is None  # 2.85B parameters: 16 bytes each with AdamW, on 16 GiB
  assert result.layouts[0].state + result.layouts[0].grads > 42 * 2**30
  cli = run_tool("plan", "--config=configs/t5_xl_pod.py", "--topology=v5e:1x1")
  assert cli.returncode == 1 and "no layout fits" in cli.stdout


@pytest.mark.slow
@needs_libtpu
@pytest.mark.parametrize("name, topology", [("t5_xl_pod", "v5e:16x16"),
                                            ("gpt_1b_pod", "v5p:4x4x4")])
def test_pod_configs_compile_and_fit_their_slice(name, topology):
  config = importlib.import_module(f"configs.{name}").get_config()
  report = aot_compile.measure(config, hardware.parse_topology(topology), count_layers=False)
  assert report.fits, aot_compile.format_report(report)
  assert report.total > report.arguments > 0


@pytest.mark.parametrize("name", ["gpt_finetune", "bert_finetune", "t5_finetune:name"])
def test_plan_sizes_fine_tuning_tasks(name):
  module, _, arg = name.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg or None)
  result = plan.plan(config, hardware.parse_topology("v5e:2x2"))
  assert result.best is not None and result.best.activations > 0
