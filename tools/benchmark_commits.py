"""Command line: the reference-shape train step of each family at two or more checkouts, in turns.

  git worktree add /tmp/before HEAD~1
  python -m tools.benchmark_commits --checkouts=/tmp/before,. [--rounds=3] [--json=...]

Each round runs tools/benchmark's step rows at the reference shape once in every checkout,
one process after another, so that the machine's load at any moment weighs on all of them
alike; the table gives each checkout's median over the rounds and its ratio to the first.
A checkout must have tools/benchmark.py with `REFERENCE`, `reference_config`,
`for_this_machine` and `step_row` (every commit since the benchmark's step section).
"""
import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

from train import host_memory

FLAGS = flags.FLAGS

# Run in a checkout: its own benchmark's reference rows, as JSON on the last line.
_ROWS = """
import json, jax
from tools import benchmark
from train import hardware
peak = hardware.peak_flops_per_device()[0] * jax.local_device_count()
rows = [benchmark.step_row(label, benchmark.for_this_machine(benchmark.reference_config(name)),
                           peak, pipeline=False, steps={steps})
        for name, label in benchmark.REFERENCE]
print(json.dumps({{row["config"]: row["step_s"] for row in rows}}))
"""


def run_rows(checkout: str, steps: int) -> dict[str, float]:
  """{row label: median step seconds} of one run in `checkout`."""
  # Each checkout's steps run as train.main runs ours: with huge pages (train/host_memory.py).
  out = subprocess.run([sys.executable, "-c", _ROWS.format(steps=steps)], cwd=checkout,
                       env=host_memory.with_huge_pages(os.environ), capture_output=True,
                       text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"{checkout}: {out.stderr.strip().splitlines()[-1]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  checkouts = [os.path.abspath(c) for c in FLAGS.checkouts]
  times = {c: [] for c in checkouts}
  for _ in range(FLAGS.rounds):
    for c in checkouts:
      times[c].append(run_rows(c, FLAGS.steps))
  labels = list(times[checkouts[0]][0])
  median = {c: {label: statistics.median(run[label] for run in times[c]) for label in labels}
            for c in checkouts}
  print("| row | " + " | ".join(f"{c} step s" for c in checkouts)
        + " | " + " | ".join(f"{c} / first" for c in checkouts[1:]) + " |")
  print("|---|" + "---|" * (2 * len(checkouts) - 1))
  for label in labels:
    base = median[checkouts[0]][label]
    print(f"| {label} | " + " | ".join(f"{median[c][label]:.4f}" for c in checkouts) + " | "
          + " | ".join(f"{median[c][label] / base:.3f}" for c in checkouts[1:]) + " |")
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump({"rounds": times, "median": median}, f, indent=2)


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so others can import this."""
  flags.DEFINE_list("checkouts", None, "Source trees to compare; the first is the baseline.")
  flags.DEFINE_integer("rounds", 3, "Runs per checkout, in turns.")
  flags.DEFINE_integer("steps", 7, "Timed steps per row and run (after one warm-up).")
  flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
  flags.mark_flag_as_required("checkouts")


if __name__ == "__main__":
  define_flags()
  app.run(main)
