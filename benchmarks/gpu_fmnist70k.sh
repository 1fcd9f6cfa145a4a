#!/usr/bin/env bash
# The full 70k independent-init Fashion-MNIST SIREN zoo on a lent GPU, in one call of the device
# tool (carry .gpu-deps and .fmnist: `make gpu-deps`; `mkdir .fmnist && cp
# /usr/share/datasets/fashion-mnist/*.gz .fmnist/`):
#
#     bash benchmarks/gpu_fmnist70k.sh [SECONDS]      # default 540: the whole script's budget
#
# 1. makes the zoo with the project's command (timed: the goal is 70k INRs in < 60 s) and
#    summarises it (PSNR, splits);
# 2. runs the rows of the CPU table of record side by side on the one GPU, at the settings chosen
#    on the 10k zoo's validation, and two screens (ROWS below), batch 256, with loader workers:
#    a short probe (PROBE steps, 100) of each first, then the same number of steps for every
#    learned row, as many as the slowest fits in the time left (STEPS=N: that many, no probe;
#    SEEDS=0,1,2: those seeds, one after the other in each row's process; default 0);
# 3. tests/test_devices.py beside the training.
# Everything it reports lands in $OUT (log.txt, zoo.json, devices.json, runs.tar.gz without checkpoints).
set -u
BUDGET=${1:-540}
START=$(date +%s)
OUT=${OUT:-/tmp/gpu-fmnist70k}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
ZOO=/tmp/zoo-fmnist70k
RUNS=/tmp/runs-fmnist70k; mkdir -p $RUNS
BATCH=256
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu ZOO_ARGS="--limit 300 --steps 3" PROBE=5: a dry run on the CPU
PROBE=${PROBE:-100}
left() { echo $((BUDGET - ($(date +%s) - START))); }
log() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$OUT/log.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$OUT/log.txt" 2>&1
$PY -c "import torch, torch_geometric, sacred; print('torch', torch.__version__, 'pyg', torch_geometric.__version__)" >>"$OUT/log.txt" 2>&1

log "zoo: start"
t0=$(date +%s%N)
timeout 240 $PY -m graphnfn.zoo siren --dataset fashion-mnist --data-dir .fmnist --out $ZOO --device $DEVICE \
    --no-progress ${ZOO_ARGS:-} >"$OUT/zoo.log" 2>&1
log "zoo: exit $?, $((($(date +%s%N) - t0) / 1000000)) ms"
$PY -m graphnfn.zoo verify $ZOO 2>&1 | tee -a "$OUT/log.txt"
$PY -c "import json, sys; from benchmarks.zoo import summary; from graphnfn.zoo import Zoo
row = summary(Zoo(sys.argv[1])); json.dump(row, open(sys.argv[2], 'w'), indent=1); print(row)" "$ZOO" "$OUT/zoo.json" \
    2>&1 | tee -a "$OUT/log.txt"

# benchmarks.gpu's devices part: tests/test_devices.py, its summary line and JSON
( timeout $(($(left) - 20)) $PY -m benchmarks.gpu --device $DEVICE --parts devices --out "$OUT/devices.json" >"$OUT/devices.log" 2>&1;
  tail -1 "$OUT/devices.log" >>"$OUT/log.txt" ) &

# the rows: "name|model|keys". The settings of record on the 10k zoo, and two screens for
# choosing on this zoo's validation: sign-gnn without weight decay (0.3 fought overfitting on
# 10k INRs) and monomial on phase-canonical INRs (it kept them as they are on 10k by three
# validation INRs of 735; sign-gnn took them by 20 points). augment=mirror converts every training INR anew
# each pass (0.26 s a batch of 256 in the training process, against a 0.03 s GPU step), so
# those rows get five loader workers; the others two, for the one conversion of each split
COMMON="task=inr_classification fmnist data_dir=.fmnist zoo=$ZOO device=$DEVICE threads=2 lr=3e-3"
COMMON="$COMMON batch_size=$BATCH"
ROWS=(
    "sign-gnn|sign-gnn|pool=layer weight_decay=0.3 phase=True workers=2"
    "sign-gnn-wd0|sign-gnn|pool=layer phase=True workers=2"
    "nfn-hnp|nfn-hnp|weight_decay=0.1 augment=mirror workers=5"
    "monomial|monomial|weight_decay=0.1 augment=mirror workers=5"
    "monomial-phase|monomial|weight_decay=0.1 augment=mirror phase=True workers=5"
    "stat|stat|workers=2"
)
SEEDS=${SEEDS:-0}
train() {  # ROW STEPS DIR SEEDS [KEY=VALUE]: one compare run of one row
    IFS="|" read -r name model keys <<<"$1"
    GRAPHNFN_RUNS=$3 timeout $(($(left) - 15)) $PY -m experiments.compare with $COMMON $keys steps=$2 ${5:-} \
        "models=[\"$model\"]" "seeds=[$4]" >"$3.log" 2>&1
    log "$name ($2 steps): exit $?"
}
if [ -z "${STEPS:-}" ]; then
    log "probe: start"
    pids=()
    probe_start=$(date +%s)
    for row in "${ROWS[@]}"; do train "$row" $PROBE $RUNS/probe-${row%%|*} 0 eval_every=$PROBE & pids+=($!); done
    wait "${pids[@]}"
    # a process's time beyond its training (imports, reading and converting 70k INRs, the test) comes again
    STEPS=$($PY - "$RUNS" "$(left)" "$(($(date +%s) - probe_start))" <<'EOF'
import glob, json, sys
runs, left, probe = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rates = {p.split("/")[-3]: json.load(open(p)) for p in glob.glob(f"{runs}/probe-*/*/pair-*.json")}
for name, r in rates.items():
    print(f"{name}: {r['train_seconds'] / r['steps']:.3f} s/step", file=sys.stderr)
slowest = max(r["train_seconds"] / r["steps"] for r in rates.values())
setup = probe - min(r["train_seconds"] for r in rates.values())
print(max(100, int(0.8 * (left - 20 - setup) / slowest) // 100 * 100))
EOF
)
fi
log "every row takes $STEPS steps at batch $BATCH"
for row in "${ROWS[@]}"; do train "$row" $STEPS $RUNS/${row%%|*} $SEEDS & done
GRAPHNFN_RUNS=$RUNS/align-linear timeout $(($(left) - 15)) $PY -m experiments.compare with $COMMON workers=2 phase=True \
    'models=["align-linear"]' "seeds=[$SEEDS]" >"$RUNS/align-linear.log" 2>&1 &
wait
for f in $RUNS/*/*/results.md; do echo "== $f"; sed -n '1,12p' "$f"; done >>"$OUT/log.txt" 2>&1
tar czf "$OUT/runs.tar.gz" --exclude='*.pt' --exclude='_sources' -C /tmp "$(basename $RUNS)"
log "done"
