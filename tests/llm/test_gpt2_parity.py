"""GPT-2 parity with transformers, without any download: a randomly initialised GPT2LMHeadModel from a small config,
converted to dlforge and back, gives the same logits (max abs difference <= 1e-4 in fp32) and the same greedy
continuations; repetition penalty as transformers applies it."""

from __future__ import annotations

import json

import pytest
import torch
import transformers  # the parity reference (the dev extra)

from dlforge.artifacts import load_model, save_model
from dlforge.errors import CheckpointError, DlforgeError
from dlforge.llm.generate import GenerationConfig, apply_repetition_penalty, generate_tokens
from dlforge.llm.gpt2 import export_gpt2, import_gpt2, load_gpt2
from dlforge.registry import create_model

VOCAB, POSITIONS = 97, 40


def hf_gpt2(seed: int = 0, **overrides) -> torch.nn.Module:
    """transformers' GPT-2 from a small config, its weights random and large enough for varied greedy text."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**{"vocab_size": VOCAB, "n_positions": POSITIONS, "n_embd": 48, "n_layer": 2,
                                        "n_head": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                                        "bos_token_id": None, "eos_token_id": None, **overrides})
    return randomize(transformers.GPT2LMHeadModel(config).eval(), seed)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Matrices ~ N(0, 0.3), position embeddings ~ N(0, 1), biases ~ N(0, 0.1), norm gains ~ N(1, 0.1): GPT-2's own
    initialization gives nearly uniform logits, on which greedy decoding repeats one token."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 2:
                p.copy_(noise * (1.0 if name.endswith(("wpe.weight", "pos_emb.weight")) else 0.3))
            else:
                p.copy_(noise * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return model


def hf_greedy(model: torch.nn.Module, ids: torch.Tensor, new: int, mask: torch.Tensor | None = None,
              **options) -> torch.Tensor:
    out = model.generate(ids, attention_mask=mask if mask is not None else torch.ones_like(ids), do_sample=False,
                         max_new_tokens=new, min_new_tokens=new, pad_token_id=0, **options)
    return out[:, ids.shape[1]:]


def our_greedy(model: torch.nn.Module, ids: torch.Tensor, new: int, mask: torch.Tensor | None = None,
               **options) -> torch.Tensor:
    config = GenerationConfig(max_new_tokens=new, temperature=0, **options)
    return torch.stack(list(generate_tokens(model, ids, mask, config)), dim=1)


def assert_same_model(hf: torch.nn.Module, ours: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 24), generator=g)
    with torch.no_grad():
        diff = (hf(ids).logits - ours({"input_ids": ids}).logits).abs().max().item()
    assert diff <= 1e-4
    prompts = ids[:, :8]  # three prompts, one batch
    ours_tokens = our_greedy(ours, prompts, 24)
    assert torch.equal(ours_tokens, hf_greedy(hf, prompts, 24)) and len(set(ours_tokens.flatten().tolist())) > 5


@pytest.mark.parametrize("serialization", ["safetensors", "bin"])
def test_imported_gpt2_matches_transformers(tmp_path, serialization):
    hf = hf_gpt2()
    hf.save_pretrained(tmp_path / "gpt2", safe_serialization=serialization == "safetensors")
    ours = load_gpt2(tmp_path / "gpt2")
    assert ours.registry_name == "gpt2" and ours.config.context == POSITIONS and ours.config.act == "gelu_tanh"
    assert_same_model(hf, ours)
    folder = import_gpt2(tmp_path / "gpt2", tmp_path / "dlforge-model")  # a dlforge model folder, reloaded
    reloaded, meta = load_model(folder)
    assert meta["model"] == "gpt2"
    assert_same_model(hf, reloaded)


def test_untied_head_imports_and_exports(tmp_path):
    hf = hf_gpt2(seed=1, tie_word_embeddings=False, n_inner=80, activation_function="gelu")
    hf.save_pretrained(tmp_path / "gpt2")
    ours = load_gpt2(tmp_path / "gpt2")
    assert not ours.config.tie_weights and ours.config.hidden == 80 and ours.config.act == "gelu"
    assert ours.head.weight.data_ptr() != ours.tok_emb.weight.data_ptr()
    assert_same_model(hf, ours)
    save_model(ours, tmp_path / "ours")
    export_gpt2(tmp_path / "ours", tmp_path / "back")
    assert_same_model(transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval(), ours)


def test_left_padded_batch_matches_transformers_generate(tmp_path):
    hf = hf_gpt2(seed=2)
    hf.save_pretrained(tmp_path / "gpt2")
    ours = load_gpt2(tmp_path / "gpt2")
    ids = torch.tensor([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    assert torch.equal(our_greedy(ours, ids, 16, mask), hf_greedy(hf, ids, 16, mask))


def test_exported_gpt_loads_into_transformers(tmp_path):
    torch.manual_seed(3)
    ours = create_model("gpt", vocab_size=VOCAB, context=POSITIONS, dim=48, n_layers=3, n_heads=4).eval()
    randomize(ours, seed=3)
    save_model(ours, tmp_path / "run" / "model")
    folder = export_gpt2(tmp_path / "run" / "model", tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_layer"] == 3 and config["activation_function"] == "gelu_new"
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    assert_same_model(hf, ours)


@pytest.mark.parametrize(("override", "message"), [
    ({"positions": "rotary"}, "model.positions is 'rotary'"),
    ({"ffn": "swiglu"}, "model.ffn is 'swiglu'"),
    ({"norm": "rmsnorm"}, "model.norm is 'rmsnorm'"),
])
def test_export_refuses_what_gpt2_cannot_hold(tmp_path, override, message):
    save_model(create_model("gpt", vocab_size=11, dim=16, n_heads=2, n_layers=1, context=8, **override), tmp_path / "m")
    with pytest.raises(DlforgeError, match=f"cannot export to GPT-2 format: {message}"):
        export_gpt2(tmp_path / "m", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damaged_gpt2_folders_are_refused_with_the_file(tmp_path):
    hf = hf_gpt2()
    hf.save_pretrained(tmp_path / "gpt2")
    config = json.loads((tmp_path / "gpt2" / "config.json").read_text())
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: weight for 'tok_emb.weight' has shape \(97, 48\)"):
        load_gpt2(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match="weight 'transformer.h.2.ln_1.weight' missing"):
        load_gpt2(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: not a valid safetensors file"):
        load_gpt2(tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match="no such folder"):
        load_gpt2(tmp_path / "nowhere")


def test_repetition_penalty_matches_transformers_processor():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 30, generator=g) * 3
    ids = torch.randint(0, 30, (3, 12), generator=g)  # with repeats
    seen = torch.zeros(3, 30, dtype=torch.bool).scatter_(1, ids, True)
    for penalty in (1.5, 0.7):
        expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone())
        torch.testing.assert_close(apply_repetition_penalty(scores, seen, penalty), expected, rtol=0, atol=0)


def test_greedy_with_repetition_penalty_matches_transformers(tmp_path):
    hf = hf_gpt2(seed=5)
    hf.save_pretrained(tmp_path / "gpt2")
    ours = load_gpt2(tmp_path / "gpt2")
    prompt = torch.tensor([[5, 6, 7, 5, 6, 7, 8]])
    ours_tokens = our_greedy(ours, prompt, 20, repetition_penalty=1.8)
    assert torch.equal(ours_tokens, hf_greedy(hf, prompt, 20, repetition_penalty=1.8))
    assert not torch.equal(ours_tokens, our_greedy(ours, prompt, 20))  # the penalty changed something


def test_import_and_export_commands(tmp_path):
    from typer.testing import CliRunner

    from dlforge.cli.main import app

    hf_gpt2().save_pretrained(tmp_path / "gpt2")
    runner = CliRunner()
    done = runner.invoke(app, ["lm", "import-gpt2", str(tmp_path / "gpt2"), "--out", str(tmp_path / "model"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["parameters"] == sum(p.numel() for p in load_gpt2(tmp_path / "gpt2").parameters())
    done = runner.invoke(app, ["lm", "export-gpt2", str(tmp_path / "model"), "--out", str(tmp_path / "back")])
    assert done.exit_code == 0, done.output
    assert_same_model(transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval(),
                      load_gpt2(tmp_path / "gpt2"))
    bad = runner.invoke(app, ["lm", "import-gpt2", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, DlforgeError) and "not found; expected a transformers GPT-2 folder" in str(
        bad.exception)  # exit code 2, told before torch loads (issue 13, defect 9)


def test_an_imported_folder_with_a_tokenizer_generates_text(tmp_path):
    from dlforge.llm.generate import generate_from_run
    from dlforge.text.tokenizer import CharTokenizer

    hf = hf_gpt2(seed=6)
    hf.save_pretrained(tmp_path / "gpt2")
    tok = CharTokenizer([chr(c) for c in range(32, 32 + VOCAB - 1)])  # 96 characters + <unk> = the model's 97 ids
    tok.save(tmp_path / "gpt2")
    folder = import_gpt2(tmp_path / "gpt2", tmp_path / "model")
    stream = generate_from_run(folder, "To be, or", max_new_tokens=20, temperature=0)
    text = stream.read()
    expected = hf_greedy(hf, torch.tensor([tok.encode("To be, or")]), 20)[0].tolist()
    assert stream.tokens == expected and text == tok.decode(expected)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_an_exported_run_generates_alike_in_transformers_and_comes_back(tmp_path, kind):
    """What dlforge trains (a char or BPE tokenizer) exports with its tokenizer: AutoTokenizer and
    AutoModelForCausalLM load the folder and continue a prompt greedily as dlforge does; import-gpt2 brings it back."""
    from dlforge.llm.generate import generate_from_run
    from dlforge.text.tokenizer import load_tokenizer, train_tokenizer

    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me. O Romeo, Romeo!\n" * 4
    tok = train_tokenizer([text], kind, vocab_size=300 if kind == "bpe" else None)
    ours = create_model("gpt", vocab_size=tok.vocab_size, context=POSITIONS, dim=48, n_layers=2, n_heads=4).eval()
    randomize(ours, seed=7)
    run = save_model(ours, tmp_path / "run" / "model", extra_files={
        **tok.files(), "preprocessing.json": {"kind": "tokens", "tokenizer_hash": tok.hash}})
    folder = export_gpt2(run, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    prompt = "ROMEO: what light, é?"  # é: outside the char vocabulary, <unk>
    ids = hf_tok(prompt)["input_ids"]
    assert ids == tok.encode(prompt) and hf_tok.decode(ids) == tok.decode(ids)
    stream = generate_from_run(run, prompt, max_new_tokens=POSITIONS - len(ids), temperature=0)
    expected = stream.read()
    new = hf_greedy(hf, torch.tensor([ids]), POSITIONS - len(ids))[0].tolist()
    assert new == stream.tokens and hf_tok.decode(new) == tok.decode(new) and len(set(new)) > 3
    assert load_tokenizer(folder).hash == tok.hash  # read back as the very tokenizer it was
    back = import_gpt2(folder, tmp_path / "back")
    assert generate_from_run(back, prompt, max_new_tokens=POSITIONS - len(ids), temperature=0).read() == expected
