#!/usr/bin/env bash
# The main job end to end on the CPU: sample data -> dataset scan -> probe -> particles per class.
set -euo pipefail
out="${1:-demo-output}"
data="$out/data"

echo "== tubelet sample-data $data"
tubelet sample-data "$data" --clips-per-class 12

echo; echo "== tubelet scan $data"
tubelet scan "$data"

first=$(sed -n 2p "$data/test.csv" | cut -d, -f1)
echo; echo "== tubelet probe $data/$first"
tubelet probe "$data/$first"

echo; echo "== tubelet tokenize --json on every test clip (tubelet 2x16x16, static pruning at 4 levels)"
python - "$data" <<'PY'
import csv, json, subprocess, sys
from pathlib import Path

data = Path(sys.argv[1])
print(f"{'file':<30} {'fps':>5} {'particles':>9} {'total':>6} {'kept':>5} {'t range (s)':>13}  grid")
for row in csv.DictReader(open(data / "test.csv")):
    out = subprocess.run(["tubelet", "tokenize", str(data / row["path"]), "--json"], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out)
    t_range = f"{r['t_min']:.2f}-{r['t_max']:.2f}"
    print(f"{row['path']:<30} {r['source_fps']:>5g} {r['particles']:>9} {r['total']:>6} {r['kept_fraction']:>5.2f} "
          f"{t_range:>13}  {r['grid']}")
PY
echo; echo "demo done: data in $data"
