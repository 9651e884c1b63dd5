//! The simulator as a robot: takes `/joint_velocity_cmd` and `/gripper_cmd` (from the safety
//! filter), publishes `/joint_states` on its timer, camera images, depth, camera info and
//! camera poses at each camera's rate, and ground truth (`/rft/object_pose`, success and
//! progress metrics) for evaluation.
//!
//! On a wall clock the physics advances one timer period per step (real time). On a sim clock
//! this node owns simulated time: each step publishes the state at `t`, takes the command that
//! answers it (lockstep: it waits, up to `lockstep_timeout_ms` of wall time, for the safety
//! filter's reply; after a timeout it runs free until a command arrives again), advances physics
//! and moves the clock to `t + period`.
//! `realtime_factor` paces that against the wall clock (1 = real time, 0 = as fast as possible).
//!
//! With `operator_reset_s` > 0 it also plays the operator of a reset-free run: that long after
//! the episode manager pauses for a human reset, it puts the scene back for the forward task
//! (seeded) and reports it on `/rft/human_reset`, where a person would. Every such reset is
//! still counted as a human reset.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rft_config::ConfigError;
use rft_drivers::{CameraSpec, SimDriver};
use rft_msgs::{
    Bool, CameraInfo, EpisodePhase, Float64MultiArray, Header, Image, JointState, Metric,
    PHASE_PAUSED_FOR_HUMAN, PoseStamped, SceneReset, Time,
};
use rft_sim::{Direction, SimConfig, SimEvent, TaskKind};
use serde::Deserialize;

use rft_config::check;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Clock, Node, StepCtx};
use rft_runtime::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRobotParams {
    /// The robot's URDF (relative to the launch file).
    #[serde(default = "rft_sim::world::default_urdf")]
    pub urdf: PathBuf,
    #[serde(default = "crate::robot_state::default_base_link")]
    pub base_link: String,
    #[serde(default = "crate::robot_state::default_tcp_link")]
    pub tcp_link: String,
    #[serde(default = "default_task")]
    pub task: TaskKind,
    #[serde(default = "default_physics_hz")]
    pub physics_hz: f64,
    /// Seed of the initial scene.
    #[serde(default)]
    pub seed: u64,
    /// Initial arm posture (default: the URDF arm's ready posture).
    #[serde(default)]
    pub initial_q: Option<Vec<f64>>,
    /// On a sim clock with the threaded executor: 1 runs in real time, 0 as fast as possible.
    /// (The lockstep executor always runs as fast as possible and ignores it.)
    #[serde(default = "one")]
    pub realtime_factor: f64,
    /// On a sim clock with the threaded executor: wall time to wait for the command answering
    /// each joint state. After a timeout the sim runs free until a command arrives again. 0 never
    /// waits. (The lockstep executor delivers the command before the next step; no waiting.)
    #[serde(default = "default_lockstep_ms")]
    pub lockstep_timeout_ms: f64,
    /// A joint-velocity command older than this (simulated time) is replaced by zero.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: f64,
    #[serde(default = "default_cameras")]
    pub cameras: Vec<CameraSpec>,
    /// Rate of `/rft/object_pose` and the ground-truth metrics.
    #[serde(default = "default_truth_hz")]
    pub ground_truth_rate_hz: f64,
    /// Above 0: a simulated operator resets the scene this many simulated seconds after the
    /// episode manager pauses for a human (0: nobody comes; publish true on
    /// `/rft/human_reset` yourself).
    #[serde(default)]
    pub operator_reset_s: f64,
}

fn default_task() -> TaskKind {
    TaskKind::Push
}
fn default_physics_hz() -> f64 {
    1000.0
}
fn one() -> f64 {
    1.0
}
fn default_lockstep_ms() -> f64 {
    100.0
}
fn default_command_timeout_ms() -> f64 {
    200.0
}
fn default_cameras() -> Vec<CameraSpec> {
    vec![CameraSpec::default()]
}
fn default_truth_hz() -> f64 {
    10.0
}

impl SimRobotParams {
    pub fn sim_config(&self) -> SimConfig {
        SimConfig {
            urdf: self.urdf.clone(),
            base_link: self.base_link.clone(),
            tcp_link: self.tcp_link.clone(),
            task: self.task,
            physics_hz: self.physics_hz,
            seed: self.seed,
            initial_q: self.initial_q.clone(),
            ..SimConfig::default()
        }
    }

    /// Checks the values, and that the URDF loads and the sim builds from them.
    pub fn validate(&self) -> rft_config::Result<()> {
        check(
            self.realtime_factor.is_finite() && (0.0..=100.0).contains(&self.realtime_factor),
            "realtime_factor",
            || format!("{} is outside [0, 100]", self.realtime_factor),
        )?;
        for (key, v) in [
            ("lockstep_timeout_ms", self.lockstep_timeout_ms),
            ("command_timeout_ms", self.command_timeout_ms),
            ("operator_reset_s", self.operator_reset_s),
        ] {
            check(v.is_finite() && v >= 0.0, key, || {
                format!("{v} must be ≥ 0")
            })?;
        }
        check(
            self.ground_truth_rate_hz > 0.0 && self.ground_truth_rate_hz <= 1000.0,
            "ground_truth_rate_hz",
            || format!("{} is outside (0, 1000]", self.ground_truth_rate_hz),
        )?;
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            c.validate()
                .map_err(|e| e.under(&format!("cameras[{i}]")))?;
            check(
                names.insert(c.name.clone()),
                &format!("cameras[{i}].name"),
                || format!("`{}` is used by two cameras", c.name),
            )?;
        }
        rft_sim::Sim::new(self.sim_config()).map_err(|e| match e {
            rft_sim::Error::Urdf { .. } => ConfigError::new("urdf", e.to_string()),
            rft_sim::Error::Config { ref key, .. } => ConfigError::new(key.clone(), e.to_string()),
        })?;
        Ok(())
    }
}

struct CameraPubs {
    color: Publisher<Image>,
    depth: Option<Publisher<Image>>,
    info: Publisher<CameraInfo>,
    pose: Publisher<PoseStamped>,
    period_ns: i64,
    next_ns: i64,
}

/// Counters of the simulated robot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimRobotCounts {
    pub rejected_commands: u64,
    /// Steps on which no command answered the joint state within the lockstep timeout.
    pub lockstep_timeouts: u64,
    pub stale_commands: u64,
    /// Scenes reset on `/rft/sim/reset`.
    pub scene_resets: u64,
    /// Scenes the simulated operator put back after a pause for a human (`operator_reset_s`).
    pub operator_resets: u64,
}

pub struct SimRobot {
    name: String,
    p: SimRobotParams,
    period: Duration,
    driver: SimDriver,
    vel: Subscription<Float64MultiArray>,
    grip: Subscription<Float64MultiArray>,
    reset: Subscription<SceneReset>,
    phase: Subscription<EpisodePhase>,
    /// Since when the loop has been paused for a human (the simulated operator's clock).
    paused_since_ns: Option<i64>,
    human_reset: Publisher<Bool>,
    state: Publisher<JointState>,
    cams: Vec<CameraPubs>,
    object: Publisher<PoseStamped>,
    metric: Publisher<Metric>,
    truth_period_ns: i64,
    next_truth_ns: i64,
    last_cmd_ns: Option<i64>,
    /// Lockstep waits for a command while this holds: from the start, and again once a command
    /// arrives after a timeout (so a launch with no controller does not crawl).
    expect_cmd: bool,
    pace_origin: Option<(Instant, i64)>,
    /// On the lockstep executor: whether the first state was published.
    lockstep_started: bool,
    counts: SimRobotCounts,
}

fn ns(d: f64) -> i64 {
    (d * 1e9).round() as i64
}

impl SimRobot {
    pub fn new(
        name: String,
        p: SimRobotParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        let driver = SimDriver::new(p.sim_config(), p.cameras.clone())
            .map_err(|e| Error::node(&name, e.to_string()))?;
        let mut cams = Vec::new();
        for c in &p.cameras {
            let base = format!("/{}", c.name.trim_matches('/'));
            cams.push(CameraPubs {
                color: bus.publisher(&format!("{base}/color/image_raw"))?,
                depth: if c.depth {
                    Some(bus.publisher(&format!("{base}/depth/image_raw"))?)
                } else {
                    None
                },
                info: bus.publisher(&format!("{base}/color/camera_info"))?,
                pose: bus.publisher(&format!("{base}/pose"))?,
                period_ns: ns(1.0 / c.rate_hz),
                next_ns: i64::MIN,
            });
        }
        tracing::info!(node = %name, task = %p.task, joints = driver.sim().model().arm.len(),
            cameras = cams.len(), "simulated robot ready");
        Ok(Self {
            vel: bus.subscribe_quiet("/joint_velocity_cmd", QueueConfig::drop_oldest(16))?,
            grip: bus.subscribe_quiet("/gripper_cmd", QueueConfig::latest_only())?,
            reset: bus.subscribe_quiet("/rft/sim/reset", QueueConfig::latest_only())?,
            phase: bus.subscribe_quiet("/rft/phase", QueueConfig::latest_only())?,
            paused_since_ns: None,
            human_reset: bus.publisher("/rft/human_reset")?,
            state: bus.publisher("/joint_states")?,
            object: bus.publisher("/rft/object_pose")?,
            metric: bus.publisher("/rft/metrics")?,
            truth_period_ns: ns(1.0 / p.ground_truth_rate_hz),
            next_truth_ns: i64::MIN,
            cams,
            driver,
            name,
            p,
            period,
            last_cmd_ns: None,
            expect_cmd: true,
            pace_origin: None,
            lockstep_started: false,
            counts: SimRobotCounts::default(),
        })
    }

    pub fn counts(&self) -> SimRobotCounts {
        self.counts
    }

    /// A scene reset asked on `/rft/sim/reset` (the newest one): the arm near its initial
    /// posture at rest, the object in the start region of the task asked for.
    fn apply_reset(&mut self) {
        let Some(r) = self.reset.latest() else {
            return;
        };
        let dir = rft_autonomy::demos::direction_of(r.task_id);
        self.driver.sim_mut().reset_for(r.seed, dir);
        self.driver.hold();
        self.counts.scene_resets += 1;
        tracing::debug!(node = %self.name, seed = r.seed, task = r.task_id, "scene reset");
    }

    /// The simulated operator (`operator_reset_s`): puts the scene back for the forward task
    /// once the loop has waited long enough for a human.
    fn operator(&mut self, now_ns: i64) -> Result<()> {
        if self.p.operator_reset_s <= 0.0 {
            return Ok(());
        }
        if let Some(ph) = self.phase.latest() {
            self.paused_since_ns = (ph.phase == PHASE_PAUSED_FOR_HUMAN)
                .then(|| self.paused_since_ns.unwrap_or(now_ns));
        }
        let Some(since) = self.paused_since_ns else {
            return Ok(());
        };
        if now_ns - since < ns(self.p.operator_reset_s) {
            return Ok(());
        }
        self.counts.operator_resets += 1;
        let seed = self
            .p
            .seed
            .wrapping_add(1_000_000 + self.counts.operator_resets);
        self.driver.sim_mut().reset_for(seed, Direction::Forward);
        self.driver.hold();
        self.paused_since_ns = None;
        tracing::info!(node = %self.name, resets = self.counts.operator_resets, "simulated operator: scene put back for the forward task");
        self.human_reset.publish(Bool { data: true })
    }

    pub fn driver(&self) -> &SimDriver {
        &self.driver
    }

    fn publish(&mut self, now: Time) -> Result<()> {
        let t = now.as_nanos();
        self.state.publish(self.driver.joint_state(now))?;
        for i in 0..self.cams.len() {
            if t >= self.cams[i].next_ns {
                let (color, depth, info, pose) = self.driver.render(i, now);
                let c = &mut self.cams[i];
                c.next_ns = c.next_ns.max(t) + c.period_ns;
                c.info.publish(info)?;
                c.pose.publish(pose)?;
                if let (Some(p), Some(d)) = (&c.depth, depth) {
                    p.publish(d)?;
                }
                c.color.publish(color)?;
            }
        }
        if t >= self.next_truth_ns {
            self.next_truth_ns = t.max(self.next_truth_ns) + self.truth_period_ns;
            self.object.publish(self.driver.object_pose(now))?;
            let sim = self.driver.sim();
            for dir in Direction::ALL {
                let s = sim.task_status(dir);
                for (what, v) in [
                    ("success", if s.success { 1.0 } else { 0.0 }),
                    ("progress", s.progress),
                ] {
                    self.metric.publish(Metric {
                        header: Header::at(now),
                        source: self.name.clone(),
                        name: format!("sim/{}/{}/{what}", sim.task(), dir.name()),
                        value: v,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Takes the newest commands; on a sim clock in lockstep, waits for the one answering the
    /// state just published.
    fn take_commands(&mut self, ctx: &StepCtx<'_>, lockstep: bool) {
        let now_ns = ctx.now.as_nanos();
        let wait = Duration::from_secs_f64(self.p.lockstep_timeout_ms / 1000.0);
        let mut newest = None;
        if lockstep && self.expect_cmd && !wait.is_zero() {
            // Wait in slices so that a stopping runtime is never held up.
            let deadline = Instant::now() + wait;
            while newest.is_none() && !ctx.is_shutting_down() {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                newest = self.vel.recv_timeout(left.min(Duration::from_millis(20)));
            }
            match newest {
                Some(_) => {}
                None if ctx.is_shutting_down() => {}
                None => {
                    self.counts.lockstep_timeouts += 1;
                    self.expect_cmd = false;
                    if self.counts.lockstep_timeouts.is_power_of_two() {
                        tracing::warn!(node = %self.name, timeouts = self.counts.lockstep_timeouts,
                            "no command answered the joint state in time; running free until one arrives");
                    }
                }
            }
        }
        while let Some(m) = self.vel.try_recv() {
            newest = Some(m);
        }
        if let Some(m) = newest {
            self.expect_cmd = true;
            match self.driver.apply_joint_velocity(&m) {
                Ok(()) => self.last_cmd_ns = Some(now_ns),
                Err(e) => self.rejected(&e),
            }
        }
        if let Some(m) = self.grip.latest()
            && let Err(e) = self.driver.apply_gripper(&m)
        {
            self.rejected(&e);
        }
        let timeout = ns(self.p.command_timeout_ms / 1000.0);
        if self.last_cmd_ns.is_some_and(|t| now_ns - t > timeout) {
            self.driver.hold();
            self.last_cmd_ns = None;
            self.counts.stale_commands += 1;
            tracing::warn!(node = %self.name, "joint velocity command went stale: holding");
        }
    }

    fn rejected(&mut self, e: &rft_sim::CommandError) {
        self.counts.rejected_commands += 1;
        let n = self.counts.rejected_commands;
        if n.is_power_of_two() {
            tracing::warn!(node = %self.name, error = %e, rejected = n, "rejected command");
        }
    }

    fn log_events(&mut self, now: Time) -> Result<()> {
        for e in self.driver.sim_mut().take_events() {
            match &e {
                SimEvent::ObjectOffTable {
                    object, position, ..
                } => {
                    tracing::warn!(node = %self.name, %object, ?position, "object left the table");
                    self.metric.publish(Metric {
                        header: Header::at(now),
                        source: self.name.clone(),
                        name: "sim/object_off_table".into(),
                        value: 1.0,
                    })?;
                }
                SimEvent::Grasped { object, .. } => {
                    tracing::debug!(node = %self.name, %object, "grasped")
                }
                SimEvent::Released { object, .. } => {
                    tracing::debug!(node = %self.name, %object, "released")
                }
            }
        }
        Ok(())
    }
}

impl Node for SimRobot {
    fn name(&self) -> &str {
        &self.name
    }

    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let now = ctx.now;
        let t = now.as_nanos();
        let sim_clock = match ctx.clock {
            Clock::Sim(s) => Some(s.clone()),
            Clock::Wall => None,
        };
        if sim_clock.as_ref().is_some_and(|c| c.is_lockstep()) {
            // The lockstep executor owns time and has delivered everything sent since the
            // last step: apply the command that answered the last state over the period just
            // past, then publish the state at `t`.
            if self.lockstep_started {
                self.take_commands(ctx, false);
                self.driver.advance(self.period.as_secs_f64());
                self.log_events(now)?;
            }
            self.lockstep_started = true;
            self.apply_reset();
            self.operator(t)?;
            return self.publish(now);
        }
        self.apply_reset();
        self.operator(t)?;
        self.publish(now)?;
        self.take_commands(ctx, sim_clock.is_some());
        self.driver.advance(self.period.as_secs_f64());
        self.log_events(now)?;
        if let Some(clock) = sim_clock {
            let next = t + i64::try_from(self.period.as_nanos()).unwrap_or(i64::MAX);
            // This node owns simulated time; pace it against the wall if asked.
            if self.p.realtime_factor > 0.0 {
                let (origin_wall, origin_ns) = *self.pace_origin.get_or_insert((Instant::now(), t));
                let due = origin_wall
                    + Duration::from_secs_f64(
                        (next - origin_ns) as f64 / 1e9 / self.p.realtime_factor,
                    );
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
            }
            clock.advance_to(next);
        }
        Ok(())
    }

    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        // Brake to a stop within the acceleration limits, as the real arm would, and report it.
        self.driver.hold();
        let dt = self.driver.sim().physics_dt();
        let mut braked = 0.0;
        while braked < 2.0 && self.driver.sim().qd().iter().any(|v| *v != 0.0) {
            self.driver.advance(dt);
            braked += dt;
        }
        let stamp = Time::from_nanos(ctx.now.as_nanos() + ns(braked));
        tracing::info!(node = %self.name, rejected = self.counts.rejected_commands,
            lockstep_timeouts = self.counts.lockstep_timeouts, sim_s = self.driver.sim().time_s(),
            "simulated robot stopped");
        self.state.publish(self.driver.joint_state(stamp))
    }
}

impl NodeKind for SimRobotParams {
    const KIND: &'static str = "sim_robot";
    // The joint-state rate; physics runs at its own rate underneath.
    const DEFAULT_RATE_HZ: f64 = 100.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.urdf]
    }

    fn validate(&self) -> rft_config::Result<()> {
        SimRobotParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(SimRobot::new(name, self.clone(), period, bus)?))
    }
}
