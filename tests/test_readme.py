"""The README's commands are the ones users and CI run."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
  return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command_exactly():
  commands = _readme_commands()
  assert len(commands) >= 2
  ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
  assert commands[1] in ci_lines


def test_the_first_command_trains_gpt_tiny():
  first = _readme_commands()[0]
  assert "pip install -e ." in first
  assert "python -m train.main --config=configs/gpt_tiny.py" in first
