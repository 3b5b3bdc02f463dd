"""``python -m advkd`` (also the torchrun entry point: ``torchrun -m advkd ...``)."""
from advkd.cli import main

raise SystemExit(main())
