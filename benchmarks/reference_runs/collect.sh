#!/usr/bin/env bash
# Copy the records of a side-by-side runs dir into OUT (default docs/fidelity): results.jsonl with
# only the records of checkpoints as they are now (a run trained again since it was attacked drops
# its old records), each run's config.yaml / metrics.jsonl / reference.yaml / the B-MTARD
# reference's weight and temperature trace, no checkpoints; then render OUT/table-PRESET.md.
# Usage: bash benchmarks/reference_runs/collect.sh RUNS_DIR [OUT]   (PYTHON may name the interpreter)
set -euo pipefail
RUNS="$1"
OUT="${2:-docs/fidelity}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
"$PY" - "$RUNS" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
from advkd.core.files import sha256_file
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
current = {}
kept = []
for line in (runs / "results.jsonl").read_text().splitlines():
    rec = json.loads(line)
    ckpt = Path(rec.get("checkpoint", ""))
    if ckpt.is_file():
        sha = current.setdefault(ckpt, sha256_file(ckpt))
        if rec.get("sha256") == sha:
            kept.append(line)
(out / "results.jsonl").write_text("\n".join(kept) + "\n")
for kind in ("pretrain-teacher", "distill", "reference"):
    for run in sorted((runs / kind).glob("*/*")):
        if not run.is_dir() or run.name.endswith(".partial"):
            continue
        dest = out / run.relative_to(runs)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl", "reference.yaml"):
            if (run / name).is_file():
                shutil.copy(run / name, dest / name)
        for trace in run.glob("output_*.txt"):
            shutil.copy(trace, dest / trace.name)
print(f"{len(kept)} records of current checkpoints")
PY
for preset in mini small; do
  "$PY" -m benchmarks.reference_runs.compare --runs-dir "$OUT" --preset "$preset" > "$OUT/table-$preset.md" 2>/dev/null || rm -f "$OUT/table-$preset.md"
done
