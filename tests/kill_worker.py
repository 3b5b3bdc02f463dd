"""Run by tests/test_kill_points.py: tiny training runs that SIGKILL themselves at one point of
an epoch's save sequence, one forked child per case (torch is imported once).

argv: REFERENCE_RUNS_DIR, then triples RUNS_DIR POINT EPOCH. The uninterrupted reference run
comes first (it also warms the process up, so each forked child trains in about a second). POINT is ``before:<file>`` (its temp file is written
and fsynced, not yet renamed) or ``after:<file>`` (renamed into place); it fires at the EPOCH-th
write of that file (metrics.jsonl, last.safetensors and resume.safetensors are written once per
epoch). Prints one line per case: the signal that ended the child (9), or -exit code (-3: the
point was never reached).
"""
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_runs import CPU, tiny_cfg  # noqa: E402

from advkd.core.progress import Reporter  # noqa: E402
from advkd.training.loop import run  # noqa: E402

torch.set_num_threads(1)


def child(runs: Path, point: str, epoch: int) -> None:
    real_replace = os.replace
    writes: dict[str, int] = {}

    def replace(src, dst, **dir_fds):  # every atomic write (advkd.core.files) ends with os.replace(tmp, name, src_dir_fd=, dst_dir_fd=)
        name = Path(dst).name
        writes[name] = writes.get(name, 0) + 1
        if point == f"before:{name}" and writes[name] == epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, **dir_fds)
        if point == f"after:{name}" and writes[name] == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    run(tiny_cfg(), runs_dir=runs, data_dir=runs, device=CPU, reporter=Reporter(enabled=False))


run(tiny_cfg(), runs_dir=Path(sys.argv[1]), data_dir=Path(sys.argv[1]), device=CPU, reporter=Reporter(enabled=False))
args = sys.argv[2:]
for i in range(0, len(args), 3):
    runs, point, epoch = Path(args[i]), args[i + 1], int(args[i + 2])
    pid = os.fork()
    if pid == 0:
        try:
            child(runs, point, epoch)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status), flush=True)
