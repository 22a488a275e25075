"""The README's main job on the real built-in corpus, shortened: corpus, tokenizer, train,
evaluate, sample, resume. Minutes on a 2-core CPU, so marked slow (CI runs it too)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpt_tiny_on_the_stdlib_corpus_learns_and_resumes(tmp_path):
  workdir = tmp_path / "run"
  flags = ["--config=configs/gpt_tiny.py", f"--workdir={workdir}",
           f"--config.data.data_dir={tmp_path / 'data'}", "--config.train.num_steps=120",
           "--config.train.eval_every=60", "--config.train.log_every=20",
           "--config.train.eval_batches=8", "--config.train.checkpoint_every=60"]
  run = lambda *extra: subprocess.run([sys.executable, "-m", "train.main", *flags, *extra],
                                      capture_output=True, text=True, cwd=ROOT)
  first = run()
  assert first.returncode == 0, first.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  # The whole stdlib validation split is scored, and at 120 of gpt_tiny's 600 steps
  # the model is already far below where it started.
  assert summary["eval_tokens"] > 100_000
  assert summary["final_bits_per_byte"] < 0.75 * summary["initial_bits_per_byte"]
  assert len(summary["samples"]) == 3 and all(s["continuation"] for s in summary["samples"])
  assert "Validation bits per byte" in first.stdout
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert {r["split"] for r in records} >= {"train", "validation"}
  assert max(r["step"] for r in records if r["split"] == "train") == 120
  # A rerun of the finished run resumes at its last step and changes nothing.
  again = run()
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((workdir / "summary.json").read_text())["step"] == 120
