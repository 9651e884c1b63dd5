//! The sim pipeline from zero on small budgets, through the real binary: `rft pipeline` (scripted
//! demos → reward classifiers → Cal-QL pre-training → ground-truth evaluation), then the main
//! job as a user runs it, `rft launch launch/sim_dry_run.toml`: the same stages, then reset-free
//! fine-tuning in the robot's node graph with classifier rewards, and the learner's policy
//! evaluated beside the pre-trained one; `rft eval` on the result; image observations end to
//! end; and bad settings rejected before anything runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::process::Command;

use rft_policies::ReplayBuffer;
use rft_policies::checkpoint;
use rft_policies::replay::FLAG_TERMINATED;
use rft_rewards::{CnnClassifier, SuccessClassifier};
use support::root;

fn rft<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rft"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Small budgets for the pipeline's stages, as `--set` arguments; `prefix` is `""` for
/// `rft pipeline` and `"pipeline."` for a launch file.
fn small(prefix: &str) -> Vec<String> {
    [
        "demos.episodes_per_direction=4",
        "reward.episodes=6",
        "reward.steps=60",
        "reward.candidates=2",
        "pretrain.steps=40",
        "pretrain.hidden=[64, 64]",
        "pretrain.batch_size=64",
        "eval.episodes=2",
        "eval.max_s=3.0",
    ]
    .iter()
    .flat_map(|s| ["--set".to_string(), format!("{prefix}{s}")])
    .collect()
}

/// `rft launch launch/sim_dry_run.toml` into `run` with the pipeline on small budgets and
/// `sets` for the node graph (nodes: 0 robot, 1 safety, 2 commander, 3 policy, 4 reward,
/// 5 episodes, 6 learner, 7 recorder).
fn launch(run: &std::path::Path, sets: &[&str]) -> String {
    let mut args = vec![
        "launch".to_string(),
        root().join("launch/sim_dry_run.toml").display().to_string(),
        "--run-dir".into(),
        run.display().to_string(),
        "--set".into(),
        "duration_s=100000".into(),
    ];
    args.extend(small("pipeline."));
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    let (ok, text) = rft(&args);
    assert!(ok, "rft launch failed:\n{text}");
    text
}

/// The summary's forward rate under `key`: `trials` episodes, the rate and its 95 % Wilson
/// interval those of the counted successes.
fn assert_rate_with_interval(summary: &serde_json::Value, key: &str, trials: usize) {
    let r = &summary[key][0]["rate"];
    assert_eq!(r["trials"], trials, "{key}");
    let s = r["successes"].as_u64().unwrap() as usize;
    let (lo, hi) = rft_autonomy::eval::wilson(s, trials, 1.96);
    let f = |x: &str| r[x].as_f64().unwrap();
    assert!(
        (f("rate") - s as f64 / trials as f64).abs() < 1e-12,
        "{key}: {r}"
    );
    assert!(
        (f("lo") - lo).abs() < 1e-12 && (f("hi") - hi).abs() < 1e-12,
        "{key}: {r}"
    );
}

#[test]
fn the_pipeline_from_zero_produces_valid_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut args = vec![
        "pipeline".to_string(),
        "--out".into(),
        run.display().to_string(),
    ];
    args.extend(small(""));
    let (ok, text) = rft(&args);
    assert!(ok, "rft pipeline failed:\n{text}");
    assert!(text.contains("pre-trained policy: forward"), "{text}");

    // (1) demos: a replay buffer holding both tasks, with MC returns.
    let demos = ReplayBuffer::load(&run.join("demos/demos.safetensors")).unwrap();
    assert!(demos.len() > 50, "{} demo transitions", demos.len());
    // (2) classifiers that load and have a calibrated threshold.
    for d in ["forward", "backward"] {
        let c = CnnClassifier::load(
            &run.join(format!("reward/{d}/reward.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(c.task(), format!("push/{d}"));
        let t = c.threshold();
        assert!(t > 0.0 && t < 1.0, "{d}: τ {t}");
        // Two candidates (seeds 0, 1; the backward ones 500, 501): the kept one is saved, its
        // report is the best-ranked (target precision reached, then recall, then ROC-AUC).
        let read = |f: &str| -> serde_json::Value {
            serde_json::from_str(
                &std::fs::read_to_string(run.join(format!("reward/{d}/{f}"))).unwrap(),
            )
            .unwrap()
        };
        let kept = read("report.json");
        let tried = read("candidates.json");
        let tried = tried.as_array().unwrap();
        let base = if d == "forward" { 0 } else { 500 };
        let seeds: Vec<u64> = tried.iter().map(|c| c["seed"].as_u64().unwrap()).collect();
        assert_eq!(seeds, [base, base + 1]);
        let key = |r: &serde_json::Value| {
            (
                r["target_reached"].as_bool().unwrap(),
                r["val"]["recall"].as_f64().unwrap(),
                r["val"]["roc_auc"].as_f64().unwrap(),
            )
        };
        assert!(
            tried.iter().any(|c| c["report"] == kept),
            "{d}: kept report is no candidate's"
        );
        for c in tried {
            assert!(
                key(&kept) >= key(&c["report"]),
                "{d}: a better candidate was dropped"
            );
        }
        assert_eq!(
            kept["val"]["threshold"].as_f64().unwrap() as f32,
            t,
            "{d}: the saved classifier is not the kept candidate"
        );
    }
    // (3) the pre-trained checkpoint: task-conditioned, 14-D state, 4-D action.
    let pre = checkpoint::load_latest(
        &run.join("pretrain/checkpoints"),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .expect("a pre-training checkpoint");
    assert_eq!(
        (
            pre.agent.cfg.obs_dim,
            pre.agent.cfg.act_dim,
            pre.agent.cfg.num_tasks
        ),
        (14, 4, 2)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    // (4) the pre-trained policy's evaluation, with intervals; nothing was fine-tuned.
    assert_rate_with_interval(&summary, "pretrained_eval", 2);
    assert!(summary["final_eval"].is_null() && summary.get("finetune").is_none());
    let stages: Vec<&str> = summary["stage_wall_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["demos", "reward", "pretrain", "eval"]);
}

#[test]
fn the_launch_fine_tunes_in_the_node_graph_reset_free_and_evaluates_the_learners_policy() {
    // The main job on small budgets: the pipeline's stages, then 400 policy steps of reset-free
    // fine-tuning in the node graph with everything the headline recipe switches on (the arm
    // home between episodes, its posture after an overridden episode, a second look with it
    // home, stall escape, near-edge ends, reset retries, self-imitation, the policy's moving
    // average), then the learner's policy evaluated beside the pre-trained one.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let text = launch(
        &run,
        &[
            "nodes.3.params.max_steps=400",
            "nodes.5.params.schedule={ consecutive = 1, timeout_s = 6.0, stuck_s = 8.0, stuck_distance_m = 0.01, home_s = 8.0, reset_retries = 2, confirm_at_home = true, posture_reset_overridden = 0.5, stall_escape = 1, reach = { min = [0.3, -0.4], max = [0.7, 0.4] }, edge_guard_m = 0.04 }",
            "nodes.6.params.warmup_transitions=100",
            "nodes.6.params.checkpoint_every=200",
            "nodes.6.params.recipe={ utd = 1, offline_ratio = 0.5, publish_every = 20, critic_warmup_rounds = 50, init_alpha = 0.01, promote_successes = true, policy_ema = 0.99 }",
        ],
    );
    assert!(text.contains("forward success: pre-trained"), "{text}");
    // The episode manager's log: the schedule switched tasks, nobody reset the scene, and only
    // a failed reset (backward) ran again, at most reset_retries (2) times in a row; the
    // joints went home with their posture after exactly the episodes the safety filter
    // overrode more than half of.
    let csv = std::fs::read_to_string(run.join("episodes.csv")).unwrap();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert!(rows.len() >= 2, "the schedule must switch tasks:\n{csv}");
    assert!(
        text.contains(&format!(
            "fine-tuning (node graph): {} episodes",
            rows.len()
        )),
        "{text}"
    );
    assert!(rows.iter().all(|r| r[col("human_resets")] == "0"), "{csv}");
    let (dir, why) = (col("direction"), col("reason"));
    let won = |r: &Vec<String>| ["success", "success_at_home"].contains(&r[why].as_str());
    for r in &rows {
        assert!(
            [
                "success",
                "success_at_home",
                "timeout",
                "stuck",
                "near_edge"
            ]
            .contains(&r[why].as_str()),
            "{csv}"
        );
        let share: f64 = r[col("overridden")].parse().unwrap();
        assert_eq!(r[col("posture_home")] == "1", share > 0.5, "{csv}");
    }
    let mut same = 0;
    for w in rows.windows(2) {
        if w[0][dir] == w[1][dir] {
            assert_eq!(w[0][dir], "backward", "{csv}");
            assert!(!won(&w[0]), "{csv}");
            same += 1;
            assert!(same <= 2, "{csv}");
        } else {
            same = 0;
        }
    }
    // The learner's checkpoint: the rewarded transitions of the run (at most one per step),
    // rewards only from the classifier (1 on the terminal step of a success, else 0), both
    // tasks, and new policy versions published.
    let cpu = candle_core::Device::Cpu;
    let ft = checkpoint::load_latest(&run.join("learner/checkpoints"), None, &cpu)
        .unwrap()
        .expect("a learner checkpoint");
    let replay = ft.replay.expect("the replay buffer is checkpointed");
    assert!(
        (100..=400).contains(&replay.len()),
        "{} transitions",
        replay.len()
    );
    let mut tasks = [0usize; 2];
    for row in 0..replay.len() {
        let (r, task) = replay.reward_and_task(row);
        let terminal = replay.flags(row) & FLAG_TERMINATED != 0;
        assert_eq!(r, if terminal { 1.0 } else { 0.0 }, "row {row}");
        tasks[usize::from(task)] += 1;
    }
    assert!(tasks[0] > 0 && tasks[1] > 0, "{tasks:?}");
    assert!(ft.meta.policy_version > 1, "no new policy was published");
    // Before and after, with intervals; the fine-tuned policy is the learner's.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary["finetuned"]
            .as_str()
            .unwrap()
            .ends_with("learner/checkpoints"),
        "{summary}"
    );
    // Both evaluations, each rate with its 95 % Wilson interval.
    for k in ["pretrained_eval", "final_eval"] {
        assert_rate_with_interval(&summary, k, 2);
    }
    // `rft eval` scores the learner's policy.
    let (ok, text) = rft(&[
        "eval",
        "--checkpoint",
        run.join("learner/checkpoints").to_str().unwrap(),
        "--episodes",
        "2",
        "--max-s",
        "2",
        "--direction",
        "forward",
        "--episodes-csv",
        tmp.path().join("eval.csv").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("push forward: success") && text.contains("/2, 95% CI"),
        "{text}"
    );
    // Every episode in the CSV, its outcome matching the printed rate.
    let csv = std::fs::read_to_string(tmp.path().join("eval.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert_eq!(
        (rows[0][0], rows[0][1], rows[1][1]),
        ("forward", "5000000", "5000001"),
        "{csv}"
    );
    let wins = rows.iter().filter(|r| r[2] == "true").count();
    assert!(
        text.contains(&format!("({wins}/2, 95% CI")),
        "{text}\n{csv}"
    );
    for r in &rows {
        let f = |i: usize| r[i].parse::<f64>().unwrap();
        // time ≤ 2 s; closest approach ≤ final distance; moved = |final − start|.
        assert!(f(3) <= 2.0 + 1e-9 && f(10) <= f(9) + 1e-4, "{csv}");
        assert!(
            (f(8) - (f(6) - f(4)).hypot(f(7) - f(5))).abs() < 2e-4,
            "{csv}"
        );
    }
    if wins < 2 {
        assert!(text.contains("failed:"), "{text}");
    }
}

#[test]
fn image_observations_run_the_launch_end_to_end() {
    // The second configuration: the policy sees a camera (through its CNN encoder) and the
    // tool pose instead of the object's pose, in the pipeline's stages and in the node graph
    // (a second, 32×32 camera on the simulated robot is the policy's). Small budgets: it only
    // has to run end to end and learn from the frames.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    launch(
        &run,
        &[
            "pipeline.plant.observation=\"image\"",
            "pipeline.plant.policy_image_size=32",
            "pipeline.pretrain.algorithm=\"bc\"",
            "pipeline.pretrain.steps=10",
            "pipeline.pretrain.batch_size=16",
            "pipeline.eval.episodes=1",
            "nodes.0.params.cameras=[{ name = \"camera\", width = 128, height = 128, rate_hz = 10, eye = [1.45, 0.4, 0.85], target = [0.36, 0.0, 0.15] }, { name = \"policy_camera\", width = 32, height = 32, rate_hz = 10, depth = false }]",
            "nodes.3.params.max_steps=120",
            "nodes.6.params.warmup_transitions=20",
            "nodes.6.params.checkpoint_every=0",
            "nodes.6.params.recipe={ publish_every = 10, critic_warmup_rounds = 0 }",
        ],
    );
    let demos = ReplayBuffer::load(&run.join("demos/demos.safetensors")).unwrap();
    assert_eq!(demos.obs_dim, 6, "proprioception only: no object pose");
    let shape = demos.image.expect("the demos hold the policy's images");
    assert_eq!((shape.channels, shape.height, shape.width), (3, 32, 32));
    let ft = checkpoint::load_latest(
        &run.join("learner/checkpoints"),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .expect("a learner checkpoint");
    let enc = ft.agent.cfg.encoder.clone().expect("an image encoder");
    assert_eq!((enc.height, enc.width), (32, 32));
    let replay = ft.replay.unwrap();
    assert_eq!(replay.image, Some(shape));
    assert!(replay.len() >= 20, "{} transitions", replay.len());
    assert!(ft.agent.steps > 0, "the learner trained on images");
    // `rft eval` recognises an image policy and renders its observations.
    let (ok, text) = rft(&[
        "eval",
        "--checkpoint",
        run.join("learner/checkpoints").to_str().unwrap(),
        "--episodes",
        "1",
        "--max-s",
        "1",
        "--direction",
        "backward",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("push backward: success"), "{text}");
}

#[test]
fn bad_pipeline_settings_are_rejected_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (set, want) in [
        ("finetune.steps=100", "unknown field `finetune`"),
        ("pretrain.algorithm=\"ppo\"", "pretrain.algorithm"),
        ("stages=[\"finetune\"]", "unknown variant `finetune`"),
        ("stages=[\"pretrain\"]", "stages"),
        (
            "reward.forward=\"/nonexistent/reward.safetensors\"",
            "reward.forward",
        ),
        ("plant.control_hz=-1", "plant.control_hz"),
        ("reward.home_s=-1.0", "reward.home_s"),
        ("reward.candidates=0", "reward.candidates"),
    ] {
        let (ok, text) = rft(&["pipeline", "--out", out.to_str().unwrap(), "--set", set]);
        assert!(!ok, "{set} was accepted");
        assert!(text.contains(want), "{set}: {text}");
        assert!(
            !out.join("demos").exists(),
            "{set}: work started before the check"
        );
    }
    let (ok, text) = rft(&["eval", "--checkpoint", tmp.path().to_str().unwrap()]);
    assert!(!ok && text.contains("LATEST"), "{text}");
}
