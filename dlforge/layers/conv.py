"""Convolutional building blocks shared by the CNN zoo.

Padding "same" pads `dilation * (kernel // 2)` pixels on every side. At stride 1 that keeps the size. At stride s > 1
the output side is ceil(n / s), the size TensorFlow's SAME padding gives; TensorFlow reaches it by padding one pixel
more at the bottom/right when the total is odd, we pad symmetrically like torchvision (ResNet's 7x7/2 stem pads 3),
so the sampling grid may sit one pixel off TensorFlow's. An even kernel has no symmetric "same" padding and is refused.

`classifier_head` builds the `head` of every CNN (`dlforge.models.convnet.ConvClassifier`): its first module turns
feature maps (B, C, H, W) into vectors (B, F), its last is nn.Linear(F, num_classes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Literal

import torch
from pydantic import AfterValidator
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers.activations import ACTIVATIONS, make_activation


def _padding(value: int | str) -> int | str:
    if value != "same" and value < 0:
        raise ValueError("expected 'same' or a number of pixels >= 0")
    return value


Padding = Annotated[int | Literal["same"], AfterValidator(_padding)]  # pixels per side, or "same" (see above)
PoolKind = Literal["max", "avg"]
ClassificationLoss = Literal["cross_entropy", "perceptron"]  # one logit per class; bce and regression need one


def _activation_name(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"expected one of {', '.join(ACTIVATIONS)}")
    return name


Activation = Annotated[str, AfterValidator(_activation_name)]


# --- sizes -----------------------------------------------------------------------------------------------------------


def resolve_padding(padding: Padding, kernel: int, dilation: int = 1) -> int:
    """Pixels of padding per side: an int as given, or "same" = dilation * (kernel // 2) for an odd kernel."""
    if padding == "same":
        if kernel % 2 == 0:
            raise ValueError(f"padding 'same' needs an odd kernel size, got {kernel}")
        return dilation * (kernel // 2)
    if padding < 0:
        raise ValueError(f"padding must be 'same' or >= 0, got {padding}")
    return padding


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: Padding = 0, dilation: int = 1) -> int:
    """Output side of a conv or pool over a side of `size` (torch's floor formula; may be <= 0 when it can't fit)."""
    pad = resolve_padding(padding, kernel, dilation)
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def checked_size(size: int, kernel: int, stride: int, padding: Padding, key: str, image_size: int) -> int:
    """`conv_output_size`, or a ConfigError naming the config `key` when the feature map would vanish."""
    try:
        out = conv_output_size(size, kernel, stride, padding)
    except ValueError as exc:  # 'same' with an even kernel
        raise ConfigError(f"model.{key}: {exc}") from None
    if out < 1:
        raise ConfigError(f"model.{key}: a {size}x{size} feature map is too small for a kernel-{kernel} stride-{stride}"
                          f" layer (padding {padding!r}); with image_size {image_size} use fewer pools, 'same' "
                          f"padding or larger images")
    return out


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never below `divisor` nor 10% under `value`.

    The rounding of MobileNet and EfficientNet (their `_make_divisible`), so scaled widths stay hardware friendly.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# --- blocks ----------------------------------------------------------------------------------------------------------


def inplace(act: nn.Module) -> nn.Module:
    """Switch an activation to in-place where it has the option (ReLU, SiLU, ELU, LeakyReLU); saves a buffer."""
    if hasattr(act, "inplace"):
        act.inplace = True
    return act


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation: (B, cin, H, W) -> (B, cout, H', W'). Children: conv, bn, act.

    The conv has no bias when a norm follows (BN's shift replaces it); `act="identity"` leaves the activation out;
    the activation runs in place on the fresh BN output.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: Padding = "same",
                 groups: int = 1, act: str = "relu", norm: bool = True, dilation: int = 1):
        layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(cin, cout, kernel, stride, resolve_padding(padding, kernel, dilation), dilation,
                               groups, bias=not norm)),
        ]
        if norm:
            layers.append(("bn", nn.BatchNorm2d(cout)))
        if act != "identity":
            layers.append(("act", inplace(make_activation(act))))
        super().__init__(OrderedDict(layers))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x * sigmoid(fc2(act(fc1(avgpool(x))))), one gate per channel.

    fc1/fc2 are 1x1 convs (Linear layers over channels). (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduced: int, act: str = "silu"):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = make_activation(act)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.fc2(self.act(self.fc1(s)))  # (B, C, 1, 1)
        return x * torch.sigmoid(s)


def make_pool(kind: str, kernel: int = 2, stride: int | None = None, padding: int = 0) -> nn.Module:
    """`make_pool("max", 3, 2)` -> nn.MaxPool2d(3, 2). Kinds: max, avg. Stride defaults to the kernel."""
    if kind == "max":
        return nn.MaxPool2d(kernel, stride, padding)
    if kind == "avg":
        return nn.AvgPool2d(kernel, stride, padding)
    raise ValueError(f"unknown pool {kind!r}; expected max or avg")


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: (B, C, H, W) -> (B, C). Works on channels_last tensors too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def classifier_head(in_features: int, num_classes: int, dropout: float = 0.0, hidden: list[int] | None = None,
                    act: str = "relu", pool: Literal["avg", "flatten"] = "avg") -> nn.Sequential:
    """The `head` of a CNN: pool or flatten, then [dropout -> Linear -> act] per hidden width, dropout -> Linear.

    pool="avg" averages each map (B, C, H, W) -> (B, C); "flatten" keeps every position, (B, C*H*W). The dropout
    before every Linear is AlexNet's and VGG's classifier (and the one dropout of ResNet/EfficientNet heads).
    """
    layers: list[nn.Module] = [GlobalAvgPool() if pool == "avg" else nn.Flatten()]
    width = in_features
    for h in hidden or []:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(width, h), inplace(make_activation(act))]
        width = h
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def he_init(model: nn.Module) -> None:
    """He et al. 2015 init for ReLU nets: conv weights N(0, 2/fan_out), conv biases 0, BN weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
