"""The CNN zoo: every registered CNN (and ViT, which shares their contract) against the model and transfer-learning
contract, parameter counts against the papers and torchvision, blocks against the same computation written with
torch.nn.functional, and configs that cannot fit the image size."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers.conv import (
    ConvBNAct,
    SqueezeExcite,
    conv_output_size,
    make_divisible,
    make_pool,
    resolve_padding,
)
from dlforge.layers.droppath import DropPath
from dlforge.models import googlenet, vgg
from dlforge.models.convnet import ImageClassifierConfig
from dlforge.models.efficientnet import MBConv
from dlforge.models.googlenet import INCEPTION_TABLE
from dlforge.models.resnet import BasicBlock, Bottleneck
from dlforge.registry import create_model, model_entries, model_entry

# Every registered model whose config is an image classifier's: found in the registry, never listed by hand.
CNN_MODELS = [e.name for e in model_entries() if issubclass(e.config_cls, ImageClassifierConfig)]
# Narrower versions of the heaviest presets keep the registry-wide test fast; their layouts stay the presets'.
TINY = {"resnet18": {"width": 16}, "resnet34": {"width": 16}, "resnet50": {"width": 16},
        "efficientnet_b0_small": {"width_mult": 0.5}, "efficientnet_small_scaled": {"width_mult": 0.5},
        "vit_tiny": {"patch_size": 4}}  # ViT-Ti's 16x16 patches do not tile 28x28 images


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **overrides) -> nn.Module:
    """Build a model without allocating or initialising its weights: enough to count parameters."""
    with torch.device("meta"):
        return create_model(name, **overrides)


def randomize_norms(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm random affine parameters and running statistics, so parity tests see them."""
    g = gen(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_every_cnn_file_registers_its_presets():
    assert set(CNN_MODELS) == {
        "simple_cnn", "lenet5", "alexnet_small", "vgg11_small", "vgg16_small", "googlenet_small", "resnet18",
        "resnet34", "resnet50", "resnet20", "efficientnet_b0_small", "efficientnet_small_scaled", "vit", "vit_tiny",
    }


def test_every_cnn_config_takes_the_shared_fields_from_one_base():
    shared = {f.name for f in dataclasses.fields(ImageClassifierConfig)}
    assert {"in_channels", "num_classes", "image_size", "loss", "label_smoothing", "class_weights"} <= shared
    for name in CNN_MODELS:
        config_cls = model_entry(name).config_cls
        assert issubclass(config_cls, ImageClassifierConfig), name
        assert not shared & set(inspect.get_annotations(config_cls)), f"{name} declares a shared field again"


# --- the contract, for every registered CNN ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CNN_MODELS)
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_every_cnn_runs_forward_backward_and_keeps_the_contract(name, channels, size):
    if name == "efficientnet_small_scaled" and size != 32:  # scaled to 32x32 inputs: any other size is refused
        with pytest.raises(ConfigError, match=r"^model\.image_size: 28, but model\.resolution is 32"):
            create_model(name, in_channels=channels, image_size=size)
        return
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, image_size=size, num_classes=7, **TINY.get(name, {}))
    batch = model.example_batch(3, generator=gen())
    assert batch["x"].shape == (3, channels, size, size) and batch["x"].dtype == torch.float32
    assert batch["y"].dtype == torch.long and batch["y"].shape == (3,) and 0 <= batch["y"].min() <= batch["y"].max() < 7

    # forward runs exactly the named stages, in order: children, or dotted paths into them (ViT's blocks.0)
    names = list(model.stage_names)
    assert [n for n, _ in model.named_children()] == [*dict.fromkeys(n.split(".")[0] for n in names), "loss_fn"]
    ran = []
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n in names]
    out = model(batch)
    for h in hooks:
        h.remove()
    assert ran == names

    assert out.logits.shape == (3, 7) and torch.isfinite(out.logits).all()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    first, last = next(model.parameters()), model.head[-1].weight
    assert first.grad.abs().sum() > 0 and last.grad.abs().sum() > 0  # the gradient reaches the first layer

    # the head: pool/flatten first, a single Linear(F, num_classes) last; features are what its Linears read
    assert names[-1] == "head"
    assert isinstance(model.head[-1], nn.Linear) and model.head[-1].out_features == 7
    assert sum(isinstance(m, nn.Linear) and m.out_features == 7 for m in model.head) == 1
    model.eval()
    with torch.no_grad():
        feats = model.features(batch["x"])
        first_linear = next(m for m in model.head if isinstance(m, nn.Linear))
        assert feats.shape == (3, first_linear.in_features)
        no_targets = model({"x": batch["x"]})
        assert no_targets.loss is None  # a loss only when the batch carries targets
        torch.testing.assert_close(model.head[1:](feats), no_targets.logits)

        # transfer learning: a new head replaces the old one, and forward uses it
        model.head = nn.Sequential(model.head[0], nn.Linear(feats.shape[1], 2))
        assert model({"x": batch["x"]}).logits.shape == (3, 2)


@pytest.mark.parametrize("name", CNN_MODELS)
def test_every_cnn_refuses_a_loss_that_needs_one_output(name):
    with pytest.raises(ConfigError, match=r"^model\.loss: .*'cross_entropy' or 'perceptron'"):
        create_model(name, loss="bce")


def test_perceptron_loss_and_class_weights_reach_the_loss():
    torch.manual_seed(0)
    model = create_model("simple_cnn", channels=[8], loss="perceptron")
    batch = model.example_batch(4, generator=gen())
    logits = model(batch).logits
    true = logits.gather(1, batch["y"][:, None]).squeeze(1)
    torch.testing.assert_close(model(batch).loss, (logits.max(1).values - true).mean())

    weights = [float(i + 1) for i in range(10)]
    model = create_model("simple_cnn", channels=[8], class_weights=weights, label_smoothing=0.1)
    out = model(batch)
    expected = F.cross_entropy(out.logits, batch["y"], weight=torch.tensor(weights), label_smoothing=0.1)
    torch.testing.assert_close(out.loss, expected)


# --- parameter counts against the references -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                                ("resnet50", 25_557_032)])
def test_imagenet_resnets_have_torchvisions_parameter_count(name, expected):
    assert n_params(on_meta(name, stem="imagenet", in_channels=3, num_classes=1000)) == expected


def test_resnet20_is_he_et_al_cifar_net_with_projection_shortcuts():
    model = create_model("resnet20", in_channels=3)
    # 3 stages x 3 BasicBlocks, 16-32-64 channels, 6n+2 = 20 weighted layers
    assert [len(getattr(model, f"stage{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert [getattr(model, f"stage{i}")[0].conv2.conv.out_channels for i in (1, 2, 3)] == [16, 32, 64]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # the 3x3 convs plus the Linear head
    # option B: a 1x1 projection where the shape changes (two places), identity elsewhere
    projections = [m for m in model.modules() if isinstance(m, BasicBlock) and not isinstance(m.shortcut, nn.Identity)]
    assert len(projections) == 2
    assert n_params(model) == 272_474  # the paper's 0.27M; option A (zero-padded identity) would be 269,722
    assert n_params(model) - sum(n_params(b.shortcut) for b in projections) == 269_722


def test_lenet5_has_the_classic_61706_parameters_and_pads_28x28_into_its_32x32_frame():
    assert n_params(create_model("lenet5", image_size=32)) == 61_706
    model = create_model("lenet5", image_size=28)
    assert n_params(model) == 61_706
    assert model.stage1[0].padding == (2, 2) and model.stage2[0].padding == (0, 0)
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 16 * 5 * 5)
    assert isinstance(model.stage1[1], nn.Tanh) and isinstance(model.stage1[2], nn.AvgPool2d)


def test_alexnet_at_paper_settings_has_torchvisions_parameter_count():
    model = on_meta("alexnet_small", in_channels=3, num_classes=1000, image_size=224, kernel_sizes=[11, 5, 3, 3, 3],
                    stride=4, width_mult=1.0, hidden=[4096, 4096])
    assert n_params(model) == 61_100_840
    assert model.head[0](torch.empty(1, 256, 6, 6, device="meta")).shape == (1, 9216)  # 224 -> 55/56 -> 27 -> 13 -> 6


@pytest.mark.parametrize(("layout", "expected", "expected_bn"), [("VGG11", 132_863_336, 132_868_840),
                                                                  ("VGG16", 138_357_544, 138_365_992)])
def test_vgg_at_paper_settings_has_torchvisions_parameter_count(layout, expected, expected_bn):
    stages = getattr(vgg, layout)
    paper = {"stages": stages, "in_channels": 3, "num_classes": 1000, "image_size": 224, "hidden": [4096, 4096]}
    assert n_params(on_meta("vgg11_small", **paper, batchnorm=False, pools=5)) == expected
    # torchvision's VGG-BN keeps a bias in every conv before its BN; ours drops that redundant bias
    conv_biases = sum(sum(stage) for stage in stages)
    assert n_params(on_meta("vgg11_small", **paper, batchnorm=True, pools=5)) == expected_bn - conv_biases


@pytest.mark.parametrize(("width", "depth", "expected"), [(1.0, 1.0, 5_288_548), (1.0, 1.1, 7_794_184),
                                                          (1.1, 1.2, 9_109_994)])
def test_efficientnet_scaling_matches_torchvisions_b0_b1_b2_counts(width, depth, expected):
    model = on_meta("efficientnet_b0_small", width_mult=width, depth_mult=depth, in_channels=3, num_classes=1000)
    assert n_params(model) == expected


def test_efficientnet_small_scaled_is_phi_1_compound_scaling():
    base, scaled = create_model("efficientnet_b0_small"), create_model("efficientnet_small_scaled")
    assert scaled.resolution == 32 == round(base.resolution * 1.15)  # gamma = 1.15
    depth = [len(getattr(m, f"stage{i}")) for m in (base, scaled) for i in range(1, 8)]
    assert depth == [1, 2, 2, 3, 3, 4, 1] + [math.ceil(r * 1.2) for r in [1, 2, 2, 3, 3, 4, 1]]  # alpha = 1.2
    assert (base.stem.conv.out_channels, scaled.stem.conv.out_channels) == (32, make_divisible(32 * 1.1))  # beta
    assert create_model("efficientnet_small_scaled", resolution=None, image_size=28).resolution == 28


def test_googlenet_blocks_concatenate_the_paper_table_widths():
    model = create_model("googlenet_small", width_mult=1.0, blocks=[2, 5, 2])
    blocks = [b for i in (1, 2, 3) for b in getattr(model, f"stage{i}") if isinstance(b, googlenet.Inception)]
    outs = [b.out_channels for b in blocks]
    assert outs == [256, 480, 512, 512, 512, 528, 832, 832, 1024]  # table 1, "output" column
    assert outs == [sum(row[i] for i in (0, 2, 4, 5)) for group in INCEPTION_TABLE for row in group]
    block = model.stage1[0]
    x = torch.randn(2, block.branch1.conv.in_channels, 7, 7, generator=gen())
    model.eval()
    with torch.no_grad():
        expected = torch.cat([block.branch1(x), block.branch3(x), block.branch5(x), block.branch_pool(x)], dim=1)
        torch.testing.assert_close(block(x), expected)
    assert block.branch5[1].conv.kernel_size == (5, 5)
    factorized = create_model("googlenet_small", factorize_5x5=True).stage1[0].branch5
    assert [layer.conv.kernel_size for layer in factorized] == [(1, 1), (3, 3), (3, 3)]


# --- blocks against torch.nn.functional ----------------------------------------------------------------------------


def bn(x, p: dict, prefix: str, training: bool):
    return F.batch_norm(x, p[f"{prefix}.running_mean"].clone(), p[f"{prefix}.running_var"].clone(),
                        p[f"{prefix}.weight"], p[f"{prefix}.bias"], training=training)


def basic_block_reference(x, p: dict, stride: int, training: bool):
    out = F.relu(bn(F.conv2d(x, p["conv1.conv.weight"], stride=stride, padding=1), p, "conv1.bn", training))
    out = bn(F.conv2d(out, p["conv2.conv.weight"], padding=1), p, "conv2.bn", training)
    if "shortcut.conv.weight" in p:
        x = bn(F.conv2d(x, p["shortcut.conv.weight"], stride=stride), p, "shortcut.bn", training)
    return F.relu(out + x)


def bottleneck_reference(x, p: dict, stride: int, training: bool):
    out = F.relu(bn(F.conv2d(x, p["conv1.conv.weight"]), p, "conv1.bn", training))
    out = F.relu(bn(F.conv2d(out, p["conv2.conv.weight"], stride=stride, padding=1), p, "conv2.bn", training))
    out = bn(F.conv2d(out, p["conv3.conv.weight"]), p, "conv3.bn", training)
    if "shortcut.conv.weight" in p:
        x = bn(F.conv2d(x, p["shortcut.conv.weight"], stride=stride), p, "shortcut.bn", training)
    return F.relu(out + x)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(("block_cls", "reference", "cin", "planes", "stride"), [
    (BasicBlock, basic_block_reference, 8, 8, 1), (BasicBlock, basic_block_reference, 8, 16, 2),
    (Bottleneck, bottleneck_reference, 32, 8, 1), (Bottleneck, bottleneck_reference, 16, 8, 2),
])
def test_residual_blocks_match_a_functional_reference(block_cls, reference, cin, planes, stride, training):
    torch.manual_seed(0)
    block = block_cls(cin, planes, stride)
    randomize_norms(block)
    assert isinstance(block.shortcut, nn.Identity) == (stride == 1 and cin == planes * block_cls.expansion)
    p = {k: v.detach().clone() for k, v in block.state_dict().items()}  # copied weights
    x = torch.randn(2, cin, 9, 9, generator=gen(1))
    block.train(training)
    with torch.no_grad():
        out = block(x.clone())
    assert out.shape == (2, planes * block_cls.expansion, math.ceil(9 / stride), math.ceil(9 / stride))
    torch.testing.assert_close(out, reference(x, p, stride, training), rtol=1e-5, atol=1e-5)


def test_squeeze_excite_is_x_times_sigmoid_of_two_fcs_on_the_average():
    torch.manual_seed(0)
    se = SqueezeExcite(12, 3, act="silu")
    x = torch.randn(2, 12, 5, 4, generator=gen())
    pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
    hidden = F.silu(F.linear(pooled, se.fc1.weight.flatten(1), se.fc1.bias))  # (B, 3)
    gate = torch.sigmoid(F.linear(hidden, se.fc2.weight.flatten(1), se.fc2.bias))  # (B, C)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_efficientnet_depthwise_convs_have_one_group_per_channel():
    model = create_model("efficientnet_b0_small")
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    assert len(blocks) == 16  # B0: 1 + 2 + 2 + 3 + 3 + 4 + 1
    for b in blocks:
        conv = b.depthwise.conv
        assert conv.groups == conv.in_channels == conv.out_channels
        assert conv.weight.shape == (conv.out_channels, 1, *conv.kernel_size)
    assert [b.depthwise.conv.kernel_size[0] for b in blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]


def test_mbconv_matches_a_functional_reference():
    torch.manual_seed(0)
    block = MBConv(16, 16, expand=6, kernel=5, stride=1, drop_path=0.5).eval()
    randomize_norms(block)
    p = {k: v.detach().clone() for k, v in block.state_dict().items()}
    x = torch.randn(2, 16, 6, 6, generator=gen(1))
    h = F.silu(bn(F.conv2d(x, p["expand.conv.weight"]), p, "expand.bn", False))  # (B, 96, H, W)
    h = F.silu(bn(F.conv2d(h, p["depthwise.conv.weight"], padding=2, groups=96), p, "depthwise.bn", False))
    s = F.silu(F.conv2d(h.mean((2, 3), keepdim=True), p["se.fc1.weight"], p["se.fc1.bias"]))  # squeeze to 16 // 4
    h = h * torch.sigmoid(F.conv2d(s, p["se.fc2.weight"], p["se.fc2.bias"]))
    expected = bn(F.conv2d(h, p["project.conv.weight"]), p, "project.bn", False) + x
    assert p["se.fc1.weight"].shape == (4, 96, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert not MBConv(16, 24, 6, 3, 1, 0.0).residual and not MBConv(16, 16, 6, 3, 2, 0.0).residual


def test_mbconv_drops_its_residual_branch_with_the_layers_drop_path():
    assert isinstance(MBConv(16, 16, 6, 3, 1, 0.2).drop_path, DropPath)
    assert isinstance(MBConv(16, 24, 6, 3, 1, 0.2).drop_path, nn.Identity)  # no residual, nothing to drop


# --- residual identity at initialisation ---------------------------------------------------------------------------


def test_zero_init_residual_makes_every_block_start_as_relu_of_its_shortcut():
    torch.manual_seed(0)
    x = torch.rand(2, 16, 8, 8, generator=gen())  # non-negative, like every activation between blocks
    model = create_model("resnet20")
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(model.stage1(x), x)  # three identity blocks: the identity map
            projection = model.stage2[0]
            torch.testing.assert_close(projection(x), F.relu(projection.shortcut(x)))
    bottleneck = create_model("resnet50", width=8).stage1[1]  # identity shortcut, 32 channels
    y = torch.rand(2, 32, 6, 6, generator=gen(1))
    with torch.no_grad():
        torch.testing.assert_close(bottleneck(y), y)

    plain = create_model("resnet20", zero_init_residual=False).stage1[0]
    assert plain.conv2.bn.weight.eq(1).all()
    with torch.no_grad():
        assert not torch.allclose(plain(x), x, atol=1e-3)  # without the option the branch adds something


# --- layers: padding, sizes, pools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_keeps_the_size_at_stride_1(kernel, dilation):
    assert resolve_padding("same", kernel, dilation) == dilation * (kernel // 2)
    for n in (1, 5, 8, 28):
        layer = ConvBNAct(2, 3, kernel, 1, "same", dilation=dilation)
        assert layer(torch.randn(2, 2, n, n)).shape[-2:] == (n, n)


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [2, 3])
def test_same_padding_at_stride_gives_tensorflows_output_size(kernel, stride):
    for n in range(1, 14):
        layer = ConvBNAct(1, 1, kernel, stride, "same", norm=False)
        out = layer(torch.randn(1, 1, n, n)).shape[-1]
        assert out == math.ceil(n / stride) == conv_output_size(n, kernel, stride, "same")


def test_same_padding_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="odd kernel"):
        ConvBNAct(1, 1, 4, 1, "same")
    with pytest.raises(ConfigError, match=r"^model\.kernel_size: padding 'same' needs an odd kernel size, got 4"):
        create_model("simple_cnn", kernel_size=4)


def test_conv_output_size_matches_torch():
    for n, k, s, p, d in [(28, 5, 1, 0, 1), (28, 5, 1, 2, 1), (7, 3, 2, 0, 1), (224, 11, 4, 2, 1), (9, 3, 2, 1, 2),
                          (13, 3, 2, 0, 1), (8, 2, 2, 0, 1)]:
        out = nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, n, n)).shape[-1]
        assert conv_output_size(n, k, s, p, d) == out
    assert conv_output_size(2, 5) < 1  # reported, not raised: the models turn it into a ConfigError


def test_conv_bn_act_has_a_bias_only_without_norm_and_no_identity_act():
    assert [n for n, _ in ConvBNAct(2, 4, 3).named_children()] == ["conv", "bn", "act"]
    assert ConvBNAct(2, 4, 3).conv.bias is None and ConvBNAct(2, 4, 3, norm=False).conv.bias is not None
    assert [n for n, _ in ConvBNAct(2, 4, 1, act="identity").named_children()] == ["conv", "bn"]
    layer = ConvBNAct(4, 4, 3, groups=4, act="silu").eval()
    x = torch.randn(2, 4, 5, 5, generator=gen())
    expected = F.silu(F.batch_norm(F.conv2d(x, layer.conv.weight, padding=1, groups=4), torch.zeros(4),
                                   torch.ones(4), training=False))
    torch.testing.assert_close(layer(x), expected)


def test_make_pool_and_make_divisible():
    assert isinstance(make_pool("max", 3, 2), nn.MaxPool2d) and make_pool("max", 3, 2).stride == 2
    assert isinstance(make_pool("avg", 2), nn.AvgPool2d) and make_pool("avg", 2).stride == 2
    with pytest.raises(ValueError, match="unknown pool 'min'"):
        make_pool("min")
    # torchvision's _make_divisible on the EfficientNet widths
    assert [make_divisible(c * 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [32, 16, 24, 48, 88, 120, 208,
                                                                                      352]
    assert make_divisible(4) == 8 and make_divisible(100, 8) == 104


# --- configs that cannot fit the image -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "bad", "good", "key"), [
    ("simple_cnn", {"channels": [8, 8, 8, 8]}, {"channels": [8, 8, 8, 8], "pools": 3}, "pools"),
    ("vgg11_small", {}, {"pools": 3}, "pools"),
    ("alexnet_small", {}, {"pool_after": [2, 5]}, "pool_after"),
    ("lenet5", {}, {"padding": "same"}, "padding"),
    ("simple_cnn", {"padding": 0, "kernel_size": 5}, {"padding": 0, "kernel_size": 3, "channels": [8]}, "kernel_size"),
])
def test_configs_that_cannot_fit_8x8_digits_name_the_key(name, bad, good, key):
    with pytest.raises(ConfigError, match=rf"^model\.{key}: .*too small.*image_size 8"):
        create_model(name, image_size=8, **bad)
    model = create_model(name, image_size=8, **good)  # the suggested fix fits
    assert model(model.example_batch(2, gen())).logits.shape == (2, 10)


@pytest.mark.parametrize(("name", "overrides", "key"), [
    ("simple_cnn", {"pools": 4}, "pools"),
    ("vgg11_small", {"pools": 6}, "pools"),
    ("alexnet_small", {"kernel_sizes": [5, 3]}, "kernel_sizes"),
    ("alexnet_small", {"pool_after": [0, 6]}, "pool_after"),
    ("resnet18", {"widths": [8, 16]}, "widths"),
    ("googlenet_small", {"blocks": [2, 6]}, "blocks"),
    ("efficientnet_small_scaled", {"image_size": 28}, "image_size"),
    ("resnet20", {"layers": [3, 0, 3]}, "layers"),
    ("simple_cnn", {"padding": -1}, "padding"),
])
def test_inconsistent_configs_name_the_key(name, overrides, key):
    with pytest.raises(ConfigError, match=rf"^model\.{key}: "):
        create_model(name, **overrides)


# --- memory format -------------------------------------------------------------------------------------------------


def test_resnet18_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = create_model("resnet18", zero_init_residual=False)
    randomize_norms(model)
    x = torch.randn(2, 1, 28, 28, generator=gen())
    last = create_model("resnet18", zero_init_residual=False)
    last.load_state_dict(model.state_dict())
    last = last.to(memory_format=torch.channels_last)
    assert last.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    last.stage4.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    for mode in (False, True):  # eval (running statistics) and train (batch statistics)
        model.train(mode), last.train(mode)
        with torch.no_grad():
            expected = model({"x": x}).logits
            got = last({"x": x.to(memory_format=torch.channels_last)}).logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert seen == [True, True]  # the format survives to the last stage
