"""colab/: every notebook matches its jupytext twin and runs top to bottom in a Jupyter kernel
(nbclient + ipykernel, as Colab runs it) with CI-sized parameters, drawing its plots."""
import json
import pathlib
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests.conftest import tiny_overrides
from train import task_data

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = ("quickstart", "three_families", "inside_the_model", "finetuning")
PARAMETERS = "# Parameters"


def _code(notebook) -> list[str]:
  return [c.source for c in notebook.cells if c.cell_type == "code"]


def _twin_code(name: str) -> list[str]:
  """The code cells of colab/<name>.md, the notebook's jupytext twin."""
  text = (COLAB / f"{name}.md").read_text(encoding="utf-8")
  return [c.removesuffix("\n") for c in re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_its_twin_without_outputs(name):
  notebook = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  assert _code(notebook) == _twin_code(name)
  # Committed without outputs, so diffs show only code and text.
  assert all(not c.outputs and c.execution_count is None
             for c in notebook.cells if c.cell_type == "code")
  # The same setup cell everywhere, then one parameter cell for CI to shrink.
  assert _code(notebook)[0] == _code(nbformat.read(COLAB / "quickstart.ipynb", 4))[0]
  assert sum(c.startswith(PARAMETERS) for c in _code(notebook)) == 1


def run_notebook(name: str, parameters: dict, check: str) -> tuple[dict, int]:
  """Executes colab/<name>.ipynb in a fresh kernel, its parameter cell followed by
  `parameters`, then `check`, a cell that prints one JSON line. Returns (that JSON, the
  number of PNG images the notebook displayed). A failing cell fails here."""
  notebook = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  at = next(i for i, c in enumerate(notebook.cells) if c.source.startswith(PARAMETERS))
  notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(
      "\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
  notebook.cells.append(nbformat.v4.new_code_cell("import json\n" + check))
  NotebookClient(notebook, kernel_name="python3", timeout=900,
                 resources={"metadata": {"path": str(COLAB)}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  images = sum("image/png" in o.get("data", {}) for o in outputs)
  return json.loads(notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]), images


def _shrunk(text_dir, tmp_path) -> dict:
  """The notebooks' `overrides`: tiny models over the test corpus, in a data_dir of their own."""
  overrides = tiny_overrides(text_dir, str(tmp_path / "data"))
  del overrides["train.num_steps"]  # the notebooks' num_steps sets it
  return overrides


def test_quickstart_trains_plots_samples_and_predicts(text_dir, tmp_path):
  check = """print(json.dumps({
    "step": summary["step"], "tokenizer": data.load(config).tokenizer_path,
    "curves": {k: [s for s, _ in v] for k, v in curves.items()}, "table": table}))"""
  result, images = run_notebook(
      "quickstart", {"num_steps": 6, "overrides": _shrunk(text_dir, tmp_path),
                     "workdir": str(tmp_path / "run")}, check)
  assert result["step"] == 6 and images == 1
  assert result["curves"] == {"train": [2, 4, 6], "validation": [0, 3], "validation_full": [6]}
  # The tokenizer the notebook reads with is the one the run trained, not a second one.
  assert [str(p) for p in (tmp_path / "data").glob("*/*.model")] == [result["tokenizer"]]
  probs = [float(p) for p in re.findall(r"\| (0\.\d{4}) \|", "\n".join(result["table"]))]
  assert len(probs) == 5 and (np.diff(probs) <= 0).all() and 0 < sum(probs) <= 1.0001


def test_three_families_compares_bert_gpt_and_t5(text_dir, tmp_path):
  check = """print(json.dumps([[r["family"], r["objective"], r["finished"]] for r in table["rows"]]
                 + [len(table["plots"])]))"""
  result, images = run_notebook(
      "three_families", {"num_steps": 4, "overrides": _shrunk(text_dir, tmp_path),
                         "out": str(tmp_path / "compare")}, check)
  *rows, plots = result
  assert sorted(rows) == [["decoder", "causal_lm", True], ["encoder", "mlm", True],
                          ["encoder_decoder", "span_corruption", True]]
  assert images == plots >= 3  # a learning-curve plot per comparable group at least


def test_inside_the_model_draws_attention_embeddings_and_sampling(text_dir, tmp_path):
  check = """print(json.dumps({
    "weights": {" ".join(k): list(v.shape) for k, v in reading.weights.items()},
    "tokens": len(reading.query_tokens[("decoder", "self")]),
    "left": {k: int((p > 0).sum()) for k, p in probabilities.items()},
    "top": {k: float(p.max()) for k, p in probabilities.items()},
    "top_p_mass": float(np.sort(probabilities["temperature 1"])[::-1][
        :int((probabilities["top-p 0.9"] > 0).sum()) - 1].sum())}))"""
  result, images = run_notebook(
      "inside_the_model", {"num_steps": 6, "overrides": _shrunk(text_dir, tmp_path)}, check)
  # Two layers of two heads over BOS and the text's tokens.
  t = result["tokens"]
  assert result["weights"] == {"decoder self": [2, 2, t, t]} and t > 10
  # Attention, embeddings, the five sampling settings in one figure.
  assert images == 3
  left, top = result["left"], result["top"]
  assert left["top-k 5"] == 5 and left["temperature 1"] == left["temperature 2"] == 640
  assert top["temperature 0.5"] > top["temperature 1"] > top["temperature 2"]
  # Top-p keeps the most likely tokens until their mass reaches 0.9: without its last one,
  # the mass is still short of it.
  assert left["top-p 0.9"] < 640 and result["top_p_mass"] < 0.9


def test_finetuning_tunes_four_ways_and_reports_the_task_metric(text_dir, tmp_path):
  check = """print(json.dumps({k: [s["step"], s["final_accuracy"], s["majority_accuracy"]]
                  for k, s in summaries.items()}))"""
  result, images = run_notebook("finetuning", {
      "pretrain_steps": 4, "overrides": _shrunk(text_dir, tmp_path),
      "finetune_overrides": {"train.num_steps": 2, "train.batch_size": 4, "data.seq_len": 32}},
      check)
  assert list(result) == ["from scratch", "pretrained",
                          "pretrained, embeddings and layer 0 frozen", "pretrained, LoRA"]
  # The baseline is the training split's most common label scored on validation; swap's
  # labels are a coin flip per function, so it lies near a half, on either side.
  examples = task_data.BUILTIN["stdlib_swapped_lines"][1]
  labels = np.array([e["label"] for e in examples("validation")])
  common = np.argmax(np.bincount([e["label"] for e in examples("train")]))
  assert all(step == 2 and 0 <= accuracy <= 1 and majority == np.mean(labels == common)
             for step, accuracy, majority in result.values())
  assert 0.4 < np.mean(labels == common) < 0.6
  assert images == 1
