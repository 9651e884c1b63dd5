#!/usr/bin/env bash
# The headline recipe (Y″, docs/experiments.md stop 21) through the robot's node graph.
#
#   experiments/headline_graph.sh ART_DIR [SEED] [STEPS] [EVAL_EPISODES]
#
# ART_DIR holds the shared artifacts of the headline configuration (15 forward demos, 60 reset
# demos half from scattered starts, classifiers trained 3,000 steps, the Cal-QL policy), made
# once with
#   rft pipeline launch/sim_dry_run.toml --out ART_DIR \
#     --set 'stages=["demos","reward","pretrain","eval"]' --set demos.episodes_per_direction=15 \
#     --set demos.backward_episodes=60 --set demos.scattered_fraction=0.5 --set reward.steps=3000
# The node graph of launch/sim_dry_run.toml then fine-tunes on the lockstep executor for STEPS
# policy steps (default 20,000; the runner's max_steps ends the launch): rewards from the
# classifiers only; the arm goes home between episodes (4 s, the filter drives it), with its
# posture after an episode the filter mostly overrode; timeouts get a second look with the arm
# home; near-edge episodes end early; stall escape after 4 stalled episodes; a simulated
# operator answers a pause for a human after 5 s (counted as a human reset). The safety filter
# has the pipeline plant's limits: no obstacle sphere (with the launch file's sphere over the
# table, a cube pushed to y ≈ 0.2 cannot be reached from behind: measured, one run spent
# 14,000 steps so). The learner runs
# Y″'s recipe (offline ratio 0.25, no promotion). Then the learner's last policy is evaluated on
# EVAL_EPISODES (default 200) ground-truth episodes per direction (`rft eval`, the scenes of the
# pipeline's evaluation). Results go to ART_DIR/headline-graph-sSEED/.
set -euo pipefail
art=$(realpath "$1"); seed=${2:-0}; steps=${3:-20000}; episodes=${4:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
rft=${RFT:-$root/target/release/rft}
[ -x "$rft" ] || (cd "$root" && cargo build --release -q)
out="$art/headline-graph-s$seed"
mkdir -p "$out"
start=$(date +%s)
"$rft" launch "$root/launch/sim_dry_run.toml" --run-dir "$out/run" \
  --set pipeline.enabled=false --set 'clock.executor="lockstep"' --set duration_s=100000 --set progress_s=200 \
  --set nodes.0.params.realtime_factor=0.0 --set nodes.0.params.seed="$seed" --set nodes.0.params.operator_reset_s=5.0 \
  --set 'nodes.1.params.obstacles=[]' \
  --set nodes.3.params.policy="\"$art/pretrain/policy.safetensors\"" --set nodes.3.params.seed="$seed" \
  --set nodes.3.params.max_steps="$steps" \
  --set "nodes.4.params.classifiers=[{ kind = \"cnn\", weights = \"$art/reward/forward/reward.safetensors\" }, { kind = \"cnn\", weights = \"$art/reward/backward/reward.safetensors\" }]" \
  --set 'nodes.5.params.schedule={ consecutive = 1, timeout_s = 20.0, stuck_s = 8.0, stuck_distance_m = 0.01, home_s = 4.0, reset_retries = 2, confirm_at_home = true, reach = { min = [0.36, -0.36], max = [0.7, 0.36] }, edge_guard_m = 0.08, posture_reset_overridden = 0.5, stall_escape = 4 }' \
  --set nodes.6.params.init="\"$art/pretrain/checkpoints\"" --set nodes.6.params.demos="\"$art/demos/demos.safetensors\"" \
  --set nodes.6.params.warmup_transitions=500 --set nodes.6.params.max_rounds_per_tick=1 --set nodes.6.params.seed="$seed" \
  --set nodes.6.params.checkpoint_every=5000 \
  --set 'nodes.6.params.recipe={ utd = 1, offline_ratio = 0.25, publish_every = 50, bc_weight = 1.0, critic_warmup_rounds = 500, init_alpha = 0.01, promote_successes = false }' \
  --set nodes.7.enabled=false > "$out/finetune.log" 2>&1
mid=$(date +%s)
ckpt="$out/run/learner/checkpoints"
"$rft" eval --checkpoint "$ckpt" --episodes "$episodes" > "$out/eval_plant.log" 2>&1
end=$(date +%s)
csv="$out/run/episodes.csv"
{
  echo "seed $seed, $steps steps, fine-tuning wall $((mid - start)) s, evaluation $((end - mid)) s"
  echo "episodes (direction reason): $(tail -n +2 "$csv" | cut -d, -f3,4 | sort | uniq -c | tr '\n' ' ')"
  echo "human resets: $(tail -n 1 "$csv" | cut -d, -f5), posture homings: $(tail -n +2 "$csv" | cut -d, -f6 | grep -c 1 || true), stall-escape episodes: $(tail -n +2 "$csv" | cut -d, -f7 | grep -c 1 || true)"
  grep -h "success" "$out/eval_plant.log" | grep -i "forward\|backward" | sed 's/^/plant: /'
} | tee "$out/summary.txt"
