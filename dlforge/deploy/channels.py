"""Structured channel pruning: remove whole channels from conv and linear layers, so the model really is smaller.

The model's forward is traced with torch.fx into a graph of layer calls, and every tensor's channel dimension (dim 1)
is followed through it. Each Conv2d or Linear starts a new channel space for its output; norms, activations,
pooling, dropout and a flatten pass theirs on; an element-wise sum or product of two tensors joins their spaces
into one (a residual connection ties a block's output channels to its shortcut's, and so to every block of the
stage). A space is a *group*: its channels can go only all together, from every member at once: the rows of each
layer that produces it (out channels, with their bias), its norms' entries, and the columns of each layer that
reads it (in channels; after a flatten, the H*W columns of each channel). Spaces that meet anything else (the
model's input and output, a reshape, a concatenation, attention, a parameter added to the activations) are left
whole. This is the dependency graph of Fang et al. 2023 (DepGraph, Torch-Pruning) for the layers a CNN or MLP uses.

A channel's importance is the |gamma| of the BatchNorms in its group where it has some (network slimming, Liu et al.
2017: a BN'd conv's filter norm says nothing of its output's scale) and otherwise the L2 norm of its producers'
rows (Li et al. 2017). `prune_channels` keeps the most important (1 - amount) of every prunable group's channels, in
their order, and cuts the layers in place: the kept channels compute exactly what they computed before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from dlforge.errors import ConfigError

PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Hardswish,
                nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)
NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)
JOINS = {"add", "iadd", "sub", "mul", "imul"}  # element-wise on two tensors: their channels are one
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float"}


@dataclass
class Group:
    """One channel space: who produces it (out dim 0), normalizes it, and reads it (in dim 1, `factor` columns per
    channel after a flatten)."""

    size: int
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    fixed: bool = False  # touches the input, the output or an operation not followed


class Spaces:
    """Union-find over channel spaces."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[Group] = []

    def new(self, size: int, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(Group(size, fixed=fixed))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def group(self, i: int) -> Group:
        return self.groups[self.find(i)]

    def join(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            ga, gb = self.groups[a], self.groups[b]
            if ga.size != gb.size:
                ga.fixed = True  # a broadcast over channels: leave both whole
            ga.producers += gb.producers
            ga.norms += gb.norms
            ga.consumers += gb.consumers
            ga.depthwise += gb.depthwise
            ga.fixed = ga.fixed or gb.fixed
            self.parent[b] = a
        return a


def trace(model: nn.Module, example: dict[str, torch.Tensor]) -> list[Group]:
    """The channel groups of `model` on a batch like `example` (its inputs only: no targets, so no loss is traced)."""
    try:
        graph = fx.symbolic_trace(model, concrete_args={"batch": {k: fx.PH for k in example}})
    except Exception as exc:  # fx's many ways to refuse Python control flow
        raise ConfigError(f"train.prune.structured: {type(model).__name__} can't be traced by torch.fx "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); use unstructured "
                          "pruning") from None
    shapes = _shapes(graph, example)
    spaces = Spaces()
    space: dict[fx.Node, int] = {}
    modules = dict(graph.named_modules())

    def fixed_inputs(node: fx.Node) -> None:
        for arg in node.all_input_nodes:
            if arg in space:
                spaces.group(space[arg]).fixed = True

    for node in graph.graph.nodes:
        shape = shapes.get(node)
        if node.op in ("placeholder", "get_attr"):
            space[node] = spaces.new(_channels(shape), fixed=True)
        elif node.op == "output":
            fixed_inputs(node)
        elif node.op == "call_module":
            m, src = modules[node.target], node.args[0] if node.args else None
            if not isinstance(src, fx.Node) or src not in space:
                fixed_inputs(node)
                space[node] = spaces.new(_channels(shape), fixed=True)
            elif isinstance(m, nn.Conv2d) and m.groups == 1 or isinstance(m, nn.Linear):
                g = spaces.group(space[src])
                factor = m.in_features // g.size if isinstance(m, nn.Linear) and g.size else 1  # H*W after a flatten
                g.consumers.append((node.target, factor))
                space[node] = spaces.new(_channels(shape))
                spaces.group(space[node]).producers.append(node.target)
            elif isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels:
                spaces.group(space[src]).depthwise.append(node.target)  # channel i in, channel i out
                space[node] = space[src]
            elif isinstance(m, NORMS) and not (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1):
                spaces.group(space[src]).norms.append(node.target)
                space[node] = space[src]
            elif isinstance(m, PASS_MODULES):
                space[node] = space[src]
            else:
                fixed_inputs(node)
                space[node] = spaces.new(_channels(shape), fixed=True)
        else:
            name = getattr(node.target, "__name__", str(node.target))
            tensors = [a for a in node.all_input_nodes if a in space]
            if name in JOINS and len(tensors) == 2:
                space[node] = spaces.join(space[tensors[0]], space[tensors[1]])
            elif name in JOINS | PASS_METHODS and len(tensors) == 1 or _reduces_space(node, shapes):
                space[node] = space[tensors[0]]
            else:
                fixed_inputs(node)
                space[node] = spaces.new(_channels(shape), fixed=True)
    roots = {spaces.find(i) for i in range(len(spaces.parent))}
    return [spaces.groups[r] for r in sorted(roots) if spaces.groups[r].producers]


def prunable(groups: list[Group]) -> list[Group]:
    return [g for g in groups if not g.fixed and g.size > 1]


def prune_channels(model: nn.Module, example: dict[str, torch.Tensor], amount: float) -> dict[str, dict[str, int]]:
    """Remove `amount` of the channels of every prunable group of `model`, in place (see the module docstring);
    return {first producer: {"before": C, "after": kept}} per group. Raises ConfigError when nothing can be cut."""
    groups = prunable(trace(model, example))
    if not groups:
        raise ConfigError(f"train.prune.structured: {type(model).__name__} has no channels that can be removed "
                          "alone (every layer's channels reach the input, the output or an untraced operation)")
    layers = dict(model.named_modules())
    report = {}
    for g in groups:
        keep = max(1, round(g.size * (1 - amount)))
        scores = _importance(g, layers)
        kept = torch.sort(torch.argsort(scores, descending=True, stable=True)[:keep]).values
        _cut(g, layers, kept)
        report[g.producers[0]] = {"before": g.size, "after": keep}
    return report


def _importance(g: Group, layers: dict[str, nn.Module]) -> torch.Tensor:
    norms = [layers[n] for n in g.norms if getattr(layers[n], "weight", None) is not None]
    with torch.no_grad():
        if norms:
            return sum(m.weight.detach().abs().float() for m in norms)
        return sum(layers[n].weight.detach().float().flatten(1).pow(2).sum(1) for n in g.producers).sqrt()


def _cut(g: Group, layers: dict[str, nn.Module], kept: torch.Tensor) -> None:
    with torch.no_grad():
        for name in g.producers + g.norms + g.depthwise:
            m = layers[name]
            for key in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(m, key, None)
                if isinstance(value, torch.Tensor):
                    _replace(m, key, value[kept.to(value.device)])
        for name, factor in g.consumers:
            m = layers[name]
            cols = (kept[:, None] * factor + torch.arange(factor)[None, :]).flatten()
            _replace(m, "weight", m.weight[:, cols.to(m.weight.device)])
    from dlforge.artifacts import layer_sizes

    for name in {*g.producers, *g.norms, *g.depthwise, *(n for n, _ in g.consumers)}:
        layer_sizes(layers[name])


def _replace(module: nn.Module, key: str, value: torch.Tensor) -> None:
    old = getattr(module, key)
    if isinstance(old, nn.Parameter):
        setattr(module, key, nn.Parameter(value.clone(), requires_grad=old.requires_grad))
    else:
        module.register_buffer(key, value.clone())


def _shapes(graph: fx.GraphModule, example: dict[str, torch.Tensor]) -> dict[fx.Node, tuple[int, ...]]:
    """Every node's output shape on `example` (fx's ShapeProp, without changing the model's mode)."""
    from torch.fx.passes.shape_prop import ShapeProp

    was = graph.training
    graph.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph).propagate(*example.values())
    finally:
        graph.train(was)
    out = {}
    for node in graph.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            out[node] = tuple(meta.shape)
    return out


def _channels(shape: tuple[int, ...] | None) -> int:
    return shape[1] if shape is not None and len(shape) >= 2 else 0


def _reduces_space(node: fx.Node, shapes: dict[fx.Node, tuple[int, ...]]) -> bool:
    """A mean/flatten that keeps dim 1 as the channels: (B, C, H, W) -> (B, C) or (B, C, 1, 1)."""
    name = getattr(node.target, "__name__", str(node.target))
    if name not in ("mean", "flatten", "amax", "sum") or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    src, out = shapes.get(node.args[0]), shapes.get(node)
    return src is not None and out is not None and len(src) >= 2 and len(out) >= 2 and out[1] % max(src[1], 1) == 0
