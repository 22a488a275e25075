"""T5.1.1-XL (Raffel et al. 2020; the T5.1.1 checkpoints): 24+24 layers of width 2048, 32
heads of 64, GeGLU feed-forward of width 5120, RMSNorm, relative-position buckets, no biases,
an untied output layer; 2,849,757,184 parameters. Span corruption, inputs 512 / targets 114.

Sized for a TPU v5e pod, v5e:16x16 (v5litepod-256: 256 chips of 16 GiB HBM). Check that the
step compiles and fits there (about 5 minutes on a 2-core CPU), then train:

  python -m tools.aot_compile --config=configs/t5_xl_pod.py --topology=v5e:16x16
  python -m train.main --config=configs/t5_xl_pod.py --workdir=/mnt/shared/t5_xl

The workdir is one directory every host shares (an NFS mount such as Filestore); gs://
workdirs are not supported yet.

Batch 512 rows (2^18 input tokens). Layout: 16-way data parallel x 16-way tensor parallel
(heads, MLP and vocabulary split over the chips of one torus side), 32 rows per chip; the
compile puts 11.7 of the 15.75 usable GiB on each chip. The T5 paper's 2048 rows fit too,
as 4 accumulated microbatches (12.6 GiB): --config.train.batch_size=2048
--config.train.microbatches=4.
"""
from configs import common
from model import encoder_decoder


def get_config():
  c = common.base_config()
  c.model.family = "encoder_decoder"
  c.objective = "span_corruption"
  # T5.1.1-base's layout at the XL sizes of the T5.1.1 checkpoints.
  common.apply_variant(c, dict(encoder_decoder.VARIANTS["1_1_base"], num_layers=24,
                               embed_dim=2048, num_heads=32, head_dim=64, mlp_dim=5120))
  c.data.seq_len = 512
  c.train.batch_size = 512
  c.train.num_steps = 1_000_000
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 2_000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 10_000
  c.model.dropout_rate = 0.0  # pretraining without dropout, as T5.1.1 recommends
  c.model.dtype = "bfloat16"  # compute; params and AdamW moments stay float32
  c.model.scan_layers = True
  c.model.remat = "full"  # keep each layer's input only; recompute the rest going backward
  # Tensor parallelism over one side of the torus. FSDP over it fits in less memory
  # (what `tools.plan` proposes; docs/performance.md has both layouts compiled).
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 16  # one side of the 16x16 torus; 32 heads, 5120 MLP, 32128 vocab divide
  c.sample.num_prompts = 0
  return c
