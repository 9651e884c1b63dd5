//! `rft node NAME --launch FILE`: the nodes of one launch file in separate processes over zenoh.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, wait_for};
use rft_msgs::JointState;
use rft_nodes::bus::zenoh::{ZenohConfig, ZenohTransport};
use rft_nodes::bus::{Bus, QueueConfig};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    // An `rft router` joins the processes, as zenohd or rmw_zenohd would.
    let _router = Killed(
        Command::new(rft)
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
    let bus = Bus::new(Arc::new(hub));
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
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node named `nobody`"), "{err}");
}
