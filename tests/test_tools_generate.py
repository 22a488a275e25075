"""tools/generate.py and tools/inspect.py on tiny trained runs: continuations, the next-token
table, mask filling, attention and embedding pictures."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import command_line, tiny_config
from train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(text_dir, data_dir, tmp_path_factory):
  out = {}
  for name in ("gpt_tiny", "bert_tiny"):
    config = tiny_config(text_dir, data_dir, name)
    workdir = str(tmp_path_factory.mktemp(name))
    trainer.train(config, workdir)
    out[name] = (config, workdir)
  return out


def _generate(name, runs, *args):
  config, workdir = runs[name]
  return subprocess.run([sys.executable, "-m", "tools.generate",
                         *command_line(name, config, workdir), *args],
                        cwd=ROOT, capture_output=True, text=True)


def test_continues_prompts_and_prints_the_next_token_table(runs):
  result = _generate("gpt_tiny", runs, "--prompt=def f(x):", "--prompt=import",
                     "--max_new_tokens=8", "--temperature=0.8", "--top_p=0.9",
                     "--no_repeat_ngram=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count("output: ") == 2 and "prompt: def f(x):" in result.stdout
  both = _generate("gpt_tiny", runs, "--prompt=import", "--beam_size=2", "--no_repeat_ngram=2")
  assert both.returncode != 0
  assert both.stderr.strip().splitlines()[-1] == (
      "error: --no_repeat_ngram applies to greedy decoding and sampling, not to --beam_size; "
      "drop one of them")
  table = _generate("gpt_tiny", runs, "--prompt=import", "--show_next_token_probs", "--top=5")
  assert table.returncode == 0, table.stderr[-3000:]
  probs = [float(p) for p in re.findall(r"\| (0\.\d{4}) \|", table.stdout)]
  assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001


def test_encoder_fills_masks_and_bad_input_is_one_line(runs):
  result = _generate("bert_tiny", runs, "--prompt=import <mask> as np", "--top=3")
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(re.findall(r"mask at \d+: ", result.stdout)) == 1
  no_mask = _generate("bert_tiny", runs, "--prompt=import os")
  assert no_mask.returncode != 0
  assert no_mask.stderr.strip().splitlines()[-1] == ("error: an encoder fills masks: put <mask> "
                                                     "in the prompt")


def test_inspect_draws_every_attention_and_the_embeddings_of_a_workdir(runs, tmp_path):
  import matplotlib.image
  _, workdir = runs["bert_tiny"]
  result = subprocess.run([sys.executable, "-m", "tools.inspect", f"--workdir={workdir}",
                           "--text=import os", f"--out={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  names = ["attention_encoder_self.png", "embeddings.png"]
  assert result.stdout.split()[:2] == [str(tmp_path / n) for n in names]
  assert "encoder self-attention over --text:" in result.stdout  # and where each head looks
  for name in names:
    height, width, _ = matplotlib.image.imread(tmp_path / name).shape
    assert height > 300 and width > 300
  missing = subprocess.run([sys.executable, "-m", "tools.inspect", f"--workdir={tmp_path}"],
                           cwd=ROOT, capture_output=True, text=True)
  assert missing.returncode != 0
  assert missing.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path}/config.json not found")
