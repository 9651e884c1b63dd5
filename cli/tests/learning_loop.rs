//! The loop learns: reset-free fine-tuning with classifier rewards, in the robot's node graph,
//! must improve the pre-trained policy, on average over three fine-tuning seeds, on a budget
//! small enough for CI.
//!
//! The default launch file with every budget cut: its `[pipeline]` makes the artifacts (8
//! demos per direction, classifiers from 16 demos and 300 steps, 500 Cal-QL steps on a
//! [128, 128] network, 40 ground-truth evaluation episodes per direction); its node graph (sim
//! robot, safety filter, runner, reward node, episode manager, learner, on the lockstep
//! executor) fine-tunes 1,500 policy steps (the runner's `max_steps`), seeds 0–2 from the same
//! artifacts, so the three differ only in what fine-tuning does; `rft eval` scores each
//! learner's last policy on the pipeline evaluation's scenes. Measured (2 cores): pre-trained
//! 18/80 successes (forward + backward), fine-tuned 29, 30 and 24 (seeds 0–2) with the launch
//! file's schedule (the arm home between episodes, its posture after an overridden one; 31, 34
//! and 32 before it homed). The bound below asks for a mean gain of 5 successes, under the
//! measured 10 and above what evaluation noise on a policy that did not change could give
//! (none: the evaluation scenes are the same).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::path::Path;

use support::{rft, root};

fn sets(args: &mut Vec<String>, sets: &[String]) {
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
}

/// Demos, classifiers, the Cal-QL policy and its ground-truth evaluation; returns its
/// successes (forward + backward, of 80).
fn artifacts(art: &Path) -> u64 {
    let mut args = vec![
        "pipeline".into(),
        root().join("launch/sim_dry_run.toml").display().to_string(),
        "--out".into(),
        art.display().to_string(),
    ];
    let budget: Vec<String> = [
        "stages=[\"demos\", \"reward\", \"pretrain\", \"eval\"]",
        "demos.episodes_per_direction=8",
        "reward.episodes=16",
        "reward.steps=300",
        "reward.candidates=1",
        "pretrain.steps=500",
        "pretrain.hidden=[128, 128]",
        "eval.episodes=40",
    ]
    .map(String::from)
    .to_vec();
    sets(&mut args, &budget);
    rft(&args);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("summary.json")).unwrap()).unwrap();
    s["pretrained_eval"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rate"]["successes"].as_u64().unwrap())
        .sum()
}

/// Fine-tunes in the default launch's node graph from `art` (1,500 policy steps, seed
/// `seed`) and scores the learner's last policy; returns its successes of 80.
fn fine_tune(art: &Path, run: &Path, seed: u64) -> u64 {
    let a = |p: &str| format!("\"{}\"", art.join(p).display());
    let mut args = vec![
        "launch".into(),
        root().join("launch/sim_dry_run.toml").display().to_string(),
        "--run-dir".into(),
        run.display().to_string(),
    ];
    sets(
        &mut args,
        &[
            "pipeline.enabled=false".into(),
            "duration_s=100000".into(),
            format!("nodes.0.params.seed={seed}"),
            format!("nodes.3.params.policy={}", a("pretrain/policy.safetensors")),
            format!("nodes.3.params.seed={seed}"),
            "nodes.3.params.max_steps=1500".into(),
            format!(
                "nodes.4.params.classifiers=[{{ kind = \"cnn\", weights = {} }}, {{ kind = \"cnn\", weights = {} }}]",
                a("reward/forward/reward.safetensors"),
                a("reward/backward/reward.safetensors")
            ),
            format!("nodes.6.params.init={}", a("pretrain/checkpoints")),
            format!("nodes.6.params.demos={}", a("demos/demos.safetensors")),
            "nodes.6.params.warmup_transitions=200".into(),
            "nodes.6.params.recipe.critic_warmup_rounds=200".into(),
            format!("nodes.6.params.seed={seed}"),
            "nodes.7.enabled=false".into(),
        ],
    );
    let log = rft(&args);
    assert!(log.contains("step budget"), "{log}");
    let out = rft(&[
        "eval".into(),
        "--checkpoint".into(),
        run.join("learner/checkpoints").display().to_string(),
        "--episodes".into(),
        "40".into(),
    ]);
    // "push forward: success 42.5% (17/40, ...": the counts in brackets.
    let counts: Vec<u64> = out
        .lines()
        .filter(|l| l.contains("success") && (l.contains("forward") || l.contains("backward")))
        .filter_map(|l| l.split('(').nth(1)?.split('/').next()?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "{out}");
    counts.iter().sum()
}

#[test]
fn fine_tuning_improves_the_pretrained_policy_on_average_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("art");
    let pre = artifacts(&art);
    // Seeds 0 and 1 side by side (one core each), then seed 2.
    let mut tuned: Vec<u64> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..2)
            .map(|seed| {
                let (tmp, art) = (tmp.path(), &art);
                sc.spawn(move || fine_tune(art, &tmp.join(format!("seed{seed}")), seed))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    tuned.push(fine_tune(&art, &tmp.path().join("seed2"), 2));
    let mean = tuned.iter().sum::<u64>() as f64 / tuned.len() as f64;
    eprintln!("successes of 80: pre-trained {pre}, fine-tuned {tuned:?} (mean {mean:.1})");
    assert!(
        mean >= pre as f64 + 5.0,
        "fine-tuning no longer improves the policy: pre-trained {pre}/80, fine-tuned {tuned:?}"
    );
}
