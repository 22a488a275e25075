"""The same train step on any mesh and host count: equal numbers, the shardings the rules say.

Each case runs tests/mesh_runner.py in a subprocess with simulated CPU devices
(the device count must be fixed before JAX starts) and compares its JSON; runs that
share a device count share one subprocess.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = ["8,1,1", "1,8,1", "2,2,2", "1,1,8"]
FAMILIES = ["encoder", "decoder", "encoder_decoder"]
# fp32 throughout; layouts differ only in how partial sums are split across
# devices and reduced, i.e. the order of fp32 additions: observed differences
# are ~1e-7 relative, and 1e-5 leaves room for other CPUs' kernels.
RTOL = 1e-5


def _runner(*args, process_id=None):
  cmd = [sys.executable, "-m", "tests.mesh_runner", *args]
  if process_id is not None:
    cmd.append(f"--process_id={process_id}")
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _results(process) -> dict:
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  line = [l for l in out.splitlines() if l.startswith("RESULTS ")]
  return json.loads(line[0][len("RESULTS "):])


def _expected_shard(shape, names, mesh):
  """Shard shape of an array whose dims carry logical `names`, under the default rules."""
  sizes = dict(zip(("data", "fsdp", "tensor"), mesh))
  axis = {"vocab": "tensor", "embed": "fsdp", "heads": "tensor", "mlp": "tensor"}
  return [d // sizes[axis[n]] if n in axis else d for d, n in zip(shape, names)]


@pytest.fixture(scope="module")
def on_eight_devices() -> dict:
  """{family: {mesh: results}} of every family on every mesh of 8 devices."""
  results = _results(_runner("--families", *FAMILIES, "--devices=8", "--meshes", *MESHES))
  return {family: by_microbatches["1"] for family, by_microbatches in results.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_and_grad_norm_agree_across_meshes(on_eight_devices, family):
  results = on_eight_devices[family]
  reference = results[MESHES[0]]
  assert reference["loss"][-1] < reference["loss"][0]  # the steps really moved the model
  for mesh in MESHES[1:]:
    np.testing.assert_allclose(results[mesh]["loss"], reference["loss"], rtol=RTOL, err_msg=mesh)
    np.testing.assert_allclose(results[mesh]["grad_norm"], reference["grad_norm"], rtol=RTOL,
                               err_msg=mesh)
  layers = {"encoder": "['stack']", "decoder": "['stack']",
            "encoder_decoder": "['encoder']"}[family] + "['layers'][0]"
  checks = {"['embed']['table']": ("vocab", "embed"),
            f"{layers}['self_attn']['query']": ("embed", "heads", "head_dim"),
            f"{layers}['mlp']['wi']['kernel']": ("embed", "mlp"),
            f"{layers}['mlp']['wo']['kernel']": ("mlp", "embed")}
  for mesh in MESHES:
    sizes = tuple(int(s) for s in mesh.split(","))
    for name, logical in checks.items():
      shape, shard = results[mesh]["shard_shapes"][name]
      assert shard == _expected_shard(shape, logical, sizes), (mesh, name)


def test_gradient_accumulation_equals_the_full_batch():
  results = _results(_runner("--families=decoder", "--devices=2", "--meshes", "2,1,1",
                             "--microbatches", "1", "4"))["decoder"]
  whole, accumulated = results["1"]["2,1,1"], results["4"]["2,1,1"]
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose(accumulated[key], whole[key], rtol=RTOL)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("family", ["decoder"])
def test_two_hosts_train_like_one(family):
  """Two JAX processes with 2 CPU devices each (gloo collectives) vs one process with 4."""
  meshes = ["4,1,1", "1,2,2"]
  one = _runner(f"--families={family}", "--devices=4", "--meshes", *meshes)
  port = _free_port()
  hosts = [_runner(f"--families={family}", "--devices=2", "--meshes", *meshes,
                   "--num_processes=2", f"--port={port}", process_id=i) for i in range(2)]
  two = _results(hosts[0])[family]["1"]
  for host in hosts[1:]:
    _, err = host.communicate(timeout=600)
    assert host.returncode == 0, err[-3000:]
  single = _results(one)[family]["1"]
  for mesh in meshes:
    np.testing.assert_allclose(two[mesh]["loss"], single[mesh]["loss"], rtol=RTOL, err_msg=mesh)
    np.testing.assert_allclose(two[mesh]["grad_norm"], single[mesh]["grad_norm"], rtol=RTOL)
