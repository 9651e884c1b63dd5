//! The simulated robot node: it owns simulated time, publishes joint states and cameras at
//! their rates, tracks commands, rejects and counts bad ones, holds on stale commands, and in
//! lockstep applies the command that answers each joint state before stepping physics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rft_msgs::{CameraInfo, Float64MultiArray, Image, JointState, PoseStamped, Time};
use rft_nodes::{SimRobot, SimRobotParams};
use rft_runtime::bus::{Bus, NodeHandle, Publisher, QueueConfig, Signal, Subscription};
use rft_runtime::launch;
use rft_runtime::{Clock, Node, Runtime, Shutdown, SimClock, StepCtx};

fn launch_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/test_sim.toml")
}

fn params(extra: &[&str]) -> Result<SimRobotParams, String> {
    let text = r#"
name = "sim_test"
[clock]
kind = "sim"
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
urdf = "../sim/assets/panda.urdf"
realtime_factor = 0.0
cameras = [{ name = "camera", width = 64, height = 48, rate_hz = 10 },
           { name = "wrist", mount = "wrist", width = 32, height = 32, rate_hz = 5, depth = false }]
"#;
    let sets: Vec<String> = extra
        .iter()
        .map(|l| format!("nodes.0.params.{l}"))
        .collect();
    let l = launch::parse(&rft_nodes::registry(), &launch_path(), text, &sets)
        .map_err(|e| e.to_string())?;
    let Some(p) = l.nodes[0].params::<rft_nodes::SimRobotParams>() else {
        panic!("not a sim robot")
    };
    Ok(p.clone())
}

struct Rig {
    node: SimRobot,
    clock: Clock,
    sim: Arc<SimClock>,
    shutdown: Shutdown,
    _test: NodeHandle,
    vel: Publisher<Float64MultiArray>,
    grip: Publisher<Float64MultiArray>,
    states: Subscription<JointState>,
    color: Subscription<Image>,
    depth: Subscription<Image>,
    info: Subscription<CameraInfo>,
    wrist: Subscription<Image>,
    wrist_depth: Subscription<Image>,
    object: Subscription<PoseStamped>,
}

impl Rig {
    fn new(extra: &[&str]) -> Self {
        let p = params(extra).unwrap();
        let bus = Bus::inproc();
        let h = bus
            .node("robot", BTreeMap::new(), Arc::new(Signal::default()))
            .unwrap();
        let test = bus
            .node("test", BTreeMap::new(), Arc::new(Signal::default()))
            .unwrap();
        let q = QueueConfig::drop_oldest(1000);
        let rig = Self {
            node: SimRobot::new("robot".into(), p, Duration::from_millis(10), &h).unwrap(),
            vel: test.publisher("/joint_velocity_cmd").unwrap(),
            grip: test.publisher("/gripper_cmd").unwrap(),
            states: test.subscribe("/joint_states", q).unwrap(),
            color: test.subscribe("/camera/color/image_raw", q).unwrap(),
            depth: test.subscribe("/camera/depth/image_raw", q).unwrap(),
            info: test.subscribe("/camera/color/camera_info", q).unwrap(),
            wrist: test.subscribe("/wrist/color/image_raw", q).unwrap(),
            wrist_depth: test.subscribe("/wrist/depth/image_raw", q).unwrap(),
            object: test.subscribe("/rft/object_pose", q).unwrap(),
            _test: test,
            sim: Arc::new(SimClock::default()),
            clock: Clock::Wall,
            shutdown: Shutdown::default(),
        };
        Rig {
            clock: Clock::Sim(rig.sim.clone()),
            ..rig
        }
    }

    /// One step of the node at the current simulated time; returns the newest joint state.
    fn step(&mut self) -> JointState {
        let ctx = StepCtx::new(self.clock.now(), &self.clock, &self.shutdown);
        self.node.step(&ctx).unwrap();
        (*self.states.latest().expect("a joint state per step")).clone()
    }
}

#[test]
fn publishes_on_its_own_clock_tracks_commands_and_rejects_bad_ones() {
    let mut r = Rig::new(&["lockstep_timeout_ms=0"]);
    let mut stamps = Vec::new();
    for k in 0..100 {
        let before = r.sim.now_ns();
        let js = r.step();
        stamps.push(js.header.stamp.as_nanos());
        assert_eq!(before, k * 10_000_000);
        assert_eq!(
            r.sim.now_ns(),
            before + 10_000_000,
            "the node moves the clock on"
        );
    }
    assert_eq!(stamps, (0..100).map(|k| k * 10_000_000).collect::<Vec<_>>());
    // Cameras at their own rates on simulated time: 1 s at 10 Hz and 5 Hz.
    let color = r.color.drain();
    assert_eq!(color.len(), 10);
    assert_eq!(r.depth.drain().len(), 10);
    assert_eq!(r.wrist.drain().len(), 5);
    assert!(r.wrist_depth.drain().is_empty(), "depth off for the wrist");
    assert_eq!(
        (color[0].width, color[0].height, color[0].encoding.as_str()),
        (64, 48, "rgb8")
    );
    assert_eq!(color[3].header.stamp.as_nanos(), 300_000_000);
    let info = r.info.drain();
    assert_eq!(info[0].header.frame_id, color[0].header.frame_id);
    assert_eq!(r.object.drain().len(), 10);

    // A command is tracked.
    r.vel
        .publish(Float64MultiArray::from_data(vec![
            0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ]))
        .unwrap();
    let mut js = r.step();
    for _ in 0..10 {
        js = r.step();
    }
    assert!((js.velocity[0] - 0.3).abs() < 1e-9, "{:?}", js.velocity);
    // Wrong length, NaN and a malformed gripper command: rejected, counted, the last good
    // command stays in force.
    r.vel
        .publish(Float64MultiArray::from_data(vec![1.0, 2.0]))
        .unwrap();
    let _ = r.step();
    r.vel
        .publish(Float64MultiArray::from_data(vec![f64::NAN; 7]))
        .unwrap();
    let _ = r.step();
    r.grip
        .publish(Float64MultiArray::from_data(vec![]))
        .unwrap();
    js = r.step();
    assert_eq!(r.node.counts().rejected_commands, 3);
    assert!((js.velocity[0] - 0.3).abs() < 1e-9);
    assert!(js.position.iter().all(|v| v.is_finite()));
    // A gripper command closes the fingers.
    let open = js.position[7];
    r.grip
        .publish(Float64MultiArray::from_data(vec![0.0]))
        .unwrap();
    for _ in 0..10 {
        js = r.step();
    }
    assert!(
        js.position[7] < open - 0.005,
        "{} → {}",
        open,
        js.position[7]
    );
    // No fresh command for longer than command_timeout_ms (200 ms simulated): hold.
    for _ in 0..30 {
        js = r.step();
    }
    assert_eq!(r.node.counts().stale_commands, 1);
    assert_eq!(js.velocity[0], 0.0);
}

#[test]
fn bad_params_are_rejected_with_their_key() {
    for (set, key) in [
        ("urdf=\"/nonexistent.urdf\"", "urdf"),
        ("realtime_factor=-1", "realtime_factor"),
        ("physics_hz=5", "physics_hz"),
        ("cameras.0.width=100000", "cameras[0].width"),
        ("initial_q=[0.0, 0.0]", "initial_q"),
        ("task=\"juggle\"", "task"),
    ] {
        let e = params(&[set]).unwrap_err();
        assert!(e.contains(key), "{set}: {e}");
    }
}

/// Answers every joint state with a command derived from its stamp.
struct Controller {
    states: Subscription<JointState>,
    cmd: Publisher<Float64MultiArray>,
    seen: Arc<Mutex<Vec<JointState>>>,
}

fn command_for(stamp_ns: i64) -> f64 {
    // ±0.05 rad/s, switching every 100 ms: a change of 0.1 rad/s, exactly what the 10 rad/s²
    // acceleration limit allows in one 10 ms period.
    if (stamp_ns / 100_000_000) % 2 == 0 {
        0.05
    } else {
        -0.05
    }
}

impl Node for Controller {
    fn name(&self) -> &str {
        "controller"
    }
    fn period(&self) -> Option<Duration> {
        None
    }
    fn step(&mut self, _ctx: &StepCtx<'_>) -> rft_runtime::Result<()> {
        Ok(())
    }
    fn on_wake(&mut self, _ctx: &StepCtx<'_>) -> rft_runtime::Result<()> {
        for js in self.states.drain() {
            let v = command_for(js.header.stamp.as_nanos());
            self.cmd.publish(Float64MultiArray::from_data(vec![
                v, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ]))?;
            self.seen.lock().unwrap().push((*js).clone());
        }
        Ok(())
    }
}

#[test]
fn in_lockstep_each_joint_state_is_answered_before_physics_moves_on() {
    let p = params(&["lockstep_timeout_ms=2000", "cameras=[]"]).unwrap();
    let bus = Bus::inproc();
    let sim = Arc::new(SimClock::default());
    let mut rt = Runtime::new(Clock::Sim(sim.clone()));
    let robot_wake = Arc::new(Signal::default());
    let h = bus
        .node("robot", BTreeMap::new(), robot_wake.clone())
        .unwrap();
    rt.add(
        Box::new(SimRobot::new("robot".into(), p, Duration::from_millis(10), &h).unwrap()),
        robot_wake,
    );
    let wake = Arc::new(Signal::default());
    let c = bus
        .node("controller", BTreeMap::new(), wake.clone())
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    rt.add(
        Box::new(Controller {
            states: c
                .subscribe("/joint_states", QueueConfig::drop_oldest(1000))
                .unwrap(),
            cmd: c.publisher("/joint_velocity_cmd").unwrap(),
            seen: seen.clone(),
        }),
        wake,
    );
    let report = rt.run(Some(Duration::from_secs(2))).unwrap();
    assert!(report.nodes.iter().all(|n| n.error.is_none()), "{report:?}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 190,
        "{} states in 2 s of simulated time",
        seen.len()
    );
    // Joint 1 moves at exactly the velocity commanded in answer to the previous state, from the
    // first state on: no command was missed or applied late, however fast the sim ran.
    for w in seen.windows(2) {
        let want = command_for(w[0].header.stamp.as_nanos());
        let got = w[1].velocity[0];
        assert!(
            (got - want).abs() < 1e-9,
            "state at {} ns: {got}, want {want}",
            w[1].header.stamp.as_nanos()
        );
    }
    let _: Time = seen[0].header.stamp;
}

#[test]
fn the_simulated_operator_puts_the_scene_back_after_a_pause_for_a_human() {
    let mut rig = Rig::new(&["operator_reset_s = 2.0", "cameras = []"]);
    let phase = rig
        ._test
        .publisher::<rft_msgs::EpisodePhase>("/rft/phase")
        .unwrap();
    let done: Subscription<rft_msgs::Bool> = rig
        ._test
        .subscribe("/rft/human_reset", QueueConfig::drop_oldest(100))
        .unwrap();
    // The arm turns away from its initial posture.
    let q0 = rig.step().position[0];
    for _ in 0..100 {
        rig.vel
            .publish(Float64MultiArray::from_data(vec![
                0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ]))
            .unwrap();
        rig.step();
    }
    let turned = rig.step().position[0];
    assert!(turned - q0 > 0.3, "{q0} → {turned}");
    // Running: nobody comes.
    phase.publish(rft_msgs::EpisodePhase::default()).unwrap();
    for _ in 0..300 {
        rig.step();
    }
    assert!(done.drain().is_empty());
    assert_eq!(rig.node.counts().operator_resets, 0);
    // Paused for a human: 2 simulated seconds later the scene is put back, once, and said so.
    let paused = rft_msgs::EpisodePhase {
        phase: rft_msgs::PHASE_PAUSED_FOR_HUMAN,
        ..Default::default()
    };
    phase.publish(paused.clone()).unwrap();
    for _ in 0..190 {
        rig.step();
    }
    assert!(done.drain().is_empty(), "before 2 s");
    // The manager repeats its phase while paused: the operator's clock runs from the first.
    phase.publish(paused).unwrap();
    let mut at = None;
    for i in 0..30 {
        rig.step();
        if done.drain().iter().any(|b| b.data) {
            at = Some(i);
            break;
        }
    }
    assert!(at.is_some(), "no reset 2.2 s after the pause");
    assert_eq!(rig.node.counts().operator_resets, 1);
    let back = rig.step().position[0];
    assert!(
        (back - q0).abs() < 0.1,
        "the arm near its initial posture: {back}, {q0}"
    );
    let pos = rig.object.drain().last().unwrap().pose.position;
    assert!(pos.z > 0.0, "the cube is on the table: {pos:?}");
    // The loop runs again: no second reset.
    phase.publish(rft_msgs::EpisodePhase::default()).unwrap();
    for _ in 0..400 {
        rig.step();
    }
    assert!(done.drain().is_empty());
    assert_eq!(rig.node.counts().operator_resets, 1);
}
