"""The encoder-decoder Transformer: parity with torch's nn.Transformer stacks, masking, caching, loss, vocabularies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_layers_transformer import torch_mha_like
from torch import nn

from dlforge.artifacts import load_model, save_model
from dlforge.errors import ConfigError
from dlforge.layers.attention import causal_mask
from dlforge.registry import create_model

TINY = {"vocab_size": 40, "dim": 32, "n_heads": 4, "encoder_layers": 2, "decoder_layers": 2, "ffn_hidden": 64,
        "context": 32, "dropout": 0.0}


def tiny(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("transformer_seq2seq", **{**TINY, **overrides}).eval()


def ids(*shape: int, high: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, high, shape, generator=torch.Generator().manual_seed(seed))


def copy_block(ours, theirs: nn.Module, cross: bool) -> None:
    with torch.no_grad():
        theirs.self_attn.load_state_dict(torch_mha_like(ours.attn).state_dict())
        theirs.linear1.load_state_dict(ours.ffn.fc.state_dict())
        theirs.linear2.load_state_dict(ours.ffn.proj.state_dict())
        norms = [ours.attn_norm, ours.cross_norm, ours.ffn_norm] if cross else [ours.attn_norm, ours.ffn_norm]
        for i, norm in enumerate(norms, start=1):
            getattr(theirs, f"norm{i}").load_state_dict(norm.state_dict())
        if cross:
            theirs.multihead_attn.load_state_dict(torch_mha_like(ours.cross).state_dict())


@pytest.mark.parametrize("norm_first", [True, False])
def test_matches_torch_transformer_encoder_and_decoder_with_the_same_weights(norm_first):
    model = tiny(norm_first=norm_first)
    c = model.config
    kw = dict(d_model=c.dim, nhead=c.n_heads, dim_feedforward=c.ffn_hidden, dropout=0.0, activation="relu",
              batch_first=True, norm_first=norm_first)
    # pre-norm stacks end in a final LayerNorm; post-norm ones do not (nn.Transformer would add one regardless)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kw), c.encoder_layers,
                                norm=nn.LayerNorm(c.dim) if norm_first else None, enable_nested_tensor=False).eval()
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(**kw), c.decoder_layers,
                                norm=nn.LayerNorm(c.dim) if norm_first else None).eval()
    for ours, theirs in zip(model.encoder, enc.layers, strict=True):
        copy_block(ours, theirs, cross=False)
    for ours, theirs in zip(model.decoder, dec.layers, strict=True):
        copy_block(ours, theirs, cross=True)
    if norm_first:
        enc.norm.load_state_dict(model.encoder_norm.state_dict())
        dec.norm.load_state_dict(model.decoder_norm.state_dict())

    src, tgt = ids(2, 7, seed=1), ids(2, 5, seed=2)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    emb = model.source_embed.weight  # one shared matrix: source, target and output

    def embed(x: torch.Tensor) -> torch.Tensor:  # the paper's formula, written out (section 3.4 and 3.5)
        pos = torch.arange(x.shape[1], dtype=torch.float64)[:, None]
        i = torch.arange(0, c.dim, 2, dtype=torch.float64)
        pe = torch.zeros(x.shape[1], c.dim, dtype=torch.float64)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos / 10000 ** (i / c.dim)), torch.cos(pos / 10000 ** (i / c.dim))
        return emb[x] * math.sqrt(c.dim) + pe.float()

    with torch.no_grad():
        memory = enc(embed(src), src_key_padding_mask=keep == 0)
        hidden = dec(embed(tgt), memory, tgt_mask=~causal_mask(5, 5), memory_key_padding_mask=keep == 0)
        expected = hidden @ emb.T
        out = model({"input_ids": src, "attention_mask": keep, "decoder_input_ids": tgt}).logits
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


def test_a_decoder_position_never_sees_later_targets():
    model = tiny(seed=1)
    src, tgt = ids(3, 6, seed=3), ids(3, 9, seed=4)
    base = model({"input_ids": src, "decoder_input_ids": tgt}).logits
    for j in range(1, 9):
        changed = tgt.clone()
        changed[:, j:] = ids(3, 9 - j, seed=10 + j)  # every later target replaced
        out = model({"input_ids": src, "decoder_input_ids": changed}).logits
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(out[:, j:], base[:, j:], atol=1e-3)  # later positions do read them


def test_source_padding_changes_nothing():
    model = tiny(seed=2)
    src, tgt = ids(1, 5, seed=5), ids(1, 6, seed=6)
    alone = model({"input_ids": src, "decoder_input_ids": tgt}).logits
    padded = torch.cat([src, ids(1, 4, seed=7)], dim=1)  # arbitrary tokens behind the mask
    mask = torch.tensor([[1] * 5 + [0] * 4])
    out = model({"input_ids": padded, "attention_mask": mask, "decoder_input_ids": tgt}).logits
    torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)
    unmasked = model({"input_ids": padded, "decoder_input_ids": tgt}).logits
    assert not torch.allclose(unmasked, alone, atol=1e-3)  # the mask is what hides them


def test_cached_step_by_step_decoding_equals_the_full_forward():
    model = tiny(seed=3)
    src, tgt = ids(2, 6, seed=8), ids(2, 7, seed=9)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    full = model({"input_ids": src, "attention_mask": mask, "decoder_input_ids": tgt}).logits
    state = model.start_decoding(src, mask)
    steps = [state.step(tgt[:, :3])]  # a first chunk of three tokens, then one at a time
    steps += [state.step(tgt[:, t:t + 1]) for t in range(3, 7)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 2:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="model.context"):
        model.decode(ids(1, 33), model.encode(src[:1]))


def test_loss_is_torch_cross_entropy_with_label_smoothing_over_the_real_tokens():
    model = tiny(seed=4, label_smoothing=0.1)
    batch = model.example_batch(4, generator=torch.Generator().manual_seed(0))
    out = model(batch)
    real = batch["labels"] != -100
    expected = F.cross_entropy(out.logits[real], batch["labels"][real], label_smoothing=0.1)
    torch.testing.assert_close(out.loss, expected)
    logp = out.logits[real].log_softmax(dim=-1)  # (N, V): the formula, (1 - eps) NLL + eps mean_v(-log p_v)
    nll = -logp.gather(1, batch["labels"][real][:, None]).mean()
    torch.testing.assert_close(out.loss, 0.9 * nll - 0.1 * logp.mean(dim=1).mean())
    plain = F.cross_entropy(out.logits[real], batch["labels"][real])
    unsmoothed = tiny(seed=4, label_smoothing=0.0)(batch).loss
    torch.testing.assert_close(unsmoothed, plain)


def test_shared_vocabulary_is_one_matrix_and_separate_ones_save_and_load(tmp_path):
    shared = tiny()
    assert shared.separate_target is None and shared.target_embed is shared.source_embed
    separate = tiny(target_vocab_size=30)
    assert separate.target_embed.weight.shape == (30, 32) and separate.source_embed.weight.shape == (40, 32)
    n_shared = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) == n_shared + 30 * 32
    batch = separate.example_batch(3, generator=torch.Generator().manual_seed(1))
    assert batch["decoder_input_ids"].max() < 30
    assert separate(batch).logits.shape == (3, 7, 30)
    for model in (shared, separate):
        loaded, _ = load_model(save_model(model, tmp_path / str(model.config.target_vocab_size)))
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits)


@pytest.mark.parametrize(("overrides", "key"), [({"dim": 30, "n_heads": 4}, "dim"), ({"act": "relux"}, "act"),
                                                ({"eos_id": 40}, "eos_id")])
def test_bad_configs_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        create_model("transformer_seq2seq", **{**TINY, **overrides})
