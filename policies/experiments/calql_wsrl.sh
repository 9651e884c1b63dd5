#!/usr/bin/env bash
# Cal-QL pre-training on mediocre Pendulum-v1 data, then WSRL fine-tuning online.
# Usage: policies/experiments/calql_wsrl.sh [OUT_DIR] [SEEDS...]   (default: runs/calql-wsrl 0)
# Needs `cargo build --release` first. About 6 minutes per seed on 2 cores.
set -euo pipefail
RFT=${RFT:-target/release/rft}
OUT=${1:-runs/calql-wsrl}
shift || true
SEEDS=${*:-0}
PRE_STEPS=${PRE_STEPS:-2000}
NOISE=${NOISE:-0.7}
ONLINE_STEPS=${ONLINE_STEPS:-15000}
WARMUP=${WARMUP:-5000}
# UTD 4 with only two critics let Q drift upwards after ~5k updates on Pendulum (see
# BENCHMARKS.md); UTD 1 is the default here, UTD=4 reproduces the reference setting.
UTD=${UTD:-1}
for s in $SEEDS; do
  d="$OUT/seed$s"
  if [ -f "$d/pretrain/summary.json" ] && [ "${REUSE_PRETRAIN:-0}" = 1 ]; then
    echo "reusing $d/pretrain"
  else
    mkdir -p "$d"
    # 1. mediocre data: a swing-up controller taking a random action 70% of the time (return ≈ -800)
    "$RFT" dataset pendulum --episodes 50 --noise "$NOISE" --seed "$s" --out "$d/data.safetensors"
    # 2. Cal-QL (2 critics, LayerNorm, 4 sampled actions per source) with evaluation as it goes
    "$RFT" pretrain --data "$d/data.safetensors" --algo calql --steps "$PRE_STEPS" --cql-actions 4 \
      --layer-norm true --env pendulum --eval-every 500 --eval-episodes 10 --seed "$s" --out "$d/pretrain"
  fi
  # 3. WSRL: warm-up with the pre-trained policy into an empty buffer, then SAC updates, no offline data
  "$RFT" train --algo wsrl --init "$d/pretrain" --steps "$ONLINE_STEPS" --warmup-steps "$WARMUP" --utd "$UTD" \
    --env pendulum --eval-every 500 --eval-episodes 10 --seed "$s" --out "$d/wsrl"
  # the pre-trained policy's return: its evaluations during the warm-up (it does not change then)
  pre=$(python3 -c "import csv;r=[float(x['eval_return']) for x in csv.DictReader(open('$d/wsrl/metrics.csv')) if x['eval_return'] and int(x['step'])<=$WARMUP];print(sum(r)/len(r))")
  "$RFT" plot "WSRL fine-tuning (seed $s)=$d/wsrl/metrics.csv" --title "Cal-QL -> WSRL on Pendulum-v1" \
    --hline="$pre=Cal-QL pre-trained" --vline="$WARMUP=end of warm-up" --out "$d/curve.png"
done
