"""GPT-style decoder, tiny: trains on the built-in corpus on a 2-core CPU in minutes.

  python -m train.main --config=configs/gpt_tiny.py --workdir=/tmp/triform/gpt_tiny

Two layers of width 128 with rotary positions: the best of a tools/compare sweep of width,
depth, heads, learning rate, schedule, batch, vocabulary and positions at the same measured
wall time (docs/compare.md). Fewer layers see more tokens in the same CPU minutes.
"""
from configs import common
from model import decoder


def get_config():
  c = common.base_config()
  c.model.family = "decoder"
  c.objective = "causal_lm"
  common.apply_variant(c, decoder.VARIANTS["tiny"])
  common.tiny_training(c)
  c.model.num_layers = 2
  c.model.position = "rotary"
  c.train.num_steps = 600  # the wall time of 400 steps of the four-layer tiny variant
  return c
