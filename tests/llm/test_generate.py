"""Generation from a GPT: the KV cache against full recomputation, left-padded batches against one prompt at a time,
the context window, stop reasons, incremental decoding of multi-byte tokens, and the `dlforge generate` command."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from dlforge.artifacts import save_model
from dlforge.cli import generate as generate_cli
from dlforge.errors import ConfigError, DataError
from dlforge.llm.generate import (
    GenerationConfig,
    generate_batch,
    generate_stream,
    generate_tokens,
)
from dlforge.registry import create_model
from dlforge.text.tokenizer import CharTokenizer, train_tokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me. O Romeo, Romeo!\n"
TOK = CharTokenizer.from_text(TEXT)


def lively_gpt(seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny GPT whose random weights are large enough that greedy decoding does not just repeat one token."""
    torch.manual_seed(seed)
    model = create_model("gpt", **{"vocab_size": TOK.vocab_size, "dim": 32, "n_layers": 2, "n_heads": 4,
                                   "context": 32, **overrides})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return model.eval()


def recompute_greedy(model: torch.nn.Module, ids: list[int], steps: int) -> list[int]:
    """The slow way: a full forward over the window at every step (no cache), the window sliding as documented:
    when it overflows, it restarts at the newest half."""
    window, ids, first, new = model.config.context, list(ids), 0, []
    with torch.no_grad():
        for _ in range(steps):
            if len(ids) - first > window:
                first = len(ids) - window // 2
            logits = model({"input_ids": torch.tensor([ids[first:]])}).logits
            ids.append(int(logits[0, -1].argmax()))
            new.append(ids[-1])
    return new


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_kv_cache_greedy_equals_full_recomputation_within_and_past_the_window(positions):
    model = lively_gpt(positions=positions)
    prompt = TOK.encode("ROMEO:\nBut soft")
    # 70 new tokens after 14: the 32-token window overflows and slides three times
    stream = generate_stream(model, TOK, "ROMEO:\nBut soft", max_new_tokens=70, temperature=0)
    text = stream.read()
    expected = recompute_greedy(model, prompt, 70)
    assert stream.tokens == expected and text == TOK.decode(expected)
    assert stream.stop_reason == "max_new_tokens" and len(set(expected)) > 3  # not one repeated token


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_left_padded_batch_equals_one_prompt_at_a_time(positions):
    model = lively_gpt(seed=1, positions=positions)
    prompts = ["ROMEO:", "JULIET:\nAy me. O", "B", "But soft, what"]
    batch = generate_batch(model, TOK, prompts, temperature=0, max_new_tokens=12)
    for prompt, result in zip(prompts, batch, strict=True):
        alone = generate_stream(model, TOK, prompt, temperature=0, max_new_tokens=12)
        assert result.completion == alone.read() and result.tokens == alone.tokens
        assert result.prompt_tokens == len(prompt) and result.stop_reason == "max_new_tokens"
    assert len({r.completion for r in batch}) > 1


def test_generate_tokens_batch_matches_a_padded_forward():
    """The token-level loop on an explicit left-padded batch: the first token is the argmax of the padded forward."""
    model = lively_gpt(seed=2)
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    first = next(generate_tokens(model, ids, mask, GenerationConfig(max_new_tokens=1, temperature=0)))
    with torch.no_grad():
        alone = model({"input_ids": ids[:1, 2:]}).logits[0, -1].argmax()
        full = model({"input_ids": ids[1:]}).logits[0, -1].argmax()
    assert first.tolist() == [int(alone), int(full)]


def test_long_prompt_is_truncated_from_the_left_with_a_warning_or_refused():
    model = lively_gpt(context=16)
    prompt = TEXT[:40]
    with pytest.warns(UserWarning, match="40 tokens, more than the model's context window of 16; keeping the last 16"):
        stream = generate_stream(model, TOK, prompt, max_new_tokens=5, temperature=0)
    truncated = generate_stream(model, TOK, prompt[-16:], max_new_tokens=5, temperature=0)
    assert stream.read() == truncated.read() and stream.result().prompt_tokens == 16
    with pytest.raises(DataError, match="40 tokens, more than the model's context window of 16.*on_long_prompt"):
        generate_stream(model, TOK, prompt, max_new_tokens=5, on_long_prompt="error")


def test_stop_sequences_end_generation_at_the_earliest_one():
    model = lively_gpt(seed=3)
    full = generate_stream(model, TOK, "JULIET:", max_new_tokens=40, temperature=1.0, seed=7).read()
    a, b = full[12:14], full[20:23]  # two sequences the completion contains; the earlier one must win
    stream = generate_stream(model, TOK, "JULIET:", max_new_tokens=40, temperature=1.0, seed=7, stop=[b, a])
    text = stream.read()
    assert stream.stop_reason == "stop" and stream.stop_string == a
    assert text == full[:full.index(a) + len(a)] and len(stream.tokens) == len(text)


class WithEos:
    """A tokenizer with one of its ids declared end-of-text."""

    def __init__(self, tokenizer, eos_id: int):
        self.tokenizer, self.eos_id = tokenizer, eos_id

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_end_of_text_token_ends_generation_and_is_not_text():
    model = lively_gpt(seed=4)
    tokens = generate_stream(model, TOK, "ROMEO:", max_new_tokens=20, temperature=0).result().tokens
    eos = tokens[5]
    stream = generate_stream(model, WithEos(TOK, eos), "ROMEO:", max_new_tokens=20, temperature=0)
    text = stream.read()
    cut = tokens.index(eos)
    assert stream.stop_reason == "eos" and stream.tokens == tokens[:cut + 1] and text == TOK.decode(tokens[:cut])


def test_seed_fixes_sampling_and_options_are_checked():
    model = lively_gpt(seed=5)
    options = {"max_new_tokens": 30, "temperature": 0.9, "top_k": 10, "top_p": 0.9, "repetition_penalty": 1.3}
    a = generate_stream(model, TOK, "B", seed=1, **options).read()
    assert a == generate_stream(model, TOK, "B", seed=1, **options).read()
    assert a != generate_stream(model, TOK, "B", seed=2, **options).read()
    with pytest.raises(ConfigError, match="repetition_penalty: expected a number > 0"):
        generate_stream(model, TOK, "B", repetition_penalty=0)
    with pytest.raises(ConfigError, match="max_new_tokens: expected an integer >= 0"):
        GenerationConfig(max_new_tokens=-1)


def test_repetition_penalty_lowers_the_odds_of_seen_tokens():
    model = lively_gpt(seed=6)
    plain = generate_stream(model, TOK, "ROMEO:", max_new_tokens=40, temperature=0).result().tokens
    penalized = generate_stream(model, TOK, "ROMEO:", max_new_tokens=40, temperature=0,
                                repetition_penalty=5.0).result().tokens
    assert len(set(penalized)) > len(set(plain))


class Scripted(torch.nn.Module):
    """A 'language model' that says a fixed token sequence, whatever it reads: to test what happens to its text."""

    def __init__(self, tokens: list[int], vocab_size: int):
        super().__init__()
        self.tokens, self.vocab_size = tokens, vocab_size
        self.unused = torch.nn.Parameter(torch.zeros(1))  # a device to live on

    def init_state(self, batch_size, device=None):
        return 0  # how many tokens it has said

    def step(self, input_ids, state):
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], self.vocab_size), -1e9)
        logits[:, -1, self.tokens[min(state, len(self.tokens) - 1)]] = 0.0
        return logits, state + 1


@pytest.fixture(scope="module")
def bpe():
    text = "héllo wörld, ŝo 😀 — naïve café; " * 2 + TEXT * 20
    return train_tokenizer([text], "bpe", vocab_size=300)


def test_multibyte_characters_stream_whole(bpe):
    text = "ŝo 😀 naïve — 😀😀 ok"
    ids = bpe.encode(text)
    assert len(ids) > len(text)  # some characters take several tokens
    stream = generate_stream(Scripted(ids, bpe.vocab_size), bpe, "x", max_new_tokens=len(ids), temperature=0)
    pieces = list(stream)
    assert "".join(pieces) == stream.completion == text and stream.tokens == ids
    assert all("\ufffd" not in p for p in pieces) and len(pieces) < len(ids)  # held back until complete
    stopped = generate_stream(Scripted(ids, bpe.vocab_size), bpe, "x", max_new_tokens=len(ids), temperature=0,
                              stop=["😀😀"])
    assert stopped.read() == "ŝo 😀 naïve — 😀😀" and stopped.stop_reason == "stop"
    k = max(k for k in range(1, 8) if "\ufffd" not in bpe.decode(ids[:k]))  # a prefix of whole characters
    eos = generate_stream(Scripted([*ids[:k], bpe.eos_id, *ids], bpe.vocab_size), bpe, "x", max_new_tokens=20,
                          temperature=0)
    assert eos.read() == bpe.decode(ids[:k]) and eos.stop_reason == "eos" and eos.tokens == [*ids[:k], bpe.eos_id]


def test_a_gpt_on_bpe_tokens_streams_its_completion(bpe):
    model = lively_gpt(vocab_size=bpe.vocab_size)
    stream = generate_stream(model, bpe, "ROMEO:", max_new_tokens=40, temperature=1.0, seed=0)
    pieces = list(stream)
    assert "".join(pieces) == stream.completion and len(stream.tokens) == 40 or stream.stop_reason == "eos"


def test_generate_command_on_a_gpt_run(tmp_path):
    model = lively_gpt(seed=7)
    folder = save_model(model, tmp_path / "model", extra_files={"preprocessing.json": {"tokenizer": TOK.to_dict()}})
    app = typer.Typer()
    generate_cli.register(app)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    args = ["generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens", "30", "--temperature", "0"]
    expected = generate_stream(model, TOK, "ROMEO:", max_new_tokens=30, temperature=0).read()
    streamed = runner.invoke(app, args)
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == "ROMEO:" + expected + "\n"
    assert "stopped: max_new_tokens after 30 tokens" in streamed.stderr
    stop = expected[8:10]
    as_json = runner.invoke(app, [*args, "--stop", "zzz", "--stop", stop, "--json"])
    out = json.loads(as_json.stdout)
    assert out["stop_reason"] == "stop" and out["completion"] == expected[:expected.index(stop) + len(stop)]
    batch = runner.invoke(app, [*args, "--prompt", "JULIET:", "--max-new-tokens", "20", "--json"])  # no slide
    rows = json.loads(batch.stdout)
    assert [r["prompt"] for r in rows] == ["ROMEO:", "JULIET:"] and rows[0]["completion"] == expected[:20]
    long = runner.invoke(app, ["generate", str(folder), "--prompt", TEXT, "--on-long-prompt", "error"])
    assert long.exit_code != 0 and "context window of 32" in str(long.exception)


def test_warnings_reach_the_command_line_as_one_line(tmp_path, capsys):
    """No raw Python warning (category, file, source line) reaches a person: `dlforge generate` truncating a long
    prompt (through a real process) and `dlforge lm import-gpt2` of a folder without a tokenizer each say so in one
    line."""
    import transformers
    from clitools import run_cli

    from dlforge.cli.main import main

    extra = {"preprocessing.json": {"tokenizer": TOK.to_dict()}}
    folder = save_model(lively_gpt(), tmp_path / "model", extra_files=extra)
    done = run_cli("generate", str(folder), "--prompt", TEXT, "--max-new-tokens", "3", "--temperature", "0")
    assert done.returncode == 0 and done.stderr.splitlines() == [
        f"warning: prompt: {len(TEXT)} tokens, more than the model's context window of 32; keeping the last 32",
        "[stopped: max_new_tokens after 3 tokens]"]
    config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=8)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf")  # weights, no tokenizer
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["lm", "import-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")])
    assert exit_info.value.code in (0, None) and capsys.readouterr().err.splitlines() == [
        f"warning: {tmp_path / 'hf'}: no tokenizer.json, so the model is imported without a tokenizer and cannot "
        "generate text; put the tokenizer.json beside the weights and import again"]
