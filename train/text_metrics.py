"""Scores of generated text against references, by the libraries the field reports them with.

Exact match (after stripping surrounding whitespace), corpus BLEU and chrF (sacrebleu's
defaults: 13a tokenisation, chrF with character 6-grams and beta 2), and ROUGE-L
(rouge-score, its F-measure averaged over examples). All are percentages, 0 to 100.
"""
import sacrebleu

METRICS = ("exact_match", "bleu", "chrf", "rouge_l")


def scores(predictions: list[str], references: list[str]) -> dict:
  """{metric: percentage} of `predictions` against `references` (one each, same order)."""
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
  # rouge-score imports nltk and scipy (seconds): only the runs that score generations pay.
  from rouge_score import rouge_scorer
  exact = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
  rouge = rouge_scorer.RougeScorer(["rougeL"])
  rouge_l = sum(rouge.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references))
  return {"exact_match": 100.0 * exact / len(predictions),
          "bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
          "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
          "rouge_l": 100.0 * rouge_l / len(predictions)}
