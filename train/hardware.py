"""Peak FLOP/s of the devices, for model FLOPs utilisation (MFU)."""
import time

import jax
import jax.numpy as jnp

# Published dense bf16 peaks per chip (vendor datasheets).
PUBLISHED_PEAK = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5": 459e12,
                  "TPU v5p": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
                  "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12}


def measured_matmul_peak(size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a jitted fp32 [size, size] matmul on one device: the CPU's practical peak."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


def peak_flops_per_device() -> tuple[float, str]:
  """(FLOP/s per device, where the figure comes from)."""
  kind = jax.devices()[0].device_kind
  for name, peak in PUBLISHED_PEAK.items():
    if kind.startswith(name):
      return peak, f"published bf16 peak of {kind}"
  # On CPU all devices share the same cores, so the matmul peak is for the whole host.
  return measured_matmul_peak() / jax.local_device_count(), "fp32 matmul measured in-process"
