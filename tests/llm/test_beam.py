"""Greedy and beam-search decoding on a small encoder-decoder: against exhaustive search, beam 1 against greedy,
batched against one sentence at a time."""

from __future__ import annotations

import itertools

import pytest
import torch

from dlforge.llm.beam import beam_search, greedy_search, length_penalty
from dlforge.registry import create_model

BOS, EOS = 1, 2


def small(vocab: int = 12, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("transformer_seq2seq", vocab_size=vocab, dim=32, n_heads=4, encoder_layers=1,
                        decoder_layers=2, ffn_hidden=64, context=40, dropout=0.0).eval()


def sources(vocab: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources of 6, 3 and 5 tokens, right-padded: (3, 6) ids and mask."""
    g = torch.Generator().manual_seed(0)
    lengths = [6, 3, 5]
    src = torch.randint(3, vocab, (3, 6), generator=g)
    mask = (torch.arange(6)[None] < torch.tensor(lengths)[:, None]).long()
    return src * mask, mask


@pytest.fixture(scope="module")
def copier() -> torch.nn.Module:
    return train_copier()


def train_copier() -> torch.nn.Module:
    """A small model taught for a few seconds to copy its source: its outputs end with EOS, at varied lengths."""
    model = small(seed=5).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(80):
        n = torch.randint(2, 7, (32,), generator=g)
        mask = (torch.arange(6)[None] < n[:, None]).long()
        src = torch.randint(3, 12, (32, 6), generator=g) * mask
        labels = torch.cat([src, torch.zeros(32, 1, dtype=torch.long)], 1)
        labels[torch.arange(32), n] = EOS
        labels = labels.masked_fill(torch.arange(7)[None] > n[:, None], -100)
        dec = torch.cat([torch.full((32, 1), BOS), src], 1)
        loss = model({"input_ids": src, "attention_mask": mask, "decoder_input_ids": dec, "labels": labels}).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def decode(model, src, mask, beam: int | None, limit, alpha: float = 0.6):
    state = model.start_decoding(src, mask)
    start = torch.full((len(src), 1), BOS)
    if beam is None:
        return greedy_search(state, start, EOS, limit)
    return beam_search(state, start, EOS, limit, beam_size=beam, length_penalty_alpha=alpha)


@torch.no_grad()
def logprobs_of(model, src, mask, outputs: list[tuple[list[int], bool]]) -> list[float]:
    """log P(tokens [+ EOS] | source) of each (tokens, finished), teacher-forced through the plain forward pass."""
    targets = [toks + ([EOS] if fin else []) for toks, fin in outputs]
    width = max(len(t) for t in targets)
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])  # (M, W)
    dec = torch.cat([torch.full((len(targets), 1), BOS), labels[:, :-1].clamp(min=0)], dim=1)
    n = len(targets)
    logp = model({"input_ids": src.expand(n, -1), "attention_mask": mask.expand(n, -1),
                  "decoder_input_ids": dec}).logits.log_softmax(-1)
    picked = logp.gather(2, labels.clamp(min=0)[..., None]).squeeze(2)  # (M, W)
    return picked.masked_fill(labels == -100, 0.0).sum(1).tolist()


def test_a_wide_beam_finds_the_best_of_every_possible_output():
    vocab, limit = 6, 4  # 6 tokens, at most 4 steps: 1 + 5 + 25 + 125 prefixes, scored exhaustively below
    model = small(vocab=vocab, seed=1)
    src, mask = sources(vocab)
    words = [t for t in range(vocab) if t != EOS]
    outputs = [(list(p), True) for n in range(limit) for p in itertools.product(words, repeat=n)]  # end in EOS
    outputs += [(list(p), False) for p in itertools.product(words, repeat=limit)]  # cut off by the limit
    for alpha in (0.0, 0.6, 2.0):
        beams = decode(model, src, mask, beam=6**4, limit=limit, alpha=alpha)  # wider than the whole tree
        for i in range(len(src)):
            logps = logprobs_of(model, src[i:i + 1], mask[i:i + 1], outputs)
            scores = [lp / length_penalty(len(toks) + fin, alpha)
                      for lp, (toks, fin) in zip(logps, outputs, strict=True)]
            best = max(range(len(outputs)), key=scores.__getitem__)
            assert (beams[i].tokens, beams[i].finished) == outputs[best]
            assert beams[i].score == pytest.approx(scores[best], abs=1e-4)
            assert beams[i].logprob == pytest.approx(logps[best], abs=1e-4)


def test_beam_of_one_is_greedy_search(copier):
    src, mask = sources()
    limits = [12, 1, 12]  # the second row is cut off before its EOS
    greedy = decode(copier, src, mask, beam=None, limit=limits)
    beam1 = decode(copier, src, mask, beam=1, limit=limits)
    assert [h.finished for h in greedy] == [True, False, True]
    for i, (g, b) in enumerate(zip(greedy, beam1, strict=True)):
        assert (b.tokens, b.finished) == (g.tokens, g.finished)
        assert b.logprob == pytest.approx(g.logprob, abs=1e-4)
        expected = logprobs_of(copier, src[i:i + 1], mask[i:i + 1], [(g.tokens, g.finished)])[0]
        assert g.logprob == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("trained", [False, True])
def test_beam_search_scores_at_least_greedy(trained, copier):
    model = copier if trained else small(seed=3)
    src, mask = sources()
    greedy = decode(model, src, mask, beam=None, limit=15)
    for beam in (2, 4, 8):
        found = decode(model, src, mask, beam=beam, limit=15, alpha=0.0)
        for g, b in zip(greedy, found, strict=True):
            assert b.logprob >= g.logprob - 1e-4


@pytest.mark.parametrize("beam", [None, 3])
@pytest.mark.parametrize("trained", [False, True])
def test_batched_decoding_equals_one_sentence_at_a_time(beam, trained, copier):
    model = copier if trained else small(seed=4)
    src, mask = sources()
    limits = [9, 4, 7]  # one limit per row
    batched = decode(model, src, mask, beam=beam, limit=limits)
    for i, n in enumerate(mask.sum(1).tolist()):
        alone = decode(model, src[i:i + 1, :n], mask[i:i + 1, :n], beam=beam, limit=limits[i])[0]
        assert (alone.tokens, alone.finished) == (batched[i].tokens, batched[i].finished)
        assert alone.score == pytest.approx(batched[i].score, abs=1e-4)
        assert len(alone.tokens) <= limits[i]


def test_bad_arguments_are_refused():
    model = small()
    src, mask = sources()
    with pytest.raises(ValueError, match="beam_size"):
        decode(model, src, mask, beam=0, limit=5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decode(model, src, mask, beam=None, limit=0)
