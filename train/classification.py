"""Sequence and sentence-pair classification: a task behind the step's seam (train/tasks.py).

One example per row: [BOS] text (EOS text_b for pairs), padded. An encoder-decoder reads
the text in its encoder and classifies from its decoder's start state. The head
(model.num_classes, model/layers.ClassifierHead) reads the pooled states: the family's
own choice (CLASSIFY_POOLING) unless config.task.pooling says otherwise. Pairs mark
their second text with BERT's segment embeddings where the model has them
(model.num_token_types). Loss: cross-entropy; metrics: accuracy and macro-F1 (from
per-class counts the step sums, equal to scikit-learn's f1_score(average="macro")).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from model import FAMILIES
from train import example_task, task_data, tokenizer

# encoder_mean: an encoder-decoder's encoder states, averaged (Sentence-T5's ST5-Enc mean,
# Ni et al. 2021); its decoder is then not run.
POOLINGS = ("family", "first", "last", "mean", "encoder_mean")


class Classification(example_task.ExampleTask):
  """Predict each row's class; the baseline is the majority class of the training split."""
  LOSS = ("nll", "examples")

  def __init__(self, config: ml_collections.ConfigDict):
    t, family = config.task, FAMILIES[config.model.family]
    if family.CLASSIFY_POOLING is None:
      raise ValueError(f"config.task.name='classification' does not fit config.model.family="
                       f"{config.model.family!r}: it has no classification head")
    if t.pooling not in POOLINGS:
      raise ValueError(f"config.task.pooling={t.pooling!r} is not one of {list(POOLINGS)}")
    self.pooling = family.CLASSIFY_POOLING if t.pooling == "family" else t.pooling
    self.reads_source = "encoder_inputs" in family.INPUTS  # the text goes to an encoder
    if self.pooling == "encoder_mean" and not self.reads_source:
      raise ValueError(f"config.task.pooling='encoder_mean' needs an encoder-decoder; "
                       f"config.model.family={config.model.family!r} has one stack: use 'mean'")
    self.token_types = "token_types" in family.OPTIONAL_INPUTS and config.model.num_token_types
    self.classes = task_data.class_names(t.data, t.classes, t.tfds_data_dir, t.tfds_text)
    if config.model.num_classes != len(self.classes):
      raise ValueError(f"config.model.num_classes={config.model.num_classes} must be "
                       f"{len(self.classes)}, the number of classes of config.task.data="
                       f"{t.data!r} ({', '.join(self.classes)})")
    per_class = [f"{kind}_{i}" for i in range(len(self.classes)) for kind in ("tp", "fp", "fn")]
    self.SUMS = ("nll", "examples", "correct", *per_class)
    # Read now, so a missing or empty file or a stray label fails before anything runs.
    super().__init__(config, task_data.load(t.data, self.classes, t.tfds_data_dir,
                                            t.tfds_text))

  # ---------------------------------------------------------------- shapes and cost
  @property
  def lengths(self) -> tuple[int, int]:
    """(decoder or only-stack row length, encoder row length or 0)."""
    return (1, self.config.data.seq_len) if self.reads_source else (self.config.data.seq_len, 0)

  bidirectional_prefix = False
  max_scored = 1  # the head reads one pooled state a row, not a vocabulary projection

  def example_shapes(self) -> dict:
    length, source = self.lengths
    i32 = np.dtype(np.int32)
    fields = {"inputs": (length, i32), "positions": (length, i32), "segment_ids": (length, i32),
              "label": (1, i32), "weight": (1, np.dtype(np.float32))}
    if self.reads_source:
      fields.update(encoder_inputs=(source, i32), encoder_positions=(source, i32),
                    encoder_segment_ids=(source, i32))
    if self.token_types:
      fields["token_types"] = (length, i32)
    return fields

  # ---------------------------------------------------------------- the step
  def _pool(self, hidden: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """[B, T, D] -> [B, D] by the task's pooling over each row's tokens."""
    real = (segment_ids > 0).astype(hidden.dtype)  # [B, T]
    if self.pooling == "first":
      return hidden[:, 0]
    if self.pooling in ("mean", "encoder_mean"):
      return (hidden * real[..., None]).sum(1) / jnp.maximum(real.sum(1, keepdims=True), 1.0)
    last = jnp.maximum(real.sum(1).astype(jnp.int32) - 1, 0)  # [B]
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]

  def metric_sums(self, model, batch: dict, rngs=None) -> dict:
    names = model.INPUTS + tuple(n for n in model.OPTIONAL_INPUTS if n in batch)
    if self.pooling == "encoder_mean":
      # [B, S, D]
      hidden = model.encode(batch["encoder_inputs"], batch["encoder_positions"],
                            batch["encoder_segment_ids"], rngs=rngs)
      segment_ids = batch["encoder_segment_ids"]
    else:
      # [B, T, D]
      hidden = model.hidden(**{name: batch[name] for name in names}, rngs=rngs)
      segment_ids = batch["segment_ids"]
    # [B, D] -> [B, C]
    logits = model.classifier(self._pool(hidden, segment_ids))
    labels, weights = batch["label"][:, 0], batch["weight"][:, 0]  # [B]
    log_probs = jax.nn.log_softmax(logits)
    nll = -(jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0] * weights).sum()
    predicted = jnp.argmax(logits, axis=-1)
    classes = len(self.classes)
    # [B, C]
    said = jax.nn.one_hot(predicted, classes) * weights[:, None]
    true = jax.nn.one_hot(labels, classes) * weights[:, None]
    tp, said, true = (said * true).sum(0), said.sum(0), true.sum(0)
    sums = {"nll": nll, "examples": weights.sum(), "correct": tp.sum()}
    for i in range(classes):
      sums.update({f"tp_{i}": tp[i], f"fp_{i}": said[i] - tp[i], f"fn_{i}": true[i] - tp[i]})
    return sums

  # ---------------------------------------------------------------- batches
  def encode(self, example: dict, tok: tokenizer.Tokenizer) -> dict:
    """One padded row of `example`: its ids, positions, segments (and token types)."""
    length, source = self.lengths
    room = (source or length) - 1 - ("text_b" in example)
    a = tok.encode(example["text"])
    b = tok.encode(example["text_b"]) if "text_b" in example else np.zeros(0, np.int32)
    if len(b):  # each text keeps half the room when both do not fit
      keep_b = min(len(b), max(room // 2, room - len(a)))
      a, b = a[:room - keep_b], b[:keep_b]
      ids = np.concatenate([[tok.bos_id], a, [tok.eos_id], b])
      types = np.concatenate([np.zeros(len(a) + 2, np.int32), np.ones(len(b), np.int32)])
    else:
      ids = np.concatenate([[tok.bos_id], a[:room]])
      types = np.zeros(len(ids), np.int32)
    pad = lambda x, n: np.pad(np.asarray(x, np.int32), (0, n - len(x)))
    row = {"label": np.array([example["label"]], np.int32), "weight": np.ones(1, np.float32)}
    text_fields = {"inputs": pad(ids, source or length),
                   "positions": pad(np.arange(len(ids)), source or length),
                   "segment_ids": pad(np.ones(len(ids)), source or length)}
    if self.reads_source:
      row.update({"encoder_" + k: v for k, v in text_fields.items()})
      # The decoder's start (T5's: the pad id) attends to the whole encoded row.
      row.update(inputs=np.full(1, tok.pad_id, np.int32), positions=np.zeros(1, np.int32),
                 segment_ids=np.ones(1, np.int32))
    else:
      row.update(text_fields)
    if self.token_types:
      row["token_types"] = pad(types, length)
    return row

  def padding_row(self, row: dict) -> dict:
    return dict(row, weight=np.zeros(1, np.float32))

  # ---------------------------------------------------------------- reports
  def summarize(self, sums: dict) -> dict:
    """Loss, accuracy and macro-F1 (a class never predicted nor present scores 0)."""
    examples = max(float(sums["examples"]), 1.0)
    f1 = []
    for i in range(len(self.classes)):
      tp, fp, fn = (float(sums[f"{k}_{i}"]) for k in ("tp", "fp", "fn"))
      f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"loss": float(sums["nll"]) / examples,
            "accuracy": float(sums["correct"]) / examples, "macro_f1": sum(f1) / len(f1)}

  def result(self, sums: dict) -> dict:
    return dict(self.summarize(sums), examples=round(float(sums["examples"])))

  def train_metrics(self, sums: dict) -> dict:
    return self.summarize(sums)

  @staticmethod
  def log_line(result: dict) -> str:
    return (f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.3f}, "
            f"macro-F1 {result['macro_f1']:.3f}")

  def finish(self, *, graphdef, params, data, eval_batches, timer) -> dict:
    """The majority-class baseline: the most frequent training label, scored on validation."""
    del graphdef, params, data, eval_batches, timer
    train = np.bincount([e["label"] for e in self.examples("train")],
                        minlength=len(self.classes))
    labels = np.array([e["label"] for e in self.examples("validation")])
    majority = float(np.mean(labels == np.argmax(train)))
    return {"metrics": {"majority_accuracy": majority},
            "summary": {"majority_accuracy": majority,
                        "majority_class": self.classes[int(np.argmax(train))]}}

  @staticmethod
  def summary(initial: dict | None, final: dict) -> dict:
    return {"initial_accuracy": initial and initial["accuracy"],
            "final_loss": final["loss"], "final_accuracy": final["accuracy"],
            "final_macro_f1": final["macro_f1"], "eval_examples": final["examples"]}
