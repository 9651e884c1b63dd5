//! The safety filter node, driven step by step on a simulated clock over the in-process bus:
//! tracking, each fail-safe cause (stop within one control period, right reason, resume only
//! under the stated conditions), dynamic obstacles, and launch-file limits checked against the
//! URDF.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rft_msgs::{
    Action, Bool, Float64MultiArray, Header, JointState, Obstacles, Point, SAFETY_ESTOP,
    SAFETY_LIMITING, SAFETY_OK, SAFETY_STOPPED, SAFETY_STOPPING, SafetyStatus, Time, Twist,
    Vector3,
};
use rft_nodes::SafetyFilter;
use rft_runtime::bus::{Bus, NodeHandle, Publisher, QueueConfig, Signal, Subscription};
use rft_runtime::launch;
use rft_runtime::{Clock, Node, Shutdown, SimClock, StepCtx};
use rft_safety::kinematics::Chain;

const READY: [f64; 7] = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785];
const ACCEL: [f64; 7] = [15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0];
const PERIOD_NS: i64 = 10_000_000; // joint states at 100 Hz
const MAX_LINEAR_M_S: f64 = 0.25; // the launch below

fn launch_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/test_safety.toml")
}

fn launch_text() -> String {
    r#"
name = "safety_test"
[[nodes]]
name = "safety"
kind = "safety_filter"
[nodes.params]
urdf = "../sim/assets/panda.urdf"
joint_state_rate_hz = 100
stale_state_ms = 50
stale_command_ms = 200
workspace_min = [0.2, -0.5, 0.05]
workspace_max = [0.8, 0.5, 0.8]
max_linear_m_s = 0.25
"#
    .to_string()
}

/// Parses the test launch file with `KEY=VALUE` lines applied to the node's params as `--set`.
fn parse(extra: &str) -> Result<launch::Launch, String> {
    let sets: Vec<String> = extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("nodes.0.params.{}", l.trim()))
        .collect();
    launch::parse(
        &rft_nodes::registry(),
        &launch_path(),
        &launch_text(),
        &sets,
    )
    .map_err(|e| e.to_string())
}

/// The node and everything around it: a kinematic arm integrated by the test.
struct Rig {
    node: SafetyFilter,
    clock: Clock,
    sim: Arc<SimClock>,
    shutdown: Shutdown,
    _test: NodeHandle,
    states: Publisher<JointState>,
    action: Publisher<Action>,
    teleop: Publisher<Action>,
    estop: Publisher<Bool>,
    obstacles: Publisher<Obstacles>,
    cmd: Subscription<Float64MultiArray>,
    status: Subscription<SafetyStatus>,
    q: [f64; 7],
    u: [f64; 7],
    t_ns: i64,
    last_status: Option<SafetyStatus>,
    chain: Chain,
}

/// A command of `(x, y, z)` times the filter's `max_linear_m_s` (so 1 is full speed), in m/s as
/// `/rft/action` carries it.
fn twist(x: f64, y: f64, z: f64) -> Action {
    let l = MAX_LINEAR_M_S;
    Action {
        twist: Twist {
            linear: Vector3 {
                x: x * l,
                y: y * l,
                z: z * l,
            },
            angular: Vector3::default(),
        },
        gripper: 1.0,
        ..Default::default()
    }
}

impl Rig {
    fn new(extra: &str) -> Self {
        let launch = parse(extra).unwrap();
        let Some(p) = launch.nodes[0].params::<rft_nodes::SafetyFilterParams>() else {
            panic!("not a safety filter")
        };
        let bus = Bus::inproc();
        let handle = bus
            .node("safety", BTreeMap::new(), Arc::new(Signal::default()))
            .unwrap();
        let test = bus
            .node("test", BTreeMap::new(), Arc::new(Signal::default()))
            .unwrap();
        let node = SafetyFilter::new(
            "safety".into(),
            p.0.clone(),
            std::time::Duration::from_millis(10),
            &handle,
        )
        .unwrap();
        let sim = Arc::new(SimClock::default());
        let urdf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/panda.urdf");
        Self {
            node,
            clock: Clock::Sim(sim.clone()),
            sim,
            shutdown: Shutdown::default(),
            states: test.publisher("/joint_states").unwrap(),
            action: test.publisher("/rft/action").unwrap(),
            teleop: test.publisher("/rft/teleop").unwrap(),
            estop: test.publisher("/rft/estop").unwrap(),
            obstacles: test.publisher("/rft/obstacles").unwrap(),
            cmd: test
                .subscribe("/joint_velocity_cmd", QueueConfig::drop_oldest(16))
                .unwrap(),
            status: test
                .subscribe("/rft/safety", QueueConfig::drop_oldest(16))
                .unwrap(),
            _test: test,
            q: READY,
            u: [0.0; 7],
            t_ns: 1_000_000_000,
            last_status: None,
            chain: Chain::from_urdf_file(&urdf, "panda_link0", "panda_hand_tcp").unwrap(),
        }
    }

    fn advance(&mut self) {
        self.t_ns += PERIOD_NS;
        self.sim.advance_to(self.t_ns);
    }

    /// Publishes a joint state (with `position` overriding the arm's), runs the node on it and
    /// integrates the command it published. Returns that command.
    fn tick_with(&mut self, position: Option<[f64; 7]>) -> [f64; 7] {
        self.advance();
        let pos = position.unwrap_or(self.q);
        self.states
            .publish(JointState {
                header: Header::at(Time::from_nanos(self.t_ns)),
                name: (1..=7).map(|i| format!("panda_joint{i}")).collect(),
                position: pos.to_vec(),
                velocity: self.u.to_vec(),
                effort: vec![0.0; 7],
            })
            .unwrap();
        let ctx = StepCtx::new(Time::from_nanos(self.t_ns), &self.clock, &self.shutdown);
        self.node.on_wake(&ctx).unwrap();
        self.take_command()
    }

    fn tick(&mut self) -> [f64; 7] {
        self.tick_with(None)
    }

    /// Like [`Self::tick`], with the state's joints listed as `order` gives them (indices into
    /// the arm's joints; `None` entries are extra joints the arm does not have).
    fn tick_ordered(&mut self, order: &[Option<usize>]) -> Option<[f64; 7]> {
        self.advance();
        let name = |j: &Option<usize>| match j {
            Some(i) => format!("panda_joint{}", i + 1),
            None => "panda_finger_joint1".to_string(),
        };
        self.states
            .publish(JointState {
                header: Header::at(Time::from_nanos(self.t_ns)),
                name: order.iter().map(name).collect(),
                position: order
                    .iter()
                    .map(|j| j.map_or(0.04, |i| self.q[i]))
                    .collect(),
                velocity: order.iter().map(|j| j.map_or(0.0, |i| self.u[i])).collect(),
                effort: vec![0.0; order.len()],
            })
            .unwrap();
        let ctx = StepCtx::new(Time::from_nanos(self.t_ns), &self.clock, &self.shutdown);
        self.node.on_wake(&ctx).unwrap();
        let cmd = self.cmd.try_recv()?;
        // The command is in the chain's joint order whatever the state's order was.
        let u: [f64; 7] = cmd.data.as_slice().try_into().unwrap();
        for (q, v) in self.q.iter_mut().zip(&u) {
            *q += v * PERIOD_NS as f64 * 1e-9;
        }
        self.u = u;
        self.drain_status();
        Some(u)
    }

    /// The node's timer with no joint state.
    fn timer(&mut self) -> Option<[f64; 7]> {
        self.advance();
        let ctx = StepCtx::new(Time::from_nanos(self.t_ns), &self.clock, &self.shutdown);
        self.node.step(&ctx).unwrap();
        let cmd = self.cmd.try_recv()?;
        self.drain_status();
        let u: [f64; 7] = cmd.data.as_slice().try_into().unwrap();
        self.u = u;
        Some(u)
    }

    fn take_command(&mut self) -> [f64; 7] {
        let cmd = self.cmd.try_recv().expect("a command per joint state");
        assert!(self.cmd.try_recv().is_none(), "one command per joint state");
        let u: [f64; 7] = cmd.data.as_slice().try_into().unwrap();
        for (q, v) in self.q.iter_mut().zip(&u) {
            *q += v * PERIOD_NS as f64 * 1e-9;
        }
        self.u = u;
        self.drain_status();
        u
    }

    fn drain_status(&mut self) {
        while let Some(s) = self.status.try_recv() {
            self.last_status = Some((*s).clone());
        }
    }

    fn command(&self, a: Action) {
        self.action.publish(a).unwrap();
    }

    fn status(&self) -> &SafetyStatus {
        self.last_status.as_ref().expect("a status was published")
    }

    /// Runs `steps` ticks with a fresh command each; returns the last output.
    fn drive(&mut self, a: &Action, steps: usize) -> [f64; 7] {
        let mut u = [0.0; 7];
        for _ in 0..steps {
            self.command(a.clone());
            u = self.tick();
        }
        u
    }

    fn tcp(&self) -> nalgebra::Point3<f64> {
        nalgebra::Point3::from(self.chain.base_from_tip(&self.q).translation.vector)
    }
}

/// Running again: OK, or limiting while the acceleration limit ramps the speed back up.
fn assert_resumed(s: &SafetyStatus) {
    assert!(
        s.state == SAFETY_OK || s.state == SAFETY_LIMITING,
        "not running: {s:?}"
    );
    assert!(s.reason.is_empty(), "{s:?}");
}

fn speed(u: &[f64; 7]) -> f64 {
    u.iter().map(|v| v.abs()).fold(0.0, f64::max)
}

/// A stop step: no joint speeds up, none slows by more than its deceleration limit per
/// period, and at least one slows.
fn assert_decelerating(before: &[f64; 7], after: &[f64; 7]) {
    let dt = PERIOD_NS as f64 * 1e-9;
    for i in 0..7 {
        assert!(
            after[i].abs() <= before[i].abs() + 1e-12,
            "joint {i} sped up: {} → {}",
            before[i],
            after[i]
        );
        assert!(
            before[i].abs() - after[i].abs() <= ACCEL[i] * dt + 1e-9,
            "joint {i} braked harder than its limit: {} → {}",
            before[i],
            after[i]
        );
        assert!(after[i] * before[i] >= 0.0, "joint {i} reversed");
    }
    assert!(
        speed(before) == 0.0 || speed(after) < speed(before),
        "nothing slowed down"
    );
}

#[test]
fn a_safe_twist_is_tracked_and_the_status_says_ok() {
    let mut rig = Rig::new("");
    let start = rig.tcp();
    // Half of full scale along +x: 0.125 m/s.
    rig.drive(&twist(0.5, 0.0, 0.0), 100);
    let moved = rig.tcp() - start;
    // One second, after a short acceleration ramp.
    assert!(
        (moved.x - 0.125).abs() < 0.01 && moved.y.abs() < 0.005 && moved.z.abs() < 0.005,
        "moved {moved:?}"
    );
    assert_eq!(rig.status().state, SAFETY_OK, "{:?}", rig.status());
    assert_eq!(rig.node.counts().teleop_steps, 0);
}

#[test]
fn a_command_faster_than_the_cap_moves_at_the_cap_and_is_never_rescaled() {
    // `/rft/action` is in m/s: 0.1 m/s moves the tool at 0.1 m/s (a filter that read it as a
    // fraction of `max_linear_m_s` would move 0.025 m/s), and 1 m/s is capped at 0.25 m/s.
    // (At the cap, the acceleration ramp and the joints' speed limits cost a few centimetres.)
    for (ask, want, tol) in [(0.1, 0.1, 0.01), (1.0, MAX_LINEAR_M_S, 0.03)] {
        let mut rig = Rig::new("");
        let start = rig.tcp();
        rig.drive(&twist(ask / MAX_LINEAR_M_S, 0.0, 0.0), 100);
        let moved = rig.tcp() - start;
        assert!(
            (moved.x - want).abs() < tol && moved.x < want + 1e-3 && moved.y.abs() < 0.005,
            "asked {ask} m/s for 1 s: moved {moved:?}, want {want}"
        );
    }
}

#[test]
fn joint_states_in_another_order_with_extra_joints_give_the_same_commands() {
    // As a robot driver may publish them: the arm's joints shuffled, a gripper joint among
    // them. The filter matches joints by name, so the commands are exactly those of the
    // canonical order; a state that lacks one of the chain's joints is refused and counted.
    let canonical: Vec<Option<usize>> = (0..7).map(Some).collect();
    let shuffled = vec![
        Some(3),
        None,
        Some(0),
        Some(6),
        Some(2),
        Some(5),
        Some(1),
        Some(4),
    ];
    let (mut a, mut b) = (Rig::new(""), Rig::new(""));
    let cmd = twist(0.4, -0.3, 0.2);
    for k in 0..60 {
        a.command(cmd.clone());
        b.command(cmd.clone());
        let ua = a.tick_ordered(&canonical).unwrap();
        let ub = b.tick_ordered(&shuffled).unwrap();
        assert_eq!(ua, ub, "tick {k}");
    }
    assert!(speed(&a.u) > 0.01, "the arm moved: {:?}", a.u);
    assert_eq!(b.node.counts().rejected_states, 0);
    // Joint 5 missing: no command computed from it, the state counted as rejected.
    let missing: Vec<Option<usize>> = vec![Some(0), Some(1), Some(2), Some(3), Some(5), Some(6)];
    b.command(cmd.clone());
    let u = b.tick_ordered(&missing);
    assert_eq!(b.node.counts().rejected_states, 1);
    if let Some(u) = u {
        // Whatever goes out then only decelerates (the last good state is not trusted to
        // keep moving).
        assert!(speed(&u) <= speed(&a.u) + 1e-9, "{u:?}");
    }
}

#[test]
fn a_stale_command_stops_within_one_period_and_a_fresh_one_resumes() {
    let mut rig = Rig::new("");
    let mut u = rig.drive(&twist(0.8, 0.0, 0.0), 50);
    assert!(speed(&u) > 0.1);
    // No more commands: the last one arrived at t; 200 ms later it is stale.
    let t_cmd = rig.t_ns;
    loop {
        let before = u;
        u = rig.tick();
        let age_ms = (rig.t_ns - t_cmd) as f64 * 1e-6;
        if age_ms <= 200.0 {
            assert_eq!(rig.status().state, SAFETY_OK, "still fresh at {age_ms} ms");
        } else {
            // The first control step past the timeout.
            assert_eq!(rig.status().state, SAFETY_STOPPING);
            assert_eq!(rig.status().reason, "stale command");
            assert_decelerating(&before, &u);
            break;
        }
    }
    for _ in 0..100 {
        u = rig.tick();
    }
    assert_eq!(speed(&u), 0.0, "came to rest");
    assert_eq!(rig.status().state, SAFETY_STOPPED);
    // A fresh command resumes.
    rig.command(twist(0.8, 0.0, 0.0));
    u = rig.tick();
    assert!(speed(&u) > 0.0);
    assert_ne!(rig.status().state, SAFETY_STOPPED);
}

#[test]
fn stale_joint_states_stop_on_the_timer_and_resume_with_fresh_states_and_commands() {
    let mut rig = Rig::new("");
    let mut u = rig.drive(&twist(0.0, 0.8, 0.0), 50);
    let t_state = rig.t_ns;
    // No joint states: the timer notices once they are 50 ms old.
    let mut stopped_at = None;
    for _ in 0..20 {
        rig.command(twist(0.0, 0.8, 0.0));
        let before = u;
        match rig.timer() {
            None => assert!(rig.t_ns - t_state <= 50_000_000, "silent past the timeout"),
            Some(out) => {
                if stopped_at.is_none() {
                    stopped_at = Some(rig.t_ns);
                    assert_eq!(rig.status().reason, "stale joint state");
                    assert_eq!(rig.status().state, SAFETY_STOPPING);
                }
                assert_decelerating(&before, &out);
                u = out;
            }
        }
    }
    let stopped_at = stopped_at.expect("stopped");
    assert!(
        stopped_at - t_state <= 50_000_000 + PERIOD_NS,
        "stopped {} ms after the last state",
        (stopped_at - t_state) / 1_000_000
    );
    // Joint states again, with a fresh command: motion resumes.
    rig.command(twist(0.0, 0.8, 0.0));
    let before = u;
    let after = rig.tick();
    assert!(
        speed(&after) > speed(&before) || speed(&before) == 0.0,
        "resumed"
    );
    assert_ne!(rig.status().state, SAFETY_STOPPING);
}

#[test]
fn nan_in_a_command_or_a_state_stops_with_its_reason() {
    let mut rig = Rig::new("");
    let mut u = rig.drive(&twist(0.6, 0.0, 0.0), 50);
    rig.command(twist(f64::NAN, 0.0, 0.0));
    let before = u;
    u = rig.tick();
    assert_eq!(rig.status().reason, "NaN or Inf in the command");
    assert_decelerating(&before, &u);
    // The NaN command is not "fresh": only a new finite one resumes.
    let before = u;
    u = rig.tick();
    assert_decelerating(&before, &u);
    rig.command(twist(0.6, 0.0, 0.0));
    u = rig.tick();
    assert_resumed(rig.status());

    let mut bad = rig.q;
    bad[3] = f64::INFINITY;
    rig.command(twist(0.6, 0.0, 0.0));
    let before = u;
    u = rig.tick_with(Some(bad));
    assert_eq!(rig.status().reason, "NaN or Inf in the joint state");
    assert_decelerating(&before, &u);
    // Finite states and a fresh command resume.
    rig.command(twist(0.6, 0.0, 0.0));
    rig.tick();
    assert_resumed(rig.status());
}

#[test]
fn an_infeasible_qp_stops_the_arm_when_rows_are_hard() {
    // A hard workspace: when the tool cannot be kept inside, the robot stops instead.
    let mut rig = Rig::new("soft_constraints = false\nworkspace_max = [0.7, 0.5, 0.8]");
    // Start 3 cm outside the box: lean forward and stretch.
    let mut q = READY;
    for _ in 0..200 {
        if rig.chain.base_from_tip(&q).translation.vector.x > 0.73 {
            break;
        }
        q[1] += 0.01;
        q[3] += 0.01;
    }
    assert!(rig.chain.base_from_tip(&q).translation.vector.x > 0.73);
    rig.q = q;
    rig.drive(&twist(0.0, 0.0, 0.0), 1);
    assert_eq!(rig.status().state, SAFETY_STOPPED);
    assert_eq!(rig.status().reason, "infeasible QP");
    assert!(rig.node.counts().qp_failures >= 1);
    assert_eq!(speed(&rig.u), 0.0);
}

#[test]
fn the_e_stop_latches_until_released_and_a_fresh_command_follows() {
    let mut rig = Rig::new("");
    let mut u = rig.drive(&twist(0.0, 0.0, 0.6), 50);
    rig.estop.publish(Bool { data: true }).unwrap();
    rig.command(twist(0.0, 0.0, 0.6));
    let before = u;
    u = rig.tick();
    assert_eq!(rig.status().state, SAFETY_ESTOP);
    assert_eq!(rig.status().reason, "e-stop");
    assert_decelerating(&before, &u);
    // Fresh commands do not release it.
    for _ in 0..100 {
        rig.command(twist(0.0, 0.0, 0.6));
        u = rig.tick();
    }
    assert_eq!(speed(&u), 0.0);
    assert_eq!(rig.status().state, SAFETY_ESTOP);
    // Released, but no command since: still stopped.
    rig.estop.publish(Bool { data: false }).unwrap();
    u = rig.tick();
    assert_eq!(speed(&u), 0.0);
    // A command after the release resumes.
    rig.command(twist(0.0, 0.0, 0.6));
    u = rig.tick();
    assert!(speed(&u) > 0.0);
    assert_resumed(rig.status());
}

#[test]
fn teleop_overrides_the_policy_while_fresh() {
    let mut rig = Rig::new("");
    let start = rig.tcp();
    for _ in 0..100 {
        rig.command(twist(0.6, 0.0, 0.0));
        rig.teleop.publish(twist(-0.6, 0.0, 0.0)).unwrap();
        rig.tick();
    }
    assert!(rig.tcp().x < start.x - 0.1, "followed teleop (−x)");
    assert_eq!(rig.node.counts().teleop_steps, 100);
    // Teleop goes quiet: after its timeout the policy drives again.
    let x = rig.tcp().x;
    rig.drive(&twist(0.6, 0.0, 0.0), 100);
    assert!(rig.tcp().x > x + 0.05, "back to the policy (+x)");
}

#[test]
fn a_dynamic_obstacle_is_not_entered_and_malformed_ones_are_counted() {
    let mut rig = Rig::new("first_obstacle_joint = 2\nmax_dynamic_obstacles = 4");
    rig.drive(&twist(0.0, 0.0, 0.0), 1);
    let p = rig.tcp();
    // A 5 cm ball 15 cm ahead of the tool along +x.
    let ball = Point {
        x: p.x + 0.15,
        y: p.y,
        z: p.z,
    };
    rig.obstacles
        .publish(Obstacles {
            centers: vec![ball],
            radii: vec![0.05],
            ..Default::default()
        })
        .unwrap();
    // Full speed at the ball: the filter lets the hand slide around it, never into it.
    let centre = nalgebra::Point3::new(ball.x, ball.y, ball.z);
    let (mut closest, mut clearance, mut saw_it) = (f64::MAX, f64::MAX, false);
    let mut limiting = None;
    for _ in 0..300 {
        rig.drive(&twist(1.0, 0.0, 0.0), 1);
        closest = closest.min((rig.tcp() - centre).norm());
        let s = rig.status();
        clearance = clearance.min(s.min_distance_m as f64);
        if s.active_constraints
            .iter()
            .any(|c| c.starts_with("dynamic_obstacle[0]"))
        {
            saw_it = true;
            limiting = Some(s.clone());
        }
    }
    assert!(
        closest > 0.05,
        "the tool came within {closest} m of the ball's centre"
    );
    assert!(
        clearance > -1e-3,
        "an arm sphere entered the ball by {clearance} m"
    );
    assert!(saw_it, "the ball's constraint became active");
    let limiting = limiting.unwrap();
    assert_eq!(limiting.state, SAFETY_LIMITING);
    assert_eq!(limiting.alpha.len(), limiting.active_constraints.len());
    // Barrier gains within [α_min, α_max]; 0 for velocity and acceleration limits.
    for (c, a) in limiting.active_constraints.iter().zip(&limiting.alpha) {
        if c.starts_with("velocity_limit") || c.starts_with("accel_limit") {
            assert_eq!(*a, 0.0, "{c}");
        } else {
            assert!((0.5..=10.0).contains(a), "{c}: α = {a}");
        }
    }
    // Malformed: two centres, one radius; then too many. Both rejected and counted; the ball
    // stays.
    rig.obstacles
        .publish(Obstacles {
            centers: vec![ball, ball],
            radii: vec![0.05],
            ..Default::default()
        })
        .unwrap();
    rig.drive(&twist(1.0, 0.0, 0.0), 1);
    rig.obstacles
        .publish(Obstacles {
            centers: vec![ball; 5],
            radii: vec![0.05; 5],
            ..Default::default()
        })
        .unwrap();
    let mut clearance = f64::MAX;
    for _ in 0..100 {
        rig.drive(&twist(1.0, 0.0, 0.0), 1);
        clearance = clearance.min(rig.status().min_distance_m as f64);
    }
    assert_eq!(rig.node.counts().rejected_obstacles, 2);
    assert!(
        clearance < 0.2 && clearance > -1e-3,
        "the ball still counts: clearance {clearance}"
    );
}

#[test]
fn limits_wider_than_the_urdf_and_bad_urdfs_are_rejected_before_start() {
    let cases = [
        (
            "max_velocity_rad_s = [3.0, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]",
            "nodes[0].params.max_velocity_rad_s: [0] = 3 is wider than the URDF's velocity limit 2.175",
        ),
        (
            "position_max = [2.8973, 1.7628, 2.8973, 0.5, 2.8973, 3.7525, 2.8973]",
            "nodes[0].params.position_max: [3] = 0.5 is wider than the URDF's upper limit",
        ),
        (
            "position_min = [-2.9, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]",
            "nodes[0].params.position_min: [0] = -2.9 is wider than the URDF's lower limit",
        ),
        (
            "max_accel_rad_s2 = [15.0, 7.5]",
            "nodes[0].params.max_accel_rad_s2: has 2 values but the chain",
        ),
        ("tip_link = \"nowhere\"", "nodes[0].params.urdf: URDF"),
        (
            "gains = { kind = \"braking\", alpha_min = 5.0, alpha_max = 1.0 }",
            "nodes[0].params.gains.alpha_min",
        ),
        (
            "stale_state_ms = 5",
            "nodes[0].params.stale_state_ms: 5 ms is shorter than one joint-state period",
        ),
    ];
    for (extra, want) in cases {
        let err = parse(extra).expect_err(extra);
        assert!(
            err.contains(want),
            "`{extra}` gave `{err}`, wanted `{want}`"
        );
        assert!(err.contains("test_safety.toml"), "names the file: {err}");
    }
    // Narrower limits are fine.
    parse("max_velocity_rad_s = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]").unwrap();
    // A URDF that is not there.
    let text = launch_text().replace("../sim/assets/panda.urdf", "missing.urdf");
    let err = launch::parse(&rft_nodes::registry(), &launch_path(), &text, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nodes[0].params.urdf") && err.contains("missing.urdf"),
        "{err}"
    );
}

#[test]
fn between_episodes_the_filter_brings_the_tool_and_the_posture_home_and_says_so() {
    let mut rig = Rig::new("");
    let bus_phase = rig
        ._test
        .publisher::<rft_msgs::EpisodePhase>("/rft/phase")
        .unwrap();
    let at_home: Subscription<Bool> = rig
        ._test
        .subscribe("/rft/at_home", QueueConfig::drop_oldest(10_000))
        .unwrap();
    let switching = |posture: bool| rft_msgs::EpisodePhase {
        phase: rft_msgs::PHASE_SWITCHING,
        home_posture: posture,
        ..Default::default()
    };
    let home = rig.tcp();
    // Away from home: down, to the side, the wrist turned (the posture changes too).
    let mut away = twist(0.3, 0.5, -0.6);
    away.twist.angular.z = 0.8;
    rig.drive(&away, 150);
    assert!((rig.tcp() - home).norm() > 0.15, "moved {:?}", rig.tcp());
    let turned = rig.q;
    assert!(
        (turned[6] - READY[6]).abs() > 0.3,
        "the wrist turned: {turned:?}"
    );
    assert!(at_home.drain().is_empty(), "nothing said while running");
    // Position only: the policy's command is ignored, the tool goes home, the wrist stays.
    bus_phase.publish(switching(false)).unwrap();
    let mut reached = None;
    for i in 0..1000 {
        rig.command(away.clone());
        rig.tick();
        if at_home.drain().last().is_some_and(|b| b.data) {
            reached = Some(i);
            break;
        }
    }
    assert!(
        reached.is_some(),
        "never home: {:?} (home {home:?}), u {:?}, status {:?}",
        rig.tcp(),
        rig.u,
        rig.last_status
    );
    assert!((rig.tcp() - home).norm() < 0.02, "{:?}", rig.tcp());
    assert!(
        (rig.q[6] - READY[6]).abs() > 0.2,
        "the wrist stays turned without the posture: {:?}",
        rig.q
    );
    // With the posture: every joint back where the robot started.
    bus_phase.publish(switching(true)).unwrap();
    let mut reached = false;
    for _ in 0..1500 {
        rig.tick();
        if at_home.drain().last().is_some_and(|b| b.data) {
            reached = true;
            break;
        }
    }
    assert!(reached, "posture never reached: {:?}", rig.q);
    for (i, (q, h)) in rig.q.iter().zip(READY).enumerate() {
        assert!((q - h).abs() < 0.02, "joint {i} at {q}, home {h}");
    }
    assert!(
        speed(&rig.u) < 0.01,
        "at rest when it says home: {:?}",
        rig.u
    );
    let homing = rig.node.counts().homing_steps;
    assert!(homing > 100, "{homing} homing steps");
    // A person's command still wins while switching; back to running, the policy drives.
    let before = rig.tcp();
    for _ in 0..50 {
        rig.teleop.publish(twist(0.0, 0.6, 0.0)).unwrap();
        rig.tick();
    }
    assert!(
        rig.tcp().y > before.y + 0.05,
        "teleop drove: {:?}",
        rig.tcp()
    );
    assert_eq!(
        rig.node.counts().homing_steps,
        homing,
        "teleop steps are no homing"
    );
    bus_phase
        .publish(rft_msgs::EpisodePhase::default())
        .unwrap();
    for _ in 0..30 {
        rig.tick();
    }
    let y = rig.tcp().y;
    rig.drive(&twist(0.0, -0.6, 0.0), 50);
    assert!(rig.tcp().y < y - 0.05, "the policy drives again");
    assert!(at_home.drain().is_empty(), "nothing said while running");
}

#[test]
fn overridden_commands_are_counted_on_the_metrics_topic() {
    let mut rig = Rig::new("");
    let metrics: Subscription<rft_msgs::Metric> = rig
        ._test
        .subscribe("/rft/metrics", QueueConfig::drop_oldest(10_000))
        .unwrap();
    // A free move: tracked, nothing overridden.
    rig.drive(&twist(0.0, 0.4, 0.0), 50);
    let c = rig.node.counts();
    assert_eq!(c.control_steps, 50);
    assert!(c.overridden_steps <= 3, "{c:?}");
    // Into the floor of the workspace box: once there the filter holds the tool up, step
    // after step.
    rig.drive(&twist(0.0, 0.0, -1.0), 300);
    let c = rig.node.counts();
    rig.drive(&twist(0.0, 0.0, -1.0), 200);
    let c2 = rig.node.counts();
    assert_eq!(c2.control_steps, 550);
    assert!(
        c2.overridden_steps - c.overridden_steps > 190,
        "{} of 200 steps against the floor overridden",
        c2.overridden_steps - c.overridden_steps
    );
    // The counts are published (every status period, 20 Hz).
    rig.drive(&twist(0.0, 0.0, -1.0), 10);
    let c3 = rig.node.counts();
    let msgs = metrics.drain();
    let newest = |name: &str| {
        msgs.iter()
            .filter(|x| x.name == name && x.source == "safety")
            .map(|x| x.value)
            .next_back()
    };
    assert!(newest("control_steps").is_some_and(|v| v > 550.0 && v <= c3.control_steps as f64));
    assert!(
        newest("overridden_steps")
            .is_some_and(|v| v >= c2.overridden_steps as f64 && v <= c3.overridden_steps as f64)
    );
}
