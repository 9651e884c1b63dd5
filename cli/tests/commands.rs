//! Every command a user types that no other test runs, once through the real binary on a tiny
//! budget, each checked for what it must produce: `rft check`, `rft sim render | experts |
//! frames`, `rft train-reward`, `rft train --algo sac`, and over zenoh on loopback `rft router`,
//! `rft pong` / `rft ping`, `rft pub` / `rft hz`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

// The test helpers shared with the nodes crate's tests.
#[path = "../../nodes/tests/common.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::free_port;

const RFT: &str = env!("CARGO_BIN_EXE_rft");

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn rft(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RFT)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, out, err) = rft(args);
    assert!(success, "rft {args:?} failed:\n{out}\n{err}");
    out
}

/// A background `rft` process, killed when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Bg {
    Bg(Command::new(RFT)
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap())
}

#[test]
fn check_validates_the_shipped_launch_file_and_names_a_bad_key() {
    let out = ok(&["check", "launch/sim_dry_run.toml"]);
    // Eight entries, the sinusoidal commander disabled.
    assert!(
        out.contains("launch/sim_dry_run.toml: ok (7 nodes)"),
        "{out}"
    );
    let (success, _, err) = rft(&[
        "check",
        "launch/sim_dry_run.toml",
        "--set",
        "nodes.1.params.workspace_min=[0.2, -0.5, 0.9]",
    ]);
    assert!(!success, "{err}");
    assert!(err.contains("nodes[1].params.workspace_min"), "{err}");
}

#[test]
fn sim_render_experts_frames_and_train_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_string_lossy().into_owned();
    // A PNG of the size asked for.
    let png = d("frame.png");
    ok(&[
        "sim", "render", "--width", "64", "--height", "48", "--out", &png,
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (64, 48), "IHDR width and height");
    // The scripted experts succeed on a few episodes and say so.
    let out = ok(&[
        "sim",
        "experts",
        "--task",
        "push",
        "--direction",
        "forward",
        "--episodes",
        "3",
    ]);
    assert!(out.contains("push forward: 3/3 succeeded"), "{out}");
    // Labelled frames, then a classifier trained on them, with its report.
    let frames = d("frames.safetensors");
    let out = ok(&[
        "sim",
        "frames",
        "--episodes",
        "6",
        "--width",
        "32",
        "--height",
        "32",
        "--out",
        &frames,
    ]);
    assert!(out.contains("wrote "), "{out}");
    let dir = d("reward");
    let out = ok(&[
        "train-reward",
        "--data",
        &frames,
        "--steps",
        "20",
        "--out",
        &dir,
    ]);
    assert!(out.contains("held-out episodes"), "{out}");
    assert!(Path::new(&dir).join("reward.safetensors").is_file());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&dir).join("report.json")).unwrap(),
    )
    .unwrap();
    assert!(report.is_object(), "{report}");
}

#[test]
fn train_sac_on_pendulum_writes_metrics_and_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("sac");
    ok(&[
        "train",
        "--env",
        "pendulum",
        "--algo",
        "sac",
        "--steps",
        "300",
        "--hidden",
        "32,32",
        "--batch-size",
        "32",
        "--eval-every",
        "300",
        "--eval-episodes",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(out_dir.join("metrics.csv")).unwrap();
    assert!(csv.lines().count() >= 2, "{csv}");
    assert!(
        rft_policies::checkpoint::latest(&out_dir.join("checkpoints"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn ping_pong_and_pub_hz_over_a_router_on_loopback() {
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let _router = spawn(&["router", "--listen", &ep, "--duration-s", "60"]);
    // pong echoes (ping's readiness probes too); ping measures 30 round trips, none lost.
    let _pong = spawn(&["pong", "--connect", &ep, "--count", "10000"]);
    let out = ok(&["ping", "--connect", &ep, "--count", "30"]);
    assert!(out.starts_with("30 round trips: p50 "), "{out}");
    // hz measures a stream that `rft pub` sends.
    let _talker = spawn(&[
        "pub",
        "/cmd_test",
        "std_msgs/msg/Float64MultiArray",
        r#"{"layout": {"dim": [], "data_offset": 0}, "data": [1.0]}"#,
        "--connect",
        &ep,
        "--rate-hz",
        "50",
        "--count",
        "1000",
    ]);
    let out = ok(&[
        "hz",
        "/cmd_test",
        "--connect",
        &ep,
        "--window",
        "20",
        "--duration-s",
        "3",
    ]);
    assert!(out.contains("average rate: "), "{out}");
}

#[test]
fn launch_into_a_given_run_directory_and_the_evaluator_ends_the_run() {
    // `rft launch --run-dir D`: the launch as run and every `{run_dir}` output land in D. The
    // evaluation launch with nobody acting (the runner left out): two one-second episodes, both
    // failures, and the evaluator stops the launch long before `duration_s`.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("given");
    let (ok, out, err) = rft(&[
        "launch",
        "launch/eval_graph.toml",
        "--run-dir",
        dir.to_str().unwrap(),
        "--set",
        "nodes.2.enabled=false",
        "--set",
        "nodes.3.params.episodes=1",
        "--set",
        "nodes.3.params.max_s=1.0",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("evaluation done"), "{out}");
    let launch = std::fs::read_to_string(dir.join("launch.toml")).unwrap();
    assert!(launch.contains("max_s = 1.0"), "{launch}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let eps = eval["episodes"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert!(eps.iter().all(|e| e["success"] == false), "{eps:?}");
}
