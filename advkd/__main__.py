"""``python -m advkd`` (also the torchrun entry point: ``torchrun -m advkd ...``)."""
from advkd.entry import main

raise SystemExit(main())
