"""tools/compare: the scaling fits on synthetic points, the table and marks on synthetic
workdirs, and both modes of the command line on two tiny configs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import common
from tools import compare, compare_runs, scaling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fit_recovers_known_power_law():
  # L(N) = 1.7 + 400 / N^0.3 at six sizes, with 0.2% noise (a fixed seed).
  n = np.geomspace(1e4, 3e6, 6)
  true_loss = 1.7 + 400.0 / n ** 0.3
  noisy = true_loss * (1 + 0.002 * np.random.default_rng(0).standard_normal(len(n)))
  fit = scaling.fit_power_law(n, noisy)
  assert fit["alpha"] == pytest.approx(0.3, abs=0.05)
  assert fit["E"] == pytest.approx(1.7, abs=0.15)
  assert fit["alpha_95"][0] < 0.3 < fit["alpha_95"][1]
  assert fit["E_95"][0] < 1.7 < fit["E_95"][1]
  # Noise-free points are fitted to the solver's precision.
  exact = scaling.fit_power_law(n, true_loss)
  assert exact["alpha"] == pytest.approx(0.3, rel=1e-4) and exact["rmse"] < 1e-6
  with pytest.raises(ValueError, match="at least 4 runs of at least 3 values of N"):
    scaling.fit_power_law([1e4, 1e5, 1e5, 1e4], [3.0, 2.0, 2.0, 3.0])


def test_isoflop_finds_the_compute_optimal_size():
  # Chinchilla's form L = E + A/N^a + B/D^b with D = C / 6N has its optimum at
  # N* = G (C/6)^(b/(a+b)), G = (aA / bB)^(1/(a+b)).
  e, a_coef, b_coef, a, b = 1.7, 400.0, 410.0, 0.34, 0.28
  g = (a * a_coef / (b * b_coef)) ** (1 / (a + b))
  optimal = lambda budget: g * (budget / 6) ** (b / (a + b))
  runs = []
  for budget in (1e15, 1e16, 1e17):
    # Sizes from a quarter to four times the optimum, as an isoFLOP sweep brackets it.
    for n in optimal(budget) * np.geomspace(0.25, 4, 9):
      d = budget / (6 * n)
      runs.append({"budget": budget, "params": n, "loss": e + a_coef / n ** a + b_coef / d ** b})
  result = scaling.isoflop_optima(runs)
  for optimum in result["budgets"]:
    # A parabola in log N stands in for the exact curve over these sizes: within 5%.
    assert optimum["params_opt"] == pytest.approx(optimal(optimum["budget"]), rel=0.05)
    assert not optimum["extrapolated"]
    assert optimum["tokens_per_param"] == pytest.approx(
        optimum["budget"] / 6 / optimum["params_opt"] ** 2)
  assert result["params_opt_vs_budget"]["a"] == pytest.approx(b / (a + b), abs=0.03)


def test_crossing_finds_where_one_curve_gets_below_the_other():
  # model 1.2 + 1000/D^0.5 and n-gram 1.7 + A/D^0.25 meet at D = 1e6 when A = 0.5 * 1e6^0.25.
  model = {"E": 1.2, "A": 1000.0, "alpha": 0.5}
  ngram = {"E": 1.7, "A": 0.5 * 1e6 ** 0.25, "alpha": 0.25}
  assert scaling.crossing(model, ngram, low=1e3) == pytest.approx(1e6, rel=1e-6)
  assert scaling.crossing(model, ngram, low=4e6) == 4e6  # already below there
  assert scaling.crossing(ngram, model, low=1e3) is None  # the n-gram never gets back below


def _fake_run(directory, name, *, objective="causal_lm", seed=0, width=32, bpb=(3.0, 2.0),
              tokens=1000, learning_rate=1e-3):
  """A workdir as train.main leaves it, with made-up figures."""
  config = json.loads(common.base_config().to_json())
  config.update(objective=objective, seed=seed)
  config["train"]["num_steps"] = tokens // 100  # what tells token budgets apart
  config["optim"]["learning_rate"] = learning_rate
  config["model"].update(embed_dim=width, mlp_dim=4 * width, head_dim=width // 4)
  workdir = os.path.join(directory, name)
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  records = [{"step": s, "split": "validation", "tokens_seen": 100 * s, "flops_seen": 1e9 * s,
              "wall_time": s, "bits_per_byte": v, "loss": v}
             for s, v in zip((0, 10), bpb)]
  records.append({"step": 10, "split": "train", "tokens_seen": tokens, "flops_seen": 1e10,
                  "tokens_per_sec": 50.0, "mfu": 0.2, "loss": bpb[-1]})
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"final_bits_per_byte": bpb[-1], "final_loss": bpb[-1] * 0.7,
               "final_accuracy": 0.4}, f)
  return workdir


def test_seeds_form_one_row_and_only_comparable_runs_are_ranked(tmp_path):
  dirs = [_fake_run(tmp_path, "gpt-seed0", seed=0, bpb=(3.0, 2.00)),
          _fake_run(tmp_path, "gpt-seed1", seed=1, bpb=(3.0, 2.10)),
          _fake_run(tmp_path, "wide-seed0", seed=0, width=64, bpb=(3.0, 1.98)),
          _fake_run(tmp_path, "wide-seed1", seed=1, width=64, bpb=(3.0, 2.06)),
          _fake_run(tmp_path, "narrow-seed0", seed=0, width=16, bpb=(3.0, 2.40)),
          _fake_run(tmp_path, "narrow-seed1", seed=1, width=16, bpb=(3.0, 2.41)),
          # A masked LM's lower number is not better: it scores other tokens.
          _fake_run(tmp_path, "bert", objective="mlm", bpb=(3.0, 1.0))]
  result = compare.write_outputs([compare_runs.read_run(d) for d in dirs], str(tmp_path / "out"))
  rows = {r["label"]: r for r in result["rows"]}
  assert [r["seeds"] for r in result["rows"]] == [2, 2, 2, 1]
  assert rows["gpt"]["bits_per_byte"] == pytest.approx(2.05)
  assert rows["gpt"]["bits_per_byte_spread"] == pytest.approx(np.std([2.0, 2.1], ddof=1))
  assert rows["gpt"]["group"] == rows["wide"]["group"] == rows["narrow"]["group"] == "A"
  assert rows["bert"]["group"] == "B" and rows["bert"]["vs_best"] == "only"
  # wide is best; gpt's gap (0.03) is within the seeds' spread; narrow's is not.
  assert (rows["wide"]["vs_best"], rows["gpt"]["vs_best"]) == ("best", "tie")
  assert rows["narrow"]["vs_best"] == "+0.3850"
  assert rows["gpt"]["non_embedding_params"] < rows["gpt"]["params"]
  assert rows["gpt"]["flops_per_token"] == pytest.approx(1e7)
  table = (tmp_path / "out" / "table.md").read_text()
  assert "- A: objective=causal_lm" in table and "- B: objective=mlm" in table
  csv_lines = (tmp_path / "out" / "table.csv").read_text().splitlines()
  assert len(csv_lines) == 5 and csv_lines[0].startswith("label,family,objective,seeds")
  for path in result["plots"]:  # one figure per group, and the fit over group A's 3 sizes
    assert os.path.getsize(path) > 10_000
  assert sorted(os.path.basename(p) for p in result["plots"]) == [
      "bits_per_byte_A.png", "bits_per_byte_B.png", "loss_vs_params.png"]
  assert result["fit_group"] == "A" and result["fit_rows"] == ["gpt", "wide", "narrow"]


def test_tokens_fit_says_from_how_many_tokens_the_model_beats_the_ngram(tmp_path):
  # One model at five token budgets on known curves that cross at 1e6 tokens (as above).
  model = lambda d: 1.2 + 1000.0 / d ** 0.5
  ngram = lambda d: 1.7 + 0.5 * 1e6 ** 0.25 / d ** 0.25
  runs = []
  for d in (1e4, 3e4, 1e5, 3e5, 6e5):
    run = compare_runs.read_run(_fake_run(tmp_path, f"gpt-tokens{d:g}", tokens=int(d),
                                          bpb=(5.0, model(d))))
    run.ngram_bits_per_byte = ngram(d)
    runs.append(run)
  # Another learning rate at another budget is another model: it stays out of the fit.
  runs.append(compare_runs.read_run(_fake_run(tmp_path, "gpt-fast", tokens=2_000_000,
                                              learning_rate=3e-3, bpb=(5.0, 1.0))))
  result = compare.write_outputs(runs, str(tmp_path / "out"))
  fitted = result["tokens_fit"]
  assert fitted["rows"] == [f"gpt-tokens{d:g}" for d in (1e4, 3e4, 1e5, 3e5, 6e5)]
  assert fitted["model"]["alpha"] == pytest.approx(0.5, rel=1e-3)
  assert fitted["ngram"]["alpha"] == pytest.approx(0.25, rel=1e-3)
  assert fitted["model_beats_ngram_from_tokens"] == pytest.approx(1e6, rel=1e-3)
  assert fitted["model_beats_ngram_from_seconds"] == pytest.approx(1e6 / 50.0, rel=1e-3)
  assert "n-gram bits/byte" in (tmp_path / "out" / "table.md").read_text()
  assert json.loads((tmp_path / "out" / "fit.json").read_text())["tokens_fit"] == fitted
  assert os.path.getsize(tmp_path / "out" / "bits_vs_tokens.png") > 10_000


def test_runs_of_several_sizes_and_flop_budgets_give_isoflop_optima(tmp_path):
  # Three widths at each of two budgets, a loss lowest at the middle width: a vertex each.
  runs, budgets = [], {}
  for budget, steps in ((1e12, 10), (2e12, 20)):
    for width, loss in ((16, 2.6), (32, 2.4), (64, 2.5)):
      loss -= 0.1 * (budget == 2e12)
      workdir = _fake_run(tmp_path, f"w{width}-flops{budget:g}", width=width,
                          tokens=100 * steps, bpb=(3.0, loss))
      runs.append(compare_runs.read_run(workdir))
      budgets[workdir] = budget
  result = compare.write_outputs(runs, str(tmp_path / "out"), budgets)
  optima = result["isoflop"]["budgets"]
  assert [o["budget"] for o in optima] == [1e12, 2e12]
  assert all(not o["extrapolated"] for o in optima)
  assert len(result["fit_rows"]) == 3  # L(N) over the sizes of one budget, not both
  assert os.path.getsize(tmp_path / "out" / "isoflop.png") > 10_000


def test_joint_fit_of_size_and_tokens_says_when_any_size_beats_the_ngram(tmp_path):
  # L(N, D) = 1.0 + 300 / N^0.5 + 20 / D^0.3 on a grid of three widths and four budgets;
  # at any size it tends to 1 + 20 / D^0.3, which meets the n-gram 1.3 + a / D^0.2 at 1e6.
  model = lambda n, d: 1.0 + 300.0 / n ** 0.5 + 20.0 / d ** 0.3
  a = (1.0 + 20.0 / 1e6 ** 0.3 - 1.3) * 1e6 ** 0.2
  ngram = lambda d: 1.3 + a / d ** 0.2
  runs = []
  for width in (16, 32, 64):
    for d in (2e4, 1e5, 5e5, 2e6):
      workdir = _fake_run(tmp_path, f"w{width}-tokens{d:g}", width=width, tokens=int(d))
      run = compare_runs.read_run(workdir)
      n = compare_runs.row([run])["non_embedding_params"]
      run.summary["final_bits_per_byte"] = model(n, d)
      run.ngram_bits_per_byte = ngram(d)
      runs.append(run)
  fitted = compare.write_outputs(runs, str(tmp_path / "out"))["joint_fit"]
  assert len(fitted["rows"]) == 12
  for name, value in (("E", 1.0), ("alpha", 0.5), ("beta", 0.3), ("A", 300.0), ("B", 20.0)):
    assert fitted["model"][name] == pytest.approx(value, rel=1e-3), name
  assert fitted["any_size_beats_ngram_from_tokens"] == pytest.approx(1e6, rel=1e-3)
  with pytest.raises(ValueError, match="at least 6 runs of at least 3 sizes and 3 token"):
    scaling.fit_loss_vs_params_and_tokens([1, 2, 3, 1, 2, 3], [1, 1, 1, 2, 2, 2], [1] * 6)


def test_bad_flags_are_one_line_errors():
  for bad in ("tokens", "bytes:5", "flops:-1", "flops:1e14,x"):
    with pytest.raises(ValueError, match="must be KIND:VALUE"):
      compare.parse_budget(bad)
  with pytest.raises(ValueError, match="one value per field"):
    compare.parse_sweep("model.embed_dim+model.mlp_dim=64+256,128")
  config = common.base_config()
  with pytest.raises(ValueError, match="'model.width' is not a config field"):
    compare.set_field(config, "model.width", "3")
  with pytest.raises(ValueError, match="is not an integer"):
    compare.set_field(config, "model.num_layers", "2.5")
  compare.set_field(config, "optim.learning_rate", "3e-3")
  assert config.optim.learning_rate == 3e-3


def test_a_bad_fine_tuning_setting_stops_before_any_run(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "tools.compare", "run", "--configs=configs/gpt_tiny.py",
       f"--out={tmp_path}", "--finetune=stdlib_package", "--finetune_override=train.num_steps=3"],
      cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.optim.warmup_steps=15 exceeds config.train.num_steps=3: the learning rate "
      "would never reach its peak; use at most 3")
  assert not (tmp_path / "runs").exists()


CONFIG_FILE = """from pathlib import Path
from tests.conftest import tiny_config

def get_config():
  return tiny_config(Path({text_dir!r}), {data_dir!r}, {name!r})
"""


@pytest.mark.slow
def test_run_then_read_two_tiny_configs(text_dir, data_dir, tmp_path):
  files = []
  for name in ("gpt_tiny", "bert_tiny"):
    files.append(tmp_path / f"{name}.py")
    files[-1].write_text(CONFIG_FILE.format(text_dir=str(text_dir), data_dir=data_dir, name=name))
  out = tmp_path / "out"
  # A budget of 4 steps of 4 rows x 32 tokens (seeds are tested on made-up workdirs above).
  run = subprocess.run(
      [sys.executable, "-m", "tools.compare", "run", f"--configs={files[0]},{files[1]}",
       f"--out={out}", "--budget=tokens:512", "--seeds=3", "--evals=2",
       "--override=sample.num_prompts=0", "--finetune=stdlib_package",
       *[f"--finetune_override={o}" for o in ("train.num_steps=3", "optim.warmup_steps=1",
                                              "train.batch_size=4",
                                              "train.eval_batches=2", "data.seq_len=32")]],
      cwd=ROOT, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  made = sorted(os.listdir(out / "runs"))
  assert made == ["bert_tiny-tokens512-seed3", "bert_tiny-tokens512-seed3-ft-stdlib_package",
                  "gpt_tiny-tokens512-seed3", "gpt_tiny-tokens512-seed3-ft-stdlib_package"]
  made = made[::2]
  first = json.loads((out / "table.json").read_text())
  assert [(r["label"], r["family"], r["objective"], r["seeds"], r["tokens_seen"], r["group"])
          for r in first["rows"]] == [
      ("gpt_tiny-tokens512", "decoder", "causal_lm", 1, 512, "A"),
      ("bert_tiny-tokens512", "encoder", "mlm", 1, 512, "B")]
  assert all(r["finished"] and r["bits_per_byte"] > 0 for r in first["rows"])
  # Both fine-tuned on the built-in task: its accuracy, in [0, 1], beside the majority's.
  for r in first["rows"]:
    assert 0 <= r["downstream.stdlib_package accuracy"] <= 1, r
    assert 0 < r["downstream.stdlib_package majority"] < 1, r
  assert all(os.path.getsize(p) > 10_000 for p in first["plots"])
  read = subprocess.run(
      [sys.executable, "-m", "tools.compare", "read", f"--out={tmp_path / 'read'}",
       "--finetune=stdlib_package", "--ngram=3",
       "--workdirs=" + ",".join(str(out / "runs" / m) for m in made)],
      cwd=ROOT, capture_output=True, text=True)
  assert read.returncode == 0, read.stderr[-3000:]
  again = json.loads((tmp_path / "read" / "table.json").read_text())
  # The same figures; group letters follow the order the workdirs are given in.
  key = lambda rows: sorted((r["label"], r["bits_per_byte"], r["eval_loss"],
                             r["downstream.stdlib_package accuracy"]) for r in rows)
  assert key(again["rows"]) == key(first["rows"])
  assert len({r["group"] for r in again["rows"]}) == 2
  # The n-gram counted over the rows the causal LM trained on; none beside the masked LM.
  from tools import baselines
  ngram = {r["label"]: r["ngram_bits_per_byte"] for r in again["rows"]}
  gpt = compare_runs.config_of(compare_runs.read_run(str(out / "runs" / made[1])))
  assert ngram["gpt_tiny-tokens512"] == baselines.baselines(gpt, 3, matched_budget=True)[-1][
      "bits_per_byte"]
  assert ngram["bert_tiny-tokens512"] is None
