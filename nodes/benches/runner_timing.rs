//! Policy-runner timing on the wall clock, with the whole loop in one process: the simulated
//! robot in real time (1 kHz physics, 128² camera at 10 Hz), the safety filter at 100 Hz, the
//! reward node's CNN on every frame, the episode manager, and the learner training (256×256
//! actor and critics, batch 256) and publishing new weights every 10 rounds, which the runner
//! swaps in between ticks.
//!
//! Reported per control rate: observation → action latency (reading the latest joint state
//! and object pose, forward kinematics, the policy, publishing), tick jitter (start-to-start
//! interval minus the period), missed ticks (the runtime's overruns), weight swaps and their
//! cost. Not a criterion benchmark: these are distributions inside a running loop.
//!
//!   cargo bench -p rft-nodes --bench runner_timing            (30 s per rate)
//!   RFT_TIMING_S=5 cargo bench -p rft-nodes --bench runner_timing
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rft_autonomy::eval::pct;
use rft_nodes::{EpisodeManager, Learner, PolicyRunner, RewardNode, SafetyFilter, SimRobot};
use rft_policies::{Agent, AgentConfig, Algorithm, checkpoint};
use rft_rewards::{CnnClassifier, CnnConfig};
use rft_runtime::bus::{Bus, Signal};
use rft_runtime::launch;
use rft_runtime::{Clock, Node, Runtime};

fn main() {
    let secs: f64 = std::env::var("RFT_TIMING_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let dir = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    let mut cfg = AgentConfig::preset(Algorithm::Sac, 14, 4);
    cfg.num_tasks = 2;
    cfg.hidden = vec![256, 256];
    cfg.batch_size = 256;
    let agent = Agent::new(cfg, &dev).unwrap();
    let init = dir.path().join("pretrain");
    checkpoint::save(&init, &agent, None, 0, 1, serde_json::json!({}), 2).unwrap();
    let clf_path = dir.path().join("reward.safetensors");
    CnnClassifier::new(CnnConfig::default(), "push/forward", 0, &dev)
        .unwrap()
        .save(&clf_path)
        .unwrap();
    println!(
        "runner timing: {secs} s per rate on the wall clock, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for rate in [10.0, 20.0] {
        let text = format!(
            r#"
name = "runner_timing"
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
urdf = "../sim/assets/panda.urdf"
cameras = [{{ name = "camera", width = 128, height = 128, rate_hz = 10 }}]
[[nodes]]
name = "safety"
kind = "safety_filter"
[nodes.params]
urdf = "../sim/assets/panda.urdf"
joint_state_rate_hz = 100
workspace_min = [0.2, -0.5, 0.01]
workspace_max = [0.8, 0.5, 0.8]
max_linear_m_s = 0.25
[[nodes]]
name = "policy"
kind = "policy_runner"
rate_hz = {rate}
[nodes.params]
policy = "{init}"
urdf = "../sim/assets/panda.urdf"
[[nodes]]
name = "reward"
kind = "reward"
[nodes.params]
classifiers = [{{ kind = "cnn", weights = "{clf}" }}]
[[nodes]]
name = "episodes"
kind = "episode_manager"
[nodes.params]
urdf = "../sim/assets/panda.urdf"
[[nodes]]
name = "learner"
kind = "learner"
[nodes.params]
init = "{init}"
out = "{out}"
warmup_transitions = 10
utd = 4
publish_every = 10
checkpoint_every = 1000000
offline_ratio = 0.0
"#,
            init = init.display(),
            clf = clf_path.display(),
            out = dir.path().join(format!("learner-{rate}")).display(),
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/x.toml");
        let l = launch::parse(&rft_nodes::registry(), &path, &text, &[]).unwrap();
        let bus = Bus::inproc();
        let mut rt = Runtime::new(Clock::Wall);
        let mut runner_stats = None;
        let mut learner_stats = None;
        for spec in &l.nodes {
            let wake = Arc::new(Signal::default());
            let h = bus
                .node(&spec.entry.name, BTreeMap::new(), wake.clone())
                .unwrap();
            let hz = spec
                .entry
                .rate_hz
                .unwrap_or_else(|| spec.params.default_rate_hz());
            let period = Duration::from_secs_f64(1.0 / hz);
            let name = spec.entry.name.clone();
            let node: Box<dyn Node> = match spec.params.kind() {
                "sim_robot" => {
                    let p = spec.params::<rft_nodes::SimRobotParams>().unwrap();
                    Box::new(SimRobot::new(name, p.clone(), period, &h).unwrap())
                }
                "safety_filter" => {
                    let p = &spec.params::<rft_nodes::SafetyFilterParams>().unwrap().0;
                    Box::new(SafetyFilter::new(name, p.clone(), period, &h).unwrap())
                }
                "policy_runner" => {
                    let p = spec.params::<rft_nodes::PolicyRunnerParams>().unwrap();
                    let r = PolicyRunner::new(name, p.clone(), period, &h).unwrap();
                    runner_stats = Some(r.stats());
                    Box::new(r)
                }
                "reward" => {
                    let p = spec.params::<rft_nodes::RewardParams>().unwrap();
                    Box::new(RewardNode::new(name, p.clone(), period, &h).unwrap())
                }
                "episode_manager" => {
                    let p = spec.params::<rft_nodes::EpisodeManagerParams>().unwrap();
                    Box::new(EpisodeManager::new(name, p.clone(), period, &h).unwrap())
                }
                "learner" => {
                    let p = spec.params::<rft_nodes::LearnerParams>().unwrap();
                    let n = Learner::new(name, p.clone(), period, &h).unwrap();
                    learner_stats = Some(n.stats());
                    Box::new(n)
                }
                _ => unreachable!(),
            };
            rt.add(node, wake);
        }
        let report = rt.run(Some(Duration::from_secs_f64(secs))).unwrap();
        let s = runner_stats.unwrap().lock().unwrap().clone();
        let ls = learner_stats.unwrap().lock().unwrap().clone();
        let policy = report.nodes.iter().find(|n| n.name == "policy").unwrap();
        let jitter: Vec<f32> = s.jitter_us.iter().map(|j| j.abs()).collect();
        println!(
            "{rate:>4} Hz: obs→action p50 {:.1} µs p99 {:.1} µs max {:.1} µs | tick jitter |Δ| p50 {:.0} µs p99 {:.0} µs max {:.0} µs | ticks {} missed {} stale {} | swaps {} (p99 {:.0} µs, max {:.0} µs) | learner rounds {} ({:.1} ms p50 per round of 4 updates)",
            pct(&s.obs_to_action_us, 0.5),
            pct(&s.obs_to_action_us, 0.99),
            pct(&s.obs_to_action_us, 1.0),
            pct(&jitter, 0.5),
            pct(&jitter, 0.99),
            pct(&jitter, 1.0),
            policy.steps,
            policy.overruns,
            s.stale_obs,
            s.swaps,
            pct(&s.swap_us, 0.99),
            pct(&s.swap_us, 1.0),
            ls.rounds,
            pct(&ls.update_ms, 0.5),
        );
    }
}
