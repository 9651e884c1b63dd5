//! `rft node NAME --launch FILE`: the nodes of one launch file in separate processes over zenoh.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

// The test helpers shared with the nodes crate's tests.
#[path = "../../nodes/tests/common.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, wait_for};
use rft_msgs::{Action, JointState, PolicyUpdate};
use rft_runtime::bus::zenoh::{ZenohConfig, ZenohTransport};
use rft_runtime::bus::{Bus, QueueConfig};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An `rft router` on `port` (it joins the processes, as zenohd or rmw_zenohd would) and a
/// bus connected to it.
fn router(port: u16) -> (Killed, Bus) {
    let r = Killed(
        Command::new(env!("CARGO_BIN_EXE_rft"))
            .args(["router", "--listen", &format!("tcp/127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let hub = wait_for(
        Duration::from_secs(20),
        "the router to accept connections",
        || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            ZenohTransport::open(
                &ZenohConfig {
                    connect: vec![format!("tcp/127.0.0.1:{port}")],
                    ..ZenohConfig::default()
                },
                0,
            )
            .ok()
        },
    );
    (r, Bus::new(Arc::new(hub)))
}

#[test]
fn nodes_of_one_launch_file_run_in_separate_processes() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let launch = dir.path().join("split.toml");
    std::fs::write(
        &launch,
        format!(
            r#"
name = "split"
runs_dir = "{runs}"
[bus]
kind = "zenoh"
[bus.zenoh]
connect = ["tcp/127.0.0.1:{port}"]
[[nodes]]
name = "arm"
kind = "kinematic_arm"
rate_hz = 100
params = {{ command_timeout_ms = 100 }}
[[nodes]]
name = "commander"
kind = "joint_sine"
rate_hz = 50
params = {{ amplitude_rad_s = 0.5 }}
"#,
            runs = dir.path().join("runs").display()
        ),
    )
    .unwrap();
    let rft = env!("CARGO_BIN_EXE_rft");
    let (_router, bus) = router(port);
    let probe = bus.simple_node("probe").unwrap();
    let states = probe
        .subscribe::<JointState>("/joint_states", QueueConfig::latest_only())
        .unwrap();
    let spawn = |name: &str| {
        Killed(
            Command::new(rft)
                .args(["node", name, "--launch", launch.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _arm = spawn("arm");
    // Without the commander the arm reports standing still.
    let still = wait_for(
        Duration::from_secs(20),
        "joint states from the arm process",
        || states.latest(),
    );
    assert!(still.velocity.iter().all(|v| *v == 0.0), "{still:?}");
    let commander = spawn("commander");
    // The commander's velocity commands cross to the arm's process: the arm moves.
    wait_for(Duration::from_secs(20), "the arm to move", || {
        states
            .latest()
            .filter(|s| s.velocity.iter().any(|v| v.abs() > 1e-3))
    });
    // Stop the commander: after the command timeout the arm stands still again.
    drop(commander);
    wait_for(
        Duration::from_secs(20),
        "the arm to stop after commands go stale",
        || {
            states
                .latest()
                .filter(|s| s.velocity.iter().all(|v| *v == 0.0))
        },
    );
    // Each process wrote its own run directory with the resolved launch file.
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.to_string_lossy().contains("split-")));
}

/// The autonomous loop split over processes on the wall clock: robot, safety filter, policy
/// runner, reward node, episode manager and learner each in their own `rft node`, sharing one
/// run directory. New weights cross from the learner's process to the runner's; killing the
/// learner leaves the runner acting on the last weights it received.
#[test]
fn the_loop_runs_one_node_per_process_and_survives_losing_the_learner() {
    let a = common::artifacts();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let urdf = concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/assets/panda.urdf");
    let launch = dir.path().join("loop.toml");
    std::fs::write(
        &launch,
        format!(
            r#"
name = "loop"
runs_dir = "{runs}"
[bus]
kind = "zenoh"
[bus.zenoh]
connect = ["tcp/127.0.0.1:{port}"]
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
urdf = "{urdf}"
cameras = [{{ name = "camera", width = 64, height = 64, rate_hz = 10 }}]
[[nodes]]
name = "safety"
kind = "safety_filter"
[nodes.params]
urdf = "{urdf}"
joint_state_rate_hz = 100
workspace_min = [0.2, -0.5, 0.01]
workspace_max = [0.8, 0.5, 0.8]
[[nodes]]
name = "policy"
kind = "policy_runner"
rate_hz = 10
[nodes.params]
urdf = "{urdf}"
policy = "{{run_dir}}/pretrain"
[[nodes]]
name = "reward"
kind = "reward"
[nodes.params]
classifiers = [{{ kind = "cnn", weights = "{clf}", threshold = 0.0 }}]
[[nodes]]
name = "episodes"
kind = "episode_manager"
[nodes.params]
urdf = "{urdf}"
[[nodes]]
name = "learner"
kind = "learner"
[nodes.params]
init = "{{run_dir}}/pretrain"
warmup_transitions = 5
recipe = {{ publish_every = 3, offline_ratio = 0.0 }}
"#,
            runs = dir.path().join("runs").display(),
            clf = a.classifier.display(),
        ),
    )
    .unwrap();
    // The shared run directory holds the pre-trained policy, as `rft pipeline` leaves it.
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    copy_dir(&a.init, &run_dir.join("pretrain"));
    let rft = env!("CARGO_BIN_EXE_rft");
    let (_router, bus) = router(port);
    let probe = bus.simple_node("probe").unwrap();
    let q = QueueConfig::drop_oldest(10_000);
    let actions = probe.subscribe::<Action>("/rft/action", q).unwrap();
    let policies = probe.subscribe::<PolicyUpdate>("/rft/policy", q).unwrap();
    let spawn = |name: &str| {
        Killed(
            Command::new(rft)
                .args([
                    "node",
                    name,
                    "--launch",
                    launch.to_str().unwrap(),
                    "--run-dir",
                    run_dir.to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _procs: Vec<Killed> = ["robot", "safety", "policy", "reward", "episodes"]
        .iter()
        .map(|n| spawn(n))
        .collect();
    let learner = spawn("learner");
    // The learner's weights reach the runner in its own process.
    let mut last_published = 0;
    let acted_on = wait_for(
        Duration::from_secs(60),
        "actions on weights from the learner's process",
        || {
            if let Some(u) = policies.drain().last() {
                last_published = u.version;
            }
            actions
                .drain()
                .into_iter()
                .map(|x| x.policy_version)
                .max()
                .filter(|v| *v >= 3)
        },
    );
    // Kill the learner (no goodbye); the runner keeps acting on the last version it has.
    drop(learner);
    // Updates already on their way may still land: wait until the runner's actions settle on
    // one version (20 in a row), taking every update that arrives meanwhile into account.
    let mut last = last_published;
    let mut later: Vec<u64> = Vec::new();
    let settled = wait_for(
        Duration::from_secs(30),
        "20 actions in a row on one policy version after the learner died",
        || {
            if let Some(u) = policies.drain().last() {
                last = last.max(u.version);
            }
            later.extend(actions.drain().iter().map(|x| x.policy_version));
            let v = *later.last()?;
            let run = later.iter().rev().take_while(|x| **x == v).count();
            (run >= 20).then_some(v)
        },
    );
    // The runner keeps weights it was sent, never older than the ones it already acted on.
    if let Some(u) = policies.drain().last() {
        last = last.max(u.version);
    }
    assert!(
        settled >= acted_on && settled <= last,
        "{later:?}: acted on {acted_on} before, last published {last}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn rft_node_refuses_an_in_process_bus_and_unknown_names() {
    let rft = env!("CARGO_BIN_EXE_rft");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(rft)
        .current_dir(root)
        .args(["node", "robot", "--launch", "launch/sim_dry_run.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("launch/sim_dry_run.toml: bus.kind:") && err.contains("bus.kind=zenoh"),
        "{err}"
    );
    let out = Command::new(rft)
        .current_dir(root)
        .args([
            "node",
            "nobody",
            "--launch",
            "launch/sim_dry_run.toml",
            "--set",
            "bus.kind=zenoh",
            "--set",
            "clock.executor=\"threads\"",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node named `nobody`"), "{err}");
}
