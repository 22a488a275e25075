"""tools/matmul_floor: the products a train step computes, found in its jaxpr."""
import jax
import jax.numpy as jnp
import numpy as np
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


@pytest.mark.parametrize("dimension_numbers, lhs_shape, rhs_shape", [
    ((((1,), (0,)), ((), ())), (3, 4), (4, 5)),  # x @ w
    ((((0,), (0,)), ((), ())), (4, 3), (4, 5)),  # x.T @ g: a weight's gradient
    ((((0, 1), (0, 1)), ((), ())), (2, 3, 4), (2, 3, 5)),  # 'BSD,BSE->DE'
    ((((3,), (3,)), ((0, 1), (0, 2))), (2, 3, 4, 5), (2, 6, 3, 5)),  # 'BKQH,BSKH->BKQS'
])
def test_the_einsum_equation_is_the_same_product_in_torch(dimension_numbers, lhs_shape,
                                                          rhs_shape):
  import torch
  # Small integers: every sum is exact in float32, whatever order the kernels add in.
  lhs = jax.random.randint(jax.random.key(0), lhs_shape, -3, 4).astype(jnp.float32)
  rhs = jax.random.randint(jax.random.key(1), rhs_shape, -3, 4).astype(jnp.float32)
  multiply = lambda a, b: jax.lax.dot_general(a, b, dimension_numbers)
  (product,) = matmul_floor.products(jax.make_jaxpr(multiply)(lhs, rhs))
  in_torch = torch.einsum(matmul_floor.einsum_equation(product),
                          torch.from_numpy(np.asarray(lhs)), torch.from_numpy(np.asarray(rhs)))
  np.testing.assert_array_equal(in_torch.numpy(), np.asarray(multiply(lhs, rhs)))
  # The timer builds its operands from the product's shapes and dtypes, and runs it.
  assert matmul_floor.time_product_in_torch(product, repeats=1) > 0


def test_the_floor_sums_each_products_time_by_its_count():
  def three_products(x, w):
    # x [4, 8], w [8, 8]: x @ w twice, then (x @ w) @ w once more
    return (x @ w).sum() + ((x @ w) @ w).sum()
  x, w = jnp.ones((4, 8)), jnp.ones((8, 8))
  seconds = matmul_floor.floor_seconds(three_products, x, w, timer=lambda p: p.flops)
  assert seconds == 3 * 2 * 4 * 8 * 8
