"""The seams: one Experiment per config, tasks the step runs unchanged, document sources, and
workdirs that outlive a change of the config's fields."""
import dataclasses
import json
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_config, train_losses
from train import data as data_lib
from train import sources, validation
from train.experiment import Experiment


@pytest.mark.parametrize("name", ["gpt_tiny", "gpt_prefixlm_tiny", "bert_tiny", "t5_tiny",
                                  "t5_lm_tiny", "lstm_tiny", "compare.decoder_denoising",
                                  "compare.prefixlm_denoising"])
def test_the_batch_spec_is_what_the_pipeline_makes(text_dir, data_dir, name):
  """The compiled steps are built for Experiment.batch_spec: it must be a real batch's shape."""
  config = tiny_config(text_dir, data_dir, name)
  experiment = Experiment(config)
  data = data_lib.load(config)
  batch = next(iter(experiment.task.dataset(data.documents("train"), data.tokenizer,
                                            train=True)))
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: (s.shape, s.dtype) for k, s in experiment.batch_spec.items()}
  row_tokens = sum(v.shape[1] for k, v in batch.items() if k in ("targets", "encoder_inputs"))
  assert experiment.tokens_per_step == row_tokens * config.train.batch_size


@dataclasses.dataclass(frozen=True)
class _SquaredStates:
  """A task that is no language model: drive the mean squared hidden state to zero."""
  SUMS = ("squares", "count")
  LOSS = ("squares", "count")

  def metric_sums(self, model, batch, rngs=None):
    # [B, T, D]
    hidden = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"], rngs=rngs)
    return {"squares": (hidden ** 2).mean(-1).sum(), "count": jnp.float32(hidden.shape[0] *
                                                                          hidden.shape[1])}


def test_the_step_trains_whatever_loss_the_task_gives(text_dir, data_dir):
  config = tiny_config(text_dir, data_dir)
  # Large steps: the final norm's scales shrink by about the learning rate a step.
  config.optim.learning_rate, config.optim.warmup_steps = 0.1, 1
  experiment = Experiment(config)
  experiment.task = _SquaredStates()
  rows = (config.train.batch_size, config.data.seq_len)
  batch = {"inputs": np.full(rows, 7, np.int32), "segment_ids": np.ones(rows, np.int32),
           "positions": np.broadcast_to(np.arange(rows[1], dtype=np.int32), rows)}
  losses, metrics = train_losses(experiment, batch, 6)
  assert set(metrics) >= {"squares", "count", "loss", "grad_norm"}
  assert losses[-1] < 0.5 * losses[0], losses


def test_the_train_step_copies_none_of_the_state_it_is_given(text_dir, data_dir):
  """The state is donated and updated in place. On CPU, copies of the AdamW moments used to
  stay resident through the whole step (hardware.step_compiler_options)."""
  entry = Experiment(tiny_config(text_dir, data_dir)).compile_train_step().as_text()
  entry = entry.split("\nENTRY ", 1)[1]
  arguments = set(re.findall(r"(%\S+) = \S+ parameter\(", entry))
  copied = set(re.findall(r"= \S+ copy\((%[^)\s]+)\)", entry))
  assert len(arguments) > 10 and not copied & arguments, sorted(copied & arguments)[:3]


def test_the_tokenizer_and_baseline_sample_is_bounded():
  texts = [f"line {i}\n\nsecond {i}\n" for i in range(100)]

  class Counting:
    def __init__(self):
      self.read = set()

    def __len__(self):
      return len(texts)

    def __getitem__(self, i):
      self.read.add(i)
      return {"text": texts[i].encode()}

  documents = Counting()
  sample = sources.sample_texts(documents, max_lines=7)
  # Two non-blank lines a document: the fourth brings them to 8 >= 7, and nothing after it
  # is read.
  assert sample == texts[:4] and documents.read == {0, 1, 2, 3}
  assert sources.sample_texts(documents, max_lines=10_000) == texts


def test_a_cached_tokenizer_reads_no_documents(text_dir, data_dir, monkeypatch):
  config = tiny_config(text_dir, data_dir)
  first = data_lib.load(config)  # trains or loads it
  monkeypatch.setattr(sources, "sample_texts", lambda *a: pytest.fail("read the sample"))
  again = data_lib.load(config)
  assert again.tokenizer_path == first.tokenizer_path
  assert (again.tokenizer.sp.serialized_model_proto()
          == first.tokenizer.sp.serialized_model_proto())


def _saved_config(workdir, edit):
  path = os.path.join(workdir, "config.json")
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  edit(saved)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f)


def test_a_workdir_from_before_a_field_was_added_or_removed_resumes(text_dir, data_dir,
                                                                    tmp_path):
  config, workdir = tiny_config(text_dir, data_dir), str(tmp_path)
  validation.check_workdir_config(workdir, config)
  # Written before train.accuracy_from_max existed, and when model.pooler still did.
  _saved_config(workdir, lambda c: (c["train"].pop("accuracy_from_max"),
                                    c["model"].update(pooler=False)))
  validation.check_workdir_config(workdir, config)
  # A field added since, set to anything but its default, is a change.
  config.train.accuracy_from_max = False
  with pytest.raises(ValueError, match="different config .*train.accuracy_from_max"):
    validation.check_workdir_config(workdir, config)
  config.train.accuracy_from_max = True
  _saved_config(workdir, lambda c: c["model"].update(pooler=True))
  with pytest.raises(ValueError, match="different config .*model.pooler"):
    validation.check_workdir_config(workdir, config)
