"""Translating with an encoder-decoder model: texts in, texts out; BLEU and chrF on a data split.

    out = translate(model, source_tok, target_tok, ["In the beginning God created the heaven and the earth."])
    out[0].translation                              # "En el principio crió Dios los cielos y la tierra."
    translate_from_run("latest", texts, beam_size=4, length_penalty=0.6)
    metrics, report = evaluate_translation(model, source_tok, target_tok, dataset)   # bleu, chrf, *_greedy

Sentences are sorted by length and decoded in batches (greedy for beam size 1, else beam search; see
`dlforge.llm.beam`). Each sentence may take up to `max_len` target tokens, by default twice its source tokens
plus 10, never more than the model's positions allow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import load_trained
from dlforge.data.translation import encode_sources, pair_texts, translation_tokenizers
from dlforge.errors import ConfigError, DataError, DlforgeError
from dlforge.eval.translation import corpus_scores
from dlforge.llm.beam import beam_search, greedy_search
from dlforge.runs.progress import Progress

BEAM_SIZE = 4
LENGTH_PENALTY = 0.6  # GNMT's alpha (Wu et al. 2016); tensor2tensor's default
SAMPLES = 5  # translations of the first test sentences kept in eval.json


@dataclass
class Translation:
    source: str
    translation: str
    logprob: float  # log P(translation | source), EOS included when it finished
    score: float  # logprob / length penalty: what beam search ranked by
    finished: bool  # ended with EOS (false: cut off at the length limit)


def _check(beam_size: int, length_penalty: float, max_len: int | None) -> None:
    if beam_size < 1:
        raise ConfigError(f"beam size: expected an integer >= 1 (1 = greedy), got {beam_size}")
    if length_penalty < 0:
        raise ConfigError(f"length penalty: expected a number >= 0 (0 = plain log-probability), got {length_penalty}")
    if max_len is not None and max_len < 1:
        raise ConfigError(f"max length: expected an integer >= 1, got {max_len}")


@torch.no_grad()
def translate(model: torch.nn.Module, source_tokenizer: Any, target_tokenizer: Any, texts: list[str],
              beam_size: int = BEAM_SIZE, length_penalty: float = LENGTH_PENALTY, max_len: int | None = None,
              batch_size: int = 64) -> list[Translation]:
    """Translate `texts` in batches of `batch_size` sentences; the results in the order of `texts`."""
    _check(beam_size, length_penalty, max_len)
    c = model.config
    ids = encode_sources(source_tokenizer, list(texts))
    for i, row in enumerate(ids):
        if len(row) > c.context:
            raise DataError(f"sentence {i + 1}: {len(row)} tokens, more than the model reads (model.context = "
                            f"{c.context}); split it")
    was_training = model.training
    model.eval()
    results: list[Translation | None] = [None] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths together: little padding
    label = "translate (greedy)" if beam_size == 1 else f"translate (beam {beam_size})"
    try:
        with Progress(label, total=len(ids), unit="sentences") as shown:  # on stderr: a split takes a while
            for begin in range(0, len(order), batch_size):
                chunk = order[begin:begin + batch_size]
                hyps = _decode(model, source_tokenizer, [ids[i] for i in chunk], beam_size, length_penalty, max_len)
                for i, h in zip(chunk, hyps, strict=True):
                    results[i] = Translation(texts[i], target_tokenizer.decode(h.tokens), h.logprob, h.score,
                                             h.finished)
                shown.update(begin + len(chunk))
    finally:
        model.train(was_training)
    return results


def _decode(model: torch.nn.Module, source_tokenizer: Any, rows: list[list[int]], beam_size: int,
            length_penalty: float, max_len: int | None) -> list[Any]:
    """The hypotheses of one batch of source token rows, the longest first (padded on the right)."""
    c = model.config
    device = next(model.parameters()).device
    src = torch.full((len(rows), len(rows[0])), source_tokenizer.pad_id or 0, dtype=torch.long)  # (B, S)
    mask = torch.zeros_like(src)
    for r, row in enumerate(rows):
        src[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    limits = [min(max_len or 2 * len(row) + 10, c.context - 1) for row in rows]
    state = model.start_decoding(src.to(device), mask.to(device), max_len=max(limits) + 1)
    start = torch.full((len(rows), 1), c.bos_id, device=device)
    if beam_size == 1:
        return greedy_search(state, start, c.eos_id, limits)
    return beam_search(state, start, c.eos_id, limits, beam_size, length_penalty)


def evaluate_translation(model: torch.nn.Module, source_tokenizer: Any, target_tokenizer: Any, data: Any,
                         beam_size: int = BEAM_SIZE, length_penalty: float = LENGTH_PENALTY,
                         samples: int = SAMPLES) -> tuple[dict[str, float], dict[str, Any]]:
    """BLEU and chrF of beam search (`bleu`, `chrf`) and of greedy decoding (`bleu_greedy`, `chrf_greedy`) on a
    translation dataset (a split of `bible_translation`), and a report: decoding settings, sacrebleu signatures and
    the first `samples` translations."""
    sources, references = pair_texts(data)
    greedy = translate(model, source_tokenizer, target_tokenizer, sources, beam_size=1)
    beam = translate(model, source_tokenizer, target_tokenizer, sources, beam_size, length_penalty)
    g = corpus_scores([t.translation for t in greedy], references)
    b = corpus_scores([t.translation for t in beam], references)
    metrics = {"bleu": b["bleu"], "chrf": b["chrf"], "bleu_greedy": g["bleu"], "chrf_greedy": g["chrf"],
               "unfinished": sum(not t.finished for t in beam) / max(len(beam), 1)}
    report = {"decoding": {"beam_size": beam_size, "length_penalty": length_penalty, "max_len": "2 * source + 10"},
              "sentences": len(sources), "bleu_signature": b["bleu_signature"], "chrf_signature": b["chrf_signature"],
              "samples": [{"source": s, "reference": r, "greedy": g.translation, "beam": t.translation}
                          for s, r, g, t in list(zip(sources, references, greedy, beam, strict=True))[:samples]]}
    return metrics, report


def load_translator(run: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Any, Any]:
    """A run's (or a model folder's) translation model and its source and target tokenizers."""

    model = load_trained(run, device=device)
    source_tok, target_tok = translation_tokenizers(model.meta, where=str(run))
    if not hasattr(model, "start_decoding"):
        raise DlforgeError(f"{run}: {type(model).__name__} cannot translate (it has no start_decoding())")
    return model, source_tok, target_tok


def translate_from_run(run: str | Path, texts: list[str], beam_size: int = BEAM_SIZE,
                       length_penalty: float = LENGTH_PENALTY, max_len: int | None = None,
                       device: str = "cpu") -> list[dict[str, Any]]:
    """`translate` with a run's model and tokenizers; one plain record per text."""
    _check(beam_size, length_penalty, max_len)
    model, source_tok, target_tok = load_translator(run, device)
    return [asdict(t) for t in translate(model, source_tok, target_tok, texts, beam_size, length_penalty, max_len)]
