"""The ``advkd`` console entry point: install the Ctrl-C handler first, then import the CLI.

Importing the CLI loads torch (seconds); a Ctrl-C during that start-up would otherwise print a
KeyboardInterrupt traceback. This module imports nothing heavy before the handler is in place.
"""
from __future__ import annotations

import signal
import sys

from advkd.core.errors import Interrupted, interrupt_handler


def main() -> int:
    signal.signal(signal.SIGINT, interrupt_handler)
    try:
        from advkd.cli import main as cli_main
    except Interrupted:
        print("advkd: interrupted during start-up; nothing was done", file=sys.stderr)
        return 130
    return cli_main()
