"""T5-base (Raffel et al. 2020): 12+12 layers of width 768, relative-position buckets,
RMSNorm, ReLU, no biases, tied embeddings; 222,903,552 parameters.

  python -m train.main --config=configs/t5_base.py --workdir=/tmp/triform/t5_base

Inputs 512 / targets 114 and batch 128 as in T5X's base_c4_pretrain.
"""
from configs import common
from model import encoder_decoder


def get_config(variant: str = "base"):
  c = common.base_config()
  c.model.family = "encoder_decoder"
  c.objective = "span_corruption"
  common.apply_variant(c, encoder_decoder.VARIANTS[variant])
  c.data.seq_len = 512
  c.train.batch_size = 128
  c.train.num_steps = 524_288
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 10_000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 10_000
  c.model.dropout_rate = 0.0  # pretraining without dropout, as T5.1.1 recommends
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.sample.num_prompts = 0
  return c
