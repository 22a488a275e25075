"""tools/matmul_floor: the products a train step computes, found in its jaxpr."""
import jax
import jax.numpy as jnp
import pytest

from tools import benchmark, matmul_floor
from train.experiment import Experiment


def test_a_gradient_has_the_forward_product_and_both_transposes():
  x, w = jnp.ones((4, 8)), jnp.ones((8, 16))
  loss = lambda x, w: (x @ w).sum()
  counts = matmul_floor.products(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w))
  assert sum(counts.values()) == 3
  # Each of the three multiplies 4 x 8 x 16 pairs.
  assert [p.flops for p in counts] == [2 * 4 * 8 * 16] * len(counts)
  assert sum(p.flops * n for p, n in counts.items()) == 3 * 2 * 4 * 8 * 16


def test_products_inside_a_scan_count_once_per_iteration():
  def five_layers(x, ws):
    # x [B, D], ws [L, D, D]
    return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0].sum()
  x, ws = jnp.ones((2, 8)), jnp.ones((5, 8, 8))
  counts = matmul_floor.products(jax.make_jaxpr(five_layers)(x, ws))
  assert list(counts.values()) == [5]
  assert matmul_floor.floor_seconds(five_layers, x, ws) > 0


@pytest.mark.parametrize("name", ["gpt_tiny", "bert_tiny", "t5_tiny"])
def test_the_train_steps_products_are_the_flops_the_model_counts(name):
  # The FLOP formula (model/cost.py) that MFU divides by counts exactly the matmuls the
  # traced step computes, forward and backward, and nothing is missed by the floor.
  config = benchmark.for_this_machine(benchmark.load_config(name))
  experiment = Experiment(config)
  state = experiment.abstract_state
  batch = jax.tree.map(jnp.asarray, benchmark.synthetic_batch(config))
  jaxpr = matmul_floor.jaxpr_of(experiment.jit_train_step(), state, batch)
  counts = matmul_floor.products(jaxpr)
  assert sum(p.flops * n for p, n in counts.items()) == experiment.flops_per_step
