//! Fine-tuning in the robot's node graph is reproducible: the default launch file's graph on
//! the lockstep sim-clock executor, with everything the headline recipe switches on (the arm
//! home between episodes through the safety filter, with its posture after an overridden
//! episode; a second look with the arm home; stall escape; near-edge ends; a simulated
//! operator), run twice with the same seed from the same artifacts, writes byte-identical
//! `episodes.csv` files and leaves policies that evaluate identically through the graph.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::path::Path;

use support::{rft, root};

fn s(x: &str) -> String {
    x.to_string()
}

/// Demos, classifiers and a Cal-QL policy on a small budget.
fn artifacts(dir: &Path) {
    let mut args = vec![
        s("pipeline"),
        root().join("launch/sim_dry_run.toml").display().to_string(),
        s("--out"),
        dir.display().to_string(),
    ];
    for set in [
        "stages=[\"demos\", \"reward\", \"pretrain\"]",
        "demos.episodes_per_direction=8",
        "reward.episodes=16",
        "reward.steps=300",
        "reward.candidates=1",
        "pretrain.steps=300",
        "pretrain.hidden=[64, 64]",
    ] {
        args.extend([s("--set"), s(set)]);
    }
    rft(&args);
}

/// The default launch's graph fine-tuning `steps` policy steps from `art`, into `run`.
fn fine_tune(art: &Path, run: &Path, seed: u64, steps: u64) -> String {
    let a = |p: &str| format!("\"{}\"", art.join(p).display());
    let mut args = vec![
        s("launch"),
        root().join("launch/sim_dry_run.toml").display().to_string(),
        s("--run-dir"),
        run.display().to_string(),
    ];
    for set in [
        s("pipeline.enabled=false"),
        s("duration_s=100000"),
        format!("nodes.0.params.seed={seed}"),
        s("nodes.0.params.operator_reset_s=5.0"),
        s("nodes.1.params.obstacles=[]"),
        format!("nodes.3.params.policy={}", a("pretrain/policy.safetensors")),
        format!("nodes.3.params.seed={seed}"),
        format!("nodes.3.params.max_steps={steps}"),
        format!(
            "nodes.4.params.classifiers=[{{ kind = \"cnn\", weights = {} }}, {{ kind = \"cnn\", weights = {} }}]",
            a("reward/forward/reward.safetensors"),
            a("reward/backward/reward.safetensors")
        ),
        s(
            "nodes.5.params.schedule={ consecutive = 1, timeout_s = 8.0, stuck_s = 4.0, stuck_distance_m = 0.01, home_s = 4.0, reset_retries = 1, confirm_at_home = true, reach = { min = [0.36, -0.36], max = [0.7, 0.36] }, edge_guard_m = 0.08, posture_reset_overridden = 0.5, stall_escape = 2 }",
        ),
        format!("nodes.6.params.init={}", a("pretrain/checkpoints")),
        format!("nodes.6.params.demos={}", a("demos/demos.safetensors")),
        s("nodes.6.params.warmup_transitions=100"),
        format!("nodes.6.params.seed={seed}"),
        s(
            "nodes.6.params.recipe={ utd = 1, offline_ratio = 0.25, publish_every = 20, bc_weight = 1.0, critic_warmup_rounds = 50, init_alpha = 0.01, promote_successes = false }",
        ),
        s("nodes.7.enabled=false"),
    ] {
        args.extend([s("--set"), set]);
    }
    rft(&args)
}

/// The graph's ground-truth evaluation of the learner's last policy.
fn evaluate(run: &Path, out: &Path) -> serde_json::Value {
    let args = vec![
        s("launch"),
        root().join("launch/eval_graph.toml").display().to_string(),
        s("--run-dir"),
        out.display().to_string(),
        s("--set"),
        format!(
            "nodes.2.params.policy=\"{}\"",
            run.join("learner/checkpoints").display()
        ),
        s("--set"),
        s("nodes.3.params.episodes=6"),
    ];
    rft(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap()
}

#[test]
fn the_same_seed_fine_tunes_and_evaluates_identically_in_the_node_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("art");
    artifacts(&art);
    let once = |name: &str| {
        let run = tmp.path().join(name);
        let log = fine_tune(&art, &run, 1, 700);
        let csv = std::fs::read(run.join("episodes.csv")).unwrap();
        let eval = evaluate(&run, &tmp.path().join(format!("{name}-eval")));
        (csv, eval, log)
    };
    let (csv_a, eval_a, log) = once("a");
    let (csv_b, eval_b, _) = once("b");
    assert!(
        log.contains("step budget"),
        "the runner's max_steps ended the launch:\n{log}"
    );
    let text = String::from_utf8(csv_a.clone()).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(
        rows.len() >= 5,
        "{} episodes in 700 steps:\n{text}",
        rows.len()
    );
    // Homing took simulated time between episodes: more time passed than 700 steps take.
    let last_s: f64 = rows
        .last()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last_s > 70.0,
        "the last episode ended at {last_s} s:\n{text}"
    );
    assert!(
        csv_a == csv_b,
        "episodes.csv differs between two runs of the same seed:\n{text}\n---\n{}",
        String::from_utf8_lossy(&csv_b)
    );
    assert!(
        eval_a["rates"].is_object() || eval_a["rates"].is_array(),
        "{eval_a}"
    );
    assert_eq!(eval_a["rates"], eval_b["rates"], "{eval_a}\n{eval_b}");
    assert_eq!(eval_a, eval_b);
}
