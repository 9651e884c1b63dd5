//! The safety filter node: the only node allowed to command the robot.
//!
//! Subscribes to `/joint_states`, `/rft/action` and `/rft/teleop` (end-effector twist in m/s and
//! rad/s, base frame, each axis capped at `max_linear_m_s` / `max_angular_rad_s`, plus gripper), `/rft/estop` (std_msgs/Bool: true engages, false
//! releases) and `/rft/obstacles` (dynamic sphere obstacles). On every joint state it turns the
//! freshest command (teleop wins while it is fresh) into joint velocities with differential IK,
//! filters them through the CBF-QP and publishes `/joint_velocity_cmd` (std_msgs/
//! Float64MultiArray, joints in URDF chain order) and `/gripper_cmd`. `/rft/safety` carries the
//! state, the reason of any stop, the active constraints and their class-K gains α.
//!
//! Between two episodes (`/rft/phase` switching) it moves the arm home itself, through the
//! same QP (`homing` in the parameters; a fresh teleop command still wins), and says on
//! `/rft/at_home` (std_msgs/Bool, every control step while switching) whether home is reached.
//! Each status period it publishes on `/rft/metrics` how many control steps it ran and how many
//! of them it overrode (the QP changed the commanded joint velocity noticeably).
//!
//! Stale joint states or commands, NaN/Inf, an infeasible QP or a solver error each bring the
//! arm to rest with a bounded deceleration, and motion resumes only on a fresh command after
//! the fault has cleared; the e-stop latches until released (see `rft_safety::watchdog`). The
//! node's timer only acts when joint states stop arriving: it keeps decelerating open loop.
//!
//! Every limit comes from the launch file and is checked against the URDF before anything
//! starts: a limit wider than the URDF's is an error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nalgebra::{Point3, Vector3, Vector6};
use rft_msgs::{
    Action, Bool, EpisodePhase, Float64MultiArray, Header, JointState, Metric, Obstacles,
    PHASE_SWITCHING, SAFETY_ESTOP, SAFETY_LIMITING, SAFETY_OK, SAFETY_STOPPED, SAFETY_STOPPING,
    SafetyStatus,
};
use rft_safety::SafetyConfig;
use rft_safety::cbf::{CbfFilter, FilterReport};
use rft_safety::kinematics::DiffIk;
use rft_safety::qp::QpError;
use rft_safety::watchdog::{Mode, StopReason, Watchdog};

use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Error, Result};
use rft_runtime::{Node, StepCtx};

/// The safety filter node's parameters: [`SafetyConfig`], as a launch file's `params` table
/// writes it (the configuration and its defaults live in `rft_safety`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct SafetyFilterParams(pub SafetyConfig);

impl std::ops::Deref for SafetyFilterParams {
    type Target = SafetyConfig;
    fn deref(&self) -> &SafetyConfig {
        &self.0
    }
}

impl std::ops::DerefMut for SafetyFilterParams {
    fn deref_mut(&mut self) -> &mut SafetyConfig {
        &mut self.0
    }
}

/// Counters of inputs the node refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SafetyCounts {
    /// Joint states with missing joints or the wrong lengths.
    pub rejected_states: u64,
    /// `/rft/obstacles` messages that were malformed or too many.
    pub rejected_obstacles: u64,
    /// Steps where the QP failed.
    pub qp_failures: u64,
    /// Steps driven by `/rft/teleop`.
    pub teleop_steps: u64,
    /// Control steps run (a command filtered), and those the QP overrode.
    pub control_steps: u64,
    pub overridden_steps: u64,
    /// Control steps spent moving the arm home between episodes.
    pub homing_steps: u64,
}

pub struct SafetyFilter {
    name: String,
    p: SafetyConfig,
    period: Duration,
    dt_s: f64,
    /// Built once the first joint state gives the rest posture (if the launch file has none).
    filter: Option<(CbfFilter, DiffIk)>,
    watchdog: Watchdog,
    chain_names: Vec<String>,
    /// For each chain joint, its index in the last joint state's arrays.
    state_index: Vec<usize>,
    state_names: Vec<String>,
    states: Subscription<JointState>,
    action: Subscription<Action>,
    teleop: Subscription<Action>,
    estop: Subscription<Bool>,
    obstacles: Subscription<Obstacles>,
    phase: Subscription<EpisodePhase>,
    /// While the episode manager asks for the arm home: whether with the posture.
    homing: Option<bool>,
    /// The home posture and the tool's position there (set on the first joint state).
    home: Option<(Vec<f64>, Vector3<f64>)>,
    at_home: Publisher<Bool>,
    metrics: Publisher<Metric>,
    cmd: Publisher<Float64MultiArray>,
    gripper: Publisher<Float64MultiArray>,
    status: Publisher<SafetyStatus>,
    q: Vec<f64>,
    qd: Vec<f64>,
    u_prev: Vec<f64>,
    u_ref: Vec<f64>,
    u: Vec<f64>,
    /// The freshest command of each source and when it arrived.
    policy_cmd: Option<(i64, Arc<Action>)>,
    teleop_cmd: Option<(i64, Arc<Action>)>,
    last_state_ns: Option<i64>,
    /// Arrival time of the last command the watchdog was told about.
    last_command_seen: Option<i64>,
    last_status_ns: Option<i64>,
    last_status_state: u8,
    last_report: Option<FilterReport>,
    last_mode: Mode,
    qp_time_us: f32,
    counts: SafetyCounts,
}

impl SafetyFilter {
    pub fn new(name: String, p: SafetyConfig, period: Duration, bus: &NodeHandle) -> Result<Self> {
        let built = p
            .build(None)
            .map_err(|e| Error::node(&name, e.under("params").to_string()))?;
        let n = built.chain.dof();
        let chain_names = built.chain.joints.iter().map(|j| j.name.clone()).collect();
        let watchdog = Watchdog::new(built.watchdog.clone());
        // Without a rest posture the first joint state supplies it (and the self-collision
        // reference posture).
        let filter = if p.rest_position.is_none() {
            None
        } else {
            let rest = p.rest_position.clone().unwrap_or_default();
            let ik = DiffIk::new(&built.chain, p.ik_damping, p.nullspace_gain, rest);
            Some((p.make_filter(built), ik))
        };
        Ok(Self {
            states: bus.subscribe("/joint_states", QueueConfig::latest_only())?,
            action: bus.subscribe_quiet("/rft/action", QueueConfig::latest_only())?,
            teleop: bus.subscribe_quiet("/rft/teleop", QueueConfig::latest_only())?,
            estop: bus.subscribe("/rft/estop", QueueConfig::drop_oldest(64))?,
            obstacles: bus.subscribe_quiet("/rft/obstacles", QueueConfig::latest_only())?,
            phase: bus.subscribe_quiet("/rft/phase", QueueConfig::latest_only())?,
            homing: None,
            home: None,
            at_home: bus.publisher("/rft/at_home")?,
            metrics: bus.publisher("/rft/metrics")?,
            cmd: bus.publisher("/joint_velocity_cmd")?,
            gripper: bus.publisher("/gripper_cmd")?,
            status: bus.publisher("/rft/safety")?,
            dt_s: 1.0 / p.joint_state_rate_hz,
            name,
            p,
            period,
            filter,
            watchdog,
            chain_names,
            state_index: vec![0; n],
            state_names: Vec::new(),
            q: vec![0.0; n],
            qd: vec![0.0; n],
            u_prev: vec![0.0; n],
            u_ref: vec![0.0; n],
            u: vec![0.0; n],
            policy_cmd: None,
            teleop_cmd: None,
            last_state_ns: None,
            last_command_seen: None,
            last_status_ns: None,
            last_status_state: u8::MAX,
            last_report: None,
            last_mode: Mode::Run,
            qp_time_us: 0.0,
            counts: SafetyCounts::default(),
        })
    }

    pub fn counts(&self) -> SafetyCounts {
        self.counts
    }

    /// Copies the chain's joints out of `js` (matched by name; in order when unnamed).
    fn read_state(&mut self, js: &JointState) -> bool {
        let n = self.q.len();
        if js.name.is_empty() {
            if js.position.len() != n {
                return false;
            }
            self.state_names.clear();
            for (i, idx) in self.state_index.iter_mut().enumerate() {
                *idx = i;
            }
        } else if js.name != self.state_names {
            for (i, want) in self.chain_names.iter().enumerate() {
                let Some(k) = js.name.iter().position(|s| s == want) else {
                    tracing::warn!(node = %self.name, joint = %want, "joint state lacks a joint of the chain");
                    self.state_names.clear();
                    return false;
                };
                self.state_index[i] = k;
            }
            self.state_names.clone_from(&js.name);
        }
        for i in 0..n {
            let k = self.state_index[i];
            let Some(q) = js.position.get(k) else {
                return false;
            };
            self.q[i] = *q;
            // Velocity is optional in a JointState; NaN or Inf in it still trips the watchdog.
            self.qd[i] = js.velocity.get(k).copied().unwrap_or(0.0);
        }
        true
    }

    fn take_estops(&mut self, now: i64) {
        while let Some(e) = self.estop.try_recv() {
            self.watchdog.on_estop(now, e.data);
            tracing::warn!(node = %self.name, engaged = e.data, "e-stop");
        }
    }

    fn poll_inputs(&mut self, now: i64) {
        self.take_estops(now);
        if let Some(o) = self.obstacles.latest() {
            let ok = o.centers.len() == o.radii.len();
            let list: Vec<(Point3<f64>, f64)> = o
                .centers
                .iter()
                .zip(&o.radii)
                .map(|(c, r)| (Point3::new(c.x, c.y, c.z), *r))
                .collect();
            let res = match (&mut self.filter, ok) {
                (Some((f, _)), true) => f.set_dynamic_obstacles(&list).map_err(|e| e.to_string()),
                (None, true) => Err("no joint state yet".into()),
                (_, false) => Err(format!(
                    "{} centres but {} radii",
                    o.centers.len(),
                    o.radii.len()
                )),
            };
            if let Err(reason) = res {
                self.counts.rejected_obstacles += 1;
                tracing::warn!(node = %self.name, %reason, rejected = self.counts.rejected_obstacles,
                    "rejected /rft/obstacles (the previous obstacles stay)");
            }
        }
        for (sub, slot) in [
            (&self.action, &mut self.policy_cmd),
            (&self.teleop, &mut self.teleop_cmd),
        ] {
            if let Some(a) = sub.latest() {
                *slot = Some((now, a));
            }
        }
    }

    /// The command in force: teleop while it is fresh, else the policy's.
    fn command(&self, now: i64) -> Option<(i64, Arc<Action>, bool)> {
        let fresh_ns = (self.p.stale_command_ms * 1e6) as i64;
        match &self.teleop_cmd {
            Some((t, a)) if now - t <= fresh_ns => Some((*t, a.clone(), true)),
            _ => self
                .policy_cmd
                .as_ref()
                .map(|(t, a)| (*t, a.clone(), false)),
        }
    }

    /// One control step on a fresh joint state.
    fn control(&mut self, ctx: &StepCtx<'_>, js: &JointState) -> Result<()> {
        let now = ctx.now.as_nanos();
        self.last_state_ns = Some(now);
        if !self.read_state(js) {
            self.counts.rejected_states += 1;
            tracing::warn!(node = %self.name, rejected = self.counts.rejected_states,
                "rejected joint state (missing joints or wrong lengths)");
            return Ok(());
        }
        self.watchdog.on_state(now, &self.q, &self.qd);
        if self.filter.is_none() && self.q.iter().all(|v| v.is_finite()) {
            self.filter = Some(self.build_at(&self.q.clone())?);
        }
        if self.home.is_none()
            && let Some((filter, _)) = &self.filter
            && self.q.iter().all(|v| v.is_finite())
        {
            let posture = self
                .p
                .homing
                .posture
                .clone()
                .unwrap_or_else(|| self.q.clone());
            let at = filter.chain().base_from_tip(&posture).translation.vector;
            self.home = Some((posture, at));
        }
        if let Some(ph) = self.phase.latest() {
            self.homing = (ph.phase == PHASE_SWITCHING).then_some(ph.home_posture);
        }
        self.poll_inputs(now);
        let command = self.command(now);
        let mut twist = Vector6::zeros();
        let mut gripper = None;
        // Between episodes the filter drives the arm home unless a person is driving.
        let homing = self
            .homing
            .filter(|_| !matches!(command, Some((_, _, true))));
        let mut joint_reference = false;
        if let Some(posture) = homing {
            let (tool, direct, at_home) = self.homing_command(posture);
            twist.fixed_rows_mut::<3>(0).copy_from(&tool);
            joint_reference = direct;
            // The filter's own command is always fresh.
            let raw = [tool.x, tool.y, tool.z, 0.0, 0.0, 0.0, 0.0];
            self.watchdog.on_command(now, &raw);
            self.counts.homing_steps += 1;
            self.at_home.publish(Bool { data: at_home })?;
        } else if let Some((t, a, teleop)) = &command {
            let tw = &a.twist;
            let raw = [
                tw.linear.x,
                tw.linear.y,
                tw.linear.z,
                tw.angular.x,
                tw.angular.y,
                tw.angular.z,
                a.gripper,
            ];
            // Only a new message counts as fresh (the stamp is its arrival on our clock).
            if self.last_command_seen < Some(*t) {
                self.watchdog.on_command(*t, &raw);
                self.last_command_seen = Some(*t);
            }
            for k in 0..3 {
                // SI units, each axis capped at the configured speed (NaN stays NaN for the
                // watchdog).
                let (l, w) = (self.p.max_linear_m_s, self.p.max_angular_rad_s);
                twist[k] = raw[k].clamp(-l, l);
                twist[k + 3] = raw[k + 3].clamp(-w, w);
            }
            gripper = raw[6].is_finite().then(|| raw[6].clamp(0.0, 1.0));
            if *teleop {
                self.counts.teleop_steps += 1;
            }
        }
        let mut mode = self.watchdog.mode(now);
        if mode == Mode::Run
            && let Some((filter, ik)) = &mut self.filter
        {
            if !joint_reference {
                ik.solve(filter.chain(), &self.q, &twist, &mut self.u_ref);
            }
            let t0 = Instant::now();
            let res = filter.filter(&self.q, &self.u_prev, &self.u_ref, &mut self.u);
            self.qp_time_us = t0.elapsed().as_secs_f32() * 1e6;
            match res {
                Ok(report) => {
                    self.last_report = Some(report);
                    self.counts.control_steps += 1;
                    if overridden(&self.u, &self.u_ref) {
                        self.counts.overridden_steps += 1;
                    }
                }
                Err(e) => {
                    self.counts.qp_failures += 1;
                    tracing::warn!(node = %self.name, error = %e, "QP failed: stopping");
                    self.watchdog
                        .on_qp_failure(now, matches!(e, QpError::Infeasible));
                    mode = self.watchdog.mode(now);
                }
            }
        }
        if mode != Mode::Run || self.filter.is_none() {
            self.watchdog
                .decelerate(&self.u_prev, self.dt_s, &mut self.u);
        }
        self.last_mode = mode;
        self.publish(ctx, if mode == Mode::Run { gripper } else { None })
    }

    /// The homing move at the current joint state: the tool's linear velocity, or (true) the
    /// posture move's joint velocities written into `u_ref`, and whether home is reached (with
    /// the posture: and the arm at rest there).
    fn homing_command(&mut self, posture: bool) -> (Vector3<f64>, bool, bool) {
        let (Some((filter, _)), Some((home_q, home_p))) = (&self.filter, &self.home) else {
            return (Vector3::zeros(), false, false);
        };
        let h = &self.p.homing;
        let tcp = filter.chain().base_from_tip(&self.q).translation.vector;
        if (tcp - home_p).norm() >= h.tolerance_m {
            return (h.tool_velocity(&tcp, home_p), false, false);
        }
        if posture && !h.at_posture(&self.q, home_q) {
            h.joint_velocity(&self.q, home_q, &mut self.u_ref);
            return (Vector3::zeros(), true, false);
        }
        // With the posture the arm comes to rest there; the tool alone is home on arrival.
        let rest = !posture || self.qd.iter().all(|v| v.abs() < h.rest_rad_s);
        (Vector3::zeros(), false, rest)
    }

    fn build_at(&self, q: &[f64]) -> Result<(CbfFilter, DiffIk)> {
        let (f, ik) = self
            .p
            .filter_and_ik(q)
            .map_err(|e| Error::node(&self.name, e.under("params").to_string()))?;
        tracing::info!(node = %self.name, self_pairs = f.config().self_pairs.len(),
            "safety filter ready");
        Ok((f, ik))
    }

    fn publish(&mut self, ctx: &StepCtx<'_>, gripper: Option<f64>) -> Result<()> {
        let now = ctx.now.as_nanos();
        self.cmd
            .publish(Float64MultiArray::from_data(self.u.clone()))?;
        if let Some(g) = gripper {
            self.gripper
                .publish(Float64MultiArray::from_data(vec![g]))?;
        }
        self.u_prev.copy_from_slice(&self.u);
        let moving = self.u.iter().any(|v| *v != 0.0);
        let (state, reason) = match self.last_mode {
            Mode::Stop(StopReason::EStop) => (SAFETY_ESTOP, StopReason::EStop.as_str().to_string()),
            Mode::Stop(r) if moving => (SAFETY_STOPPING, r.as_str().to_string()),
            Mode::Stop(r) => (SAFETY_STOPPED, r.as_str().to_string()),
            Mode::Run => match (&self.filter, &self.last_report) {
                (Some((f, _)), Some(rep)) if !f.active_barriers().is_empty() || rep.slack > 0.0 => {
                    (SAFETY_LIMITING, String::new())
                }
                (None, _) => (SAFETY_STOPPED, "waiting for the first joint state".into()),
                _ => (SAFETY_OK, String::new()),
            },
        };
        let period_ns = (1e9 / self.p.status_rate_hz) as i64;
        let due = self.last_status_ns.is_none_or(|t| now - t >= period_ns);
        if !(due || state != self.last_status_state) {
            return Ok(());
        }
        self.last_status_ns = Some(now);
        self.last_status_state = state;
        for (name, value) in [
            ("control_steps", self.counts.control_steps),
            ("overridden_steps", self.counts.overridden_steps),
        ] {
            self.metrics.publish(Metric {
                header: Header::at(ctx.now),
                source: self.name.clone(),
                name: name.into(),
                value: value as f64,
            })?;
        }
        let (active, alpha) = match &self.filter {
            Some((f, _)) if self.last_mode == Mode::Run => {
                let active: Vec<String> =
                    f.active_barriers().iter().map(|b| b.to_string()).collect();
                let alpha = f
                    .active_barriers()
                    .iter()
                    .map(|b| {
                        f.alphas()
                            .iter()
                            .find(|(x, _)| x == b)
                            // Velocity and acceleration limits are not barriers: no α.
                            .map_or(0.0, |(_, a)| *a)
                    })
                    .collect();
                (active, alpha)
            }
            _ => (Vec::new(), Vec::new()),
        };
        self.status.publish(SafetyStatus {
            header: Header::at(ctx.now),
            state,
            reason,
            active_constraints: active,
            alpha,
            qp_time_us: self.qp_time_us,
            min_distance_m: self
                .last_report
                .map_or(f32::INFINITY, |r| r.min_clearance_m as f32),
        })
    }
}

/// Whether the QP changed the commanded joint velocity `u_ref` noticeably (more than 0.05 rad/s
/// plus 20 % of the command's largest joint speed), as the episode manager's
/// `posture_reset_overridden` counts it.
pub fn overridden(u: &[f64], u_ref: &[f64]) -> bool {
    let diff = u
        .iter()
        .zip(u_ref)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = u_ref.iter().map(|v| v.abs()).fold(0.0, f64::max);
    diff > 0.05 + 0.2 * scale
}

impl Node for SafetyFilter {
    fn name(&self) -> &str {
        &self.name
    }
    /// The timer only watches for joint states that stopped arriving.
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let now = ctx.now.as_nanos();
        let stale_ns = (self.p.stale_state_ms * 1e6) as i64;
        if self.last_state_ns.is_none_or(|t| now - t <= stale_ns) {
            return Ok(());
        }
        // No joint state for too long: decelerate open loop from the last command.
        self.poll_inputs(now);
        self.last_mode = self.watchdog.mode(now);
        self.watchdog
            .decelerate(&self.u_prev, self.period.as_secs_f64(), &mut self.u);
        self.publish(ctx, None)
    }
    fn on_wake(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        if let Some(js) = self.states.latest() {
            self.control(ctx, &js)
        } else {
            // An e-stop alone: take it now, act on the next joint state.
            self.take_estops(ctx.now.as_nanos());
            Ok(())
        }
    }
    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        // The runtime is stopping: command zero.
        self.u.iter_mut().for_each(|v| *v = 0.0);
        self.last_mode = Mode::Stop(StopReason::StaleCommand);
        self.publish(ctx, None)
    }
}

impl NodeKind for SafetyFilterParams {
    const KIND: &'static str = "safety_filter";
    // Its timer only watches for joint states that stop; control runs on each state.
    const DEFAULT_RATE_HZ: f64 = 100.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.0.urdf]
    }

    fn validate(&self) -> rft_config::Result<()> {
        self.0.validate()
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(SafetyFilter::new(
            name,
            self.0.clone(),
            period,
            bus,
        )?))
    }
}
