"""Corpus-level translation scores through sacrebleu (the `nlp` extra): BLEU (Papineni et al. 2002) and chrF
(Popović 2015), with sacrebleu's defaults (BLEU: 13a tokenization, case-sensitive; chrF: character 6-grams, beta 2)."""

from __future__ import annotations

from dlforge.errors import DlforgeError


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float | str]:
    """{"bleu", "chrf"} (0-100) of hypotheses against one reference each, and sacrebleu's signatures."""
    try:
        import sacrebleu
    except ImportError:
        raise DlforgeError("BLEU and chrF need sacrebleu: pip install 'dlforge[nlp]'") from None
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    return {"bleu": bleu.corpus_score(hypotheses, [references]).score,
            "chrf": chrf.corpus_score(hypotheses, [references]).score,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}
