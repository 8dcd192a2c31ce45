"""Token shards and token windows: preparation on a corpus the test writes, the files and meta.json, atomic writes,
refusing damaged or mismatched shards, the window datasets, and a language-model run that carries its tokenizer."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from dlforge import api
from dlforge.config import load_config
from dlforge.data.corpus import load_corpus
from dlforge.data.tokens import LMTextConfig, TokenShardsConfig, TokenWindows, lm_text, read_shards, token_shards
from dlforge.errors import CheckpointError, DataError
from dlforge.eval.metrics import TaskMetrics
from dlforge.llm.generate import generate_from_run
from dlforge.llm.prepare import prepare_shards
from dlforge.text.tokenizer import CharTokenizer, load_tokenizer, model_tokenizer, train_tokenizer

LINES = ["Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate:",
         "Rough winds do shake the darling buds of May,", "And summer's lease hath all too short a date;",
         "Sometime too hot the eye of heaven shines,", "And often is his gold complexion dimm'd;"]


@pytest.fixture
def corpus_dir(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(12):  # 12 documents, about 3,300 characters
        text = "\n".join(LINES[(i + j) % len(LINES)] for j in range(len(LINES))) + f"\nSonnet {i} — ✓ é\n"
        (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return folder


def test_prepare_writes_uint16_shards_meta_and_the_tokenizer(tmp_path, corpus_dir):
    out = tmp_path / "shards"
    meta = prepare_shards(corpus_dir, "bpe:300", out, val_fraction=0.1, test_fraction=0.1)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "meta.json", "test.bin", "tokenizer.json",
                                                     "tokenizer_config.json", "train.bin", "val.bin"]
    tok = load_tokenizer(out)  # the shard folder is a tokenizer folder too
    corpus = load_corpus(corpus_dir, val_fraction=0.1, test_fraction=0.1)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == tok.vocab_size == 300
    assert meta["tokenizer"] == {"type": "bpe", "hash": tok.hash} and meta["separator"] == [tok.eos_id]
    for split in ("train", "val", "test"):
        docs = corpus.documents(split)
        tokens = np.fromfile(out / f"{split}.bin", dtype="<u2")
        expected = [i for d in docs for i in [*tok.encode(d), tok.eos_id]]  # each document, then end-of-text
        assert tokens.tolist() == expected
        entry = meta["splits"][split]
        assert entry["tokens"] == len(tokens) and entry["documents"] == len(docs)
        assert entry["chars"] == sum(map(len, docs)) and entry["chars_per_token"] == entry["chars"] / len(tokens)
    assert json.loads((out / "meta.json").read_text())["splits"] == meta["splits"]
    train = np.fromfile(out / "train.bin", dtype="<u2")
    first_doc = tok.decode(train[:list(train).index(tok.eos_id)])
    assert first_doc == corpus.documents("train")[0]  # a round trip through the shard


def test_large_vocabularies_get_uint32_shards(tmp_path):
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 20_000)) + "".join(chr(c) for c in range(0x20000, 0x2C000))
    (tmp_path / "wide.txt").write_text(text, encoding="utf-8")
    meta = prepare_shards(tmp_path / "wide.txt", "char", tmp_path / "out", val_fraction=0.0, test_fraction=0.0)
    assert meta["vocab_size"] > 65_536 and meta["dtype"] == "uint32"
    tokens = np.fromfile(tmp_path / "out" / "train.bin", dtype="<u4")
    tok = load_tokenizer(tmp_path / "out")
    assert tokens.max() >= 65_536 and tok.decode(tokens) == text + "\n\n"  # a character separator: a blank line


def test_writes_are_atomic_and_never_half_done(tmp_path, corpus_dir, monkeypatch):
    import dlforge.llm.prepare as prepare

    out = tmp_path / "shards"
    original = prepare.tokenize_documents
    calls = []

    def fail_on_val(tok, docs):  # tokenizing val fails after train is done
        calls.append(len(docs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(tok, docs)

    monkeypatch.setattr(prepare, "tokenize_documents", fail_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(corpus_dir, "char", out)
    monkeypatch.setattr(prepare, "tokenize_documents", original)

    def fail_while_writing(tmp):  # a crash after train.bin is written, before the folder is complete
        (tmp / "train.bin").write_bytes(b"\x00\x01")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        prepare.write_folder(out, "dlforge-token-shards", fail_while_writing)
    assert list(tmp_path.iterdir()) == [corpus_dir]  # no shard folder, no temp folder left behind
    prepare_shards(corpus_dir, "char", out)
    with pytest.raises(DataError, match=rf"^{out}: already exists; pass --overwrite"):
        prepare_shards(corpus_dir, "bpe:300", out)
    assert prepare_shards(corpus_dir, "bpe:300", out, overwrite=True)["vocab_size"] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "shards"]


def test_damaged_or_mismatched_shards_are_refused(tmp_path, corpus_dir):
    out = tmp_path / "shards"
    prepare_shards(corpus_dir, "bpe:300", out)
    read_shards(out)
    train = out / "train.bin"
    data = train.read_bytes()
    train.write_bytes(data[:-2])  # one token short: what a killed writer would leave
    with pytest.raises(DataError, match=rf"^{train}: {len(data) - 2} bytes, but meta.json says {len(data) // 2} "
                                        r"uint16 tokens .*an unfinished or damaged shard"):
        read_shards(out)
    train.write_bytes(data[:-2] + b"\x05\x00")  # same size, different content
    with pytest.raises(DataError, match=rf"^{train}: sha256 does not match manifest.json"):
        read_shards(out)
    read_shards(out, verify=False)  # sizes only
    train.write_bytes(data)
    train_tokenizer(["other text entirely"] * 3, "bpe", 290).save(out)  # a different tokenizer put in the folder
    with pytest.raises(DataError, match=r"tokenizer.json: tokenizer hash \w+\.\. differs from the one the shards were "
                                        r"made with"):
        read_shards(out, verify=False)
    (out / "meta.json").unlink()
    with pytest.raises(DataError, match=rf"^{out}: no meta.json; not a token shard folder"):
        token_shards(TokenShardsConfig(name="token_shards", path=str(out)))


# --- windows ---------------------------------------------------------------------------------------------------------


def test_token_windows_labels_offsets_and_determinism():
    tokens = np.arange(100, dtype=np.uint16)
    train = TokenWindows(tokens, context=8, stride=1)
    assert len(train) == 100 - 8
    batch = train.__getitems__([0, 5, 91])
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 8) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == list(range(5, 13)) and batch["labels"][1].tolist() == list(range(6, 14))
    assert batch["labels"][2, -1] == 99 and batch["input_ids"].is_contiguous()
    assert torch.equal(train.__getitems__([0, 5, 91])["input_ids"], batch["input_ids"])  # a function of the index
    evaluation = TokenWindows(tokens, context=8, stride=8)
    assert len(evaluation) == 12 and evaluation[11]["input_ids"].tolist() == list(range(88, 96))
    starts = [evaluation[i]["input_ids"][0].item() for i in range(len(evaluation))]
    assert starts == list(range(0, 96, 8))  # side by side, no overlap
    with pytest.raises(IndexError):
        train.__getitems__([92])


def test_shard_and_in_memory_datasets_serve_the_same_windows(tmp_path, corpus_dir):
    prepare_shards(corpus_dir, "bpe:300", tmp_path / "shards")
    shards = token_shards(TokenShardsConfig(name="token_shards", path=str(tmp_path / "shards"), context=16))
    memory = lm_text(LMTextConfig(name="lm_text", corpus=str(corpus_dir), tokenizer="bpe:300", context=16))
    assert shards.tokenizer.hash == memory.tokenizer.hash and shards.info["tokens"] == memory.info["tokens"]
    for split in ("train", "val", "test"):
        a, b = getattr(shards, split), getattr(memory, split)
        assert len(a) == len(b)
        idx = list(range(0, len(a), 7))
        assert torch.equal(a.__getitems__(idx)["input_ids"], b.__getitems__(idx)["input_ids"])
    copy = pickle.loads(pickle.dumps(shards.train))  # what a DataLoader worker gets: the path, not the tokens
    assert copy._tokens is None and torch.equal(copy[3]["labels"], shards.train[3]["labels"])
    info = memory.info
    assert info["task"] == "language_modeling" and memory.model_defaults == {"vocab_size": 300}
    n_train = info["tokens"]["train"]
    assert len(memory.train) == n_train - 16 and len(memory.eval_train) == (n_train - 1) // 16
    assert 1 < info["chars_per_token"]["val"] < 5 and memory.preprocessing["tokenizer_hash"] == memory.tokenizer.hash
    metrics = TaskMetrics.from_info(info, split="test")
    assert metrics.metrics.chars_per_token == info["chars_per_token"]["test"]
    char = lm_text(LMTextConfig(name="lm_text", corpus=str(corpus_dir), tokenizer="char", context=16))
    assert char.info["chars_per_token"] == {"train": 1.0, "val": 1.0, "test": 1.0}


def test_bits_per_char_divides_bits_per_token_by_characters_per_token():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    results = {}
    for cpt in (1.0, 3.2, None):
        m = TaskMetrics("language_modeling", chars_per_token=cpt)
        m.update(type("Out", (), {"logits": logits})(), {"labels": labels})
        results[cpt] = m.compute()
    assert results[1.0]["bits_per_char"] == results[1.0]["bits_per_token"]
    assert results[3.2]["bits_per_char"] == pytest.approx(results[1.0]["bits_per_token"] / 3.2)
    assert "bits_per_char" not in results[None] and results[None]["perplexity"] == results[1.0]["perplexity"]


# --- a run carries its tokenizer -------------------------------------------------------------------------------------


def run_config(tmp_path, corpus_dir, tokenizer="bpe:300", **train):
    return load_config({
        "name": "lm", "runs_dir": str(tmp_path / "runs"),
        "data": {"name": "lm_text", "corpus": str(corpus_dir), "tokenizer": tokenizer, "context": 16},
        "model": {"name": "char_lstm", "embed_dim": 8, "dim": 16, "n_layers": 1},
        "train": {"max_steps": 3, "batch_size": 8, "eval_every": 3, "checkpoint_every": 3, "progress": False,
                  "tensorboard": False, **train},
    })


def test_a_run_saves_its_tokenizer_and_generation_uses_it(tmp_path, corpus_dir):
    result = api.train(run_config(tmp_path, corpus_dir))
    model_dir = result.run_dir / "model"
    tok = load_tokenizer(model_dir)  # tokenizer.json + tokenizer_config.json in the model folder
    pre = json.loads((model_dir / "preprocessing.json").read_text())
    assert tok.type == "bpe" and pre["tokenizer_hash"] == tok.hash
    ev = json.loads((result.run_dir / "eval.json").read_text())
    cpt = json.loads((model_dir / "data_info.json").read_text())["chars_per_token"]
    for split in ("train", "val", "test"):
        assert ev[split]["bits_per_char"] == pytest.approx(ev[split]["bits_per_token"] / cpt[split])
    model = api.load(result.run_dir)
    assert model_tokenizer(model.meta, "run").hash == tok.hash
    stream = generate_from_run(result.run_dir, "Shall I", max_new_tokens=12, temperature=1.0, seed=0)
    text = stream.read()
    assert len(stream.tokens) == 12 and text == tok.decode(stream.tokens)  # pieces add up to the decoded ids
    swapped = {**model.meta, "extra": {**model.meta["extra"], **train_tokenizer(LINES, "bpe", 290).files()}}
    with pytest.raises(CheckpointError, match=r"^run: tokenizer hash \w+\.\. differs from the one the model was "
                                              r"trained with"):
        model_tokenizer(swapped, "run")
    # fine-tuning from this run with data tokenized another way is refused before training starts
    other = run_config(tmp_path, corpus_dir, tokenizer="bpe:290", transfer={"init_from": str(result.run_dir)})
    with pytest.raises(CheckpointError, match=r"train.transfer.init_from .*tokenizer hash \w+\.\. differs"):
        api.train(other)


def test_char_runs_keep_working_with_their_preprocessing_tokenizer(tmp_path, corpus_dir):
    result = api.train(run_config(tmp_path, corpus_dir, tokenizer="char"))
    model = api.load(result.run_dir)
    assert "tokenizer" not in model.meta["extra"]["preprocessing.json"]  # lm_text keeps it as files only
    tok = model_tokenizer(model.meta, "run")
    assert tok.type == "char" and "✓" in tok.chars and "\n" in tok.chars
    assert len(generate_from_run(result.run_dir, "Thou", max_new_tokens=5, seed=0).read()) == 5
    legacy = CharTokenizer.from_text("abc")  # an older run: the tokenizer inside preprocessing.json
    meta = {"extra": {"preprocessing.json": {"tokenizer": legacy.to_dict()}}}
    assert model_tokenizer(meta, "old-run").hash == legacy.hash
