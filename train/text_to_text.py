"""Text to text and prompt-completion tuning: a task behind the step's seam (train/tasks.py).

An encoder-decoder reads the input in its encoder (input, EOS) and writes the target in
its decoder (target, EOS). A decoder holds both in one row, [BOS] input EOS target EOS,
scoring only the target and its EOS; it reads the input both ways (a prefix LM) or
causally, as config.decoder_prefix says. With config.task.pack, a decoder's training rows
hold several examples each (grain's first-fit packing), each keeping its own segment,
positions, prefix and loss mask. Inputs are cut to data.seq_len tokens with their
specials, targets to task.target_len.

Evaluation: teacher-forced loss and token accuracy at every evaluation; at the end, greedy
decoding with the key/value cache over the validation examples (with task.no_repeat_ngram,
never writing an n-gram twice), scored by exact match, BLEU, chrF and ROUGE-L
(train/text_metrics.py), beside three trivial baselines: copying the input, copying its
last line, and the training split's most common target. The loss's trivial baseline is the
training targets' unigram frequencies (`unigram_loss` in the summary).
"""
import collections
import math

import grain
import grain.experimental as grain_exp
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from model import FAMILIES, decoding
from train import example_task, loss, objectives, task_data, text_metrics, tokenizer, unigram

_PACKED = ("inputs", "targets", "weights", "prefix")  # the decoder fields packing carries


class TextToText(example_task.ExampleTask):
  """Write each example's target given its input; the loss is on the target only."""
  SUMS = ("nll", "tokens", "correct")
  LOSS = ("nll", "tokens")

  def __init__(self, config: ml_collections.ConfigDict):
    # Read now, so a missing or empty file fails before anything runs.
    super().__init__(config, task_data.load_pairs(config.task.data))
    t, family = config.task, FAMILIES[config.model.family]
    if family.GENERATION not in ("continuation", "text_to_text"):
      raise ValueError(f"config.task.name={t.name!r} does not fit config.model.family="
                       f"{config.model.family!r}: it does not generate text; use a decoder "
                       "or an encoder_decoder")
    self.reads_source = "encoder_inputs" in family.INPUTS
    self.bidirectional_prefix = not self.reads_source and config.decoder_prefix == "bidirectional"
    self.pack = bool(t.pack) and not self.reads_source
    if config.data.seq_len < 3:
      raise ValueError(f"config.data.seq_len={config.data.seq_len} leaves no room for the "
                       "input beside its specials; use at least 3")
    longest = max(self.lengths)
    if config.model.position == "learned" and longest > config.model.max_length:
      raise ValueError(f"rows of {longest} tokens (data.seq_len + task.target_len for a "
                       f"decoder) exceed config.model.max_length={config.model.max_length}; "
                       "shorten them")

  # ---------------------------------------------------------------- shapes and cost
  @property
  def lengths(self) -> tuple[int, int]:
    """(decoder or only-stack row length, encoder row length or 0)."""
    c = self.config
    if self.reads_source:
      return c.task.target_len, c.data.seq_len
    return c.data.seq_len + c.task.target_len, 0

  @property
  def max_scored(self) -> int:
    """Positions per row the loss projects: an unpacked decoder row scores its target only."""
    return 0 if self.reads_source or self.pack else self.config.task.target_len

  def example_shapes(self) -> dict:
    length, source = self.lengths
    i32 = np.dtype(np.int32)
    fields = {name: (length, i32) for name in ("inputs", "targets", "positions", "segment_ids")}
    fields["weights"] = (length, np.dtype(np.float32))
    if self.reads_source:
      fields.update({name: (source, i32) for name in
                     ("encoder_inputs", "encoder_positions", "encoder_segment_ids")})
    if self.bidirectional_prefix:
      fields["prefix"] = (length, i32)
    return fields

  # ---------------------------------------------------------------- the step
  def metric_sums(self, model, batch: dict, rngs=None) -> dict:
    """Sums over the batch of the target tokens' cross-entropy, count and correct guesses."""
    return loss.target_sums(model, batch, self.max_scored, self.config.train, rngs)

  # ---------------------------------------------------------------- rows
  def _ids(self, example: dict, tok: tokenizer.Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, target ids), each cut to the room its row leaves."""
    room = self.config.data.seq_len - (1 if self.reads_source else 2)  # EOS (and BOS)
    return (tok.encode(example["input"])[:room],
            tok.encode(example["target"])[:self.config.task.target_len - 1])

  def prompt(self, example: dict, tok: tokenizer.Tokenizer) -> np.ndarray:
    """What generation starts from: the encoder's input + EOS, or [BOS] input EOS."""
    source, _ = self._ids(example, tok)
    head = [] if self.reads_source else [tok.bos_id]
    return np.asarray(head + list(source) + [tok.eos_id], np.int32)

  def encode(self, example: dict, tok: tokenizer.Tokenizer, pad: bool = True) -> dict:
    """One example's row(s), padded unless `pad` is False (a decoder row to be packed)."""
    source, target = self._ids(example, tok)
    target = np.append(target, tok.eos_id).astype(np.int32)
    length, source_length = self.lengths
    if self.reads_source:
      return objectives.encoder_decoder_example(
          np.append(source, tok.eos_id), target, source_length, length, tok.pad_id, scored=True)
    given = np.append(source, tok.eos_id).astype(np.int32)
    tokens = np.concatenate([given, target])
    row = objectives.decoder_example(tokens, len(given), len(tokens) if not pad else length,
                                      tok.bos_id, self.bidirectional_prefix)
    if not pad:
      row = {k: v for k, v in row.items() if k in _PACKED}
    return row

  def _packed(self, examples: grain.MapDataset, tok: tokenizer.Tokenizer, rows: int):
    """Rows of several whole examples each: segments and positions from grain's packer."""
    length, _ = self.lengths
    fields = _PACKED if self.bidirectional_prefix else _PACKED[:3]
    unpadded = examples.map(lambda e: self.encode(e, tok, pad=False)).to_iter_dataset()
    packed = grain_exp.FirstFitPackIterDataset(
        unpadded, length_struct={k: length for k in fields}, num_packing_bins=rows,
        seed=self.config.seed)

    def rename(row):
      out = {k: row[k] for k in fields}
      out.update(segment_ids=row["targets_segment_ids"], positions=row["targets_positions"])
      return out
    return packed.map(rename)

  def padding_row(self, row: dict) -> dict:
    return {k: np.zeros_like(v) for k, v in row.items()}

  def dataset(self, documents, tok: tokenizer.Tokenizer, *, train: bool):
    """ExampleTask's batches, a decoder's training rows packed if config.task.pack."""
    if train and self.pack:
      return self._packed(self.training_examples(), tok, self.host_rows).batch(
          self.host_rows, drop_remainder=True)
    return super().dataset(documents, tok, train=train)

  # ---------------------------------------------------------------- generation
  def generate(self, graphdef, params, tok: tokenizer.Tokenizer, examples: list[dict]
               ) -> list[str]:
    """Greedy outputs for `examples` (never repeating an n-gram if task.no_repeat_ngram is
    n), decoded with the key/value cache in batches of config.train.batch_size (the last
    one filled with copies, so one compile serves all)."""
    size, outputs = self.config.train.batch_size, []
    prompts = [self.prompt(e, tok) for e in examples]
    width = max(len(p) for p in prompts)
    for start in range(0, len(prompts), size):
      chunk = prompts[start:start + size]
      chunk += [chunk[0]] * (size - len(chunk))
      # [size, width], [size]
      inputs = np.stack([np.pad(p, (0, width - len(p)), constant_values=tok.pad_id)
                         for p in chunk])
      lengths = np.array([len(p) for p in chunk], np.int32)
      out = np.asarray(decoding.generate(
          graphdef, params, jnp.asarray(inputs), jnp.asarray(lengths), jax.random.key(0),
          max_new_tokens=self.config.task.target_len, eos_id=tok.eos_id, pad_id=tok.pad_id,
          prompt_prefix=self.bidirectional_prefix,
          no_repeat_ngram=self.config.task.no_repeat_ngram))
      for row in out[:len(prompts) - start]:
        ends = np.flatnonzero(row == tok.eos_id)
        outputs.append(tok.decode(row[:ends[0]] if len(ends) else row))
    return outputs

  # ---------------------------------------------------------------- reports
  def summarize(self, sums: dict) -> dict:
    """Target loss, perplexity and token accuracy (teacher-forced) from the summed counts."""
    tokens = max(float(sums["tokens"]), 1.0)
    mean = float(sums["nll"]) / tokens
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)),
            "accuracy": float(sums["correct"]) / tokens}

  def result(self, sums: dict) -> dict:
    return dict(self.summarize(sums), tokens=round(float(sums["tokens"])))

  def train_metrics(self, sums: dict) -> dict:
    return self.summarize(sums)

  @staticmethod
  def log_line(result: dict) -> str:
    return f"target loss {result['loss']:.4f}, token accuracy {result['accuracy']:.3f}"

  def finish(self, *, graphdef, params, data, eval_batches, timer) -> dict:
    """Generation metrics over the validation examples (the first task.generate_examples,
    -1: all), the baselines' on the same examples, and a few of the outputs."""
    del eval_batches
    tok, count = data.tokenizer, self.config.task.generate_examples
    examples = self.examples("validation")[:None if count < 0 else count]
    if not examples:
      return {"metrics": {}, "summary": {}}
    # What the model could write: each reference as cut to the target room.
    references = [tok.decode(self._ids(e, tok)[1]) for e in examples]
    with timer("generation"):
      # Every host gathers the whole params (sharded across hosts on a pod) and decodes.
      params = multihost_utils.process_allgather(params, tiled=True)
      predictions = self.generate(graphdef, params, tok, examples)
    common = collections.Counter(e["target"] for e in self.examples("train")).most_common(1)
    as_target = lambda text: tok.decode(self._ids({"input": "", "target": text}, tok)[1])
    baselines = {"copy": [tok.decode(self._ids(e, tok)[0]) for e in examples],
                 "last_line": [as_target(e["input"].rstrip().split("\n")[-1].strip())
                               for e in examples],
                 "common": [as_target(common[0][0])] * len(examples)}
    metrics = text_metrics.scores(predictions, references)
    for name, guesses in baselines.items():
      metrics.update({f"{name}_{k}": v for k, v in
                      text_metrics.scores(guesses, references).items()})
    samples = [{"input": e["input"], "target": r, "output": p}
               for e, r, p in list(zip(examples, references, predictions))[:5]]
    return {"metrics": metrics,
            "summary": dict(metrics, generated_examples=len(examples), samples=samples,
                            common_target=common[0][0], unigram_loss=self.unigram_loss(tok))}

  def unigram_loss(self, tok: tokenizer.Tokenizer) -> float:
    """The validation loss (nats per target token, EOS included) of a model that ignores its
    input: the training targets' token frequencies, add-one smoothed."""
    targets = lambda split: [self._ids(e, tok)[1] for e in self.examples(split)]
    log2_probs = unigram.fit_ids(targets("train"), tok.vocab_size, tok.eos_id)
    validation = [np.append(ids, tok.eos_id) for ids in targets("validation")]
    return float(-np.log(2) * np.mean(log2_probs[np.concatenate(validation)]))

  @staticmethod
  def summary(initial: dict | None, final: dict) -> dict:
    return {"initial_loss": initial and initial["loss"], "final_loss": final["loss"],
            "final_accuracy": final["accuracy"], "eval_tokens": final["tokens"]}
