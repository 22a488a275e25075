"""colab/train_tiny: the .ipynb matches its jupytext twin, and its cells run end to end."""
import json
import pathlib
import re

import numpy as np
import pytest

from tests.conftest import tiny_config
from train import data as data_lib
from train.experiment import Experiment

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"


def _md_code_cells(path):
  return re.findall(r"^```python\n(.*?)^```$", path.read_text(encoding="utf-8"), re.M | re.S)


def _ipynb_code_cells(path):
  notebook = json.loads(path.read_text(encoding="utf-8"))
  return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_notebook_and_its_twin_have_the_same_code_cells():
  md = _md_code_cells(COLAB / "train_tiny.md")
  cells = _ipynb_code_cells(COLAB / "train_tiny.ipynb")
  assert len(md) >= 5
  assert ["".join(c["source"]) + "\n" for c in cells] == md
  # Committed without outputs, so diffs show only code and text.
  assert all(not c["outputs"] and c["execution_count"] is None for c in cells)


def _runnable(source):
  """A cell as plain Python: IPython's `%magic` lines must not run here (the project imports)."""
  return re.sub(r"^(\s*)%.*$", r'\1raise AssertionError("magic ran: the project imports")',
                source, flags=re.M)


def test_notebook_trains_plots_and_predicts(text_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("MPLBACKEND", "Agg")  # where matplotlib is installed: no window
  # A data_dir of its own, so the tokenizer files below are the trainer's alone.
  config = tiny_config(text_dir, str(tmp_path / "data"))
  namespace, trained_tokenizers = {}, None
  for i, source in enumerate(_md_code_cells(COLAB / "train_tiny.md")):
    exec(compile(_runnable(source), f"train_tiny cell {i}", "exec"), namespace)
    if "workdir" in namespace and "summary" not in namespace:
      # Right after the notebook sets them: the test corpus and a run of a few steps.
      namespace.update(config=config, workdir=str(tmp_path / "run"))
    if "summary" in namespace and trained_tokenizers is None:
      trained_tokenizers = {str(p) for p in (tmp_path / "data").glob("*/*.model")}
  # The notebook's tokenizer is the one the run trained with, not a second one.
  assert trained_tokenizers == {data_lib.load(config).tokenizer_path}
  out = capsys.readouterr().out
  assert namespace["summary"]["step"] == config.train.num_steps
  assert "Validation bits per byte" in out
  steps = {split: [s for s, _ in points] for split, points in namespace["curves"].items()}
  assert steps == {"train": [2, 4, 6], "validation": [0, 3], "validation_full": [6]}
  probs = np.asarray(namespace["probs"])
  assert probs.shape == (5,) and (np.diff(probs) <= 0).all() and 0 < probs.sum() <= 1 + 1e-6
  assert len(re.findall(r"^ *\d+\.\d\d%  '", out, re.M)) == 5, out[-1000:]
  # Restoring with a config the run was not made by, or from an empty workdir, says so.
  config.model.num_layers = 1
  with pytest.raises(ValueError, match="different config .*model.num_layers"):
    Experiment(config).restore(namespace["workdir"])
  with pytest.raises(ValueError, match="holds no checkpoints"):
    Experiment(config).restore(str(tmp_path / "empty"))
