"""The matmul floor of a jitted function: the time its matrix products take on their own.

Every dot_general in the function's jaxpr is collected with its operand shapes and dtypes
(for a train step: the forward's products and the backward's transposed ones; inside a
scan, once per iteration). Each distinct product is then jitted alone, on random operands
of its shapes, and timed; the floor is the sum over products of count x median time. A step
can beat its floor only by fusing products together, so step time / floor says how much of
the step is spent outside the matmuls.

The same products can also be timed in PyTorch (`time_product_in_torch`, torch.einsum on
operands of the same shapes): the floor a step computing them would have with PyTorch's
kernels, which says how much of a gap to a PyTorch peer lies in the kernels themselves.
"""
import collections
import dataclasses
import math
import statistics
import string
import time

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core


@dataclasses.dataclass(frozen=True)
class Product:
  """One dot_general as traced: operand shapes and dtypes, and how it contracts."""
  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  lhs_dtype: str
  rhs_dtype: str
  dimension_numbers: tuple
  preferred_element_type: str | None

  @property
  def flops(self) -> int:
    """2 x (the output's size) x (the contracted size) = 2 x |lhs| x rhs's free size."""
    (_, rhs_contract), (_, rhs_batch) = self.dimension_numbers
    rhs_free = math.prod(n for axis, n in enumerate(self.rhs)
                         if axis not in tuple(rhs_contract) + tuple(rhs_batch))
    return 2 * math.prod(self.lhs) * rhs_free


def jaxpr_of(fn, *args) -> jax_core.ClosedJaxpr:
  """The closed jaxpr of fn(*args). A jax.jit is traced as the top-level jit it is, since
  one with compiler options (Experiment.jit_train_step) cannot be traced inside another."""
  return fn.trace(*args).jaxpr if hasattr(fn, "trace") else jax.make_jaxpr(fn)(*args)


def products(closed_jaxpr) -> collections.Counter:
  """Counter of Product -> how many times one call of the traced function computes it."""
  counts = collections.Counter()
  _collect(closed_jaxpr.jaxpr, 1, counts)
  return counts


def _collect(jaxpr, times: int, counts: collections.Counter) -> None:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      lhs, rhs = (v.aval for v in eqn.invars)
      preferred = eqn.params.get("preferred_element_type")
      counts[Product(tuple(lhs.shape), tuple(rhs.shape), str(lhs.dtype), str(rhs.dtype),
                     eqn.params["dimension_numbers"],
                     None if preferred is None else str(preferred))] += times
    inner = times * eqn.params["length"] if eqn.primitive.name == "scan" else times
    for sub in jax_core.jaxprs_in_params(eqn.params):
      _collect(sub, inner, counts)


def time_product(product: Product, repeats: int = 20) -> float:
  """Median seconds of the product alone, jitted, on random operands."""
  lhs_key, rhs_key = jax.random.split(jax.random.key(0))
  lhs = jax.random.normal(lhs_key, product.lhs, jnp.float32).astype(product.lhs_dtype)
  rhs = jax.random.normal(rhs_key, product.rhs, jnp.float32).astype(product.rhs_dtype)
  multiply = jax.jit(lambda a, b: jax.lax.dot_general(
      a, b, product.dimension_numbers, preferred_element_type=product.preferred_element_type))
  return _median_seconds(lambda: jax.block_until_ready(multiply(lhs, rhs)), repeats)


def _median_seconds(run, repeats: int) -> float:
  """Median seconds of `repeats` calls of run(), after one call that is not timed."""
  run()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def einsum_equation(product: Product) -> str:
  """The product as an einsum equation, its output in dot_general's order (batch axes,
  then the lhs's free axes, then the rhs's). [B, S, D] x [D, E] contracting D: 'bca,ad->bcd'."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = product.dimension_numbers
  letters = iter(string.ascii_letters)
  lhs, rhs = [None] * len(product.lhs), [None] * len(product.rhs)
  for lhs_axis, rhs_axis in zip(tuple(lhs_batch) + tuple(lhs_contract),
                                tuple(rhs_batch) + tuple(rhs_contract)):
    lhs[lhs_axis] = rhs[rhs_axis] = next(letters)
  lhs_free = [axis for axis, letter in enumerate(lhs) if letter is None]
  rhs_free = [axis for axis, letter in enumerate(rhs) if letter is None]
  for axis in lhs_free:
    lhs[axis] = next(letters)
  for axis in rhs_free:
    rhs[axis] = next(letters)
  out = [lhs[a] for a in lhs_batch] + [lhs[a] for a in lhs_free] + [rhs[a] for a in rhs_free]
  return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def time_product_in_torch(product: Product, repeats: int = 20) -> float:
  """Median seconds of the same product in PyTorch: torch.einsum on random operands of its
  shapes and dtypes, with torch's threads as they are set. torch is a dev dependency, as
  the PyTorch peers this is compared with are."""
  import torch
  generator = torch.Generator().manual_seed(0)
  lhs, rhs = (torch.randn(shape, generator=generator).to(getattr(torch, dtype))
              for shape, dtype in ((product.lhs, product.lhs_dtype),
                                   (product.rhs, product.rhs_dtype)))
  equation = einsum_equation(product)
  return _median_seconds(lambda: torch.einsum(equation, lhs, rhs), repeats)


def floor_seconds(fn, *args, timer=time_product) -> float:
  """The matmul floor of `fn(*args)`: its products, each timed alone by `timer` (XLA's
  kernels; `time_product_in_torch` for PyTorch's), summed."""
  counts = products(jaxpr_of(fn, *args))
  return sum(count * timer(product) for product, count in counts.items())
