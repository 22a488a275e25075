"""A 1.3B-parameter GPT-style decoder in the LLaMA layout: 24 layers of width 2048, 16 heads
of 128, SwiGLU feed-forward of width 5632, rotary positions, RMSNorm, no biases, tied
embeddings, a 32768-piece vocabulary and 2048-token rows; 1,300,334,592 parameters.

Sized for a TPU v5p slice, v5p:4x4x4 (v5p-128: 64 chips of 95 GiB HBM). Check that the step
compiles and fits there (about 5 minutes on a 2-core CPU), then train:

  python -m tools.aot_compile --config=configs/gpt_1b_pod.py --topology=v5p:4x4x4
  python -m train.main --config=configs/gpt_1b_pod.py --workdir=/mnt/shared/gpt_1b

The workdir is one directory every host shares (an NFS mount such as Filestore); gs://
workdirs are not supported yet.

Batch 512 rows of 2048 tokens (2^20 tokens); 20 tokens per parameter (Chinchilla) take
about 25,000 steps. Layout: pure data parallel, 8 rows per chip, each chip holding the whole
float32 state (19.4 GiB with the AdamW moments); the compile puts about 32 GiB on each chip.
"""
from configs import common


def get_config():
  c = common.base_config()
  c.model.family = "decoder"
  c.objective = "causal_lm"
  c.model.update(num_layers=24, embed_dim=2048, num_heads=16, head_dim=128, mlp_dim=5632,
                 activation="swiglu", position="rotary", norm="rmsnorm", norm_eps=1e-6,
                 use_bias=False, tie_embeddings=True, max_length=2048)
  c.data.vocab_size = 32768
  c.data.seq_len = 2048
  c.train.batch_size = 512
  c.train.num_steps = 25_000
  c.train.eval_every = 1_000
  c.train.checkpoint_every = 1_000
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 1_000
  c.model.dtype = "bfloat16"  # compute; params and AdamW moments stay float32
  c.model.scan_layers = True
  c.model.remat = "full"  # keep each layer's input only; recompute the rest going backward
  # Pure data parallel: v5p's HBM holds the whole state, so no weights need gathering.
  # FSDP layouts fit too (activations are pinned at block boundaries): `tools.plan`
  # compares them, and docs/performance.md has the compiled memory.
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  return c
