"""Inception-v3 from a local file in pytorch-fid's format: torchvision's Inception3 layout (so the file's state dict
loads as it is), the FID graph's pools, the preprocessing, and the refusals. No weights ship offline, so the network
here has random weights saved the way pytorch-fid's file is (a plain state dict, BatchNorm counters included)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlforge.errors import DlforgeError
from dlforge.eval.generative import InceptionExtractor, fid, load_extractor
from dlforge.models.inception_fid import FIDInceptionV3, InceptionA, InceptionE


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for m in network.modules():  # BatchNorm statistics of a trained network, not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(network.state_dict(), path)
    return path, network.eval()


def test_the_layout_is_torchvisions_inception3_without_the_aux_head():
    # torchvision's inception_v3(aux_logits=False) has 23,834,568 parameters at 1000 classes; the FID graph's 1008
    # classes add 8 rows to fc. 94 BasicConv2d (conv + 5 BatchNorm entries) and fc: 566 state dict entries.
    assert sum(p.numel() for p in FIDInceptionV3(num_classes=1000).parameters()) == 23_834_568
    state = FIDInceptionV3().state_dict()
    assert len(state) == 566
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048)


def _pool_input(block, x):
    seen = []
    block.branch_pool.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    block(x)
    return seen[0]


def test_the_fid_graph_pools():
    x = torch.rand(2, 4, 5, 5)
    # blocks A and the first E average without the padding: the corner of a constant image keeps its value
    a = InceptionA(4, pool_features=2).eval()
    pooled = _pool_input(a, torch.full((1, 4, 5, 5), 3.0))
    torch.testing.assert_close(pooled, torch.full((1, 4, 5, 5), 3.0))
    e_avg = InceptionE(4, max_pool=False).eval()
    torch.testing.assert_close(_pool_input(e_avg, x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    # the last block max-pools
    e_max = InceptionE(4, max_pool=True).eval()
    torch.testing.assert_close(_pool_input(e_max, x), F.max_pool2d(x, 3, 1, 1))


def test_a_pytorch_fid_weights_file_gives_features_and_logits(weights):
    path, network = weights
    extractor = load_extractor(path)
    assert isinstance(extractor, InceptionExtractor) and extractor.name == "Inception-v3"
    grey = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = extractor.extract(grey)
    assert out.features.shape == (3, 2048) and out.logits.shape == (3, 1008) and out.features.dtype == torch.float64
    # pytorch-fid's preprocessing: grey to RGB, bilinear to 299x299, [0, 1] to [-1, 1]
    x = F.interpolate(grey.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        feats, logits = network(x)
    torch.testing.assert_close(out.features, feats.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, logits.double(), atol=1e-5, rtol=1e-5)
    assert fid(out.features, out.features) == pytest.approx(0.0, abs=1e-6)


def test_the_loaded_file_is_the_network_saved(weights):
    path, network = weights
    loaded = InceptionExtractor.load(path).network.state_dict()
    for key, value in network.state_dict().items():
        torch.testing.assert_close(loaded[key], value)


def test_refusals_name_the_file(tmp_path, weights):
    with pytest.raises(DlforgeError, match=r"no such file.*never downloads"):
        load_extractor(tmp_path / "pt_inception.pth")
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(DlforgeError, match=r"resnet\.pth.*Conv2d_1a_3x3\.conv\.weight.*pytorch-fid"):
        load_extractor(wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DlforgeError, match=r"junk\.pth: not a PyTorch state dict"):
        load_extractor(junk)


def test_a_run_name_still_means_a_classifier_run(tmp_path):
    with pytest.raises(DlforgeError) as err:
        load_extractor(str(tmp_path / "runs" / "fashion-extractor"))
    assert "fashion-extractor" in str(err.value) and "Inception" not in str(err.value)
