"""Greedy and beam-search decoding, batched, over a KV cache: for any model that reads tokens one step at a time.

    state = model.start_decoding(input_ids, attention_mask)      # e.g. dlforge.models.seq2seq
    start = torch.full((N, 1), bos_id)
    greedy_search(state, start, eos_id, max_new_tokens=50)        # -> N Hypothesis
    beam_search(state, start, eos_id, max_new_tokens=50, beam_size=4, length_penalty=0.6)

The decoder `state` is anything with `step(input_ids (N, t)) -> logits (N, V)`, which reads the new tokens after
those already read and returns the next token's logits, and `reorder(index)`, which keeps the rows `index` of its
cache in that order, a row possibly more than once. `start` (N, t0) holds the tokens every row begins with (BOS for a
decoder; the prompt for a language model); they are not part of the hypotheses. `max_new_tokens` is one number for
every row or one per row (a translation's limit may grow with its source).

Beam search (Wu et al. 2016, section 7; as in fairseq and Hugging Face): every sentence keeps `beam_size` live
prefixes. At each step the 2 * beam_size best one-token extensions of all of them (by total log-probability) are
ranked; an extension that ends in EOS and ranks within the first beam_size becomes a finished hypothesis, and the
best beam_size that do not end in EOS are the next live prefixes. A sentence is done once it has beam_size finished
hypotheses (early stopping: "all beams have finished"), or at its length limit, where its live prefixes count as
unfinished hypotheses. The answer is the hypothesis with the best score = log P(Y) / lp(Y), with GNMT's length
penalty lp(Y) = ((5 + |Y|) / 6) ** alpha, |Y| counting EOS: alpha = 0 ranks by log-probability alone, larger alpha
favours longer outputs (Wu et al. found 0.6 to 1.0 best; 0.6 is tensor2tensor's default). Beam size 1 is greedy
search, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class Decoder(Protocol):
    def step(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


@dataclass
class Hypothesis:
    """One output: `tokens` (EOS dropped), `logprob` = the sum of the token log-probabilities (EOS included when it
    finished), `score` = logprob / length penalty, `finished` = it ended with EOS rather than at the length limit."""

    tokens: list[int]
    logprob: float
    score: float
    finished: bool


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14); 1 for alpha = 0."""
    return ((5 + length) / 6) ** alpha


def _limits(max_new_tokens: int | list[int] | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    limits = torch.as_tensor(max_new_tokens, dtype=torch.long, device=device).expand(n).clone()  # (N,)
    if (limits < 1).any():
        raise ValueError(f"max_new_tokens must be >= 1, got {limits.min().item()}")
    return limits


@torch.no_grad()
def greedy_search(decoder: Decoder, start: torch.Tensor, eos_id: int,
                  max_new_tokens: int | list[int] | torch.Tensor) -> list[Hypothesis]:
    """The likeliest next token at every step, for N rows at once, until each row has EOS or reaches its limit."""
    n, device = len(start), start.device
    limits = _limits(max_new_tokens, n, device)
    logprob = torch.zeros(n, dtype=torch.float64, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    tokens = []
    logits = decoder.step(start)  # (N, V)
    for t in range(int(limits.max())):
        logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        token = logp.argmax(dim=-1)  # (N,)
        token = torch.where(done, eos_id, token)  # rows already done: filler, never read
        logprob += torch.where(done, 0.0, logp.gather(1, token[:, None]).squeeze(1).double())
        tokens.append(token)
        finished |= ~done & (token == eos_id)
        done |= (token == eos_id) | (t + 1 >= limits)
        if done.all():
            break
        logits = decoder.step(token[:, None])
    out = torch.stack(tokens, dim=1).tolist()  # (N, steps)
    hyps = []
    for i in range(n):
        row = out[i][: int(limits[i])]
        ended = eos_id in row
        row = row[: row.index(eos_id)] if ended else row
        lp = float(logprob[i])
        hyps.append(Hypothesis(row, lp, lp, ended))  # one candidate: no length penalty to apply
    return hyps


@torch.no_grad()
def beam_search(decoder: Decoder, start: torch.Tensor, eos_id: int, max_new_tokens: int | list[int] | torch.Tensor,
                beam_size: int = 4, length_penalty_alpha: float = 0.6) -> list[Hypothesis]:
    """The best hypothesis per row of `start` (N, t0) by beam search (see the module docstring)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    n, k, device = len(start), beam_size, start.device
    limits = _limits(max_new_tokens, n, device).tolist()
    decoder.reorder(torch.arange(n, device=device).repeat_interleave(k))  # every row becomes k beams
    logits = decoder.step(start.repeat_interleave(k, dim=0))  # (N * K, V)
    # only beam 0 of each sentence starts live: its k copies would otherwise fill the beam with one prefix
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    prefixes = torch.zeros(n * k, 0, dtype=torch.long, device=device)  # (N * K, t)
    found: list[list[Hypothesis]] = [[] for _ in range(n)]
    done = [False] * n
    for t in range(max(limits)):
        logp = torch.log_softmax(logits.float(), dim=-1)  # (N * K, V)
        vocab = logp.shape[-1]
        candidates = (scores[:, :, None] + logp.view(n, k, vocab)).view(n, k * vocab)  # (N, K * V)
        top, flat = candidates.topk(min(2 * k, k * vocab), dim=1)  # (N, 2K), best first
        beam, token = flat // vocab, flat % vocab
        is_eos = token == eos_id
        # EOS extensions among the first k: finished hypotheses
        for i, r in (is_eos[:, :k] & (top[:, :k] > float("-inf"))).nonzero().tolist():
            if not done[i]:
                prefix = prefixes[i * k + beam[i, r]].tolist()
                lp = float(top[i, r])
                found[i].append(Hypothesis(prefix, lp, lp / length_penalty(t + 1, length_penalty_alpha), True))
        # the best k extensions without EOS go on (there are at least k: each beam has one EOS extension at most)
        order = (is_eos.long() * top.shape[1] + torch.arange(top.shape[1], device=device)).argsort(dim=1)[:, :k]
        scores, beam, token = top.gather(1, order), beam.gather(1, order), token.gather(1, order)  # (N, K) each
        rows = (torch.arange(n, device=device)[:, None] * k + beam).view(-1)  # (N * K,) the surviving prefixes
        prefixes = torch.cat([prefixes[rows], token.view(-1, 1)], dim=1)
        for i in range(n):
            if done[i]:
                continue
            if len(found[i]) >= k:
                done[i] = True
            elif t + 1 >= limits[i]:  # out of room: the live prefixes are the unfinished hypotheses
                for b in range(k):
                    lp = float(scores[i, b])
                    if lp > float("-inf"):
                        prefix = prefixes[i * k + b].tolist()
                        found[i].append(Hypothesis(prefix, lp, lp / length_penalty(t + 1, length_penalty_alpha),
                                                   False))
                done[i] = True
        if all(done):
            break
        decoder.reorder(rows)
        logits = decoder.step(token.view(-1, 1))
    return [max(hyps, key=lambda h: h.score) for hyps in found]
