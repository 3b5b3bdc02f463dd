"""The four reference training scripts, pinned, with the edits a CPU budget needs.

Allowed kinds of edit (nothing in a loss, an inner maximisation or a balancer changes):
device (the scripts call ``.cuda()``; the host makes that a no-op on the CPU, no edit needed),
seed, data location and training subset, epochs and milestones, the optimiser of advkd's reduced
scale, the stand-in networks and advkd's teacher checkpoints, and the scripts' own per-epoch
evaluation, which attacks all 10,000 test images with PGD-20 (about as long as a mini run on a
CPU) and is replaced by advkd's evaluation of the final student on the same test images as
advkd's own run. ``REF`` is the object the host puts in the script's globals
(:class:`benchmarks.reference_runs.host.Host`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.reference_runs.edits import Edit

__all__ = ["Reference", "REFERENCES", "RepoFile"]

SEED = "seed: every run of the comparison draws its own seed (the script fixes 0)"
EPOCHS = "epochs: the reduced scale's epoch count"
BATCH = "batch size: the reduced scale's"
STUDENT = "network: advkd's stand-in student (ResNet-8 for ResNet-18), built here so its init comes from this script's RNG"
OPTIM = "optimiser: the reduced scale's (AdamW at lr 6e-3, weight decay 0.05; advkd's small and mini presets use it for every method)"
MILESTONES = "milestones: the reduced scale's decay epochs (x0.1 after 50 % and 75 % of training); the balancers' rates decay with them, as in the script"
SKIP_EVAL = ("evaluation: the script's per-epoch PGD-20 over all 10,000 test images is skipped; "
             "the final student is evaluated by advkd on the same test images as advkd's run")
NO_LOAD = "teacher: advkd's checkpoint is already loaded by REF.teacher"
SUBSET = "data: advkd's training subset (its first N images); the host reads CIFAR-10 from ADVKD_DATA_DIR"

#: the lines RSLAD's, MTARD's and B-MTARD's scripts (one code family) share, edited alike
FAMILY = [
    Edit("torch.manual_seed(0)", "torch.manual_seed(REF.seed)", SEED),
    Edit("epochs = 300", "epochs = REF.epochs", EPOCHS),
    Edit("batch_size = 128", "batch_size = REF.batch_size", BATCH),
    Edit("student = resnet18()", "student = REF.student()", STUDENT),
    Edit("optimizer = optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)",
         "optimizer = REF.optimizer(student.parameters())", OPTIM),
    Edit("if epoch in [215,260,285]:", "if epoch in REF.milestones:", MILESTONES),
]
TORCHVISION_TRAINSET = Edit(
    "trainset = torchvision.datasets.CIFAR10(root='./data', train=True, download=True, transform=transform_train)",
    "trainset = REF.train_subset(torchvision.datasets.CIFAR10(root='./data', train=True, download=True, transform=transform_train))",
    SUBSET)


@dataclass(frozen=True)
class RepoFile:
    repo: str  # owner/name on GitHub
    commit: str  # the pinned commit (40 hex digits)
    path: str  # a file of that commit
    as_name: str = ""  # where the host puts it next to the script ('' = the same relative path)


@dataclass(frozen=True)
class Reference:
    name: str  # the advkd method it runs
    repo: str
    commit: str
    script: str  # the training script, relative to the repository root
    edits: list[Edit]
    argv: list[str] = field(default_factory=list)  # command-line arguments; {epochs} etc. filled by the host
    extra: list[RepoFile] = field(default_factory=list)  # files from another repository the script imports
    shims: list[str] = field(default_factory=list)  # modules the host provides (names in host.SHIMS)
    student_var: str = "student"  # the script's global that holds the trained student

    def repos(self) -> dict[str, str]:
        found = {self.repo: self.commit}
        for f in self.extra:
            found[f.repo] = f.commit
        return found


RSLAD = Reference(
    name="rslad",
    repo="zibojia/RSLAD",
    commit="c40e04f6c4edcd87431d0250b168d503b1293745",
    script="resnet18_rslad_cifar10.py",
    edits=[
        *FAMILY,
        TORCHVISION_TRAINSET,
        Edit("teacher = wideresnet()", "teacher = REF.teacher('teacher')", "teacher: advkd's robust teacher checkpoint (the one advkd's run uses)"),
        Edit("teacher.load_state_dict(torch.load('./models/model_cifar_wrn.pt'))", "", NO_LOAD),
        Edit("if (epoch%20 == 0 and epoch <215) or (epoch%1 == 0 and epoch >= 215):", "if REF.evaluate_in_script(epoch):", SKIP_EVAL),
    ],
)

MTARD = Reference(
    name="mtard",
    repo="zhaoshiji123/MTARD",
    commit="6480a1b40d6195e437a876639ea37b7b40c46a58",
    script="mtard/mtard_resnet18_cifar10.py",
    edits=[
        *FAMILY,
        TORCHVISION_TRAINSET,
        Edit("teacher = wideresnet()", "teacher = REF.teacher('robust_teacher')", "teacher: advkd's robust teacher checkpoint"),
        Edit("teacher.load_state_dict(torch.load(adv_teacher_path))", "", NO_LOAD),
        Edit("teacher_nat = wideresnet()", "teacher_nat = REF.teacher('clean_teacher')", "teacher: advkd's clean teacher checkpoint"),
        Edit("teacher_nat.load_state_dict(torch.load(nat_teacher_path))", "", NO_LOAD),
        Edit("if (epoch % 20 == 0 and epoch <215) or (epoch%1 == 0 and epoch >= 215) or epoch == 1:",
             "if REF.evaluate_in_script(epoch):", SKIP_EVAL),
    ],
)

BMTARD = Reference(
    name="bmtard",
    repo="zhaoshiji123/MTARD-extension",
    commit="93506d69de6b736eba98c9d55e6ccabb89d27dcd",
    script="resnet18_mtard_cifar10.py",
    # The script imports mtard_loss and dataset, which the repository does not ship: mtard_loss
    # is MTARD's (the same authors' conference code, pinned above); dataset is the host's shim.
    extra=[RepoFile("zhaoshiji123/MTARD", "6480a1b40d6195e437a876639ea37b7b40c46a58", "mtard/mtard_loss.py", "mtard_loss.py")],
    shims=["dataset"],
    edits=[
        *FAMILY,
        Edit("trainset = CIFAR10(root='./data_cifar10', train=True, download=False, transform=transform_train)",
             "trainset = REF.train_subset(CIFAR10(root='./data_cifar10', train=True, download=False, transform=transform_train))",
             SUBSET),
        Edit("teacher = WideResNet()", "teacher = REF.teacher('robust_teacher')", "teacher: advkd's robust teacher checkpoint"),
        Edit("state_dict = torch.load(teacher1_path)", "", NO_LOAD),
        Edit("teacher.load_state_dict(state_dict)", "", NO_LOAD),
        Edit("teacher_nat = resnet56()", "teacher_nat = REF.teacher('clean_teacher')", "teacher: advkd's clean teacher checkpoint"),
        Edit("state_dict_1 = torch.load(teacher2_path)", "", NO_LOAD),
        Edit("teacher_nat.load_state_dict(state_dict_1)", "", NO_LOAD),
        Edit("if (epoch % 20 == 0 and epoch <215) or (epoch%1 == 0 and epoch >= 215) or epoch == 1:",
             "if REF.evaluate_in_script(epoch):", SKIP_EVAL),
    ],
)

ADAAD = Reference(
    name="adaad",
    repo="boyellow/AdaAD",
    commit="9e5c6e5ff73052af196065439517562d37eff6e6",
    script="main.py",
    # The paper's CIFAR-10 command (README), with the reduced scale's epochs, batch and lr.
    argv=["--dataset", "CIFAR10", "--model", "resnet18", "--method", "AdaAD", "--teacher_model", "wideresnet34_10",
          "--epsilon", "8", "--num_steps", "10", "--step_size", "2", "--epochs", "{epochs}", "--bs", "{batch_size}",
          "--lr_max", "{lr}", "--weight_decay", "{weight_decay}", "--lr_schedule", "piecewise", "--seed", "{seed}",
          "--root_path", "tuned_models"],
    shims=["utils"],
    student_var="net",
    edits=[
        Edit("from advertorch.attacks import LinfPGDAttack", "",
             "evaluation: advertorch serves only the per-epoch test, which is skipped (see the test(epoch) edit)"),
        Edit("num_classes, train_data, test_data = getData(args.dataset)",
             "num_classes, train_data, test_data = getData(args.dataset)\ntrain_data = REF.train_subset(train_data)",
             SUBSET),
        Edit("net = ResNet18(num_classes)", "net = REF.student()", STUDENT),
        Edit("teacher_net = WideResNet(num_classes=num_classes)", "teacher_net = REF.teacher('teacher')",
             "teacher: advkd's robust teacher checkpoint (the one advkd's run uses)"),
        Edit("teacher_state_dict = torch.load(teacher_path)['net']", "teacher_state_dict = teacher_net.state_dict()", NO_LOAD),
        Edit("# setup checkpoint", "optimizer = REF.optimizer(net.parameters())\n# setup checkpoint", OPTIM),
        Edit("if total_epoch == 200:", "if total_epoch == REF.epochs:\n    epoch_point = REF.milestones\nelif total_epoch == 200:", MILESTONES),
        Edit("test(epoch)", "REF.skip_test(globals())", SKIP_EVAL),
    ],
)

REFERENCES: dict[str, Reference] = {r.name: r for r in (ADAAD, RSLAD, MTARD, BMTARD)}
