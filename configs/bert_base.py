"""BERT-base (Devlin et al. 2019): 12 post-LayerNorm layers of width 768, erf-GELU,
token-type embeddings, MLM head tied to the input embedding; 109,514,298 parameters
with the MLM head (110M with the pooler).

  python -m train.main --config=configs/bert_base.py --workdir=/tmp/triform/bert_base

Batch 256 x 512 and 1M steps as in the paper.
"""
from configs import common
from model import encoder


def get_config():
  c = common.base_config()
  c.model.family = "encoder"
  c.objective = "mlm"
  common.apply_variant(c, encoder.VARIANTS["base"])
  c.data.seq_len = 512
  c.train.batch_size = 256
  c.train.num_steps = 1_000_000
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 10_000
  c.optim.learning_rate = 1e-4
  c.optim.warmup_steps = 10_000
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.01
  c.model.dropout_rate = 0.1
  c.model.scan_layers = True
  c.sample.num_prompts = 0
  return c
