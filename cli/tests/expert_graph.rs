//! Demonstrations through the robot's node graph, scored by trained classifiers.
//!
//! `rft pipeline` trains the two success classifiers (small budget) on rendered scripted demos.
//! Then the node graph runs on the lockstep executor: the simulated robot, the safety filter,
//! the reward node with those classifiers, the episode manager, the scripted expert driving on
//! `/rft/teleop` as a person would, a policy runner with no policy (it records the steps the
//! expert drove) and the recorder. The schedule must advance on the classifier's success only
//! when the cube really is in the goal (ground truth from the simulator's object pose, read
//! here and nowhere in the loop), and with nobody driving it must never call a success. The
//! recording must read back through the dataset loader as demonstrations.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use rft_msgs::{EpisodePhase, PoseStamped};
use rft_rewards::SuccessClassifier;
use rft_runtime::app;
use rft_runtime::bus::{QueueConfig, Subscription};
use rft_runtime::launch;
use rft_sim::{Direction, TaskKind};

const RFT: &str = env!("CARGO_BIN_EXE_rft");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Classifiers for push forward and backward, trained by `rft pipeline` on a small budget.
fn classifiers(dir: &Path) -> [PathBuf; 2] {
    let out = Command::new(RFT)
        .args(["pipeline", "--out"])
        .arg(dir)
        .args([
            "--set",
            "stages=[\"reward\"]",
            "--set",
            "reward.episodes=16",
            "--set",
            "reward.steps=300",
            "--set",
            "reward.candidates=1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rft pipeline (reward stage) failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ["forward", "backward"].map(|d| dir.join(format!("reward/{d}/reward.safetensors")))
}

fn launch_text(clf: &[PathBuf; 2], duration_s: f64, expert: bool) -> String {
    format!(
        r#"
name = "expert_graph"
duration_s = {duration_s}
[clock]
kind = "sim"
executor = "lockstep"
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
urdf = "../sim/assets/panda.urdf"
task = "push"
seed = 3
realtime_factor = 0.0
lockstep_timeout_ms = 0
cameras = [{{ name = "camera", width = 128, height = 128, rate_hz = 10, mount = "scene", eye = [1.45, 0.4, 0.85], target = [0.36, 0.0, 0.15] }}]
[[nodes]]
name = "safety"
kind = "safety_filter"
[nodes.params]
urdf = "../sim/assets/panda.urdf"
joint_state_rate_hz = 100
workspace_min = [0.2, -0.5, 0.01]
workspace_max = [0.8, 0.5, 0.8]
max_linear_m_s = 0.25
stale_command_ms = 200
[[nodes]]
name = "reward"
kind = "reward"
rate_hz = 10
[nodes.params]
consecutive = 3
classifiers = [{{ kind = "cnn", weights = "{f}" }}, {{ kind = "cnn", weights = "{b}" }}]
[[nodes]]
name = "episodes"
kind = "episode_manager"
rate_hz = 10
[nodes.params]
schedule = {{ consecutive = 1, timeout_s = 25.0, stuck_s = 100.0, reset_retries = 0 }}
[[nodes]]
name = "expert"
kind = "scripted_expert"
rate_hz = 10
enabled = {expert}
[[nodes]]
name = "runner"
kind = "policy_runner"
rate_hz = 10
[[nodes]]
name = "recorder"
kind = "recorder"
params = {{ topics = ["/rft/transition", "/rft/reward", "/rft/phase"] }}
"#,
        f = clf[0].display(),
        b = clf[1].display(),
    )
}

struct Run {
    phases: Vec<EpisodePhase>,
    rewards: Vec<rft_msgs::Reward>,
    /// The simulator's ground-truth success: (metric name, stamp ns) → success.
    truth: std::collections::BTreeMap<(String, i64), bool>,
    /// The reward node's score of its classifier at shutdown (`reward/<dir>/<tp|fp|tn|fn>`).
    confusion: std::collections::BTreeMap<String, f64>,
    poses: Vec<PoseStamped>,
    mcap: PathBuf,
    _runs: tempfile::TempDir,
}

fn run(clf: &[PathBuf; 2], duration_s: f64, expert: bool) -> Run {
    run_with(clf, duration_s, expert, &[])
}

fn run_with(clf: &[PathBuf; 2], duration_s: f64, expert: bool, sets: &[String]) -> Run {
    let path = root().join("launch/expert_graph.toml");
    let l = launch::parse(
        &rft_nodes::registry(),
        &path,
        &launch_text(clf, duration_s, expert),
        sets,
    )
    .unwrap();
    let runs = tempfile::tempdir().unwrap();
    let prepared = app::prepare_in(&l, None, Some(runs.path().to_path_buf())).unwrap();
    let dir = prepared.run_dir.clone();
    let test = prepared.bus.simple_node("observer").unwrap();
    let q = QueueConfig::drop_oldest(1_000_000);
    let phases: Subscription<EpisodePhase> = test.subscribe("/rft/phase", q).unwrap();
    let poses: Subscription<PoseStamped> = test.subscribe("/rft/object_pose", q).unwrap();
    let rewards: Subscription<rft_msgs::Reward> = test.subscribe("/rft/reward", q).unwrap();
    let metrics: Subscription<rft_msgs::Metric> = test.subscribe("/rft/metrics", q).unwrap();
    let report = app::run(prepared, |_| {}).unwrap();
    for n in &report.nodes {
        assert!(n.error.is_none(), "{}: {:?}", n.name, n.error);
    }
    let metrics = metrics.drain();
    Run {
        phases: phases.drain().iter().map(|p| (**p).clone()).collect(),
        rewards: rewards.drain().iter().map(|p| (**p).clone()).collect(),
        truth: metrics
            .iter()
            .filter(|m| m.name.ends_with("/success"))
            .map(|m| ((m.name.clone(), m.header.stamp.as_nanos()), m.value > 0.5))
            .collect(),
        confusion: metrics
            .iter()
            .filter(|m| m.name.starts_with("reward/"))
            .map(|m| (m.name.clone(), m.value))
            .collect(),
        poses: poses.drain().iter().map(|p| (**p).clone()).collect(),
        mcap: dir.join("events.mcap"),
        _runs: runs,
    }
}

/// The episodes' ends: (stamp ns, direction of the episode that ended, reason).
fn ends(phases: &[EpisodePhase]) -> Vec<(i64, Direction, String)> {
    let mut out = Vec::new();
    for w in phases.windows(2) {
        if w[1].episode_id != w[0].episode_id {
            let dir = if w[0].task_id == 0 {
                Direction::Forward
            } else {
                Direction::Backward
            };
            out.push((w[1].header.stamp.as_nanos(), dir, w[1].reason.clone()));
        }
    }
    out
}

/// Ground truth at `t`: the simulator's object pose there, judged for `dir`.
fn truly_done(poses: &[PoseStamped], t: i64, dir: Direction) -> bool {
    let p = poses
        .iter()
        .min_by_key(|p| (p.header.stamp.as_nanos() - t).abs())
        .unwrap();
    assert!(
        (p.header.stamp.as_nanos() - t).abs() < 50_000_000,
        "no object pose near {t}"
    );
    let pose = nalgebra::Isometry3::from_parts(
        nalgebra::Translation3::new(p.pose.position.x, p.pose.position.y, p.pose.position.z),
        nalgebra::UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(
            p.pose.orientation.w,
            p.pose.orientation.x,
            p.pose.orientation.y,
            p.pose.orientation.z,
        )),
    );
    let half = rft_sim::SimConfig::default().cube_size_m / 2.0;
    rft_sim::task::evaluate(TaskKind::Push, dir, &pose, half, 0.0, false).success
}

#[test]
fn trained_classifiers_advance_the_schedule_only_on_real_success() {
    let tmp = tempfile::tempdir().unwrap();
    let clf = classifiers(&tmp.path().join("artifacts"));

    // The expert drives: forward and then backward succeed, each ended by the classifier, each
    // with the cube really in that direction's goal.
    let driven = run(&clf, 40.0, true);
    let e = ends(&driven.phases);
    for (t, dir, why) in &e {
        eprintln!(
            "episode end at {:.1} s: {dir:?} {why}, in the goal: {}",
            *t as f64 * 1e-9,
            truly_done(&driven.poses, *t, *dir)
        );
    }
    let successes: Vec<_> = e.iter().filter(|x| x.2 == "success").collect();
    assert!(
        successes.iter().any(|x| x.1 == Direction::Forward)
            && successes.iter().any(|x| x.1 == Direction::Backward),
        "the classifiers must end a forward and a backward episode: {e:?}"
    );
    // The episode manager's log says the same, row by row.
    let csv = std::fs::read_to_string(driven.mcap.with_file_name("episodes.csv")).unwrap();
    let rows: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].to_string(), f[3].to_string())
        })
        .collect();
    let want: Vec<(String, String)> = e
        .iter()
        .map(|(_, d, r)| (d.name().to_string(), r.clone()))
        .collect();
    assert_eq!(rows, want, "{csv}");
    for (t, dir, _) in &successes {
        assert!(
            truly_done(&driven.poses, *t, *dir),
            "the classifier ended a {dir:?} episode at {t} ns with the cube outside the goal"
        );
    }
    // The reward node scored its classifiers against the simulator's ground truth, frame by
    // frame: the counts it published are those of its answers (p ≥ τ) and the truth at each
    // frame's stamp.
    let tau = clf.clone().map(|p| {
        rft_rewards::CnnClassifier::load(&p, &candle_core::Device::Cpu)
            .unwrap()
            .threshold()
    });
    let mut want = std::collections::BTreeMap::new();
    for r in &driven.rewards {
        let dir = if r.task_id == 0 {
            "forward"
        } else {
            "backward"
        };
        let Some(truth) = driven
            .truth
            .get(&(format!("sim/push/{dir}/success"), r.header.stamp.as_nanos()))
        else {
            continue;
        };
        let said = r.success_prob >= tau[usize::from(r.task_id)];
        let what = match (said, *truth) {
            (true, true) => "tp",
            (true, false) => "fp",
            (false, false) => "tn",
            (false, true) => "fn",
        };
        *want.entry(format!("reward/{dir}/{what}")).or_insert(0.0) += 1.0;
    }
    assert!(want.values().sum::<f64>() > 300.0, "{want:?}");
    for (k, v) in &driven.confusion {
        assert_eq!(want.get(k).copied().unwrap_or(0.0), *v, "{k}: {want:?}");
    }
    for k in want.keys() {
        assert!(driven.confusion.contains_key(k), "{k} not published");
    }
    // The recording reads back as demonstrations: the expert's steps, flagged as
    // interventions, rewarded by the classifier, at least one ending in success.
    let (episodes, stats) =
        rft_policies::dataset::episodes_from_mcap(&driven.mcap, 150_000_000).unwrap();
    assert_eq!(stats.malformed, 0);
    assert!(
        stats.transitions > 100 && stats.unrewarded * 10 < stats.transitions,
        "{stats:?}"
    );
    assert!(episodes.iter().all(|e| e.interventions.iter().all(|i| *i)));
    assert!(
        episodes.iter().any(|e| e.terminated && e.task_id == 0),
        "no forward demonstration ended in success"
    );
    assert!(
        episodes
            .iter()
            .all(|e| e.actions.iter().flatten().all(|a| a.abs() <= 1.0))
    );

    // Nobody drives: the cube stays where it is, the classifier never calls a success and the
    // forward episodes end on the timeout.
    let idle = run(&clf, 30.0, false);
    let e = ends(&idle.phases);
    assert!(!e.is_empty(), "the timeout must end the idle episode");
    assert!(
        e.iter().all(|x| x.2 != "success"),
        "a success with nobody driving: {e:?}"
    );
    let last = idle.poses.last().unwrap().header.stamp.as_nanos();
    assert!(!truly_done(&idle.poses, last, Direction::Forward));
}

#[test]
fn ground_truth_rewards_are_the_simulators_answer_frame_by_frame() {
    // The ablation (`classifiers = [{ kind = "ground_truth" }]`): no classifier is loaded
    // (the weights named in the launch file do not exist), each frame's success probability is
    // the simulator's ground truth for the episode's direction at the frame's stamp, and the
    // schedule advances on it: with the expert driving, forward and backward episodes end in
    // success, each with the cube really in the goal (and at rest: the simulator's success).
    let missing = PathBuf::from("/nonexistent/reward.safetensors");
    let driven = run_with(
        &[missing.clone(), missing],
        40.0,
        true,
        &["nodes.2.params.classifiers=[{ kind = \"ground_truth\" }]".to_string()],
    );
    assert!(
        driven.rewards.len() > 300,
        "{} rewards",
        driven.rewards.len()
    );
    let (mut yes, mut no) = (0, 0);
    for r in &driven.rewards {
        assert_eq!(r.source, "ground_truth:push", "{r:?}");
        assert!(r.valid, "{r:?}");
        let dir = if r.task_id == 0 {
            "forward"
        } else {
            "backward"
        };
        let truth = driven.truth[&(format!("sim/push/{dir}/success"), r.header.stamp.as_nanos())];
        assert_eq!(r.success_prob, if truth { 1.0 } else { 0.0 }, "{r:?}");
        if truth {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 0 && no > 0, "{yes} true and {no} false frames");
    let e = ends(&driven.phases);
    let successes: Vec<_> = e.iter().filter(|x| x.2 == "success").collect();
    assert!(
        successes.iter().any(|x| x.1 == Direction::Forward)
            && successes.iter().any(|x| x.1 == Direction::Backward),
        "{e:?}"
    );
    for (t, dir, _) in &successes {
        assert!(truly_done(&driven.poses, *t, *dir), "{dir:?} at {t} ns");
    }
}

fn eval_launch(duration_s: f64, expert: bool, episodes: usize, max_s: f64) -> String {
    format!(
        r#"
name = "evaluator_graph"
duration_s = {duration_s}
[clock]
kind = "sim"
executor = "lockstep"
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
urdf = "../sim/assets/panda.urdf"
realtime_factor = 0.0
lockstep_timeout_ms = 0
cameras = []
[[nodes]]
name = "safety"
kind = "safety_filter"
[nodes.params]
urdf = "../sim/assets/panda.urdf"
joint_state_rate_hz = 100
workspace_min = [0.2, -0.5, 0.01]
workspace_max = [0.8, 0.5, 0.8]
max_linear_m_s = 0.25
stale_command_ms = 200
[[nodes]]
name = "expert"
kind = "scripted_expert"
enabled = {expert}
params = {{ output = "action" }}
[[nodes]]
name = "eval"
kind = "evaluator"
params = {{ episodes = {episodes}, max_s = {max_s}, seed = 7, settle_s = 0.0 }}
"#
    )
}

#[test]
fn the_evaluator_scores_episodes_from_reset_scenes_by_ground_truth() {
    use rft_msgs::SceneReset;
    // The scripted expert acts in the policy's place: every episode from a reset scene
    // succeeds, by the simulator's ground truth, and the evaluator ends the launch itself
    // long before `duration_s`.
    let run_eval = |expert: bool, episodes: usize, max_s: f64| {
        let path = root().join("launch/evaluator_graph.toml");
        let l = launch::parse(
            &rft_nodes::registry(),
            &path,
            &eval_launch(1000.0, expert, episodes, max_s),
            &[],
        )
        .unwrap();
        let runs = tempfile::tempdir().unwrap();
        let prepared = app::prepare_in(&l, None, Some(runs.path().to_path_buf())).unwrap();
        let dir = prepared.run_dir.clone();
        let test = prepared.bus.simple_node("observer").unwrap();
        let q = QueueConfig::drop_oldest(1_000_000);
        let resets: Subscription<SceneReset> = test.subscribe("/rft/sim/reset", q).unwrap();
        let poses: Subscription<PoseStamped> = test.subscribe("/rft/object_pose", q).unwrap();
        let report = app::run(prepared, |_| {}).unwrap();
        for n in &report.nodes {
            assert!(n.error.is_none(), "{}: {:?}", n.name, n.error);
        }
        assert!(
            report.reason.contains("evaluation done"),
            "{}",
            report.reason
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
        let resets: Vec<SceneReset> = resets.drain().iter().map(|r| (**r).clone()).collect();
        let poses: Vec<PoseStamped> = poses.drain().iter().map(|p| (**p).clone()).collect();
        (json, resets, poses, runs)
    };

    let (json, resets, poses, _keep) = run_eval(true, 2, 40.0);
    let eps = json["episodes"].as_array().unwrap();
    let plan: Vec<(String, u64)> = eps
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap().to_string(),
                e["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        plan,
        [
            ("forward".to_string(), 7),
            ("forward".into(), 8),
            ("backward".into(), 7),
            ("backward".into(), 8)
        ]
    );
    // One scene reset per episode, for its seed and direction; right after each, the cube is in
    // the direction's start region (the simulator did reset).
    assert_eq!(
        resets
            .iter()
            .map(|r| (r.seed, r.task_id))
            .collect::<Vec<_>>(),
        [(7, 0), (8, 0), (7, 1), (8, 1)]
    );
    for r in &resets {
        let t = r.header.stamp.as_nanos();
        let p = poses
            .iter()
            .find(|p| p.header.stamp.as_nanos() > t)
            .expect("a pose after the reset");
        let dir = if r.task_id == 0 {
            Direction::Forward
        } else {
            Direction::Backward
        };
        let start = TaskKind::Push.regions(dir).0;
        let xyz = nalgebra::Vector3::new(p.pose.position.x, p.pose.position.y, p.pose.position.z);
        assert!(
            start.contains_xy(&xyz),
            "after reset {r:?} the cube is at {xyz:?}"
        );
    }
    assert!(
        eps.iter().all(|e| e["success"] == true),
        "the expert failed an evaluation episode: {eps:?}"
    );
    // Each success is the episode's own: pushing the cube across takes the expert seconds (the
    // previous episode's success, or the scene before its reset, must not count).
    assert!(
        eps.iter().all(|e| e["time_s"].as_f64().unwrap() > 3.0),
        "{eps:?}"
    );
    for (rate, want) in json["rates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["forward", "backward"])
    {
        assert_eq!(rate[0], want);
        assert_eq!(
            (rate[1]["successes"].as_u64(), rate[1]["trials"].as_u64()),
            (Some(2), Some(2))
        );
    }

    // Nobody acts: every episode runs out its time and fails.
    let (json, _, _, _keep) = run_eval(false, 1, 2.0);
    let eps = json["episodes"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    for e in eps {
        assert_eq!(e["success"], false, "{e}");
        let t = e["time_s"].as_f64().unwrap();
        assert!((2.0..2.2).contains(&t), "{e}");
    }
}
