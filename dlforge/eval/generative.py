"""How good are generated images: FID, KID and IS on a declared feature extractor, offline.

    extractor = ClassifierExtractor.load("runs/fashion-resnet-...")      # a dlforge image classifier run
    real = extractor.extract(test_images)                               # images in [0, 1], (N, C, H, W)
    fake = extractor.extract(samples)
    scores = generation_scores(real, fake)   # {"fid": ..., "kid": ..., "kid_std": ..., "is": ..., "is_std": ...}

No package ships Inception-v3's weights and FID tools download them at run time, so the extractor is a classifier
the user trained with dlforge: its pooled penultimate features for FID (Heusel et al. 2017) and KID (Binkowski et al.
2018), its softmax for IS (Salimans et al. 2016). Scores are named after it, `FID-FMNIST(<run>)`, since they are
comparable only between sets measured with the same extractor. The formulas are torchmetrics' (FrechetInceptionDistance,
KernelInceptionDistance, InceptionScore) in float64; tests/eval/test_generative_metrics.py checks them against
torchmetrics given the same extractor module.

FID = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2)), the last trace from the eigenvalues of S_r S_f.
KID: the unbiased squared MMD with the kernel (x.y / d + 1)^3, averaged over `subsets` random subsets of
`subset_size` samples of each set (its std is the population std over subsets). IS = exp(E_x KL(p(y|x) || p(y))),
over `splits` chunks (mean and sample std over chunks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.errors import DataError


@dataclass
class Features:
    """An image set as the extractor sees it: pooled features (N, D) and class logits (N, K), float64."""

    features: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return len(self.features)


def gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    f = features.double()
    if len(f) < 2:
        raise DataError(f"FID needs at least 2 samples per set, got {len(f)}")
    mu = f.mean(dim=0)
    centered = f - mu
    return mu, centered.T @ centered / (len(f) - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    a = (mu1 - mu2).square().sum()
    b = sigma1.trace() + sigma2.trace()
    c = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum()
    return float(a + b - 2 * c)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, D) and (M, D)."""
    return frechet_distance(*gaussian(real), *gaussian(fake))


def _poly_mmd(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 of two equal-size sets (m, D) under the kernel (x.y / D + coef)^degree."""
    gamma = 1.0 / x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T * gamma + coef) ** degree for a, b in ((x, x), (y, y), (x, y)))
    m = len(x)
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return within / (m * (m - 1)) - 2 * k_xy.sum() / m**2


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID's mean and std over `subsets` random subsets of `subset_size` samples (at most the smaller set)."""
    real, fake = real.double(), fake.double()
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} generated")
    scores = []
    for _ in range(subsets):
        r = real[torch.randperm(len(real), generator=generator)[:size]]
        f = fake[torch.randperm(len(fake), generator=generator)[:size]]
        scores.append(_poly_mmd(r, f))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS's mean and std over `splits` chunks of class logits (N, K), in their order."""
    logits = logits.double()
    values = []
    for chunk in logits.chunk(splits, dim=0):
        p, log_p = chunk.softmax(dim=1), chunk.log_softmax(dim=1)
        marginal = p.mean(dim=0, keepdim=True)
        kl = torch.where(p > 0, p * (log_p - marginal.log()), 0.0)  # 0 log 0 = 0: a class no sample gives is no NaN
        values.append(kl.sum(dim=1).mean().exp())
    v = torch.stack(values)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


def generation_scores(real: Features, fake: Features, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      is_splits: int = 10, seed: int = 0) -> dict[str, float]:
    """FID, KID (mean, std) and IS (mean, std) of `fake` against `real`, and the share of samples per class and the
    share classified with confidence > 0.9 under the extractor."""
    g = torch.Generator().manual_seed(seed)
    kid_mean, kid_std = kid(real.features, fake.features, kid_subsets, kid_subset_size, generator=g)
    is_mean, is_std = inception_score(fake.logits, is_splits)
    probs = fake.logits.softmax(dim=1)
    shares = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).double() / len(fake)
    return {"fid": fid(real.features, fake.features), "kid": kid_mean, "kid_std": kid_std, "is": is_mean,
            "is_std": is_std, "confident": float((probs.max(dim=1).values > 0.9).double().mean()),
            "min_class_share": float(shares.min()), "n": len(fake)}


class Extractor(nn.Module):
    """What FID, KID and IS read: `features(x)` of images in [0, 1] (B, C, H, W) gives pooled features (B, D) and
    class logits (B, K); `forward` the features alone (torchmetrics calls it so); `name` goes into the reports."""

    name = "extractor"

    @property
    def report_name(self) -> str:
        """How reports name the scores' extractor: `FID-<report_name>`."""
        return self.name

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]

    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 500) -> Features:
        """Features and logits of images in [0, 1] (N, C, H, W), float64, on the CPU."""
        device = next(self.buffers()).device
        feats, logits = [], []
        for chunk in images.split(batch_size):
            f, lg = self.features(chunk.to(device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        return Features(torch.cat(feats), torch.cat(logits))


def load_extractor(spec: str | Path, device: str | torch.device = "cpu") -> Extractor:
    """`data.generation.extractor`: a file (pytorch-fid's Inception-v3 weights, e.g.
    pt_inception-2015-12-05-6726825d.pth) or a dlforge image classifier run (folder, name, latest:NAME)."""
    path = Path(str(spec)).expanduser()
    if path.suffix in (".pth", ".pt") or path.is_file():
        return InceptionExtractor.load(path, device)
    return ClassifierExtractor.load(spec, device)


class ClassifierExtractor(Extractor):
    """A dlforge image classifier as the feature extractor. Takes images in [0, 1] (B, C, H, W), resizes them to the
    classifier's input size (bilinear, antialiased) and normalizes them as its training images were; `forward`
    returns the pooled penultimate features (B, D) (torchmetrics calls it so), `extract` features and logits."""

    def __init__(self, model: nn.Module, preprocessing: dict, name: str):
        super().__init__()
        if not hasattr(model, "features") or not hasattr(model, "head"):
            raise DataError(f"{name}: the feature extractor must be an image classifier with pooled features (a CNN "
                            f"run such as fashion-resnet); got {type(model).__name__}")
        self.model, self.name = model.eval(), name
        self.size = tuple(preprocessing["image_size"])
        self.channels = int(preprocessing["channels"])
        self.register_buffer("mean", torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.num_features = int(self.features(torch.zeros(1, self.channels, *self.size))[0].shape[-1])

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ClassifierExtractor:
        """The classifier of a run or model folder; named after the run folder (`FID-FMNIST(<name>)` reports)."""
        from dlforge.artifacts import load_trained

        model = load_trained(path, device=str(device))
        pre = model.meta["extra"].get("preprocessing.json") or {}
        if pre.get("kind") != "image" or pre.get("task") != "classification":
            raise DataError(f"{path}: the feature extractor must be an image classification run, got "
                            f"{pre.get('task') or 'no preprocessing.json'}")
        folder = Path(model.meta["folder"])
        name = folder.parent.name if folder.name == "model" else folder.name
        return cls(model, pre, name).to(device)

    @property
    def report_name(self) -> str:
        """`FMNIST(<run>)` for a Fashion-MNIST classifier, `classifier(<run>)` for another."""
        from dlforge.data.images import FASHION_LABELS

        names = self.model.meta["extra"].get("data_info.json", {}).get("label_names")
        return f"{'FMNIST' if names == FASHION_LABELS else 'classifier'}({self.name})"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:
                raise DataError(f"{self.name}: images have {x.shape[1]} channels, the extractor reads {self.channels}")
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.features(self._prepare(x))  # (B, D)
        return feats, self.model.head[1:](feats)  # the rest of the head: (dropout,) Linear -> (B, K)


class InceptionExtractor(Extractor):
    """Inception-v3 of the FID papers from a local weights file in pytorch-fid's format (never downloaded). Images in
    [0, 1] are repeated to 3 channels when grey, resized to 299x299 (bilinear, as pytorch-fid) and scaled to
    [-1, 1]; the 2048 pooled features give FID and KID, the 1008 logits IS."""

    def __init__(self, network: nn.Module, name: str):
        super().__init__()
        self.network, self.name = network.eval(), name
        self.num_features = 2048

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> InceptionExtractor:
        from dlforge.artifacts import check_shapes
        from dlforge.models.inception_fid import FIDInceptionV3

        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: no such file; data.generation.extractor names pytorch-fid's Inception-v3 "
                            "weights (pt_inception-2015-12-05-6726825d.pth), which dlforge never downloads, or a "
                            "classifier run")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a file that is not a tensor state dict, whatever torch says
            raise DataError(f"{path}: not a PyTorch state dict ({type(exc).__name__}: {str(exc)[:200]})") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise DataError(f"{path}: expected a state dict of tensors (pytorch-fid's file format)")
        network = FIDInceptionV3()
        counter = "num_batches_tracked"  # BatchNorm's step counter: in some saved files, unused here
        own = {k: v for k, v in network.state_dict().items() if not k.endswith(counter)}
        state = {k: v for k, v in state.items() if not k.endswith(counter)}
        check_shapes(own, state, str(path), "data.generation.extractor expects pytorch-fid's Inception-v3 weights")
        network.load_state_dict(state, strict=False)
        return cls(network, "Inception-v3").to(device)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise DataError(f"Inception-v3 reads 1- or 3-channel images, got {x.shape[1]} channels")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.network(2 * x - 1)
