"""Tests for ``advkd.models``: pinned parameter counts, forward shapes, registry, normalisation.

Parameter counts are pinned for every registered architecture; the anchors from the specs and
reference repos are: ResNet-18 11,173,962; WRN-34-10 (no sub_block1) 46,160,474; ResNet-56
option A 853,018 and ResNet-20 option A 269,722 (akamaster); MobileNetV2 CIFAR 2,296,922
(kuangliu/ARD/RSLAD). Large nets are only run at batch size 2 and 32x32, once each.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkd.core.errors import AdvkdError
from advkd.models import (
    MODELS,
    NORMALIZATIONS,
    Normalized,
    build_model,
    canonical_arch,
    count_parameters,
    list_models,
)
from advkd.models.dm_wide_resnet import CIFAR10_MEAN, CIFAR10_STD, DMWideResNet
from advkd.models.wide_resnet import WideResNet

# Trainable parameters at num_classes=10. A new architecture must be pinned here.
PARAM_COUNTS_10: dict[str, int] = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "preactresnet18": 11_172_170,
    "preactresnet34": 21_280_330,
    "resnet8": 78_042,
    "resnet8-a": 75_290,
    "resnet14": 175_258,
    "resnet14-a": 172_506,
    "resnet20": 272_474,
    "resnet20-a": 269_722,
    "resnet32": 466_906,
    "resnet32-a": 464_154,
    "resnet44": 661_338,
    "resnet44-a": 658_586,
    "resnet56": 855_770,
    "resnet56-a": 853_018,
    "resnet110": 1_730_714,
    "resnet110-a": 1_727_962,
    "wrn34-10": 46_160_474,
    "wrn34-20": 184_531_674,
    "wrn28-10": 36_479_194,
    "wrn70-16": 266_796_506,
    "wrn22-6": 9_658_458,
    "mobilenetv2": 2_296_922,
    "vgg16": 14_728_266,
    "tinycnn": 5_466,
    "tinymlp": 13_002,
}

# (name, num_classes) -> trainable parameters.
PARAM_COUNTS_OTHER: dict[tuple[str, int], int] = {
    ("resnet18", 100): 11_220_132,
    ("resnet56", 100): 861_620,
    ("resnet56-a", 100): 858_868,
    ("mobilenetv2", 100): 2_412_212,
    ("wrn22-6", 100): 9_693_108,
    ("preactresnet18", 200): 11_269_640,
}

# Nets whose single forward costs seconds on 2 CPU cores: never run them more than once.
HUGE = {"wrn70-16", "wrn34-20"}
STAND_INS = {"tinycnn", "tinymlp"}


@pytest.fixture(scope="module", params=list_models())
def built(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    """Each registered model built once (pytest groups the tests that use it by name)."""
    torch.manual_seed(0)
    return request.param, build_model(request.param).eval()


# ---------------------------------------------------------------------------------------------
# Every registered architecture
# ---------------------------------------------------------------------------------------------
def test_every_architecture_is_pinned() -> None:
    assert set(list_models()) == set(PARAM_COUNTS_10), "pin the parameter count of new architectures"


def test_param_count(built: tuple[str, nn.Module]) -> None:
    name, model = built
    assert count_parameters(model) == PARAM_COUNTS_10[name]


def test_forward_32(built: tuple[str, nn.Module]) -> None:
    name, model = built
    x = torch.rand(1 if name in HUGE else 2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (x.shape[0], 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_entry_metadata(name: str) -> None:
    entry = MODELS.entry(name)
    assert isinstance(entry.meta.get("family"), str) and entry.meta["family"]
    assert entry.meta.get("stand_in") is (name in STAND_INS)
    assert entry.help and "\n" not in entry.help


@pytest.mark.parametrize("name", list_models())
def test_aliases_resolve(name: str) -> None:
    entry = MODELS.entry(name)
    assert canonical_arch(name) == name
    assert canonical_arch(name.upper()) == name
    for alias in entry.aliases:
        assert canonical_arch(alias) == name
        assert MODELS.get(alias) is entry.obj


@pytest.mark.parametrize(("name", "num_classes"), sorted(PARAM_COUNTS_OTHER))
def test_param_count_other_classes(name: str, num_classes: int) -> None:
    assert count_parameters(build_model(name, num_classes=num_classes)) == PARAM_COUNTS_OTHER[(name, num_classes)]


@pytest.mark.parametrize(
    "name",
    ["resnet18", "preactresnet18", "resnet20", "resnet20-a", "wrn22-6", "mobilenetv2", "vgg16", "tinycnn", "tinymlp"],
)
def test_forward_64(name: str) -> None:
    """Tiny-ImageNet resolution works thanks to adaptive pooling; 200 classes."""
    model = build_model(name, num_classes=200).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 200)


@pytest.mark.parametrize("name", ["tinycnn", "resnet20-a", "wrn22-6"])
def test_input_gradient_flows(name: str) -> None:
    model = build_model(name).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Registry API
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("rn18", "resnet18"), ("ResNet-18", "resnet18"), ("rn34", "resnet34"),
        ("preact18", "preactresnet18"), ("parn18", "preactresnet18"), ("preactresnet-18", "preactresnet18"),
        ("preact34", "preactresnet34"), ("parn34", "preactresnet34"),
        ("rn8", "resnet8"), ("rn20", "resnet20"), ("rn56", "resnet56"), ("resnet-56", "resnet56"),
        ("rn110", "resnet110"), ("rn56-a", "resnet56-a"), ("resnet-20-a", "resnet20-a"),
        ("wrn-34-10", "wrn34-10"), ("wideresnet34-10", "wrn34-10"), ("WRN_34_20", "wrn34-20"),
        ("wrn-28-10", "wrn28-10"), ("wrn-70-16", "wrn70-16"), ("wrn-22-6", "wrn22-6"),
        ("mnv2", "mobilenetv2"), ("mobilenet-v2", "mobilenetv2"), ("vgg-16", "vgg16"),
    ],
)
def test_known_aliases(alias: str, canonical: str) -> None:
    assert canonical_arch(alias) == canonical


def test_build_by_alias_matches_canonical() -> None:
    assert count_parameters(build_model("rn56-a")) == PARAM_COUNTS_10["resnet56-a"]
    assert type(build_model("mnv2")) is type(build_model("mobilenetv2"))


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(AdvkdError) as exc:
        build_model("resnet19")
    msg = str(exc.value)
    assert "\n" not in msg and "resnet19" in msg
    for name in ("resnet18", "wrn34-10", "mobilenetv2", "tinycnn"):
        assert name in msg
    with pytest.raises(AdvkdError):
        canonical_arch("nope")


def test_list_models_pattern() -> None:
    names = list_models()
    assert len(names) == len(set(names)) == len(MODELS)
    wrns = list_models("wrn*")
    assert set(wrns) == {"wrn34-10", "wrn34-20", "wrn28-10", "wrn70-16", "wrn22-6"}
    assert list_models("resnet*-a") == [n for n in names if n.startswith("resnet") and n.endswith("-a")]
    assert list_models("nothing*") == []


def test_count_parameters_excludes_frozen_and_buffers() -> None:
    model = build_model("tinycnn", normalize="cifar10")
    n = count_parameters(model)
    assert n == PARAM_COUNTS_10["tinycnn"]  # the normalisation buffers and BN stats do not count
    model.net.linear.weight.requires_grad_(False)
    assert count_parameters(model) == n - model.net.linear.weight.numel()


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------
def test_normalizations_table() -> None:
    assert NORMALIZATIONS["none"] is None
    assert NORMALIZATIONS["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
    assert NORMALIZATIONS["cifar100"] == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert (tuple(CIFAR10_MEAN), tuple(CIFAR10_STD)) == NORMALIZATIONS["cifar10"]


def test_no_wrapper_by_default() -> None:
    assert not isinstance(build_model("tinycnn"), Normalized)
    assert not any(k.startswith("normalize.") for k in build_model("tinycnn").state_dict())


@pytest.mark.parametrize("stats", ["cifar10", "cifar100"])
def test_normalized_wrapper_normalises(stats: str) -> None:
    torch.manual_seed(0)
    model = build_model("tinycnn", normalize=stats).eval()
    assert isinstance(model, Normalized)
    mean, std = NORMALIZATIONS[stats]  # type: ignore[misc]
    buffers = dict(model.named_buffers())
    assert buffers["normalize.mean"].shape == buffers["normalize.std"].shape == (1, 3, 1, 1)
    assert "normalize.mean" not in dict(model.named_parameters())
    sd = model.state_dict()
    assert torch.allclose(sd["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.allclose(sd["normalize.std"].flatten(), torch.tensor(std))
    assert any(k.startswith("net.") for k in sd)

    x = torch.rand(4, 3, 32, 32)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(manual), atol=1e-6)
        assert not torch.allclose(model(x), model.net(x), atol=1e-3)
    model.double()
    assert model.normalize.mean.dtype == torch.float64


def test_unknown_normalize_lists_valid_names() -> None:
    with pytest.raises(AdvkdError) as exc:
        build_model("tinycnn", normalize="imagenet")
    msg = str(exc.value)
    assert "imagenet" in msg and all(k in msg for k in NORMALIZATIONS)


def test_normalize_name_is_case_insensitive() -> None:
    assert isinstance(build_model("tinycnn", normalize="CIFAR-10"), Normalized)


def test_dm_wrn_internal_normalisation() -> None:
    """DeepMind WRNs normalise internally (default CIFAR-10 stats); never wrapped twice."""
    torch.manual_seed(0)
    default = build_model("wrn22-6").eval()
    assert isinstance(default, DMWideResNet)
    assert torch.allclose(default.mean.flatten(), torch.tensor(CIFAR10_MEAN))
    assert torch.allclose(default.std.flatten(), torch.tensor(CIFAR10_STD))
    # Non-persistent: the public checkpoints have no mean/std keys and must load strictly.
    assert "mean" not in default.state_dict() and "std" not in default.state_dict()

    c100 = build_model("wrn22-6", normalize="cifar100").eval()
    assert isinstance(c100, DMWideResNet)
    mean, std = NORMALIZATIONS["cifar100"]  # type: ignore[misc]
    assert torch.allclose(c100.mean.flatten(), torch.tensor(mean))
    c100.load_state_dict(default.state_dict(), strict=True)

    plain = DMWideResNet(10, depth=22, width=6, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    plain.load_state_dict(default.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    m10 = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    s10 = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(default(x), plain((x - m10) / s10), atol=1e-5)
        assert not torch.allclose(default(x), c100(x), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Architecture details that checkpoints and the specs depend on
# ---------------------------------------------------------------------------------------------
def test_wrn_sub_block1_unused_in_forward() -> None:
    torch.manual_seed(0)
    small = WideResNet(depth=16, num_classes=10, widen_factor=2).eval()
    with_sub = WideResNet(depth=16, num_classes=10, widen_factor=2, sub_block1=True).eval()
    extra = {k for k in with_sub.state_dict() if k.startswith("sub_block1.")}
    assert extra and set(with_sub.state_dict()) - extra == set(small.state_dict())
    assert count_parameters(with_sub) == count_parameters(small) + count_parameters(with_sub.sub_block1)
    with_sub.load_state_dict({**with_sub.state_dict(), **small.state_dict()}, strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = with_sub(x)
        for p in with_sub.sub_block1.parameters():
            p.add_(1.0)
        assert torch.equal(with_sub(x), before)
        assert torch.allclose(with_sub(x), small(x))


def test_wrn34_10_sub_block1_counts() -> None:
    assert build_model("wrn34-10").sub_block1 is None  # registry default: no sub_block1
    with_sub = build_model("wrn34-10", sub_block1=True)
    assert count_parameters(with_sub) == PARAM_COUNTS_10["wrn34-10"] + count_parameters(with_sub.block1)
    assert count_parameters(with_sub.sub_block1) == 2_102_112


def test_checkpoint_key_layouts() -> None:
    """Layer names follow the reference repos so public checkpoints load strictly."""
    rn18 = build_model("resnet18").state_dict()
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "linear.weight"} <= set(rn18)
    opt_b = build_model("resnet56").state_dict()
    assert {"layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "fc.weight"} <= set(opt_b)
    opt_a = build_model("resnet56-a").state_dict()
    assert "linear.weight" in opt_a and not any("shortcut" in k or "downsample" in k for k in opt_a)
    wrn = build_model("wrn28-10").state_dict()
    assert {"conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.3.bn2.weight", "bn1.weight",
            "fc.weight"} <= set(wrn)
    dm = build_model("wrn22-6").state_dict()
    assert {"init_conv.weight", "layer.0.block.0.conv_0.weight", "layer.1.block.0.shortcut.weight",
            "batchnorm.weight", "logits.weight"} <= set(dm)
    parn = build_model("preactresnet18").state_dict()
    assert {"layer2.0.shortcut.0.weight", "bn.weight", "linear.weight"} <= set(parn)
    mnv2 = build_model("mobilenetv2").state_dict()
    assert {"layers.1.shortcut.0.weight", "conv2.weight", "linear.weight"} <= set(mnv2)
    vgg = build_model("vgg16").state_dict()
    assert {"features.0.weight", "features.0.bias", "classifier.weight"} <= set(vgg)


def test_mobilenetv2_cifar_variant() -> None:
    model = build_model("mobilenetv2")
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert model.conv1.stride == (1, 1)
    assert len(model.layers) == 17
    strides = [blk.stride for blk in model.layers]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    for blk in model.layers:  # conv shortcut exactly when stride 1 and the width changes
        has_conv = len(blk.shortcut) > 0
        assert has_conv == (blk.stride == 1 and blk.conv1.in_channels != blk.conv3.out_channels)


def test_option_a_shortcut_is_subsample_and_zero_pad() -> None:
    model = build_model("resnet20-a")
    shortcut = model.layer2[0].shortcut
    x = torch.rand(1, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_dm_block_tf_same_padding() -> None:
    """Stride-2 blocks pad right/bottom only (TF "SAME"): conv_0's output row 0 reads input rows
    0..2, so changing input row 2 changes it (a symmetric pad of 1 would read rows -1..1)."""
    from advkd.models.dm_wide_resnet import _Block

    torch.manual_seed(0)
    block = _Block(4, 8, stride=2).eval()
    captured: list[torch.Tensor] = []
    block.conv_0.register_forward_hook(lambda _m, _i, out: captured.append(out))
    v = torch.rand(1, 4, 8, 8)
    v2 = v.clone()
    v2[:, :, 2, :] += 1.0
    with torch.no_grad():
        out = block(v)
        block(v2)
    assert out.shape == (1, 8, 4, 4)
    assert captured[0].shape == (1, 8, 4, 4)
    assert not torch.allclose(captured[0][:, :, 0], captured[1][:, :, 0])
    assert torch.allclose(captured[0][:, :, 2:], captured[1][:, :, 2:])


def test_vgg16_honours_num_classes() -> None:
    assert build_model("vgg16", num_classes=100).classifier.out_features == 100


def test_tinycnn_trains_and_has_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_model("tinycnn")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # An easy task: each of 4 classes is a noisy constant colour.
    y = torch.arange(32) % 4
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.5, 0.5, 0.5]])
    x = (colours[y].view(32, 3, 1, 1) + 0.1 * torch.randn(32, 3, 32, 32)).clamp(0, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    first = None
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first
    with torch.no_grad():  # train-mode (batch stats) and eval-mode (running stats) differ
        assert not torch.allclose(model.train()(x), model.eval()(x))
