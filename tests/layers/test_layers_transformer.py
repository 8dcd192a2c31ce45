"""Attention, positional encodings (1-D and on a grid of patches), feed-forward networks and the Transformer block,
against torch's own modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.layers.attention import KVCache, MultiHeadAttention, causal_mask, padding_mask
from dlforge.layers.embeddings import (
    PatchEmbedding,
    RotaryEmbedding,
    SinusoidalPositions,
    apply_rotary,
    resample_positions,
    sinusoidal_table,
    sinusoidal_table_2d,
)
from dlforge.layers.ffn import SwiGLU, make_ffn
from dlforge.layers.transformer import TransformerBlock

DIM, HEADS = 16, 4


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def torch_mha_like(attn: MultiHeadAttention, memory_dim: int | None = None) -> nn.MultiheadAttention:
    """torch's MultiheadAttention holding the same weights as ours."""
    dim = attn.proj.in_features
    ref = nn.MultiheadAttention(dim, attn.n_heads, batch_first=True, kdim=memory_dim, vdim=memory_dim)
    with torch.no_grad():
        if attn.cross:
            wk, wv = attn.kv.weight.split(dim)
            bk, bv = attn.kv.bias.split(dim)
            if memory_dim is None:
                ref.in_proj_weight.copy_(torch.cat([attn.q.weight, wk, wv]))
            else:
                ref.q_proj_weight.copy_(attn.q.weight)
                ref.k_proj_weight.copy_(wk)
                ref.v_proj_weight.copy_(wv)
            ref.in_proj_bias.copy_(torch.cat([attn.q.bias, bk, bv]))
        else:
            ref.in_proj_weight.copy_(attn.qkv.weight)
            ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
    return ref.eval()


def test_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    attn = MultiHeadAttention(DIM, HEADS).eval()
    ref = torch_mha_like(attn)
    x = randn(2, 7, DIM)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    # causal: torch's mask is True where attention is NOT allowed
    expected, _ = ref(x, x, x, attn_mask=~causal_mask(7, 7), need_weights=False)
    torch.testing.assert_close(attn(x, causal=True), expected, atol=1e-5, rtol=1e-5)


def test_padding_mask_matches_torch_key_padding_mask():
    torch.manual_seed(1)
    attn = MultiHeadAttention(DIM, HEADS).eval()
    ref = torch_mha_like(attn)
    x = randn(2, 6, DIM, seed=2)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    expected, _ = ref(x, x, x, key_padding_mask=keep == 0, need_weights=False)
    ours = attn(x, mask=padding_mask(keep))
    torch.testing.assert_close(ours[keep.bool()], expected[keep.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory_dim", [None, 24])
def test_cross_attention_matches_torch_multihead_attention(memory_dim):
    torch.manual_seed(2)
    attn = MultiHeadAttention(DIM, HEADS, cross=True, memory_dim=memory_dim).eval()
    ref = torch_mha_like(attn, memory_dim)
    x, memory = randn(2, 5, DIM, seed=3), randn(2, 9, memory_dim or DIM, seed=4)
    keep = torch.ones(2, 9, dtype=torch.long)
    keep[1, 6:] = 0
    expected, _ = ref(x, memory, memory, key_padding_mask=keep == 0, need_weights=False)
    torch.testing.assert_close(attn(x, padding_mask(keep), memory=memory), expected, atol=1e-5, rtol=1e-5)


def test_kv_cache_gives_the_same_outputs_as_recomputing_the_whole_sequence():
    torch.manual_seed(3)
    block = TransformerBlock(DIM, HEADS, 4 * DIM).eval()
    rope = RotaryEmbedding(DIM // HEADS)
    x = randn(2, 9, DIM, seed=5)
    positions = torch.arange(9).expand(2, 9)
    full = block(x, causal=True, rotary=rope(positions))
    cache = KVCache(1, batch=2, n_heads=HEADS, head_dim=DIM // HEADS, max_len=9)
    pieces = [block(x[:, :4], causal=True, rotary=rope(positions[:, :4]), cache=cache.layers[0])]
    for t in range(4, 9):  # then one token at a time
        pieces.append(block(x[:, t:t + 1], causal=True, rotary=rope(positions[:, t:t + 1]), cache=cache.layers[0]))
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="KV cache full"):
        block(x[:, :1], causal=True, cache=cache.layers[0])


def test_left_padded_row_equals_the_unpadded_row():
    """A causal block over [pad, pad, a, b, c] with a padding mask and positions starting at the first real token
    gives the same outputs at a, b, c as the block over [a, b, c] alone."""
    torch.manual_seed(4)
    block = TransformerBlock(DIM, HEADS, 4 * DIM).eval()
    rope = RotaryEmbedding(DIM // HEADS)
    real = randn(1, 3, DIM, seed=6)
    padded = torch.cat([randn(1, 2, DIM, seed=7), real], dim=1)
    keep = torch.tensor([[0, 0, 1, 1, 1]])
    positions = (keep.cumsum(1) - 1).clamp(min=0)
    out = block(padded, mask=padding_mask(keep), causal=True, rotary=rope(positions))
    alone = block(real, causal=True, rotary=rope(torch.arange(3)[None]))
    assert torch.isfinite(out).all()  # the padding queries too: they see their own key
    torch.testing.assert_close(out[:, 2:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_block_matches_torch_transformer_encoder_layer(norm_first):
    torch.manual_seed(5)
    block = TransformerBlock(DIM, HEADS, 3 * DIM, act="gelu", norm_first=norm_first).eval()
    ref = nn.TransformerEncoderLayer(DIM, HEADS, 3 * DIM, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm_first).eval()
    with torch.no_grad():
        ref.self_attn.load_state_dict(torch_mha_like(block.attn).state_dict())
        ref.linear1.load_state_dict(block.ffn.fc.state_dict())
        ref.linear2.load_state_dict(block.ffn.proj.state_dict())
        ref.norm1.load_state_dict(block.attn_norm.state_dict())
        ref.norm2.load_state_dict(block.ffn_norm.state_dict())
    x = randn(2, 6, DIM, seed=8)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    expected = ref(x, src_key_padding_mask=keep == 0)
    ours = block(x, mask=padding_mask(keep))
    torch.testing.assert_close(ours[keep.bool()], expected[keep.bool()], atol=1e-5, rtol=1e-5)


def test_decoder_block_matches_torch_transformer_decoder_layer():
    torch.manual_seed(6)
    block = TransformerBlock(DIM, HEADS, 2 * DIM, act="relu", norm_first=False, cross_attention=True).eval()
    ref = nn.TransformerDecoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, activation="relu", batch_first=True).eval()
    with torch.no_grad():
        ref.self_attn.load_state_dict(torch_mha_like(block.attn).state_dict())
        ref.multihead_attn.load_state_dict(torch_mha_like(block.cross).state_dict())
        ref.linear1.load_state_dict(block.ffn.fc.state_dict())
        ref.linear2.load_state_dict(block.ffn.proj.state_dict())
        for ours, theirs in ((block.attn_norm, ref.norm1), (block.cross_norm, ref.norm2), (block.ffn_norm, ref.norm3)):
            theirs.load_state_dict(ours.state_dict())
    x, memory = randn(2, 5, DIM, seed=9), randn(2, 7, DIM, seed=10)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    expected = ref(x, memory, tgt_mask=~causal_mask(5, 5), memory_key_padding_mask=keep == 0)
    ours = block(x, causal=True, memory=memory, memory_mask=padding_mask(keep))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_sinusoidal_positions_are_the_formula():
    dim = 8
    pe = SinusoidalPositions(50, dim)
    table = pe(torch.arange(50)[None])[0]
    for p in (0, 1, 17, 49):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    assert not list(pe.state_dict())  # fixed: nothing saved


def test_rotary_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q, k = randn(1, 1, 1, 8, seed=11), randn(1, 1, 1, 8, seed=12)

    def score(m: int, n: int) -> float:
        cos_m, sin_m = rope(torch.tensor([[m]]))
        cos_n, sin_n = rope(torch.tensor([[n]]))
        return (apply_rotary(q, cos_m, sin_m) * apply_rotary(k, cos_n, sin_n)).sum().item()

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)
    cos, sin = rope(torch.tensor([[0]]))  # position 0 is no rotation
    torch.testing.assert_close(apply_rotary(q, cos, sin), q)


def test_rotary_is_a_rotation_of_channel_pairs():
    rope = RotaryEmbedding(4, base=100.0)
    x = randn(1, 1, 1, 4, seed=13)
    cos, sin = rope(torch.tensor([[3]]))
    out = apply_rotary(x, cos, sin)[0, 0, 0]
    x = x[0, 0, 0]
    for i, freq in enumerate((1.0, 100 ** -0.5)):  # pairs (0, 2) and (1, 3)
        z = complex(x[i], x[i + 2]) * complex(math.cos(3 * freq), math.sin(3 * freq))
        assert out[i].item() == pytest.approx(z.real, abs=1e-5)
        assert out[i + 2].item() == pytest.approx(z.imag, abs=1e-5)


def test_swiglu_is_the_formula_and_make_ffn_picks_by_name():
    torch.manual_seed(7)
    ffn = make_ffn("swiglu", DIM, 24, bias=False)
    assert isinstance(ffn, SwiGLU)
    x = randn(3, DIM, seed=14)
    expected = (F.silu(x @ ffn.gate.weight.T) * (x @ ffn.up.weight.T)) @ ffn.proj.weight.T
    torch.testing.assert_close(ffn(x), expected)
    with pytest.raises(ValueError, match="expected one of mlp, swiglu"):
        make_ffn("moe", DIM, 24)


# --- attention probabilities, drop-path in the block ---------------------------------------------------------------


def test_attention_weights_are_torch_multihead_attentions_per_head_weights():
    torch.manual_seed(11)
    attn = MultiHeadAttention(DIM, HEADS).eval()
    ref = torch_mha_like(attn)
    x = randn(2, 7, DIM, seed=12)
    weights = attn.attention_weights(x)
    _, expected = ref(x, x, x, need_weights=True, average_attn_weights=False)
    assert weights.shape == (2, HEADS, 7, 7)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)
    _, expected = ref(x, x, x, attn_mask=~causal_mask(7, 7), need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(attn.attention_weights(x, causal=True), expected, atol=1e-6, rtol=1e-5)
    # the weights are what forward applies to the values through SDPA
    v = attn._heads(attn.qkv(x).split(DIM, dim=2)[2])
    mixed = (weights @ v).transpose(1, 2).reshape(2, 7, DIM)
    torch.testing.assert_close(attn.proj(mixed), attn(x), atol=1e-5, rtol=1e-5)


def test_drop_path_in_a_block_drops_whole_sublayers_per_sample_in_training_only():
    torch.manual_seed(13)
    block = TransformerBlock(DIM, HEADS, 2 * DIM, drop_path=0.5)
    plain = TransformerBlock(DIM, HEADS, 2 * DIM)
    plain.load_state_dict(block.state_dict())  # the drop-path adds no weights
    x = randn(64, 5, DIM, seed=14)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), plain.eval()(x))
        out = block.train()(x)
    untouched = (out == x).flatten(1).all(dim=1)  # both sublayers dropped: the sample passes through unchanged
    assert 0 < int(untouched.sum()) < 32  # about a quarter of the samples, each drawn on its own
    assert isinstance(plain.drop_path, nn.Identity) and not list(plain.drop_path.parameters())


# --- patches on a grid ----------------------------------------------------------------------------------------------


def test_patch_embedding_projects_each_patch_row_by_row():
    torch.manual_seed(15)
    embed = PatchEmbedding(3, DIM, 4)
    x = randn(2, 3, 8, 12, seed=16)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, rows, cols, 4, 4)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 2 * 3, 3 * 4 * 4)  # (B, N, C*p*p), row-major
    expected = patches @ embed.proj.weight.reshape(DIM, -1).T + embed.proj.bias
    torch.testing.assert_close(embed(x), expected, atol=1e-5, rtol=1e-5)
    assert embed.grid(8, 12) == (2, 3)
    with pytest.raises(ValueError, match="a 8x10 image is not a whole number of 4x4 patches"):
        embed(randn(1, 3, 8, 10))


def test_2d_sinusoidal_positions_are_the_row_table_then_the_column_table():
    table = sinusoidal_table_2d(3, 5, 8)
    rows, cols = sinusoidal_table(3, 4), sinusoidal_table(5, 4)
    assert table.shape == (15, 8)
    for i, j in ((0, 0), (1, 4), (2, 3)):
        torch.testing.assert_close(table[i * 5 + j], torch.cat([rows[i], cols[j]]))
    with pytest.raises(ValueError, match="even dim"):
        sinusoidal_table_2d(2, 2, 7)


def smooth_grid(rows: int, cols: int) -> torch.Tensor:
    """(1, rows * cols, 3): smooth functions of the cells' centres in [0, 1] x [0, 1], row by row."""
    u, v = torch.meshgrid((torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij")
    f = torch.stack([torch.sin(math.pi * u) * torch.cos(math.pi * v), u + 2 * v, torch.cos(2 * u - v)], dim=-1)
    return f.reshape(1, rows * cols, 3)


def test_resampled_positions_keep_the_class_token_and_a_smooth_grid():
    cls = torch.full((1, 1, 3), 5.0)
    table = torch.cat([cls, smooth_grid(7, 7)], dim=1)  # a class token's position, then a 7x7 grid
    assert resample_positions(table, (7, 7), (7, 7), prefix=1) is table  # the same grid: untouched
    for new in ((8, 8), (5, 5), (8, 10)):  # larger, smaller (antialiased), not square
        out = resample_positions(table, (7, 7), new, prefix=1)
        assert out.shape == (1, 1 + new[0] * new[1], 3)
        assert torch.equal(out[:, :1], cls)  # the class token's position kept apart, unchanged
        error = (out[:, 1:] - smooth_grid(*new)).abs().max().item()
        assert error < 0.035, (new, error)  # the smooth field, sampled at the new cells' centres
    # no prefix: the whole table is the grid; gradients reach the table (a learned one fine-tunes at the new size)
    learned = smooth_grid(7, 7).requires_grad_()
    resample_positions(learned, (7, 7), (8, 8)).sum().backward()
    assert learned.grad is not None and learned.grad.abs().sum() > 0
