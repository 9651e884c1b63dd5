#!/usr/bin/env bash
# Reset-free fine-tuning through the robot's node graph, on a pipeline run's artifacts.
#
#   experiments/graph_finetune.sh RUN_DIR [SEED] [SECONDS]
#
# RUN_DIR is a run of `rft launch launch/sim_dry_run.toml` (or `rft pipeline`): its demos,
# classifiers and pre-trained policy are used. The node graph of launch/sim_dry_run.toml then
# runs on the lockstep executor for SECONDS simulated seconds (default 400 = 4,000 control steps,
# the pipeline's fine-tuning budget): the simulated robot, the safety filter, the runner acting
# with the pre-trained policy (mean + N(0, 0.15)), the reward node with the two classifiers, the
# episode manager (the pipeline's schedule without homing) and the learner with the pipeline's
# recipe. No recorder. SEED seeds the simulator, the runner and the learner. Then the learner's
# last checkpoint is evaluated against ground truth, 100 episodes per direction, through the
# node graph (launch/eval_graph.toml) and through the pipeline's plant (`rft eval`), on the
# same scenes as the pipeline's evaluation. Results go to RUN_DIR/graph-finetune-sSEED/.
set -euo pipefail
run=$(realpath "$1"); seed=${2:-0}; secs=${3:-400}
root=$(cd "$(dirname "$0")/.." && pwd)
rft=${RFT:-$root/target/release/rft}
[ -x "$rft" ] || (cd "$root" && cargo build --release -q)
out="$run/graph-finetune-s$seed"
mkdir -p "$out"
start=$(date +%s)
"$rft" launch "$root/launch/sim_dry_run.toml" --run-dir "$out/run" \
  --set pipeline.enabled=false --set 'clock.executor="lockstep"' --set duration_s="$secs" --set progress_s=60 \
  --set nodes.0.params.realtime_factor=0.0 --set nodes.0.params.lockstep_timeout_ms=0 --set nodes.0.params.seed="$seed" \
  --set nodes.3.params.policy="\"$run/pretrain/policy.safetensors\"" --set nodes.3.params.seed="$seed" \
  --set "nodes.4.params.classifiers=[{ kind = \"cnn\", weights = \"$run/reward/forward/reward.safetensors\" }, { kind = \"cnn\", weights = \"$run/reward/backward/reward.safetensors\" }]" \
  --set 'nodes.5.params.schedule={ consecutive = 1, timeout_s = 20.0, stuck_s = 8.0, stuck_distance_m = 0.01, reach = { min = [0.3, -0.4], max = [0.7, 0.4] } }' \
  --set nodes.6.params.init="\"$run/pretrain/checkpoints\"" --set nodes.6.params.demos="\"$run/demos/demos.safetensors\"" \
  --set nodes.6.params.warmup_transitions=500 --set nodes.6.params.max_rounds_per_tick=1 --set nodes.6.params.seed="$seed" \
  --set 'nodes.6.params.recipe={ utd = 1, offline_ratio = 0.5, publish_every = 50, bc_weight = 1.0, critic_warmup_rounds = 500, init_alpha = 0.01, promote_successes = true }' \
  --set nodes.7.enabled=false > "$out/finetune.log" 2>&1
mid=$(date +%s)
ckpt="$out/run/learner/checkpoints"
"$rft" launch "$root/launch/eval_graph.toml" --run-dir "$out/eval" \
  --set nodes.2.params.policy="\"$ckpt\"" > "$out/eval_graph.log" 2>&1
"$rft" eval --checkpoint "$ckpt" --episodes 100 > "$out/eval_plant.log" 2>&1
end=$(date +%s)
{
  echo "seed $seed, $secs s simulated, fine-tuning wall $((mid - start)) s, evaluations $((end - mid)) s"
  echo "episodes: $(grep -o 'reason="[a-z_]*"' "$out/finetune.log" | sort | uniq -c | tr '\n' ' ')"
  echo "paused for a human: $(grep -c 'paused' "$out/finetune.log" || true)"
  grep -h "evaluation:" "$out/eval_graph.log" | sed 's/.*evaluation: /graph: /'
  grep -h "success" "$out/eval_plant.log" | grep -i "forward\|backward" | sed 's/^/plant: /'
} | tee "$out/summary.txt"
