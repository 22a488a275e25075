"""Defaults shared by every experiment config.

Each experiment file calls `base_config()` and changes what differs. Fields are
grouped by the part of the run that reads them: `model`, `data`, `train`,
`optim`, `mesh`, `sharding`, `sample`.
"""
import os

import ml_collections

# Logical axis -> mesh axes. Every logical axis name used by a parameter or an
# activation must appear here (checked at start-up); None means replicated.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("relpos_buckets", None),
    ("token_types", None),
)


def default_data_dir():
  """Where corpora and tokenizers are built once and reused."""
  return os.environ.get("TRIFORM_DATA_DIR", os.path.expanduser("~/.cache/triform"))


def apply_variant(c: ml_collections.ConfigDict, variant: dict) -> ml_collections.ConfigDict:
  """Sets a published size (a family module's VARIANTS entry) on config `c`."""
  variant = dict(variant)
  if "vocab_size" in variant:
    c.data.vocab_size = variant.pop("vocab_size")
  c.model.update(variant)
  return c


def tiny_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The budget of every `*_tiny` config: 400 steps of 32 x 128 tokens, minutes on a 2-core CPU."""
  c.data.seq_len = 128  # an encoder-decoder's inputs; its targets follow from the objective
  c.train.batch_size = 32
  c.train.num_steps = 400
  c.train.log_every = 50
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  return c


def finetuning(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Fine-tunes a `*_tiny` config on the built-in classification task (train/task_data.py):
  which top-level package a standard-library function comes from. Start from a pretrained
  run with --config.init_from=WORKDIR (else from scratch); arg "lora" trains LoRA adapters
  and the head only. Minutes on a 2-core CPU."""
  if arg not in (None, "", "lora"):
    raise ValueError(f"config argument {arg!r} is not 'lora' (or none: every parameter trains)")
  c.task.name, c.task.data = "classification", "stdlib_package"
  c.model.num_classes = 6
  c.data.seq_len = 64  # the first 64 tokens of each function
  c.train.batch_size = 16
  c.train.num_steps = 100
  c.train.log_every = 25
  c.train.eval_every = 100  # the first and the last step: evaluation reads all 600 examples
  c.train.eval_batches = -1
  c.train.checkpoint_every = 50
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 15
  c.sample.num_prompts = 0
  if arg == "lora":
    c.model.lora_rank, c.model.lora_alpha = 8, 16.0
    c.model.lora_targets = "query,value,wi,wo"
    c.train.trainable = "lora/,classifier/"
    c.optim.learning_rate = 3e-3  # adapters start at zero and are few: larger steps
  return c


def base_config():
  """Returns the shared defaults; experiment files override fields."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # ---- Fine-tuning: where the parameters start (train/init_from.py) ----
  # A workdir of ours (its latest checkpoint) or a directory written by
  # `python -m tools.convert_hf import`: parameters matching by name and shape load from it,
  # the rest start fresh. "": from scratch. A resumed run never reloads it.
  c.init_from = ""
  c.objective = "causal_lm"  # causal_lm | prefix_lm | mlm | span_corruption (fit model.family)
  # How a decoder reads the part of a row it is given (a prefix LM's prefix, span corruption's
  # inputs): "bidirectional" (the T5 paper's prefix LM) or "causal" (its decoder-only LM).
  c.decoder_prefix = "bidirectional"
  c.noise = ml_collections.ConfigDict()
  c.noise.mlm_rate = 0.15  # share of text tokens selected (BERT)
  c.noise.whole_word_masking = False
  c.noise.noise_density = 0.15  # span corruption (T5)
  c.noise.mean_span_length = 3.0

  c.model = ml_collections.ConfigDict()
  c.model.family = "decoder"  # "encoder" (BERT), "decoder" (GPT) or "encoder_decoder" (T5)
  c.model.num_layers = 2  # the encoder's, for encoder_decoder
  c.model.num_decoder_layers = 0  # encoder_decoder only; 0: same as num_layers
  c.model.embed_dim = 128
  c.model.num_heads = 4
  c.model.num_kv_heads = 0  # 0: = num_heads (multi-head); 1: multi-query; else grouped-query
  c.model.head_dim = 32
  c.model.mlp_dim = 512
  c.model.activation = "gelu"  # relu | gelu (erf) | gelu_tanh | geglu | swiglu (gated)
  c.model.position = "learned"  # learned | sinusoidal | rotary | relative (T5 buckets)
  c.model.max_length = 256  # rows of the learned position table; >= data.seq_len
  c.model.relative_buckets = 32
  c.model.relative_max_distance = 128
  c.model.rotary_base = 10_000.0
  c.model.norm = "layernorm"  # layernorm | rmsnorm
  c.model.norm_position = "pre"  # pre (GPT-2, T5) | post (BERT)
  c.model.norm_eps = 1e-5
  # Compute each norm's input gradient once instead of inside every consumer (XLA on CPU
  # fused and so recomputed it; docs/performance.md). Same numbers either way.
  c.model.norm_grad_barrier = True
  # einsum: plain einsums, fastest on CPU and TPU (docs/performance.md); jax_nn:
  # jax.nn.dot_product_attention, which on NVIDIA GPUs can use cuDNN's fused kernel.
  c.model.attention = "einsum"
  # Causal self-attention (no prefix) runs this many queries at a time over only the keys
  # they can see, skipping the masked upper blocks: about half the score work on long rows
  # (docs/performance.md). 0: whole rows.
  c.model.causal_block = 128
  c.model.use_bias = True  # biases in attention, MLP and the MLM head (T5 has none)
  c.model.tie_embeddings = True  # output projection = input embedding
  c.model.scale_attention = True  # 1/sqrt(head_dim) on logits; T5 folds it into the init
  c.model.num_token_types = 0  # encoder only: BERT's segment A/B embeddings (2)
  c.model.dropout_rate = 0.0
  c.model.dtype = "float32"  # compute dtype
  c.model.param_dtype = "float32"
  c.model.remat = "none"  # none | full | dots | dots_no_batch (what the backward pass keeps)
  c.model.scan_layers = False  # True: one scanned layer, compile time flat in depth
  # ---- Fine-tuning: a classification head (train/classification.py) ----
  # Classes of the head over pooled states (0: none); must equal the task's class count.
  c.model.num_classes = 0
  # ---- Fine-tuning: LoRA adapters (model/lora.py) ----
  # Rank of the low-rank update added beside each targeted kernel (0: no LoRA). The update
  # is scaled by lora_alpha / lora_rank; lora_dropout drops the adapters' inputs in training.
  # Targets: comma-separated kernel names among query, key, value, out (attention) and
  # wi, wi_linear, wo (MLP). Freeze the base with --config.train.trainable=lora.
  c.model.lora_rank = 0
  c.model.lora_alpha = 16.0
  c.model.lora_dropout = 0.0
  c.model.lora_targets = "query,value"

  c.data = ml_collections.ConfigDict()
  # "stdlib": the interpreter's standard-library *.py files, built on this machine.
  # A plain glob: UTF-8 text files, one document per file. Or SCHEME:WHERE
  # (train/sources.py): jsonl:GLOB, parquet:GLOB (one document per record's text_field;
  # .gz / .zst read too), lines:GLOB (one per line), prepared:DIR (tools/prepare_data.py's
  # output), tfds:NAME[/CONFIG][:VERSION] (prepared as array_record). Globs may be gs:// URLs.
  c.data.source = "stdlib"
  # ---- real data sources, mixtures and tokenizers (train/sources.py, train/mixture.py)
  c.data.text_field = "text"  # the JSONL / Parquet field or TFDS feature holding the text
  c.data.tfds_data_dir = ""  # tfds: sources' data dir (local or gs://); "": TFDS's default
  c.data.train_split = "train"  # tfds: the dataset's split names to train and validate on
  c.data.validation_split = "validation"
  # ((source, weight), ...): mix these sources (each as data.source) in the proportions of
  # the weights, deterministic by (seed, example index). Empty: read data.source alone.
  c.data.mixture = ()
  # "train": a SentencePiece model trained on a sample of the source (cached next to it).
  # Or a published tokenizer: a SentencePiece .model file (T5's, with 100 sentinels above
  # its pieces) or an HF tokenizer directory (tokenizer.json). vocab_size must match it.
  c.data.tokenizer = "train"
  # ---- end of real data fields
  c.data.data_dir = default_data_dir()
  c.data.validation_percent = 5  # share of documents (by path hash) held out
  c.data.vocab_size = 4096  # SentencePiece pieces + 100 sentinels
  c.data.tokenizer_sentences = 200_000  # lines sampled to train the tokenizer
  c.data.seq_len = 128
  c.data.num_threads = 2  # grain read threads per host
  # "documents": each host reads its share of the documents (scales to pods);
  # "rows": every host reads all and keeps its rows, so batches (and losses) are the
  # same on any number of hosts.
  c.data.shard_by = "documents"

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16  # global, across all hosts
  c.train.microbatches = 1  # gradient accumulation: the batch runs in this many slices
  # Logits for this many positions per row at a time, recomputed for the gradient, so no
  # whole [batch, length, vocab] tensor is kept (0: all at once). Must divide the length.
  c.train.loss_chunk = 0
  # Masked LM: project only the positions the objective can select onto the vocabulary
  # (False: every position; the same loss, slower: docs/performance.md).
  c.train.score_selected_only = True
  # Token accuracy from the max that the loss's logsumexp takes (False: a separate argmax
  # pass; the same counts up to ties, slower: docs/performance.md).
  c.train.accuracy_from_max = True
  c.train.num_steps = 500
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.eval_batches = 20  # fixed validation batches per eval; -1 for the whole split
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3  # the latest ones
  c.train.keep_checkpoints_every = 0  # also keep every multiple of this step for good (0: none)
  # A non-finite loss or gradient stops the run (the bad update is never applied or
  # saved); True skips such steps instead, counting them in the metrics.
  c.train.skip_nonfinite = False
  c.train.inject_nan_at_step = -1  # testing the guard: make this step's gradient NaN
  # ---- Fine-tuning: which parameters train (train/trainable.py) ----
  # Comma-separated regexes searched in parameter paths such as
  # "stack/layers/0/mlp/wi/kernel". Only parameters matching `trainable` train ("": all),
  # minus those matching `frozen`; frozen ones keep no optimizer state. Each pattern
  # must match some parameter.
  c.train.trainable = ""
  c.train.frozen = ""

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3  # peak, after warmup
  c.optim.warmup_steps = 50
  c.optim.final_lr_ratio = 0.1  # cosine decays to learning_rate * final_lr_ratio
  c.optim.weight_decay = 0.1  # on matrices only
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.clip_norm = 1.0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices left over by the other axes
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  c.sharding = ml_collections.ConfigDict()
  c.sharding.rules = DEFAULT_RULES

  # ---- Fine-tuning: the task the run trains (train/tasks.py) ----
  c.task = ml_collections.ConfigDict()
  # language_modeling: config.objective on config.data (pretraining). classification:
  # labelled examples of task.data through a head of model.num_classes classes.
  c.task.name = "language_modeling"
  # classification: a built-in task (train/task_data.py: stdlib_package, stdlib_same_module),
  # a path with {split} in it (train, validation) to .jsonl / .tsv files, or tfds:NAME
  # (glue/sst2, super_glue/boolq: prepared as ArrayRecord on this machine; never downloaded).
  c.task.data = ""
  c.task.classes = ""  # comma-separated class names of the files' labels
  # tfds:NAME data: where it is prepared ("": TFDS's default) and its text feature(s), one or
  # two comma-separated (sentence; sentence1,sentence2; question,passage).
  c.task.tfds_data_dir = ""
  c.task.tfds_text = "sentence"
  # Which states the head reads: "family" (its own: encoder first token, decoder last),
  # first, last, or mean (of the row's tokens).
  c.task.pooling = "family"

  c.sample = ml_collections.ConfigDict()
  c.sample.num_prompts = 3
  c.sample.prompt_tokens = 32
  c.sample.new_tokens = 48
  c.sample.temperature = 0.7  # 0 for greedy
  c.sample.seed = 0
  return c
