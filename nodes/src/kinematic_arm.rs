//! A kinematic arm: integrates joint-velocity commands within joint and velocity limits and
//! publishes joint states. It stands in for a robot driver until the physics sim exists, and is
//! handy for bus and safety tests on any machine.

use std::sync::Arc;
use std::time::Duration;

use rft_msgs::{Float64MultiArray, Header, JointState};
use rft_sim::world::PANDA_READY;
use serde::Deserialize;

use rft_config::check;
use rft_runtime::Result;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Node, StepCtx};

/// Franka Panda limits (manufacturer's figures).
const PANDA_MIN: [f64; 7] = [
    -2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973,
];
const PANDA_MAX: [f64; 7] = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973];
const PANDA_VMAX: [f64; 7] = [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinematicArmParams {
    #[serde(default = "default_names")]
    pub joint_names: Vec<String>,
    #[serde(default = "default_min")]
    pub position_min: Vec<f64>,
    #[serde(default = "default_max")]
    pub position_max: Vec<f64>,
    #[serde(default = "default_vmax")]
    pub max_velocity_rad_s: Vec<f64>,
    #[serde(default = "default_ready")]
    pub initial_position: Vec<f64>,
    /// A command older than this is replaced by zero velocity.
    #[serde(default = "default_timeout")]
    pub command_timeout_ms: f64,
}

fn default_names() -> Vec<String> {
    (1..=7).map(|i| format!("panda_joint{i}")).collect()
}
fn default_min() -> Vec<f64> {
    PANDA_MIN.to_vec()
}
fn default_max() -> Vec<f64> {
    PANDA_MAX.to_vec()
}
fn default_vmax() -> Vec<f64> {
    PANDA_VMAX.to_vec()
}
fn default_ready() -> Vec<f64> {
    PANDA_READY.to_vec()
}
fn default_timeout() -> f64 {
    200.0
}

impl Default for KinematicArmParams {
    fn default() -> Self {
        Self {
            joint_names: default_names(),
            position_min: default_min(),
            position_max: default_max(),
            max_velocity_rad_s: default_vmax(),
            initial_position: default_ready(),
            command_timeout_ms: default_timeout(),
        }
    }
}

impl KinematicArmParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        let n = self.joint_names.len();
        check(n > 0, "joint_names", || "needs at least one joint".into())?;
        for (key, v) in [
            ("position_min", &self.position_min),
            ("position_max", &self.position_max),
            ("max_velocity_rad_s", &self.max_velocity_rad_s),
            ("initial_position", &self.initial_position),
        ] {
            check(v.len() == n, key, || {
                format!("has {} values but there are {n} joints", v.len())
            })?;
            check(v.iter().all(|x| x.is_finite()), key, || {
                "values must be finite".into()
            })?;
        }
        for i in 0..n {
            let (lo, hi, q0) = (
                self.position_min[i],
                self.position_max[i],
                self.initial_position[i],
            );
            check(lo < hi, "position_min", || {
                format!("joint {i}: min {lo} is not below max {hi}")
            })?;
            check((lo..=hi).contains(&q0), "initial_position", || {
                format!("joint {i}: {q0} is outside [{lo}, {hi}]")
            })?;
            check(
                self.max_velocity_rad_s[i] > 0.0,
                "max_velocity_rad_s",
                || format!("joint {i}: must be positive"),
            )?;
        }
        check(self.command_timeout_ms > 0.0, "command_timeout_ms", || {
            "must be positive".into()
        })
    }
}

pub struct KinematicArm {
    name: String,
    p: KinematicArmParams,
    period: Duration,
    q: Vec<f64>,
    qd: Vec<f64>,
    cmd: Subscription<Float64MultiArray>,
    state: Publisher<JointState>,
    last_cmd: Option<(i64, Arc<Float64MultiArray>)>,
    rejected: u64,
}

impl KinematicArm {
    pub fn new(
        name: String,
        p: KinematicArmParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        Ok(Self {
            q: p.initial_position.clone(),
            qd: vec![0.0; p.joint_names.len()],
            cmd: bus.subscribe_quiet("/joint_velocity_cmd", QueueConfig::latest_only())?,
            state: bus.publisher("/joint_states")?,
            name,
            p,
            period,
            last_cmd: None,
            rejected: 0,
        })
    }

    fn publish_state(&self, ctx: &StepCtx<'_>) -> Result<()> {
        self.state.publish(JointState {
            header: Header::at(ctx.now),
            name: self.p.joint_names.clone(),
            position: self.q.clone(),
            velocity: self.qd.clone(),
            effort: vec![0.0; self.q.len()],
        })
    }

    /// Commands rejected for a wrong length or non-finite values.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

impl Node for KinematicArm {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let now = ctx.now.as_nanos();
        if let Some(c) = self.cmd.latest() {
            if c.data.len() != self.q.len() || !c.data.iter().all(|v| v.is_finite()) {
                self.rejected += 1;
                tracing::warn!(node = %self.name, len = c.data.len(), rejected = self.rejected,
                    "rejected velocity command (wrong length or non-finite)");
            } else {
                self.last_cmd = Some((now, c));
            }
        }
        let timeout_ns = (self.p.command_timeout_ms * 1e6) as i64;
        let fresh = self
            .last_cmd
            .as_ref()
            .filter(|(t, _)| now - t <= timeout_ns);
        let dt = self.period.as_secs_f64();
        for i in 0..self.q.len() {
            let vmax = self.p.max_velocity_rad_s[i];
            let v = fresh.map_or(0.0, |(_, c)| c.data[i].clamp(-vmax, vmax));
            let q = self.q[i] + v * dt;
            let (lo, hi) = (self.p.position_min[i], self.p.position_max[i]);
            self.q[i] = q.clamp(lo, hi);
            self.qd[i] = if q == self.q[i] { v } else { 0.0 };
        }
        self.publish_state(ctx)
    }
    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        self.qd.iter_mut().for_each(|v| *v = 0.0);
        self.publish_state(ctx)
    }
}

impl NodeKind for KinematicArmParams {
    const KIND: &'static str = "kinematic_arm";
    const DEFAULT_RATE_HZ: f64 = 100.0;

    fn validate(&self) -> rft_config::Result<()> {
        KinematicArmParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(KinematicArm::new(
            name,
            self.clone(),
            period,
            bus,
        )?))
    }
}
