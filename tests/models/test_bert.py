"""dlforge's BERT: padding, heads, saving, transfer learning (stages, freezing, layer-wise decay), a masked-LM run
fine-tuned on the genre task, the TF-IDF baseline, and sentence embeddings through the API and `dlforge embed`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clitools import ok_json, run_here, run_together

from dlforge import api
from dlforge.artifacts import load_model, save_model
from dlforge.config import TransferConfig
from dlforge.errors import DlforgeError
from dlforge.registry import create_model
from dlforge.train import transfer
from dlforge.train.optim import build_optimizer

TINY = {"vocab_size": 60, "dim": 16, "n_layers": 2, "n_heads": 2, "ffn_hidden": 32, "context": 24}


def tiny(name: str = "bert_mlm", seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **{**TINY, **overrides}).eval()


def rows(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 60, (n,), generator=g) for n in lengths]


def pad(seqs: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return ids, mask


# --- padding -------------------------------------------------------------------------------------------------------


def test_padded_and_unpadded_inputs_give_the_same_states_and_embeddings():
    model = tiny()
    seqs = rows(9, 4, 13)
    ids, mask = pad(seqs, 20)  # the last 7 columns are padding in every row
    with torch.no_grad():
        states = model.encode(ids, mask)
        vectors = model.embed(ids, mask)
        for i, s in enumerate(seqs):
            alone = model.encode(s[None])  # no padding, no mask
            torch.testing.assert_close(states[i, :len(s)], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(vectors[i], model.embed(s[None])[0], atol=1e-5, rtol=1e-5)
    assert (states[:, 13:] == 0).all()  # columns of padding only are not computed
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_logits_do_not_depend_on_padding(pooling):
    model = tiny("bert_classifier", num_classes=3, pooling=pooling)
    seqs = rows(7, 11)
    with torch.no_grad():
        short = model(dict(zip(("input_ids", "attention_mask"), pad(seqs, 11), strict=True))).logits
        long = model(dict(zip(("input_ids", "attention_mask"), pad(seqs, 24), strict=True))).logits
        other = model({"input_ids": seqs[0][None]}).logits
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short[0], other[0], atol=1e-5, rtol=1e-5)


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="longer than model.context 24; truncate it"):
        tiny()({"input_ids": torch.ones(1, 25, dtype=torch.long)})


def test_masked_lm_head_stays_tied_through_save_and_load(tmp_path):
    model = tiny()
    assert model.head.decoder.weight is model.embeddings.tokens.weight
    save_model(model, tmp_path / "model")
    loaded, _ = load_model(tmp_path / "model")
    assert loaded.head.decoder.weight is loaded.embeddings.tokens.weight
    ids, mask = pad(rows(5, 8), 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded({"input_ids": ids, "attention_mask": mask}).logits,
                                   model({"input_ids": ids, "attention_mask": mask}).logits)


# --- transfer learning -----------------------------------------------------------------------------------------------


def test_stages_freezing_and_layer_wise_learning_rates(train_config):
    model = tiny("bert_classifier", n_layers=3)
    assert model.stage_names == ("embeddings", "blocks.0", "blocks.1", "blocks.2", "head")
    assert transfer.freeze(model, "blocks.0") == ["embeddings", "blocks.0"]
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(("embeddings.", "blocks.0."))), name
    cfg = TransferConfig(init_from="unused", backbone_lr=0.5, layer_decay=0.5)
    scales = transfer.lr_scales(model, cfg)
    assert scales == {"embeddings": 0.0625, "blocks.0": 0.125, "blocks.1": 0.25, "blocks.2": 0.5, "head": 1.0}
    optimizer = build_optimizer(model, train_config(max_steps=1, lr=0.1, weight_decay=0.01), lr_scales=scales)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            stage = "head" if name.startswith("head.") else ".".join(name.split(".")[:2])
            assert lr_of[id(p)] == pytest.approx(0.1 * scales[stage]), name
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())


def test_a_masked_lm_encoder_is_a_classifier_backbone():
    source, target = tiny("bert_mlm", seed=1), tiny("bert_classifier", seed=2, num_classes=4)
    head = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("head.")}
    copied = transfer.load_backbone(target, source)
    assert copied and not any(k.startswith("head.") for k in copied)
    for key, value in target.state_dict().items():
        expected = head[key] if key.startswith("head.") else source.state_dict()[key]
        assert torch.equal(value, expected), key


# --- a masked-LM run, fine-tuned on the genre task -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    """A tiny BERT pretrained for a few steps with masked-LM on 400 lines of Hamlet (its own WordPiece)."""
    from dlforge.data.plays import play_lines

    root = tmp_path_factory.mktemp("bert")
    corpus = root / "hamlet.txt"
    corpus.write_text("\n".join(play_lines("hamlet")[:400]) + "\n")
    result = api.train({
        "name": "mlm", "runs_dir": str(root / "runs"),
        "data": {"name": "text_files_mlm", "path": str(corpus), "tokenizer": "wordpiece:300", "max_length": 24},
        "model": {"name": "bert_mlm", **{k: v for k, v in TINY.items() if k != "vocab_size"}},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "progress": False, "tensorboard": False,
                  "log_every": 2, "checkpoint_every": None, "device": "cpu"},
    })
    return result


def genre_config(mlm_run, **data) -> dict:
    return {
        "name": "genre", "runs_dir": str(mlm_run.run_dir.parent),
        "data": {"name": "shakespeare_genre", "tokenizer": str(mlm_run.run_dir), "max_length": 24, "limit": 48,
                 **data},
        "model": {"name": "bert_classifier", **{k: v for k, v in TINY.items() if k != "vocab_size"}},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 1e-3, "progress": False, "tensorboard": False,
                  "log_every": 1, "checkpoint_every": None, "device": "cpu",
                  "transfer": {"init_from": str(mlm_run.run_dir), "freeze": "all"}},
    }


def test_masked_lm_run_reports_masked_token_accuracy_and_perplexity(mlm_run):
    for split in ("train", "val", "test"):
        m = mlm_run.metrics[split]
        assert 0 <= m["accuracy"] <= 1 and m["perplexity"] == pytest.approx(np.exp(m["loss"]), rel=1e-4)


@pytest.fixture(scope="module")
def genre_run(mlm_run):
    """The tiny masked-LM encoder, frozen, under a new genre head, trained 3 steps on 48 passages."""
    return api.train(genre_config(mlm_run))


def test_genre_fine_tuning_from_a_masked_lm_run(mlm_run, genre_run):
    result = genre_run
    mlm, _ = load_model(mlm_run.run_dir / "model")
    tuned, meta = load_model(result.run_dir / "model")
    for key, value in mlm.state_dict().items():  # freeze: all keeps the pretrained encoder as it was
        if not key.startswith("head."):
            assert torch.equal(tuned.state_dict()[key], value), key
    info = meta["extra"]["data_info.json"]
    assert info["label_names"] == ["comedy", "history", "tragedy"] and len(info["passages_sha256"]) == 64
    assert not set(info["plays"]["train"]) & set(info["plays"]["test"])  # split by play
    evaluation = json.loads((result.run_dir / "eval.json").read_text())
    assert {"accuracy", "f1"} <= set(evaluation["test"]) and "test_per_class" in evaluation


def test_genre_fine_tuning_refuses_another_tokenizer_than_the_source(mlm_run):
    with pytest.raises(DlforgeError, match="differs from the one the model was trained with"):
        api.train(genre_config(mlm_run, tokenizer="minilm"))


def test_genre_comparison_refuses_runs_on_other_passages(mlm_run, genre_run):
    from dlforge.eval.text_baseline import genre_comparison

    other = api.train(genre_config(mlm_run, passage_words=60))
    with pytest.raises(DlforgeError, match="passages_sha256 differs"):
        genre_comparison([str(other.run_dir)], runs_dir=other.run_dir.parent)
    with pytest.raises(DlforgeError, match="ran with data.limit=48, on part of the passages only"):
        genre_comparison([str(genre_run.run_dir)], runs_dir=genre_run.run_dir.parent)


PASSAGES = ["To be, or not to be, that is the question", "My lord, the king your father is dead",
            " ".join(["Now is the winter of our discontent made glorious summer by this sun of York"] * 3)]


def test_a_genre_run_predicts_the_genre_of_each_text_of_a_file(capsys, genre_run, tmp_path):
    from dlforge.data.masked_lm import frame
    from dlforge.text.tokenizer import model_tokenizer

    texts = tmp_path / "passages.txt"
    texts.write_text(f"{PASSAGES[0]}\n\n{PASSAGES[1]}\n{PASSAGES[2]}\n")  # a blank line: no text there
    proc = run_here(capsys, "predict", str(genre_run.run_dir), str(texts), "--json")
    rows = ok_json(proc)
    assert "1 of 3 texts are longer than the 24 tokens the model reads" in proc.stderr  # and cut, as in training
    model = api.load(genre_run.run_dir)
    tokenizer = model_tokenizer(model.meta, "test")
    with torch.no_grad():
        expected = model(frame(tokenizer.encode_batch(PASSAGES), tokenizer, 24)).logits.softmax(-1)
    assert [r["line"] for r in rows] == [1, 3, 4]
    got = torch.tensor([[r[f"p({genre})"] for genre in ("comedy", "history", "tragedy")] for r in rows])
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
    records = tmp_path / "passages.jsonl"
    records.write_text("".join(json.dumps({"text": t}) + "\n" for t in PASSAGES))
    assert [r["prediction"] for r in api.predict(genre_run.run_dir, records)] == [r["prediction"] for r in rows]
    card = (genre_run.run_dir / "README.md").read_text()
    assert f"dlforge predict {genre_run.run_dir.as_posix()} texts.txt\n" in card and "one text per line" in card


def test_a_masked_lm_run_fills_in_the_masks_of_each_text(mlm_run, tmp_path):
    from dlforge.text.tokenizer import model_tokenizer

    texts = tmp_path / "masked.txt"
    texts.write_text("the king is [MASK]\n[MASK] lord, [MASK] is the question\n")
    rows = api.predict(mlm_run.run_dir, texts)
    model = api.load(mlm_run.run_dir)
    tokenizer = model_tokenizer(model.meta, "test")
    ids = torch.tensor([[tokenizer.cls_id, *tokenizer.encode("the king is [MASK]"), tokenizer.sep_id]])
    with torch.no_grad():
        best = model({"input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0, -2].argmax().item()
    assert [(r["line"], r["text"]) for r in rows] == [(1, "the king is [MASK]"), (2, "[MASK] lord, [MASK] is the "
                                                                                      "question")]
    assert rows[0]["candidates"].startswith(f"{tokenizer.id_to_token(best)} ") and "[MASK]" not in rows[0]["prediction"]
    assert len(rows[1]["candidates"].split(" | ")) == 2 and len(rows[1]["candidates"].split(", ")) == 2 * 3 - 1
    unmasked = tmp_path / "unmasked.jsonl"
    unmasked.write_text(json.dumps({"text": "the king is [MASK]"}) + "\n" + json.dumps({"text": "the king"}) + "\n")
    with pytest.raises(DlforgeError, match=rf"^{unmasked}:2: no \[MASK\] among the tokens the model reads"):
        api.predict(mlm_run.run_dir, unmasked)
    card = (mlm_run.run_dir / "README.md").read_text()
    assert f"dlforge predict {mlm_run.run_dir.as_posix()} masked.txt\n" in card


def test_tfidf_baseline_picks_c_on_validation_and_reports_macro_f1():
    from dlforge.eval.text_baseline import C_GRID, tfidf_logreg

    words = {0: "sword crown war king battle", 1: "love jest wedding fool song"}
    rng = np.random.default_rng(0)

    def texts(n: int) -> tuple[list[str], list[int]]:
        labels = [i % 2 for i in range(n)]
        return [" ".join(rng.choice(words[y].split(), 6)) + " the and of" for y in labels], labels

    (tr, ytr), (va, yva), (te, yte) = texts(40), texts(20), texts(20)
    result = tfidf_logreg(tr, ytr, va, yva, te, yte)
    assert result["C"] in C_GRID and set(result["val_f1_by_C"]) == set(C_GRID)
    assert result["test"]["f1"] == 1.0 and result["test"]["accuracy"] == 1.0


# --- sentence embeddings ---------------------------------------------------------------------------------------------


def test_embed_api_and_cli_agree_and_keep_the_input_order(mlm_run, tmp_path):
    from dlforge.llm.embed import embed_texts, load_sentence_embedder

    texts = ["O, that this too too solid flesh would melt", "Thaw", "and resolve itself into a dew!",
             "Frailty, thy name is woman!"]
    (tmp_path / "in.txt").write_text("\n".join(texts[:2]) + "\n\n" + "\n".join(texts[2:]) + "\n")  # a blank line
    embedder = load_sentence_embedder(mlm_run.run_dir)
    vectors = embed_texts(embedder, texts, batch_size=3)  # batched by length, returned in input order
    tok, model = embedder.tokenizer, embedder.model
    for text, row in zip(texts, vectors, strict=True):
        ids = torch.tensor([[tok.cls_id, *tok.encode(text)[:22], tok.sep_id]])
        with torch.no_grad():
            np.testing.assert_allclose(row, model.embed(ids)[0].numpy(), atol=1e-5)
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    procs = run_together({  # the two commands one after the other in one process: one start of torch
        "npy": ["embed", str(mlm_run.run_dir), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out.npy"),
                "--json"],
        "jsonl": ["embed", str(mlm_run.run_dir), "--input", str(records), "--text-field", "body", "--out",
                  str(tmp_path / "out.jsonl")]}, cwd=tmp_path)
    for proc in procs.values():
        assert proc.returncode == 0, proc.stderr
    assert json.loads(procs["npy"].stdout)["texts"] == 4
    saved = np.load(tmp_path / "out.npy")
    assert saved.dtype == np.float32 and saved.shape == (4, TINY["dim"])
    np.testing.assert_allclose(saved, vectors, atol=1e-5)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(np.array([x["embedding"] for x in lines]), vectors, atol=1e-5)


def test_a_dlforge_bert_run_embeds_for_retrieval(mlm_run):
    """`dlforge rag index --model RUN`: the run's BERT on dlforge's encoder, its WordPiece counting the chunks."""
    from dlforge.llm.embed import embed_texts
    from dlforge.rag.embed import BertEmbedder, load_embedder

    texts = ["Frailty, thy name is woman!", "Thaw"]
    for ref in (mlm_run.run_dir, mlm_run.run_dir / "model"):  # the run, or its model folder
        embedder = load_embedder(str(ref))
        assert isinstance(embedder, BertEmbedder) and embedder.dim == TINY["dim"] and embedder.max_tokens == 24
        np.testing.assert_allclose(embedder.embed(texts), embed_texts(mlm_run.run_dir, texts), atol=1e-6)
        assert embedder.tokenizer.encode("Frailty", add_special_tokens=False).ids  # a tokenizers.Tokenizer
    run, folder = load_embedder(str(mlm_run.run_dir)), load_embedder(str(mlm_run.run_dir / "model"))
    assert run.fingerprint() == folder.fingerprint() and run.source == folder.source  # one model, one identity


def test_embed_cli_errors_are_one_line(mlm_run, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("hello\n")
    proc = run_here(capsys, "embed", str(mlm_run.run_dir), "--input", str(tmp_path / "in.txt"), "--out",
                    str(tmp_path / "out.csv"))  # the CLI, in this process
    assert proc.returncode == 2 and "a .npy or .jsonl file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_masked_lm_training_decodes_the_labelled_positions_only():
    model = tiny(dropout=0.0, attn_dropout=0.0)
    ids, mask = pad(rows(10, 6), 10)
    labels = torch.full_like(ids, -100)
    labels[0, [2, 5]], labels[1, 1] = ids[0, [2, 5]], ids[1, 1]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        full = model.eval()(batch)
        sparse = model.train()(batch)
    scored = labels != -100
    torch.testing.assert_close(sparse.loss, full.loss)
    torch.testing.assert_close(sparse.logits[scored], full.logits[scored])
    assert sparse.logits.shape == full.logits.shape and (sparse.logits[~scored] == 0).all()


def test_a_dlforge_bert_run_is_served_as_an_embedder(mlm_run):
    """`dlforge serve RUN` of a BERT run: /v1/embeddings gives the run's sentence embeddings, with its max length."""
    from dlforge.deploy.serve.served import load_served
    from dlforge.llm.embed import embed_texts

    served = load_served(str(mlm_run.run_dir))
    assert (served.kind, served.context) == ("embed", 24)
    texts = ["Frailty, thy name is woman!", "Thaw"]
    np.testing.assert_allclose(served.embedder.embed(texts), embed_texts(mlm_run.run_dir, texts), atol=1e-6)
