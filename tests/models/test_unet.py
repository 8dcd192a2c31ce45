"""U-Net: logits at the input's size for any size, encoder and upsampling; the losses against their formulas, -100
pixels ignored; the paper's parameter count; a ResNet encoder named as dlforge's ResNet, so that a classification
run's backbone loads into it. (Every registered U-Net also runs through tests/models/test_models.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlforge.errors import ConfigError
from dlforge.layers.dice import SegmentationLoss, soft_dice_loss
from dlforge.registry import create_model
from dlforge.train import transfer


def tiny(name: str = "unet", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **{"in_channels": 1, "num_classes": 4, "image_size": 16, "depth": 2,
                                 "base_channels": 4, **kw})


@pytest.mark.parametrize(("encoder", "upsample"), [("unet", "transposed"), ("unet", "bilinear"),
                                                   ("resnet", "transposed"), ("resnet", "bilinear")])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (17, 23), (5, 9)])
def test_logits_have_the_input_size_for_any_size(encoder, upsample, h, w):
    model = tiny(encoder=encoder, upsample=upsample, in_channels=3).eval()
    out = model({"x": torch.randn(2, 3, h, w)})
    assert out.logits.shape == (2, 4, h, w) and out.loss is None
    assert torch.isfinite(out.logits).all()


def test_padding_leaves_the_image_part_of_a_divisible_input_alone():
    """An input whose sides divide by 2**depth is not padded: its logits are the decoder's on the encoder's maps."""
    model = tiny().eval()
    x = torch.randn(1, 1, 16, 12)
    with torch.no_grad():
        assert torch.equal(model.segment(x), model.head(model.encode(x)))
        maps = model.encode(x)
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 12), (8, 6), (4, 3)]
    assert [m.shape[1] for m in maps] == [4, 8, 16]


def test_the_papers_shape_has_its_parameter_count():
    with torch.device("meta"):
        model = create_model("unet", depth=4, base_channels=64, in_channels=1, num_classes=2)
    assert sum(p.numel() for p in model.parameters()) == 31_036_546


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.layers: .*encoder: resnet"):
        create_model("unet", layers=[1, 1, 1, 1, 1])
    with pytest.raises(ConfigError, match=r"model\.layers: expected depth \+ 1 = 3 stages"):
        create_model("unet", encoder="resnet", depth=2, layers=[1, 1])
    with pytest.raises(ConfigError, match=r"model\.loss"):
        create_model("unet", loss="bce")


# --- losses ------------------------------------------------------------------------------------------------------


def brute_force_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """1 - mean over the classes present of 2 sum(p t) / (sum p + sum t), pixel by pixel, -100 pixels skipped."""
    probs = torch.softmax(logits.double(), dim=1).numpy()
    y = target.numpy()
    k = probs.shape[1]
    inter, p_sum, t_sum = np.zeros(k), np.zeros(k), np.zeros(k)
    for b, i, j in np.ndindex(*y.shape):
        if y[b, i, j] == -100:
            continue
        for c in range(k):
            t = 1.0 if y[b, i, j] == c else 0.0
            inter[c] += probs[b, c, i, j] * t
            p_sum[c] += probs[b, c, i, j]
            t_sum[c] += t
    present = [c for c in range(k) if t_sum[c] > 0]
    return 1 - float(np.mean([2 * inter[c] / (p_sum[c] + t_sum[c]) for c in present]))


def targets(seed: int = 0, k: int = 5, absent: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 6, 7, generator=g) * 2
    y = torch.randint(0, k, (2, 6, 7), generator=g)
    if absent is not None:
        y[y == absent] = (absent + 1) % k
    y[0, 0, :] = -100  # a void border
    y[1, :, 3] = -100
    return logits, y


@pytest.mark.parametrize("absent", [None, 2])
def test_soft_dice_matches_the_formula_pixel_by_pixel(absent):
    logits, y = targets(absent=absent)
    assert soft_dice_loss(logits, y).item() == pytest.approx(brute_force_dice(logits, y), abs=1e-6)


def test_soft_dice_gradient_is_the_one_hot_forms(one_thread):
    """The loss gathers each pixel's own-class probability instead of building a one-hot map: same gradient."""
    logits, y = targets(seed=2)
    logits = logits.double().requires_grad_()
    soft_dice_loss(logits, y).backward()
    reference = logits.detach().clone().requires_grad_()
    valid = (y != -100)[:, None]
    probs = torch.softmax(reference, dim=1) * valid
    onehot = F.one_hot(y.clamp(min=0), 5).permute(0, 3, 1, 2) * valid
    truth = onehot.sum(dim=(0, 2, 3))
    dice = 2 * (probs * onehot).sum(dim=(0, 2, 3)) / (probs.sum(dim=(0, 2, 3)) + truth)
    (1 - dice[truth > 0].mean()).backward()
    torch.testing.assert_close(logits.grad, reference.grad, rtol=1e-5, atol=1e-8)  # the loss works in float32


def test_losses_ignore_the_minus_100_pixels():
    logits, y = targets(seed=1)
    changed = logits.clone()
    changed[:, :, 0, :] += 50 * torch.randn_like(changed[:, :, 0, :])  # row 0 of image 0 is ignored
    changed[1] = logits[1]
    for name in ("cross_entropy", "dice", "ce_dice"):
        loss = SegmentationLoss(name)
        assert loss(changed, y).item() == pytest.approx(loss(logits, y).item(), abs=1e-6), name
    valid = y != -100
    flat = logits.permute(0, 2, 3, 1)[valid]  # (n, K): the scored pixels only
    ce = F.cross_entropy(flat, y[valid])
    assert SegmentationLoss("cross_entropy")(logits, y).item() == pytest.approx(ce.item(), abs=1e-6)
    both = SegmentationLoss("ce_dice")(logits, y).item()
    assert both == pytest.approx(ce.item() + brute_force_dice(logits, y), abs=1e-5)
    # no gradient reaches an ignored pixel's logits
    grad_logits = logits.clone().requires_grad_()
    SegmentationLoss("ce_dice")(grad_logits, y).backward()
    assert grad_logits.grad[0, :, 0, :].abs().max() == 0 and grad_logits.grad[1].abs().max() > 0


def test_a_batch_of_ignored_pixels_has_a_zero_loss_and_a_graph():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    y = torch.full((1, 4, 4), -100)
    for name in ("cross_entropy", "dice", "ce_dice"):
        loss = SegmentationLoss(name)(logits, y)
        assert loss.item() == 0
        loss.backward()


def test_model_loss_is_its_configured_loss_on_its_logits():
    for name in ("cross_entropy", "dice", "ce_dice"):
        model = tiny(loss=name).eval()
        batch = model.example_batch(2, torch.Generator().manual_seed(0))
        assert (batch["y"] == -100).any()
        out = model(batch)
        assert out.loss.item() == pytest.approx(SegmentationLoss(name)(out.logits, batch["y"]).item(), abs=1e-6)


# --- a ResNet encoder takes a ResNet classification backbone -------------------------------------------------------


def test_resnet_encoder_is_named_and_shaped_as_the_resnet_and_takes_its_backbone():
    torch.manual_seed(1)
    source = create_model("resnet20", in_channels=1, num_classes=10, width=4)
    unet = create_model("unet_resnet20", in_channels=1, num_classes=11, base_channels=4)
    assert unet.stage_names == ("stem", "stage1", "stage2", "stage3", "head")
    backbone = {k: v for k, v in unet.state_dict().items() if not k.startswith("head.")}
    theirs = source.state_dict()
    assert {k: tuple(v.shape) for k, v in backbone.items()} == \
        {k: tuple(theirs[k].shape) for k in theirs if not k.startswith("head.")}
    head_before = {k: v.clone() for k, v in unet.state_dict().items() if k.startswith("head.")}
    copied = transfer.load_backbone(unet, source)
    assert sorted(copied) == sorted(backbone)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, theirs[key] if key in backbone else head_before[key]), key
    # the plain encoder is another architecture, and a ResNet of other widths does not fit
    with pytest.raises(ConfigError, match=r"holds a ResNet, this run builds a UNet; it must be a UNet"):
        transfer.load_backbone(tiny(), source)
    with pytest.raises(ConfigError, match=r"backbone tensor 'stem\.conv\.weight' is \(4, 1, 3, 3\) in the source"):
        transfer.load_backbone(create_model("unet_resnet20", base_channels=8), source)


def test_freezing_the_resnet_encoder_leaves_the_decoder_training():
    model = tiny(encoder="resnet")
    assert transfer.freeze(model, "all") == ["stem", "stage1", "stage2", "stage3"]
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head"}
    assert set(transfer.lr_scales(model, _transfer_config())) == {"stem", "stage1", "stage2", "stage3", "head"}


def _transfer_config():
    from dlforge.config import TransferConfig

    return TransferConfig(init_from="unused", backbone_lr=0.1)
