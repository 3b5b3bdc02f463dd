"""Outside methods and attacks (advkd.core.plugins, advkd.plugins): found through entry points of
a distribution on sys.path or a module:Class spec, loaded only when a name is not built in, with
their origin; every way a plugin can be wrong is one line, and never breaks a built-in lookup."""
from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest

import advkd.plugins as public
from advkd.attacks import ATTACKS
from advkd.core.errors import AdvkdError
from advkd.methods import METHODS

METHOD_SRC = '''
from dataclasses import dataclass
import torch.nn.functional as F
from advkd.plugins import InnerParams, Method, kl_div

@dataclass
class MyParams(InnerParams):
    weight: float = 0.5

class MyKD(Method):
    """A test method: PGD on the student, KL to the teacher."""
    name = "{name}"
    roles = ("teacher",)
    Params = MyParams

    def perturb(self, student, x, y):
        return self.student_ce_attack(student, x, y)

    def loss(self, student, x, x_adv, y):
        t = self.teacher_logits("teacher", x).softmax(1)
        loss = kl_div(student(x_adv), t)
        return loss, {{"kl": loss.item()}}
'''


def make_dist(root: Path, dist: str, version: str, package: str, files: dict[str, str], entry_points: dict[str, dict[str, str]]) -> Path:
    """A distribution as pip leaves it in site-packages: the package and its .dist-info."""
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(package + "\n")
    (info / "RECORD").write_text(f"{package}/__init__.py,,\n")
    (info / "entry_points.txt").write_text("".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in entry_points.items()))
    return root


@pytest.fixture
def clean_registries(monkeypatch):
    """Each test starts with no plugin loaded and leaves the registries as it found them."""
    saved = [(reg, dict(reg._entries), dict(reg._aliases), reg.plugins.loaded, dict(reg.plugins.errors), dict(reg.plugins.specs))
             for reg in (METHODS, ATTACKS)]
    for reg in (METHODS, ATTACKS):
        reg.plugins.loaded = False
        reg.plugins.errors.clear()
        reg.plugins.specs.clear()
    before = set(sys.modules)
    yield
    for reg, entries, aliases, loaded, errors, specs in saved:
        reg._entries, reg._aliases = entries, aliases
        reg.plugins.loaded, reg.plugins.errors, reg.plugins.specs = loaded, errors, specs
    for name in set(sys.modules) - before:
        if name.startswith(("mykd", "broken", "clash", "twin", "loose")):
            del sys.modules[name]


def test_the_public_surface_is_what_the_docs_promise():
    assert public.__all__ == ["AdvkdError", "Attack", "GROUPS", "InnerParams", "Method", "NoParams", "Origin", "TensorData", "kl_div", "klm",
                              "param", "projected_gradient", "tempered_probs", "training_mode"]
    assert public.GROUPS == {"method": "advkd.methods", "attack": "advkd.attacks", "architecture": "advkd.models", "dataset": "advkd.datasets"}
    assert str(inspect.signature(public.Method.perturb)) == "(self, student: 'nn.Module', x: 'torch.Tensor', y: 'torch.Tensor') -> 'torch.Tensor'"
    assert str(inspect.signature(public.Method.loss)) == ("(self, student: 'nn.Module', x: 'torch.Tensor', x_adv: 'torch.Tensor', y: 'torch.Tensor') "
                                                          "-> 'tuple[torch.Tensor, dict[str, float]]'")
    assert str(inspect.signature(public.Method.__init__)) == "(self, teachers: 'dict[str, nn.Module]', params: 'Any', *, num_classes: 'int', dataset: 'str') -> 'None'"
    assert [f for f in public.InnerParams.__dataclass_fields__] == ["eps", "step_size", "steps", "init", "init_std", "clamp_init"]
    assert str(inspect.signature(public.Attack.perturb)) == "(self, model: 'nn.Module', x: 'Tensor', y: 'Tensor') -> 'Tensor'"
    for name in ("start_epoch", "end_epoch", "state_dict", "load_state_dict", "attack", "student_ce_attack", "teacher_logits"):
        assert callable(getattr(public.Method, name)), name


def test_an_entry_point_method_is_found_when_asked_for_with_its_origin(tmp_path, monkeypatch, clean_registries):
    make_dist(tmp_path, "mykd-plugin", "0.3", "mykd_plugin", {"kd.py": METHOD_SRC.format(name="mykd")},
              {"advkd.methods": {"mykd": "mykd_plugin.kd:MyKD"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert METHODS.canonical("rslad") == "rslad" and "mykd_plugin.kd" not in sys.modules  # a built-in never loads plugins
    assert "mykd" not in METHODS
    assert METHODS.canonical("MyKD") == "mykd"
    assert METHODS.origin("mykd").record() == {"spec": "mykd_plugin.kd:MyKD", "distribution": "mykd-plugin", "version": "0.3"}
    assert METHODS.origin("rslad") is None and "mykd" in METHODS.listing() and "mykd" not in METHODS.builtin_names()
    from advkd.methods import build, params_for
    assert params_for("mykd", {"weight": "0.25"}).weight == 0.25
    with pytest.raises(AdvkdError, match="method mykd parameters"):
        params_for("mykd", {"wieght": 1})
    import torch
    m = build("mykd", {"teacher": torch.nn.Linear(2, 2)}, num_classes=2)
    assert type(m).__name__ == "MyKD" and m.p.weight == 0.5


def test_a_spec_names_a_loose_module_without_packaging(tmp_path, monkeypatch, clean_registries):
    (tmp_path / "loose_kd.py").write_text(METHOD_SRC.format(name="loosekd"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert METHODS.canonical("loose_kd:MyKD") == "loosekd"
    assert METHODS.canonical("loose_kd:MyKD") == "loosekd"  # twice: the same entry, imported once
    assert METHODS.origin("loosekd").record() == {"spec": "loose_kd:MyKD", "distribution": "", "version": ""}


BROKEN = {
    "import fails": ({"kd.py": "raise RuntimeError('no GPU found, giving up')"}, "broken_plugin.kd:MyKD", "brokenkd",
                     r"plugin method 'brokenkd' failed to import \(entry point advkd.methods: brokenkd = broken_plugin.kd:MyKD, "
                     r"distribution broken-plugin 1.0\): RuntimeError: no GPU found, giving up"),
    "not a method": ({"kd.py": "class MyKD:\n    name = 'brokenkd'\n"}, "broken_plugin.kd:MyKD", "brokenkd",
                     "is not a method: it must subclass advkd.plugins.Method"),
    "no name": ({"kd.py": METHOD_SRC.format(name="")}, "broken_plugin.kd:MyKD", "brokenkd", "has no name"),
    "name differs": ({"kd.py": METHOD_SRC.format(name="other")}, "broken_plugin.kd:MyKD", "brokenkd",
                     "says name = 'other' but its entry point is 'brokenkd'"),
    "abstract": ({"kd.py": "from advkd.plugins import Method\nclass MyKD(Method):\n    name = 'brokenkd'\n"}, "broken_plugin.kd:MyKD",
                 "brokenkd", "does not implement loss, perturb"),
    "bad params": ({"kd.py": METHOD_SRC.format(name="brokenkd") + "\nMyKD.Params = dict\n"}, "broken_plugin.kd:MyKD", "brokenkd",
                   "has no Params dataclass"),
    "bad role": ({"kd.py": METHOD_SRC.format(name="brokenkd") + "\nMyKD.roles = ('mentor',)\n"}, "broken_plugin.kd:MyKD", "brokenkd",
                 "has teacher role 'mentor'"),
    "missing attribute": ({"kd.py": ""}, "broken_plugin.kd:Nope", "brokenkd", "failed to import"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_for_its_name_and_breaks_no_built_in(case, tmp_path, monkeypatch, clean_registries):
    files, target, name, message = BROKEN[case]
    make_dist(tmp_path, "broken-plugin", "1.0", "broken_plugin", files, {"advkd.methods": {name: target}})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert METHODS.canonical("adaad") == "adaad"
    with pytest.raises(AdvkdError, match=message) as info:
        METHODS.canonical(name)
    assert "\n" not in str(info.value)
    assert name not in METHODS.listing() and name in METHODS.refused()
    assert METHODS.canonical("rslad") == "rslad"  # still fine after the refusal


def test_a_plugin_may_not_take_a_built_in_name_or_another_plugin_s(tmp_path, monkeypatch, clean_registries):
    make_dist(tmp_path / "a", "clash-plugin", "2.0", "clash_plugin", {"kd.py": METHOD_SRC.format(name="rslad")},
              {"advkd.methods": {"rslad": "clash_plugin.kd:MyKD"}})
    make_dist(tmp_path / "b", "twin-one", "1.0", "twin_one", {"kd.py": METHOD_SRC.format(name="twinkd")}, {"advkd.methods": {"twinkd": "twin_one.kd:MyKD"}})
    make_dist(tmp_path / "c", "twin-two", "1.1", "twin_two", {"kd.py": METHOD_SRC.format(name="twinkd")}, {"advkd.methods": {"twinkd": "twin_two.kd:MyKD"}})
    for d in ("a", "b", "c"):
        monkeypatch.syspath_prepend(str(tmp_path / d))
    METHODS.listing()
    refused = METHODS.refused()
    assert "clashes with the built-in method 'rslad'" in refused["rslad"] and "clash-plugin 2.0 (clash_plugin.kd:MyKD)" in refused["rslad"]
    assert METHODS.get("rslad").__module__ == "advkd.methods.rslad"  # the built-in stays
    with pytest.raises(AdvkdError, match=r"declared twice: by twin-\w+ 1\.\d \(twin_\w+\.kd:MyKD\) and by twin-\w+ 1\.\d"):
        METHODS.canonical("twinkd")
    with pytest.raises(AdvkdError, match="clashes with the built-in method 'rslad'"):
        METHODS.canonical("clash_plugin.kd:MyKD")  # the spec form is refused too


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:Thing", "no module named 'no_such_module_xyz'"),
    ("os:NoSuchThing", "module os has no 'NoSuchThing'"),
    ("os:path", "is not a method"),
])
def test_a_bad_spec_is_one_line(spec, message, clean_registries):
    with pytest.raises(AdvkdError, match=message):
        METHODS.canonical(spec)


ATTACK_SRC = '''
import dataclasses
import torch
from advkd.plugins import Attack, param

@dataclasses.dataclass(frozen=True)
class NoiseParams:
    scale: float = param(1.0, "fraction of eps", min=0.0)

class Noise(Attack):
    """Random sign noise at the budget: a test attack."""
    Params = NoiseParams

    def perturb(self, model, x, y):
        return (x + self.hparams.scale * self.eps.value * torch.randn_like(x).sign()).clamp(0, 1)
'''


def test_an_entry_point_attack_gets_its_id_and_params(tmp_path, monkeypatch, clean_registries):
    import torch

    from advkd.attacks import build as make_attack
    make_dist(tmp_path, "mykd-attacks", "0.1", "mykd_attacks", {"noise.py": ATTACK_SRC}, {"advkd.attacks": {"signnoise": "mykd_attacks.noise:Noise"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    attack = make_attack("signnoise", eps="8/255", scale="0.5")
    assert attack.id == "signnoise" and attack.params == {"scale": 0.5}
    x = torch.rand(4, 3, 8, 8)
    x_adv = attack(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10)), x, torch.zeros(4, dtype=torch.long))
    assert (x_adv - x).abs().max() <= 0.5 * 8 / 255 + 1e-6
    assert ATTACKS.origin("signnoise").distribution == "mykd-attacks"
    with pytest.raises(AdvkdError, match="parameter scale must be >= 0"):
        make_attack("signnoise", scale="-1")


FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--n-examples", "32", "--batch-size", "32"]


def test_a_plugin_run_names_its_package_in_config_checkpoint_records_and_on_resume(tmp_path, monkeypatch, clean_registries, capsys):
    import shutil

    import yaml

    from advkd.cli import main
    from advkd.evaluation.records import read_records
    from advkd.models.checkpoint import read_metadata

    monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
    site = make_dist(tmp_path / "site", "mykd-plugin", "0.3", "mykd_plugin", {"kd.py": METHOD_SRC.format(name="mykd")},
                     {"advkd.methods": {"mykd": "mykd_plugin.kd:MyKD"}})
    monkeypatch.syspath_prepend(str(site))
    assert main(["pretrain-teacher", "--arch", "tinycnn", "--method", "trades", *FAST, "--set", "method.steps=2"]) == 0
    assert main(["distill", "--method", "mykd", "--student", "tinycnn", "--teacher", "tinycnn", *FAST, "--set", "method.weight=0.3",
                 "--set", "method.steps=2"]) == 0
    run = next((tmp_path / "runs" / "distill" / "synthetic").glob("tinycnn-mykd-*"))
    origin = {"spec": "mykd_plugin.kd:MyKD", "distribution": "mykd-plugin", "version": "0.3"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"] == "mykd" and config["method_origin"] == origin and config["method_params"]["weight"] == 0.3
    assert read_metadata(run / "best.safetensors")["method_origin"] == origin
    capsys.readouterr()
    assert main(["attack", str(run / "best.safetensors"), "--attacks", "pgd10", "--n-examples", "16", "--format", "json"]) == 0
    assert all(r["method_origin"] == origin for r in read_records(tmp_path / "runs" / "results.jsonl") if r["method"] == "mykd")
    # the package is upgraded; the run is extended by one epoch: one warning line names both versions
    shutil.move(str(next(site.glob("*.dist-info"))), str(site / "mykd_plugin-0.4.dist-info"))
    meta = site / "mykd_plugin-0.4.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 0.3", "Version: 0.4"))
    METHODS.plugins.loaded = False
    del METHODS._entries["mykd"]
    capsys.readouterr()
    assert main(["distill", "--method", "mykd", "--student", "tinycnn", "--teacher", "tinycnn", *FAST, "--set", "method.weight=0.3",
                 "--set", "method.steps=2", "--epochs", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "started with mykd-plugin 0.3 and resumes with mykd-plugin 0.4" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["method_origin"]["version"] == "0.3"  # what the run started with
    assert read_metadata(run / "last.safetensors")["method_origin"]["version"] == "0.4"  # what wrote this epoch


def test_advkd_methods_lists_plugins_with_their_package_and_the_refused_with_why(tmp_path, monkeypatch, clean_registries, capsys):
    import json

    from advkd.cli import main
    make_dist(tmp_path / "a", "mykd-plugin", "0.3", "mykd_plugin", {"kd.py": METHOD_SRC.format(name="mykd")}, {"advkd.methods": {"mykd": "mykd_plugin.kd:MyKD"}})
    make_dist(tmp_path / "b", "broken-plugin", "1.0", "broken_plugin", {"kd.py": "import not_installed_dep\n"},
              {"advkd.methods": {"brokenkd": "broken_plugin.kd:MyKD"}})
    for d in ("a", "b"):
        monkeypatch.syspath_prepend(str(tmp_path / d))
    assert main(["methods", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mykd"]["from"] == "mykd-plugin 0.3 (mykd_plugin.kd:MyKD)" and rows["mykd"]["about"] == "teacher"
    assert rows["rslad"]["from"] == "built in" and rows["rslad"]["origin"] is None
    assert rows["brokenkd"]["from"] == "refused" and "ModuleNotFoundError: No module named 'not_installed_dep'" in rows["brokenkd"]["refused"]
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "from plugins, 1 refused" in out and "mykd-plugin 0.3" in out


def test_a_preset_never_imports_a_module_it_names(tmp_path, monkeypatch, clean_registries):
    from advkd.training.config import load_preset
    (tmp_path / "evil_mod.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = tmp_path / "mine.yaml"
    preset.write_text("description: x\nscale: mini\npaper: ''\ntrain: {epochs: 1}\nmethods:\n  'evil_mod:Thing':\n    params: {x: 1}\n")
    with pytest.raises(AdvkdError, match="is a module:Class spec; presets name methods by name"):
        load_preset(str(preset))
    assert "evil_mod" not in sys.modules


NETS_SRC = '''
import torch
from torch import nn

class TinyNet(nn.Module):
    """A test architecture: one conv, global pooling, a linear head."""
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, num_classes)
    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
'''

DATA_SRC = '''
import torch
from advkd.plugins import TensorData

def blobs(split, data_dir, download, seed):
    """Blobs: a test dataset, two classes of bright and dark 8x8 images."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 64 if split == "train" else 32
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 8, 8, generator=g) * 100 + y.view(n, 1, 1, 1) * 150).to(torch.uint8)
    return TensorData(x, y)

blobs.num_classes, blobs.image_size = 2, 8
'''


def test_an_architecture_and_a_dataset_from_a_plugin_train_and_their_checkpoint_names_the_package(tmp_path, monkeypatch, clean_registries, capsys):
    from advkd.cli import main
    from advkd.data.loaders import DATASETS, dataset_info
    from advkd.models import MODELS

    saved = [(reg, dict(reg._entries), dict(reg._aliases), reg.plugins.loaded) for reg in (MODELS, DATASETS)]
    for reg in (MODELS, DATASETS):
        reg.plugins.loaded = False
        reg.plugins.errors.clear()
    try:
        monkeypatch.setenv("ADVKD_RUNS_DIR", str(tmp_path / "runs"))
        monkeypatch.setenv("ADVKD_DATA_DIR", str(tmp_path / "data"))
        site = make_dist(tmp_path / "site", "mykd-nets", "0.2", "mykd_nets", {"nets.py": NETS_SRC, "data.py": DATA_SRC},
                         {"advkd.models": {"tinynet": "mykd_nets.nets:TinyNet"}, "advkd.datasets": {"blobs": "mykd_nets.data:blobs"}})
        monkeypatch.syspath_prepend(str(site))
        assert dataset_info("blobs").num_classes == 2 and DATASETS.origin("blobs").distribution == "mykd-nets"
        assert main(["pretrain-teacher", "--arch", "tinynet", "--method", "natural", "--dataset", "blobs", "--epochs", "1", "--batch-size", "16",
                     "--n-examples", "16"]) == 0
        ckpt = next((tmp_path / "runs" / "pretrain-teacher" / "blobs").glob("tinynet-natural-*")) / "best.safetensors"
        assert main(["attack", str(ckpt), "--attacks", "clean", "--n-examples", "16", "--format", "json"]) == 0
        # the package is uninstalled: loading the checkpoint says which one to install, in one line
        monkeypatch.syspath_prepend(str(tmp_path / "empty"))
        sys.path.remove(str(site))
        for reg, entries, aliases, _ in saved:
            reg._entries, reg._aliases, reg.plugins.loaded = dict(entries), dict(aliases), False
        for name in [m for m in sys.modules if m.startswith("mykd_nets")]:
            del sys.modules[name]
        capsys.readouterr()
        from advkd.models.checkpoint import load_checkpoint
        with pytest.raises(AdvkdError, match=r"from the plugin package mykd-nets 0.2 \(mykd_nets.nets:TinyNet\), which is not installed here: pip install mykd-nets"):
            load_checkpoint(ckpt)
    finally:
        for reg, entries, aliases, loaded in saved:
            reg._entries, reg._aliases, reg.plugins.loaded = entries, aliases, loaded
            reg.plugins.errors.clear()
