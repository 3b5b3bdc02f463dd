#!/usr/bin/env bash
# Copy the records of a `make reproduce-small` runs dir into docs/results-small/records (no
# checkpoints) and render docs/results-small/{table2,bmtard-table3}.md and runs.md from them.
# Usage: bash docs/results-small/collect.sh RUNS_DIR [OUT]   (ADVKD may name the advkd executable)
# OUT (default docs/results-small/records): where the records go; with an OUT other than that, the
# renders are written inside OUT too, so an unfinished run never overwrites the published pages.
# Only the records it copies are replaced: a README or a log written beside them stays. With
# RUNS_DIR and OUT the same folder, it re-renders committed records without copying anything.
set -euo pipefail
A="${ADVKD:-advkd}"
RUNS="$1"
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${2:-$HERE/records}"
mkdir -p "$OUT"
RENDER="$HERE"; [ "$(cd "$OUT" && pwd)" != "$HERE/records" ] && RENDER="$OUT"
if [ "$(cd "$RUNS" && pwd)" != "$(cd "$OUT" && pwd)" ]; then
  rm -rf "$OUT/pretrain-teacher" "$OUT/distill" "$OUT/results.jsonl"
  if [ -f "$RUNS/results.jsonl" ]; then cp "$RUNS/results.jsonl" "$OUT/results.jsonl"; else : > "$OUT/results.jsonl"; fi
  for run in "$RUNS"/*/*/*/config.yaml; do
    dir="$(dirname "$run")"
    rel="${dir#"$RUNS"/}"
    mkdir -p "$OUT/$rel"
    cp "$dir/config.yaml" "$OUT/$rel/"
    [ -f "$dir/metrics.jsonl" ] && cp "$dir/metrics.jsonl" "$OUT/$rel/"
  done
fi
"$A" report table2 --format markdown --ranking --runs-dir "$OUT" > "$RENDER/table2.md"
"$A" report bmtard-table3 --format markdown --ranking --runs-dir "$OUT" > "$RENDER/bmtard-table3.md"
python3 "$HERE/../scales/summarize.py" "$OUT" > "$RENDER/runs.md"
"${PYTHON:-python3}" "$HERE/orderings.py" "$OUT" > "$RENDER/orderings.md"
echo "records under $OUT, renders under $RENDER"
