//! Shutdown: Ctrl-C stops every node within 1 s, and the robot gets a final zero command.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

// The test helpers shared with the nodes crate's tests.
#[path = "../../nodes/tests/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{read_mcap, wait_child, wait_for};
use rft_msgs::{Float64MultiArray, JointState, cdr};
use rft_nodes::{JointSine, JointSineParams, KinematicArm, KinematicArmParams};
use rft_runtime::bus::{Bus, QueueConfig, Signal};
use rft_runtime::{Clock, Runtime};

#[test]
fn stopping_the_runtime_sends_a_final_zero_command_in_process() {
    let bus = Bus::inproc();
    let mut rt = Runtime::new(Clock::Wall);
    for name in ["arm", "cmd"] {
        let wake = Arc::new(Signal::default());
        let h = bus.node(name, BTreeMap::new(), wake.clone()).unwrap();
        let period = Duration::from_millis(5);
        if name == "arm" {
            rt.add(
                Box::new(
                    KinematicArm::new(name.into(), KinematicArmParams::default(), period, &h)
                        .unwrap(),
                ),
                wake,
            );
        } else {
            let p = JointSineParams {
                joints: 7,
                amplitude_rad_s: 0.5,
                frequency_hz: 1.0,
                output: Default::default(),
            };
            rt.add(
                Box::new(JointSine::new(name.into(), p, period, &h).unwrap()),
                wake,
            );
        }
    }
    let probe = bus.simple_node("probe").unwrap();
    let cmds = probe
        .subscribe::<Float64MultiArray>("/joint_velocity_cmd", QueueConfig::drop_oldest(100_000))
        .unwrap();
    let states = probe
        .subscribe::<JointState>("/joint_states", QueueConfig::drop_oldest(100_000))
        .unwrap();
    let stop = rt.shutdown_handle();
    let handle = std::thread::spawn(move || rt.run(None).unwrap());
    // Wait until the arm is moving under the commander, then stop.
    wait_for(Duration::from_secs(10), "the arm to move", || {
        states
            .latest()
            .filter(|s| s.velocity.iter().any(|v| v.abs() > 1e-3))
    });
    stop.trigger("test stop");
    let report = handle.join().unwrap();
    // Order and completion, not speed (the stop latency is printed and measured by users, not
    // asserted on a shared machine): the run returned with the reason it was given.
    assert_eq!(report.reason, "test stop", "{report:?}");
    assert!(
        report
            .nodes
            .iter()
            .all(|n| n.error.is_none() && n.steps > 0),
        "{report:?}"
    );
    let last = cmds.drain().pop().expect("commands were published");
    assert_eq!(
        last.data,
        vec![0.0; 7],
        "the last command is the final zero command"
    );
}

#[test]
fn ctrl_c_stops_a_launch_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rft"))
        .current_dir(root)
        .args([
            "launch",
            "launch/sim_dry_run.toml",
            "--set",
            "pipeline.enabled=false",
            // On the wall clock, as on a robot.
            "--set",
            "clock.executor=\"threads\"",
            "--set",
            "nodes.0.params.realtime_factor=1.0",
            // The sinusoidal commander instead of the policy loop (no artifacts needed).
            "--set",
            "nodes.2.enabled=true",
            "--set",
            "nodes.3.enabled=false",
            "--set",
            "nodes.4.enabled=false",
            "--set",
            "nodes.5.enabled=false",
            "--set",
            "nodes.6.enabled=false",
            "--set",
            "duration_s=120",
            "--set",
            "progress_s=0.3",
            "--set",
        ])
        .arg(format!("runs_dir=\"{}\"", dir.path().display()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // A progress line: every node is stepping.
            if line.contains("commander: ") && !line.contains("commander: 0 steps") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the launch is running");
    let run_dir = wait_for(Duration::from_secs(10), "the run directory", || {
        std::fs::read_dir(dir.path())
            .ok()?
            .next()?
            .ok()
            .map(|e| e.path())
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_child(&mut child, Duration::from_secs(10));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("stopped: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("interrupted (Ctrl-C)"), "{line}");
    // The line says how long the nodes took to stop (a number, not asserted: timing is for
    // benchmarks, not for a test on a shared machine).
    let ms: Option<u64> = line
        .rsplit("(in ")
        .next()
        .and_then(|s| s.strip_suffix(" ms)"))
        .and_then(|s| s.parse().ok());
    assert!(ms.is_some(), "{line}");
    // The recording is complete and ends with the final zero command.
    let msgs = read_mcap(&run_dir.join("events.mcap"));
    let last_cmd = msgs
        .iter()
        .rev()
        .find(|(t, _, _)| t == "/joint_velocity_cmd")
        .expect("commands recorded");
    let cmd: Float64MultiArray = cdr::decode(&last_cmd.2).unwrap();
    assert_eq!(cmd.data, vec![0.0; 7]);
    let moving = msgs
        .iter()
        .filter(|(t, _, _)| t == "/joint_velocity_cmd")
        .filter(|(_, _, d)| {
            cdr::decode::<Float64MultiArray>(d)
                .unwrap()
                .data
                .iter()
                .any(|v| *v != 0.0)
        })
        .count();
    assert!(
        moving > 5,
        "the commander was moving the arm before the stop ({moving} commands)"
    );
    let last_state = msgs
        .iter()
        .rev()
        .find(|(t, _, _)| t == "/joint_states")
        .expect("states recorded");
    let js: JointState = cdr::decode(&last_state.2).unwrap();
    assert!(
        js.velocity.len() >= 7 && js.velocity.iter().all(|v| *v == 0.0),
        "the arm reports standing still at the end: {:?}",
        js.velocity
    );
}
