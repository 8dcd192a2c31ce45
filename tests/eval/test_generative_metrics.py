"""FID, KID and IS against torchmetrics given the same extractor module (issue 15: FID within 1e-3 relative, KID mean
within 1e-4), and the identity checks."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from dlforge.errors import DataError
from dlforge.eval.generative import ClassifierExtractor, fid, generation_scores, inception_score, kid
from dlforge.registry import create_model

PRE = {"image_size": [12, 12], "channels": 1, "mean": [0.3], "std": [0.25]}


@pytest.fixture(scope="module")
def extractor() -> ClassifierExtractor:
    torch.manual_seed(0)
    model = create_model("simple_cnn", in_channels=1, num_classes=10, image_size=12)
    return ClassifierExtractor(model, PRE, "tiny")


def image_sets(n: int = 300):
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(n, 1, 3, 3, generator=g)
    real = torch.nn.functional.interpolate(coarse, size=(12, 12), mode="bilinear")  # smooth images, unlike noise
    fake = (real[torch.randperm(n, generator=g)] * 0.7 + 0.3 * torch.rand(n, 1, 12, 12, generator=g)).clamp(0, 1)
    return real, fake


def test_fid_equals_torchmetrics(extractor):
    real, fake = image_sets()
    ref = FrechetInceptionDistance(feature=extractor, normalize=True)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    expected = ref.compute().item()
    ours = fid(extractor.extract(real).features, extractor.extract(fake).features)
    assert ours == pytest.approx(expected, rel=1e-3)
    assert ours > 0


def test_kid_equals_torchmetrics_with_the_same_subsets(extractor):
    real, fake = image_sets()
    ref = KernelInceptionDistance(feature=extractor, subsets=5, subset_size=100, normalize=True)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    torch.manual_seed(11)  # torchmetrics draws its subsets from the global generator, in the order ours does
    mean, std = (v.item() for v in ref.compute())
    g = torch.Generator().manual_seed(11)
    ours = kid(extractor.extract(real).features, extractor.extract(fake).features, 5, 100, generator=g)
    assert ours[0] == pytest.approx(mean, abs=1e-4)
    assert ours[1] == pytest.approx(std, abs=1e-4)


def test_inception_score_equals_torchmetrics():
    logits = torch.randn(300, 10, generator=torch.Generator().manual_seed(4)) * 4  # varied, often confident
    logits[:5, 7] = 1e4  # a certain sample: 0 log 0 terms
    ref = InceptionScore(feature=torch.nn.Identity(), splits=4)  # normalize=False: the inputs reach it unchanged
    ref.update(logits)
    torch.manual_seed(5)
    mean, std = (v.item() for v in ref.compute())
    torch.manual_seed(5)
    order = torch.randperm(len(logits))  # torchmetrics shuffles before splitting
    ours = inception_score(logits[order], splits=4)
    assert mean > 3  # a score that tells sets apart
    assert ours[0] == pytest.approx(mean, rel=1e-5)
    assert ours[1] == pytest.approx(std, rel=1e-3, abs=1e-5)  # torchmetrics computes it in float32


def test_identity_and_ordering(extractor):
    real, fake = image_sets(400)
    r, f = extractor.extract(real), extractor.extract(fake)
    assert abs(fid(r.features, r.features)) < 1e-6  # a set against itself
    noise = extractor.extract(torch.rand(400, 1, 12, 12, generator=torch.Generator().manual_seed(9)))
    assert fid(r.features, f.features) < fid(r.features, noise.features)  # mixed-in real beats pure noise
    assert kid(r.features, r.features, subsets=1, subset_size=400)[0] < kid(r.features, noise.features, 1, 400)[0]


def test_inception_score_bounds():
    confident = torch.eye(10).repeat(20, 1) * 50  # every class equally often, each sample certain
    assert inception_score(confident, splits=1)[0] == pytest.approx(10, rel=1e-6)
    collapsed = torch.zeros(200, 10)
    collapsed[:, 3] = 50  # one class only
    assert inception_score(collapsed, splits=1)[0] == pytest.approx(1, rel=1e-6)


def test_generation_scores_report_class_shares(extractor):
    real, fake = image_sets()
    scores = generation_scores(extractor.extract(real), extractor.extract(fake), kid_subsets=3, kid_subset_size=50,
                               is_splits=2)
    assert set(scores) >= {"fid", "kid", "kid_std", "is", "is_std", "confident", "min_class_share", "n"}
    assert scores["n"] == len(fake) and 0 <= scores["min_class_share"] <= 0.1 + 1e-9


def test_extractor_checks_what_it_is_given():
    with pytest.raises(DataError, match="image classifier"):
        ClassifierExtractor(torch.nn.Linear(3, 3), PRE, "linear")
    with pytest.raises(DataError, match="at least 2"):
        fid(torch.zeros(1, 4), torch.zeros(5, 4))
