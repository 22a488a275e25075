"""Defaults shared by every experiment config.

Each experiment file calls `base_config()` and changes what differs. Fields are
grouped by the part of the run that reads them: `model`, `data`, `train`,
`optim`, `mesh`, `sharding`, `sample`. Each numeric field is declared on one line with
its default, the values it admits and its meaning: `Num(1e-3, "(0, inf)", "...")`.
"""
import os

import ml_collections

from configs import fields
from configs.fields import Num

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


# Built-in fine-tuning tasks (train/task_data.py) a `*_finetune` config argument names:
# name -> (task.name, task.data, data.seq_len, task.target_len, model.num_classes,
# train.num_steps).
FINETUNING_TASKS = {
    "package": ("classification", "stdlib_package", 64, 32, 6, 100),  # the first 64 tokens
    "swap": ("classification", "stdlib_swapped_lines", 64, 32, 2, 300),
    # The same, as the T5 paper casts classification: the class name is the target.
    "swap_text": ("text_to_text", "stdlib_swapped_lines", 64, 8, 0, 300),
    "name": ("text_to_text", "stdlib_function_name", 64, 12, 0, 500),
    "body": ("text_to_text", "stdlib_docstring_body", 64, 64, 0, 300),
    "next_line": ("text_to_text", "stdlib_next_line", 128, 24, 0, 500),
    # Validated on functions of the files the built-in corpus holds out of pretraining.
    "swap_unseen": ("classification", "stdlib_unseen_swapped_lines", 64, 32, 2, 300),
    "name_unseen": ("text_to_text", "stdlib_unseen_function_name", 64, 12, 0, 500),
}


def finetuning(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Fine-tunes a `*_tiny` config on a built-in task from the standard library. `arg`,
  comma-separated: one task of FINETUNING_TASKS (default "package": which top-level package a
  function comes from; "swap": whether it reads as written or has two lines swapped;
  "swap_text": the same with the class name as a text-to-text target; "name": its name from
  its body; "swap_unseen", "name_unseen": "swap" and "name" validated on functions of the
  files the built-in corpus holds out of pretraining; "body": its body from its signature
  and docstring; "next_line": its next line of code from its signature and first lines),
  and "lora" to train LoRA adapters (and a head) only. Start from a pretrained run with
  --config.init_from=WORKDIR (else from scratch). Minutes on a 2-core CPU."""
  words = [w for w in (arg or "").split(",") if w]
  tasks = [w for w in words if w in FINETUNING_TASKS]
  unknown = set(words) - set(FINETUNING_TASKS) - {"lora"}
  if unknown or len(tasks) > 1:
    raise ValueError(f"config argument {arg!r}: give at most one task of "
                     f"{sorted(FINETUNING_TASKS)} and optionally 'lora', comma-separated")
  (c.task.name, c.task.data, c.data.seq_len, c.task.target_len, c.model.num_classes,
   c.train.num_steps) = FINETUNING_TASKS[tasks[0] if tasks else "package"]
  c.train.batch_size = 16
  c.train.log_every = 25
  c.train.eval_every = c.train.num_steps  # the first and last: evaluation reads every example
  c.train.eval_batches = -1
  c.train.checkpoint_every = c.train.num_steps // 2
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 15
  c.sample.num_prompts = 0
  if "lora" in words:
    c.model.lora_rank, c.model.lora_alpha = 8, 16.0
    c.model.lora_targets = "query,value,wi,wo"
    c.train.trainable = "lora/,classifier/" if c.model.num_classes else "lora/"
    c.optim.learning_rate = 3e-3  # adapters start at zero and are few: larger steps
  return c


def base_config() -> ml_collections.ConfigDict:
  """Returns the shared defaults; experiment files override fields."""
  return fields.defaults(_declared())


def numeric_fields() -> dict[str, Num]:
  """{"optim.learning_rate": Num(default, allowed, meaning), ...}: every numeric field, as
  declared below (train/validation.py checks a config against them)."""
  return fields.declarations(_declared())


def _declared() -> ml_collections.ConfigDict:
  """Every field with its default; each numeric one as Num(default, allowed values, meaning)
  (configs/fields.py): a numeric field without one fails tests/test_config_checks.py."""
  c = ml_collections.ConfigDict()
  c.seed = Num(0, "[0, 2147483647]", "derives init, dropout, masking and shuffling")
  # ---- Fine-tuning: where the parameters start (train/init_from.py) ----
  # A workdir of ours (its latest checkpoint) or a directory written by
  # `python -m tools.convert_hf import`: parameters matching by name and shape load from it,
  # the rest start fresh. "": from scratch. A resumed run never reloads it.
  c.init_from = ""
  # causal_lm | prefix_lm | mlm | span_corruption (fit model.family); mlm on an
  # encoder-decoder: the corrupted row in, the whole original out (T5's "BERT-style")
  c.objective = "causal_lm"
  # How a decoder reads the part of a row it is given (a prefix LM's prefix, span corruption's
  # inputs): "bidirectional" (the T5 paper's prefix LM) or "causal" (its decoder-only LM).
  c.decoder_prefix = "bidirectional"
  c.noise = ml_collections.ConfigDict()
  c.noise.mlm_rate = Num(0.15, "(0, 1)", "share of text tokens selected (BERT)")
  c.noise.whole_word_masking = False  # mlm: select all the pieces of a word together
  c.noise.noise_density = Num(0.15, "(0, 1)", "share of tokens in noise spans (T5)")
  c.noise.mean_span_length = Num(3.0, "[1, inf)", "mean noise span length in tokens (T5)")

  c.model = ml_collections.ConfigDict()
  c.model.family = "decoder"  # "encoder" (BERT), "decoder" (GPT), "encoder_decoder" (T5), "lstm"
  c.model.num_layers = Num(2, "[1, inf)", "layers (the encoder's, for encoder_decoder)")
  c.model.num_decoder_layers = Num(0, "[0, inf)", "encoder_decoder only; 0: same as num_layers")
  c.model.embed_dim = Num(128, "[1, inf)", "model width")
  c.model.num_heads = Num(4, "[1, inf)", "attention heads")
  c.model.num_kv_heads = Num(0, "[0, inf)", "0: = num_heads (multi-head); 1: multi-query; else grouped-query")
  c.model.head_dim = Num(32, "[1, inf)", "width of each head")
  c.model.mlp_dim = Num(512, "[1, inf)", "MLP hidden width (LSTM: cells per layer)")
  c.model.activation = "gelu"  # relu | gelu (erf) | gelu_tanh | geglu | swiglu (gated)
  c.model.position = "learned"  # learned | sinusoidal | rotary | relative (T5 buckets)
  c.model.max_length = Num(256, "[1, inf)", "rows of the learned position table; >= data.seq_len")
  c.model.relative_buckets = Num(32, "[1, inf)", "relative position buckets (T5)")
  c.model.relative_max_distance = Num(128, "[1, inf)", "distance where the last relative bucket starts (T5)")
  c.model.rotary_base = Num(10_000.0, "(1, inf)", "wavelength base of rotary positions")
  c.model.norm = "layernorm"  # layernorm | rmsnorm
  c.model.norm_position = "pre"  # pre (GPT-2, T5) | post (BERT)
  c.model.norm_eps = Num(1e-5, "(0, 1]", "added to the variance in each norm")
  # Compute each norm's input gradient once instead of inside every consumer (XLA on CPU
  # fused and so recomputed it; docs/performance.md). Same numbers either way.
  c.model.norm_grad_barrier = True
  # einsum: plain einsums, fastest on CPU and TPU (docs/performance.md); jax_nn:
  # jax.nn.dot_product_attention's XLA kernel; cudnn: its cuDNN fused kernel (NVIDIA GPUs).
  c.model.attention = "einsum"
  # Causal self-attention (no prefix) runs this many queries at a time over only the keys
  # they can see, skipping the masked upper blocks: about half the score work on long rows
  # (docs/performance.md). 0: whole rows.
  c.model.causal_block = Num(128, "[0, inf)", "queries per causal attention block; 0: whole rows")
  c.model.use_bias = True  # biases in attention, MLP and the MLM head (T5 has none)
  c.model.tie_embeddings = True  # output projection = input embedding
  c.model.scale_attention = True  # 1/sqrt(head_dim) on logits; T5 folds it into the init
  # RMS-normalise each head's queries and keys (learned scale per head_dim) before the
  # scores, bounding them (ViT-22B; OLMo 2). Needs scale_attention; no HF export.
  c.model.qk_norm = False
  # normal: every matrix N(0, 0.02) (GPT-2, BERT); t5: embeddings N(0, 1), kernels
  # N(0, 1/sqrt(fan-in)) (Mesh TF's T5; what a tied, output-rescaled T5 needs). model/init.py
  c.model.init = "normal"
  c.model.num_token_types = Num(0, "[0, inf)", "encoder only: BERT's segment A/B embeddings (2)")
  c.model.dropout_rate = Num(0.0, "[0, 1)", "dropout on embeddings, attention and MLP outputs")
  c.model.dtype = "float32"  # compute dtype
  c.model.param_dtype = "float32"  # float32 | bfloat16 | float16 (the parameters' dtype)
  c.model.remat = "none"  # none | full | dots | dots_no_batch (what the backward pass keeps)
  c.model.scan_layers = False  # True: one scanned layer, compile time flat in depth
  # ---- Fine-tuning: a classification head (train/classification.py) ----
  # Classes of the head over pooled states (0: none); must equal the task's class count.
  c.model.num_classes = Num(0, "[0, inf)", "classes of a classification head; 0: none")
  # ---- Fine-tuning: LoRA adapters (model/lora.py) ----
  # Rank of the low-rank update added beside each targeted kernel (0: no LoRA). The update
  # is scaled by lora_alpha / lora_rank; lora_dropout drops the adapters' inputs in training.
  # Targets: comma-separated kernel names among query, key, value, out (attention) and
  # wi, wi_linear, wo (MLP). Freeze the base with --config.train.trainable=lora.
  c.model.lora_rank = Num(0, "[0, inf)", "rank of each LoRA update; 0: no LoRA")
  c.model.lora_alpha = Num(16.0, "(0, inf)", "LoRA updates are scaled by lora_alpha / lora_rank")
  c.model.lora_dropout = Num(0.0, "[0, 1)", "dropout on the LoRA adapters' inputs in training")
  c.model.lora_targets = "query,value"  # adapted kernels of query, key, value, out, wi, wi_linear, wo

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
  c.data.validation_split = "validation"  # tfds: the split to validate on
  # ((source, weight), ...): mix these sources (each as data.source) in the proportions of
  # the weights, deterministic by (seed, example index). Empty: read data.source alone.
  c.data.mixture = ()
  # "train": a SentencePiece model trained on a sample of the source (cached next to it).
  # Or a published tokenizer: a SentencePiece .model file (T5's, with 100 sentinels above
  # its pieces) or an HF tokenizer directory (tokenizer.json). vocab_size must match it.
  c.data.tokenizer = "train"
  # ---- end of real data fields
  c.data.data_dir = default_data_dir()  # corpora, tokenizers: $TRIFORM_DATA_DIR or ~/.cache/triform
  c.data.validation_percent = Num(5, "[1, 99]", "share of documents (by path hash) held out")
  c.data.vocab_size = Num(4096, "[1, inf)", "embedding rows (a trained tokenizer: pieces + 100 sentinels)")
  c.data.tokenizer_sentences = Num(200_000, "[1, inf)", "lines sampled to train the tokenizer")
  c.data.seq_len = Num(128, "[4, inf)", "tokens per row (an encoder-decoder's inputs)")
  c.data.num_threads = Num(2, "[1, inf)", "grain read threads per host")
  # "documents": each host reads its share of the documents (scales to pods);
  # "rows": every host reads all and keeps its rows, so batches (and losses) are the
  # same on any number of hosts.
  c.data.shard_by = "documents"

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = Num(16, "[1, inf)", "rows per step, across all hosts")
  c.train.microbatches = Num(1, "[1, inf)", "gradient accumulation: the batch runs in this many slices")
  # Logits for this many positions per row at a time, recomputed for the gradient, so no
  # whole [batch, length, vocab] tensor is kept (0: all at once). Must divide the length.
  c.train.loss_chunk = Num(0, "[0, inf)", "positions per row scored at a time; 0: all")
  # Masked LM: project only the positions the objective can select onto the vocabulary
  # (False: every position; the same loss, slower: docs/performance.md).
  c.train.score_selected_only = True
  # Token accuracy from the max that the loss's logsumexp takes (False: a separate argmax
  # pass; the same counts up to ties, slower: docs/performance.md).
  c.train.accuracy_from_max = True
  c.train.num_steps = Num(500, "[1, inf)", "steps to train")
  c.train.log_every = Num(25, "[1, inf)", "steps between train metrics")
  c.train.eval_every = Num(100, "[1, inf)", "steps between evaluations")
  c.train.eval_batches = Num(20, "-1 | [1, inf)", "fixed validation batches per eval; -1: the whole split")
  c.train.checkpoint_every = Num(100, "[1, inf)", "steps between checkpoints")
  c.train.keep_checkpoints = Num(3, "[1, inf)", "latest checkpoints kept")
  c.train.keep_checkpoints_every = Num(0, "[0, inf)", "also keep every multiple of this step for good; 0: none")
  # A non-finite loss or gradient stops the run (the bad update is never applied or
  # saved); True skips such steps instead, counting them in the metrics.
  c.train.skip_nonfinite = False
  c.train.inject_nan_at_step = Num(-1, "-1 | [1, inf)", "testing the guard: this step's gradient is NaN; -1: none")
  # ---- Fine-tuning: which parameters train (train/trainable.py) ----
  # Comma-separated regexes searched in parameter paths such as
  # "stack/layers/0/mlp/wi/kernel". Only parameters matching `trainable` train ("": all),
  # minus those matching `frozen`; frozen ones keep no optimizer state. Each pattern
  # must match some parameter.
  c.train.trainable = ""
  c.train.frozen = ""  # comma-separated regexes of parameters kept fixed

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = Num(1e-3, "(0, inf)", "peak learning rate, after warmup")
  c.optim.warmup_steps = Num(50, "[0, inf)", "steps of linear warmup from 0; <= train.num_steps")
  c.optim.final_lr_ratio = Num(0.1, "[0, 1]", "cosine decays to learning_rate * final_lr_ratio")
  c.optim.weight_decay = Num(0.1, "[0, inf)", "AdamW decoupled weight decay, on matrices only")
  c.optim.b1 = Num(0.9, "[0, 1)", "AdamW first-moment decay")
  c.optim.b2 = Num(0.95, "[0, 1)", "AdamW second-moment decay")
  c.optim.eps = Num(1e-8, "(0, inf)", "AdamW denominator epsilon")
  c.optim.clip_norm = Num(1.0, "(0, inf)", "global gradient norm clipped to")

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = Num(-1, "-1 | [1, inf)", "data-parallel axis size; -1: the devices the others leave")
  c.mesh.fsdp = Num(1, "-1 | [1, inf)", "fully-sharded data-parallel axis size; -1: the rest")
  c.mesh.tensor = Num(1, "-1 | [1, inf)", "tensor-parallel axis size; -1: the rest")

  c.sharding = ml_collections.ConfigDict()
  c.sharding.rules = DEFAULT_RULES  # ((logical axis, mesh axes), ...); None: replicated

  # ---- Fine-tuning: the task the run trains (train/tasks.py) ----
  c.task = ml_collections.ConfigDict()
  # language_modeling: config.objective on config.data (pretraining). classification:
  # labelled examples of task.data through a head of model.num_classes classes.
  # text_to_text: (input, target) or (prompt, completion) pairs of task.data, the loss on the
  # target only (train/text_to_text.py).
  c.task.name = "language_modeling"
  # classification: a built-in task (train/task_data.py: stdlib_package, stdlib_same_module),
  # a path with {split} in it (train, validation) to .jsonl / .tsv files, or tfds:NAME
  # (glue/sst2, super_glue/boolq: prepared as ArrayRecord on this machine; never downloaded).
  # text_to_text: a built-in task (stdlib_function_name, stdlib_docstring_body) or such a path.
  c.task.data = ""
  c.task.classes = ""  # comma-separated class names of the files' labels
  # tfds:NAME data: where it is prepared ("": TFDS's default) and its text feature(s), one or
  # two comma-separated (sentence; sentence1,sentence2; question,passage).
  c.task.tfds_data_dir = ""
  c.task.tfds_text = "sentence"  # tfds: the text feature(s), comma-separated
  # Which states the head reads: "family" (its own: encoder first token, decoder last,
  # encoder-decoder the decoder's start), first, last, mean (of the row's tokens), or
  # encoder_mean (an encoder-decoder's encoder states, averaged; its decoder is not run).
  c.task.pooling = "family"
  # text_to_text: the room for a target (data.seq_len holds the input).
  c.task.target_len = Num(32, "[2, inf)", "tokens of a text-to-text target, EOS included")
  c.task.pack = True  # text_to_text: a decoder's train rows hold several examples, each masked
  c.task.generate_examples = Num(-1, "-1 | [0, inf)", "examples decoded at the end; -1: all")
  c.task.no_repeat_ngram = Num(0, "[0, inf)", "n: decoding never writes an n-gram twice; 0: off")

  c.sample = ml_collections.ConfigDict()
  c.sample.num_prompts = Num(3, "[0, inf)", "validation prompts continued at the end; 0: none")
  c.sample.prompt_tokens = Num(32, "[1, inf)", "tokens of each prompt")
  c.sample.new_tokens = Num(48, "[1, inf)", "tokens sampled after each prompt")
  c.sample.temperature = Num(0.7, "[0, inf)", "sampling temperature; 0: greedy")
  c.sample.seed = Num(0, "[0, 2147483647]", "seed of the sampling")
  return c
