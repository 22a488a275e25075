"""What stops a run early, and how: preemption (save, then exit) and non-finite numbers."""
import contextlib
import signal

import jax

# The exit code of a run that saved a checkpoint and stopped because it was preempted:
# EX_TEMPFAIL, "try again later". Rerunning the same command resumes it.
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
  """Raised after the checkpoint at `step` is written."""

  def __init__(self, step: int):
    super().__init__(f"preempted: saved the checkpoint at step {step}; rerun the same command "
                     "to resume")
    self.step = step


class NonFiniteError(RuntimeError):
  """A non-finite loss or gradient, with train.skip_nonfinite off."""


class SigtermFlag:
  """Records a SIGTERM (what a preempted TPU VM receives) instead of dying at once.

  Installed only on a single host from the main thread: on multi-host TPU jobs
  JAX's preemption service catches the signal and all hosts meet at its sync
  point (Checkpointer.reached_preemption) so they save the same step.
  """

  def __init__(self):
    self.received = False

  @contextlib.contextmanager
  def installed(self):
    if jax.process_count() > 1:
      yield self
      return
    try:
      previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook's worker): leave signals alone
      yield self
      return
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous)

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True


def check_finite(sums: dict, skip: bool) -> int:
  """Number of non-finite steps in `sums`; raises NonFiniteError for any unless `skip`."""
  count = int(jax.device_get(sums["nonfinite"]))
  if count and not skip:
    step = int(jax.device_get(sums["nonfinite_step"]))
    raise NonFiniteError(
        f"non-finite loss or gradient at step {step}: that update was not applied and no "
        "later state was saved; the last checkpoint is intact. Lower optim.learning_rate, "
        "raise optim.warmup_steps, or set train.skip_nonfinite=True to skip such steps")
  return count
