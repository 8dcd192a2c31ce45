"""The Vision Transformer: its blocks and its whole forward against torch's own modules, timm's parameter counts,
positions on another image size, pooling, the registry and the model folder, a short training run on the 8x8 digits,
attention maps and their overlay PNG (the `dlforge image attention` verb)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clitools import run_here
from torch import nn

from dlforge import api
from dlforge.artifacts import load_model, save_model
from dlforge.config import TransferConfig, load_config
from dlforge.errors import ConfigError, DataError
from dlforge.eval.attention import attention_overlay, attention_rollout, patch_heat
from dlforge.models.vit import ViT, ViTConfig
from dlforge.registry import create_model, model_entry
from dlforge.train import transfer

SMALL = {"dim": 32, "n_layers": 2, "n_heads": 4, "patch_size": 4, "image_size": 12, "in_channels": 3,
         "num_classes": 5}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_vit(seed: int = 0, **overrides) -> ViT:
    torch.manual_seed(seed)
    return create_model("vit", **{**SMALL, **overrides})


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Random values in every tensor (LayerNorm weights, biases, the class token...), so parity tests see them all."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def encoder_layer_like(block: nn.Module) -> nn.TransformerEncoderLayer:
    """torch's pre-norm TransformerEncoderLayer holding the weights of one of our encoder blocks."""
    dim = block.attn.proj.in_features
    ref = nn.TransformerEncoderLayer(dim, block.attn.n_heads, block.ffn.fc.out_features, dropout=0.0,
                                     activation="gelu", layer_norm_eps=block.attn_norm.eps, batch_first=True,
                                     norm_first=True)
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)  # q, k, v stacked in both
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
        ref.linear1.load_state_dict(block.ffn.fc.state_dict())
        ref.linear2.load_state_dict(block.ffn.proj.state_dict())
        ref.norm1.load_state_dict(block.attn_norm.state_dict())
        ref.norm2.load_state_dict(block.ffn_norm.state_dict())
    return ref.eval()


# --- parity with torch's modules and timm's shapes ---------------------------------------------------------------


def test_a_vit_encoder_block_matches_torch_transformer_encoder_layer():
    model = small_vit(drop_path=0.2).eval()  # drop-path and dropout are off in eval
    randomize(model, seed=1)
    block = model.blocks[1]
    ref = encoder_layer_like(block)
    assert ref.norm1.eps == 1e-6  # timm's ViT LayerNorm
    x = torch.randn(3, 10, 32, generator=gen(2))
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-5)


def reference_forward(model: ViT, x: torch.Tensor) -> torch.Tensor:
    """The ViT written with torch modules from the same weights: conv patches, class token, positions (bicubic on the
    grid for another size), nn.TransformerEncoder (norm_first), LayerNorm, pool, Linear."""
    c, emb = model.config, model.embed
    tokens = F.conv2d(x, emb.patch_embed.proj.weight, emb.patch_embed.proj.bias, stride=c.patch_size)
    rows, cols = tokens.shape[-2:]
    tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, C)
    pos = emb.pos_embed
    grid = pos[:, emb.prefix:].reshape(1, *emb.grid, c.dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
    pos = torch.cat([pos[:, :emb.prefix], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, c.dim)], dim=1)
    if c.pool == "cls":
        tokens = torch.cat([emb.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    layers = [encoder_layer_like(b) for b in model.blocks]
    encoder = nn.TransformerEncoder(layers[0], c.n_layers, enable_nested_tensor=False)
    encoder.layers = nn.ModuleList(layers)
    h = F.layer_norm(encoder(tokens + pos), (c.dim,), model.norm.weight, model.norm.bias, eps=1e-6)
    pooled = h[:, 0] if c.pool == "cls" else h.mean(dim=1)
    return F.linear(pooled, model.head[-1].weight, model.head[-1].bias)


@pytest.mark.parametrize(("pool", "positions"), [("cls", "learned"), ("mean", "sinusoidal")])
def test_the_whole_vit_matches_a_reference_written_with_torch_modules(pool, positions):
    model = small_vit(pool=pool, positions=positions).eval()
    randomize(model, seed=3)
    for size in (12, 16):  # the trained size, and another: positions resampled to a 4x4 grid
        x = torch.randn(2, 3, size, size, generator=gen(4))
        with torch.no_grad():
            torch.testing.assert_close(model({"x": x}).logits, reference_forward(model, x), atol=1e-5, rtol=1e-5)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("shape", "expected"), [({"dim": 192, "n_heads": 3}, 5_717_416),
                                                 ({"dim": 384, "n_heads": 6}, 22_050_664),
                                                 ({"dim": 768, "n_heads": 12}, 86_567_656)])
def test_vit_ti_s_b_at_patch_16_have_timms_parameter_counts(shape, expected):
    with torch.device("meta"):  # counted, not allocated
        model = create_model("vit_tiny", in_channels=3, num_classes=1000, **shape)
    assert (model.config.patch_size, model.config.image_size, model.config.n_layers) == (16, 224, 12)
    assert model.embed.pos_embed.shape == (1, 197, shape["dim"])  # 14 x 14 patches and the class token
    assert n_params(model) == expected


# --- positions at another size, pooling ----------------------------------------------------------------------------


def test_a_model_built_for_28x28_runs_at_other_sizes_with_its_positions_resampled():
    model = small_vit(image_size=28, in_channels=1, pool="cls").eval()
    table = model.embed.pos_embed.detach().clone()
    seen = []
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        for size, tokens in ((28, 1 + 49), (32, 1 + 64), (20, 1 + 25)):
            assert model({"x": torch.randn(2, 1, size, size)}).logits.shape == (2, 5)
            assert seen[-1] == tokens
        assert model({"x": torch.randn(2, 1, 32, 24)}).logits.shape == (2, 5)  # not square: an 8x6 grid
    assert torch.equal(model.embed.pos_embed, table)  # the stored table is not touched
    with pytest.raises(ValueError, match="not a whole number of 4x4 patches"):
        model({"x": torch.randn(1, 1, 30, 30)})


def test_the_learned_table_at_its_own_size_is_used_as_is_and_the_class_position_stays_apart():
    model = small_vit().eval()
    emb = model.embed
    x = torch.randn(2, 3, 16, 16, generator=gen(5))
    with torch.no_grad():
        at_12, patches = emb(x[..., :12, :12]), emb.patch_embed(x[..., :12, :12])  # (B, 1 + 9, C), (B, 9, C)
        torch.testing.assert_close(at_12[:, 1:], patches + emb.pos_embed[:, 1:])
        torch.testing.assert_close(at_12[:, 0], (emb.cls_token + emb.pos_embed[:, :1])[:, 0].expand(2, -1))
        at_16 = emb(x)  # a 4x4 grid: the class token and its position are the same as at 12x12
        torch.testing.assert_close(at_16[:, 0], at_12[:, 0])


def test_cls_pooling_reads_the_class_token_and_mean_pooling_has_none():
    cls, mean = small_vit(pool="cls").eval(), small_vit(pool="mean").eval()
    assert cls.num_prefix_tokens == 1 and cls.embed.cls_token.shape == (1, 1, 32)
    assert mean.num_prefix_tokens == 0 and mean.embed.cls_token is None
    assert n_params(cls) - n_params(mean) == 2 * 32  # the class token and its position
    x = torch.randn(2, 3, 12, 12, generator=gen(6))
    for model, pooled in ((cls, lambda h: h[:, 0]), (mean, lambda h: h.mean(dim=1))):
        with torch.no_grad():
            h = model.embed(x)
            for block in model.blocks:
                h = block(h)
            torch.testing.assert_close(model.features(x), pooled(model.norm(h)))
    assert mean.embed(x).shape == (2, 9, 32) and cls.embed(x).shape == (2, 10, 32)


def test_sinusoidal_positions_are_fixed_and_not_saved():
    model = small_vit(positions="sinusoidal")
    assert "embed.pos_embed" not in model.state_dict() and "embed.pos_embed" not in dict(model.named_parameters())
    assert torch.equal(model.embed.pos_embed[0, 0], torch.zeros(32))  # the class token's position: zero (MAE)


def test_drop_path_grows_linearly_over_the_blocks():
    model = small_vit(n_layers=3, drop_path=0.2)
    assert isinstance(model.blocks[0].drop_path, nn.Identity)
    assert [b.drop_path.p for b in model.blocks[1:]] == pytest.approx([0.1, 0.2])


# --- registry, config errors, model folder, transfer ---------------------------------------------------------------


def test_registry_round_trip_and_config_errors_name_the_key():
    model = create_model("vit", image_size=28, in_channels=1, num_classes=10)
    assert model.registry_name == "vit" and model_entry("vit").config_cls is ViTConfig
    assert isinstance(model, ViT) and model.config == ViTConfig(image_size=28, in_channels=1, num_classes=10)
    assert model.embed.grid == (7, 7) and model.config.hidden == 4 * 128
    with pytest.raises(ConfigError, match=r"^model\.patch_size: 16 does not divide model\.image_size 28; patch sizes "
                                          r"that do: 2, 4, 7, 14"):
        create_model("vit_tiny", image_size=28)
    with pytest.raises(ConfigError, match=r"^model\.n_heads: must divide dim \(128\)"):
        create_model("vit", n_heads=3)
    with pytest.raises(ConfigError, match=r"^model\.positions: 2-D sin-cos positions need an even dim"):
        create_model("vit", dim=33, n_heads=1, positions="sinusoidal")
    with pytest.raises(ConfigError, match=r"^model\.pool: "):
        create_model("vit", pool="max")


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_the_model_folder_round_trip_gives_the_same_logits(tmp_path, positions):
    model = small_vit(positions=positions, pool="mean" if positions == "sinusoidal" else "cls").eval()
    loaded, meta = load_model(save_model(model, tmp_path / "model"))
    assert meta["model"] == "vit" and loaded.config == model.config
    x = torch.randn(2, 3, 12, 12, generator=gen(7))
    with torch.no_grad():
        torch.testing.assert_close(loaded({"x": x}).logits, model({"x": x}).logits)


def test_transfer_sees_one_stage_per_block():
    model = small_vit(n_layers=3)
    assert model.stage_names == ("embed", "blocks.0", "blocks.1", "blocks.2", "norm", "head")
    assert transfer.freeze(model, "blocks.1") == ["embed", "blocks.0", "blocks.1"]
    assert not any(p.requires_grad for p in model.blocks[1].parameters())
    assert all(p.requires_grad for p in model.blocks[2].parameters())
    scales = transfer.lr_scales(model, TransferConfig(init_from="x", backbone_lr=1.0, layer_decay=0.5))
    assert scales == {"embed": 0.0625, "blocks.0": 0.125, "blocks.1": 0.25, "blocks.2": 0.5, "norm": 1.0,
                      "head": 1.0}


# --- attention maps ---------------------------------------------------------------------------------------------------


def test_attention_maps_are_each_blocks_probabilities_and_leave_the_forward_alone():
    model = small_vit(n_layers=3).eval()
    randomize(model, seed=8)
    x = torch.randn(2, 3, 12, 12, generator=gen(9))
    with torch.no_grad():
        before = model({"x": x}).logits
        maps = model.attention_maps(x)
        after = model({"x": x}).logits
        h = model.embed(x)
        expected = []
        for block in model.blocks:
            _, w = encoder_layer_like(block).self_attn(*(3 * [block.attn_norm(h)]), average_attn_weights=False)
            expected.append(w)
            h = block(h)
    assert torch.equal(before, after)
    assert len(maps) == 3 and all(m.shape == (2, 4, 10, 10) for m in maps)
    for ours, theirs in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_rollout_multiplies_the_blocks_with_their_residual_path():
    a1 = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])[None]  # (B=1, heads=1, T=2, T=2)
    a2 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])[None]
    eye = torch.eye(2)
    expected = (0.5 * eye + 0.5 * a2[0, 0]) @ (0.5 * eye + 0.5 * a1[0, 0])
    torch.testing.assert_close(attention_rollout([a1, a2])[0], expected)
    two_heads = torch.cat([a1, a2], dim=1)  # heads are averaged first
    torch.testing.assert_close(attention_rollout([two_heads])[0], 0.5 * eye + 0.25 * (a1 + a2)[0, 0])
    # the class token's row over a 1x1 grid of patches; with mean pooling, the mean of the rows
    assert patch_heat([a1], prefix=1, grid=(1, 1), method="last").item() == 1.0
    uniform = torch.full((1, 1, 4, 4), 0.25)
    focused = uniform.clone()
    focused[..., 2] += 0.5  # every query looks at token 2 more
    focused[..., 0] -= 0.5
    heat = patch_heat([uniform, focused], prefix=0, grid=(2, 2), method="last")
    assert heat.shape == (1, 2, 2) and heat.amax().item() == 1.0 and heat[0, 1, 0] == 1.0
    with pytest.raises(ConfigError, match=r"^--method: expected rollout or last, got 'max'"):
        patch_heat([a1], 1, (1, 1), method="max")


# --- a short run on the 8x8 digits, its attention over an image --------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """digits-vit, smaller and short: 2 blocks 32 wide, 60 steps of 64 images at a constant rate, evaluated at the
    end. Without the preset's random crops, which slow the first steps down."""
    root = tmp_path_factory.mktemp("vit-digits")
    overrides = ["model.dim=32", "model.n_layers=2", "data.augment=null", "train.max_steps=60",
                 "train.max_epochs=null", "train.scheduler=constant", "train.eval_every=60", "train.progress=false",
                 "train.tensorboard=false", "train.checkpoint_every=null", f"runs_dir={root / 'runs'}"]
    return api.train(load_config("digits-vit", overrides))


def test_digits_vit_learns_in_a_few_dozen_steps(digits_run):
    assert digits_run.status == "completed" and digits_run.steps == 60
    assert digits_run.metrics["test"]["accuracy"] >= 0.6  # ten classes: chance is 0.1 (0.83 seen)
    model = api.load(digits_run.run_dir)
    assert model.registry_name == "vit" and model.embed.grid == (2, 2)  # 8x8 images, 4x4 patches


def write_digit_png(path, seed: int = 0):
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images[seed] * (255 / 16)).astype(np.uint8)
    Image.fromarray(pixels, mode="L").resize((24, 24)).save(path)  # resized back to 8x8 as the training images
    return path


def test_attention_overlay_of_a_trained_run(digits_run, tmp_path):
    from PIL import Image

    image = write_digit_png(tmp_path / "digit.png")
    for method in ("rollout", "last"):
        out = tmp_path / f"{method}.png"
        summary = attention_overlay(digits_run.run_dir, image, out, method=method)
        assert summary["grid"] == [2, 2] and summary["prediction"] in [str(i) for i in range(10)]
        assert summary["model"] == str(digits_run.run_dir / "model") and 0.1 <= summary["probability"] <= 1
        with Image.open(out) as png:
            assert png.format == "PNG" and png.width > 300
    # the method and the output are checked before the run is read
    with pytest.raises(ConfigError, match=r"^--method: expected rollout or last, got 'max'"):
        attention_overlay("no-such-run", image, tmp_path / "max.png", method="max")
    for out, error in ((tmp_path, "is a folder; expected the PNG file to write"),
                       (tmp_path / "x.jpg", "expected the PNG file to write \\(--out\\), a .png file"),
                       (tmp_path / "no" / "x.png", "the folder .* does not exist")):
        with pytest.raises(DataError, match=rf"^{tmp_path}.*: {error}"):
            attention_overlay("no-such-run", image, out)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'nope.png'}: image file not found"):
        attention_overlay(digits_run.run_dir, tmp_path / "nope.png", tmp_path / "nope-attention.png")
    cnn = create_model("simple_cnn", channels=[4], image_size=8)
    folder = save_model(cnn, tmp_path / "cnn")
    with pytest.raises(ConfigError, match=r"model 'simple_cnn' has no attention maps"):
        attention_overlay(folder, image, tmp_path / "cnn.png")


def test_image_attention_command(digits_run, tmp_path, monkeypatch, capsys):
    image = write_digit_png(tmp_path / "digit.png", seed=3)
    out = tmp_path / "attention.png"
    run = str(digits_run.run_dir)
    monkeypatch.chdir(tmp_path)
    done = run_here(capsys, "image", "attention", run, str(image), "--out", str(out), "--json")  # the CLI, in-process
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["out"] == str(out) and summary["method"] == "rollout" and out.stat().st_size > 1000
    assert summary["model"] == str(digits_run.run_dir / "model")
