"""The train state: a pytree the step maps to the next one."""
from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # nested dict of arrays, named as the model's attributes
  opt_state: Any
