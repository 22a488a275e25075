"""Human-readable end-of-run report."""


def _task_metrics(summary: dict) -> str:
  """A fine-tuning task's final metrics and baselines, as its summary names them."""
  return "Validation: " + ", ".join(
      f"{k.removeprefix('final_')} {v:.4f}" for k, v in summary.items()
      if isinstance(v, float) and (k.startswith("final_") or k.startswith("majority_"))) + "."


def format_summary(summary: dict) -> str:
  lines = [f"Trained to step {summary['step']} ({summary['params'] / 1e6:.2f}M parameters)."]
  if "final_bits_per_byte" not in summary:  # not language modelling: a task of its own
    return "\n".join(lines + [_task_metrics(summary)])
  initial = summary["initial_bits_per_byte"]
  lines.append(f"Validation bits per byte: {summary['final_bits_per_byte']:.3f} "
               f"(initial {initial:.3f}, " if initial is not None else
               f"Validation bits per byte: {summary['final_bits_per_byte']:.3f} (")
  lines[-1] += (f"unigram baseline {summary['unigram_bits_per_byte']:.3f}) over "
                f"{summary['eval_tokens']} tokens; perplexity {summary['final_perplexity']:.2f}, "
                f"token accuracy {summary['final_accuracy']:.3f}.")
  lines.append("Wall time per phase: " + ", ".join(
      f"{k} {v:.1f}s" for k, v in summary["phase_seconds"].items()))
  for i, s in enumerate(summary["samples"]):
    lines += [f"--- sample {i}: prompt", s["prompt"], f"--- sample {i}: continuation",
              s["continuation"]]
  return "\n".join(lines)
