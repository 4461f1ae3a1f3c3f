#!/usr/bin/env bash
# The main job end to end on the CPU: sample data -> scan -> particles -> fine-tune -> evaluate -> predict.
set -euo pipefail
out="${1:-demo-output}"
data="$out/data"
run="$out/run"

echo "== tubelet sample-data $data"
tubelet sample-data "$data" --clips-per-class 24

echo; echo "== tubelet scan $data"
tubelet scan "$data"

first=$(sed -n 2p "$data/test.csv" | cut -d, -f1)
echo; echo "== tubelet probe $data/$first"
tubelet probe "$data/$first"

echo; echo "== tubelet tokenize --json on one test clip per class (tubelet 2x16x16, static pruning at 4 levels)"
python - "$data" <<'PY'
import csv, json, subprocess, sys
from pathlib import Path

data = Path(sys.argv[1])
print(f"{'file':<30} {'fps':>5} {'particles':>9} {'total':>6} {'kept':>5} {'t range (s)':>13}  grid")
seen = set()
for row in csv.DictReader(open(data / "test.csv")):
    if row["label"] in seen:
        continue
    seen.add(row["label"])
    out = subprocess.run(["tubelet", "tokenize", str(data / row["path"]), "--json"], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out)
    t_range = f"{r['t_min']:.2f}-{r['t_max']:.2f}"
    print(f"{row['path']:<30} {r['source_fps']:>5g} {r['particles']:>9} {r['total']:>6} {r['kept_fraction']:>5.2f} "
          f"{t_range:>13}  {r['grid']}")
PY

echo; echo "== tubelet finetune --config configs/demo.yaml (micro encoder from scratch, CPU)"
rm -rf "$run"
tubelet finetune --config configs/demo.yaml --data "$data" --out "$run"

echo; echo "== tubelet evaluate on the held-out test split"
tubelet evaluate --checkpoint "$run/best" --data "$data" --split test --out "$out/eval"

echo; echo "== tubelet predict on videos it never saw (new seed)"
tubelet sample-data "$out/unseen" --clips-per-class 3 --seed 12345 > /dev/null
tubelet predict --checkpoint "$run/best" "$out/unseen/move_left" "$out/unseen/rotate" "$out/unseen/static" \
  --plot "$out/timelines"

echo; echo "== tubelet explain: which particles (where, when) made it say move_left"
tubelet explain --checkpoint "$run/best" "$out/unseen/move_left/move_left_000.mp4" --out "$out/explain"

echo; echo "demo done: data in $data, checkpoints in $run, report in $out/eval/report.md,"
echo "explanation in $out/explain/report.html (open it in a browser)"
