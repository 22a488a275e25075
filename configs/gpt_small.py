"""GPT-2 small (124M parameters; Radford et al. 2019): learned positions, pre-LayerNorm,
tanh-GELU, tied embeddings, 1024 tokens of context.

  python -m train.main --config=configs/gpt_small.py --workdir=/tmp/triform/gpt_small

Sized for a TPU slice: the batch of 512 x 1024 tokens is the GPT-2 paper's.
"""
from configs import common
from model import decoder


def get_config():
  c = common.base_config()
  c.model.family = "decoder"
  c.objective = "causal_lm"
  common.apply_variant(c, decoder.VARIANTS["small"])
  c.data.seq_len = 1024
  c.train.batch_size = 512
  c.train.num_steps = 100_000
  c.train.eval_every = 2_000
  c.train.checkpoint_every = 2_000
  c.optim.learning_rate = 6e-4
  c.optim.warmup_steps = 2_000
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  return c
