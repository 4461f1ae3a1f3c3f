#!/usr/bin/env bash
# The main job end to end on the CPU: sample data -> scan -> particles -> fine-tune -> evaluate -> predict -> explain,
# then the audio-visual job: multimodal sample data -> fused fine-tune with its ablation -> predict -> explain.
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

echo; echo "== tubelet sample-data --multimodal: clips with sound (2 classes told apart by sound, 2 by vision, 2 by both)"
tubelet sample-data "$out/av" --multimodal --clips-per-class 12 > /dev/null
rm -rf "$out/av-run"
echo "== tubelet finetune --config configs/demo_av.yaml: video+audio fused, and each modality alone (same budget)"
tubelet finetune --config configs/demo_av.yaml --data "$out/av" --out "$out/av-run" > "$out/av-run.log"
python - "$out/av-run/report/report.json" <<'PY'
import json, sys

ablation = json.load(open(sys.argv[1]))["ablation"]
print(f"{'arm':<12} {'test accuracy':>13} {'macro F1':>9}")
for arm, m in ablation.items():
    print(f"{arm:<12} {m['accuracy']:>13.3f} {m['macro_f1']:>9.3f}")
PY

echo; echo "== tubelet predict / explain on the fusion checkpoint: which modality decided?"
clip=$(grep -m1 '^static_high/' "$out/av/test.csv" | cut -d, -f1)
tubelet predict --checkpoint "$out/av-run/best" "$out/av/$clip"
tubelet explain --checkpoint "$out/av-run/best" "$out/av/$clip" --out "$out/explain-av"

echo; echo "demo done: data in $data, checkpoints in $run, report in $out/eval/report.md,"
echo "explanations in $out/explain/report.html and $out/explain-av/report.html (open them in a browser)"
