"""Command line: record a short run of every tiny config, and compare two recordings bit for bit.

  python -m tools.record_steps record --out=/tmp/before.npz [--checkout=/path/to/old/tree]
  python -m tools.record_steps compare /tmp/before.npz /tmp/after.npz

`record` trains each config of --configs for --steps steps through `python -m train.main`
(run in --checkout, default this tree, so an older commit can be recorded with the same
script) with a metrics record every step, then keeps each step's training loss, the final
full-validation loss and every final parameter, read from the run's last checkpoint.
`compare` says, config by config, whether the losses and parameters of two recordings
are the same bits, and exits 1 if any differ. A refactoring that claims to change no
behaviour shows it this way; a new XLA may change the bits, so recordings are compared
between commits on one machine, never kept as golden files.
"""
import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags
import numpy as np

TINY = ("gpt_tiny", "gpt_prefixlm_tiny", "bert_tiny", "t5_tiny", "t5_lm_tiny", "lstm_tiny")
# Few evaluation and checkpoint writes, no samples: the steps are what is compared.
OVERRIDES = ("--config.train.log_every=1", "--config.train.eval_every=100000",
             "--config.train.eval_batches=2", "--config.sample.num_prompts=0")

FLAGS = flags.FLAGS


def _final_params(workdir: str, step: int) -> dict:
  """{parameter path: array} of the state saved at `step`, read without a target."""
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                          "state"))
  leaves = _flatten(state["params"])
  return {f"params/{k}": np.asarray(v) for k, v in leaves.items()}


def _flatten(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix.rstrip("/"): tree}
  out = {}
  for k, v in tree.items():
    out.update(_flatten(v, f"{prefix}{k}/"))
  return out


def config_flags(name: str, steps: int) -> list[str]:
  """train.main's config flags for `steps` steps of config `name`; the warmup is a third of
  them, as a run must reach its peak learning rate."""
  return [f"--config=configs/{name}.py", f"--config.train.num_steps={steps}",
          f"--config.train.checkpoint_every={steps}", f"--config.optim.warmup_steps={steps // 3}",
          *OVERRIDES]


def record_one(checkout: str, name: str, steps: int, workdir: str) -> dict:
  """{"<name>/losses": [steps], "<name>/validation_loss": [], "<name>/params/...": arrays}."""
  command = [sys.executable, "-m", "train.main", f"--workdir={workdir}",
             *config_flags(name, steps)]
  subprocess.run(command, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  losses = [r["loss"] for r in records if r["split"] == "train"]
  final = [r["loss"] for r in records if r["split"] == "validation_full" and "loss" in r]
  arrays = {"losses": np.array(losses, np.float64), "validation_loss": np.array(final)}
  arrays.update(_final_params(workdir, steps))
  return {f"{name}/{k}": v for k, v in arrays.items()}


def compare(a: dict, b: dict) -> list[str]:
  """Lines, one per config, saying whether every array is bitwise equal; differences named."""
  lines = []
  for name in sorted({k.split("/")[0] for k in a.keys() | b.keys()}):
    keys = sorted(k for k in a.keys() | b.keys() if k.startswith(name + "/"))
    missing = [k for k in keys if k not in a or k not in b]
    differ = [k for k in keys if k in a and k in b and
              (a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes())]
    if missing or differ:
      lines.append(f"{name}: DIFFERENT: {len(differ)} arrays differ ({', '.join(differ[:4])}), "
                   f"{len(missing)} missing ({', '.join(missing[:4])})")
    else:
      losses = a[f"{name}/losses"]
      lines.append(f"{name}: identical ({len(losses)} losses, last {losses[-1]:.6f}; "
                   f"{len(keys) - 2} parameter arrays)")
  return lines


def main(argv):
  if argv[1:2] == ["record"]:
    if not FLAGS.out:
      raise app.UsageError("record needs --out")
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
      for name in FLAGS.configs:
        arrays.update(record_one(os.path.abspath(FLAGS.checkout), name, FLAGS.steps,
                                 os.path.join(tmp, name)))
        print(f"recorded {name}", flush=True)
    np.savez(FLAGS.out, **arrays)
  elif argv[1:2] == ["compare"] and len(argv) == 4:
    lines = compare(dict(np.load(argv[2])), dict(np.load(argv[3])))
    print("\n".join(lines))
    sys.exit(int(any("DIFFERENT" in line for line in lines)))
  else:
    raise app.UsageError("usage: record --out=FILE | compare A.npz B.npz")


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so others can import this."""
  flags.DEFINE_string("out", None, "record: the .npz to write.")
  flags.DEFINE_string("checkout", os.getcwd(), "record: the source tree whose train.main runs.")
  flags.DEFINE_list("configs", list(TINY), "record: config names under configs/.")
  flags.DEFINE_integer("steps", 30, "record: training steps per config.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
