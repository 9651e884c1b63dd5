//! A test-pattern commander: sinusoidal joint velocities on `/joint_velocity_cmd`, or (with
//! `output = "action"`) a sinusoidal end-effector twist on `/rft/action` for the safety filter (m/s);
//! a final zero command when it stops. The placeholder for the policy in the dry run.

use std::time::Duration;

use rft_msgs::{Action, Float64MultiArray, Header, Twist, Vector3};
use serde::Deserialize;

use rft_config::check;
use rft_runtime::Result;
use rft_runtime::bus::{NodeHandle, Publisher};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointSineParams {
    #[serde(default = "default_joints")]
    pub joints: usize,
    #[serde(default = "default_amp")]
    pub amplitude_rad_s: f64,
    #[serde(default = "default_freq")]
    pub frequency_hz: f64,
    #[serde(default)]
    pub output: SineOutput,
}

/// What the commander drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SineOutput {
    /// `/joint_velocity_cmd`, `amplitude_rad_s` per joint.
    #[default]
    JointVelocity,
    /// `/rft/action`: a tool twist (`amplitude_rad_s` read as m/s) circling in the horizontal
    /// plane and bobbing vertically.
    Action,
}

fn default_joints() -> usize {
    7
}
fn default_amp() -> f64 {
    0.2
}
fn default_freq() -> f64 {
    0.25
}

impl JointSineParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check(self.joints > 0, "joints", || {
            "needs at least one joint".into()
        })?;
        check(
            self.amplitude_rad_s.is_finite() && self.amplitude_rad_s >= 0.0,
            "amplitude_rad_s",
            || "must be finite and not negative".into(),
        )?;
        check(
            self.output == SineOutput::JointVelocity || self.amplitude_rad_s <= 1.0,
            "amplitude_rad_s",
            || "an action is normalised: the amplitude must be at most 1".into(),
        )?;
        check(
            self.frequency_hz.is_finite() && self.frequency_hz > 0.0,
            "frequency_hz",
            || "must be positive".into(),
        )
    }
}

enum Out {
    Joint(Publisher<Float64MultiArray>),
    Action(Publisher<Action>),
}

pub struct JointSine {
    name: String,
    p: JointSineParams,
    period: Duration,
    out: Out,
    t0_ns: Option<i64>,
}

impl JointSine {
    pub fn new(
        name: String,
        p: JointSineParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        Ok(Self {
            out: match p.output {
                SineOutput::JointVelocity => Out::Joint(bus.publisher("/joint_velocity_cmd")?),
                SineOutput::Action => Out::Action(bus.publisher("/rft/action")?),
            },
            name,
            p,
            period,
            t0_ns: None,
        })
    }
}

impl Node for JointSine {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let now = ctx.now.as_nanos();
        let t = (now - *self.t0_ns.get_or_insert(now)) as f64 * 1e-9;
        let w = std::f64::consts::TAU * self.p.frequency_hz;
        let cmd = match &self.out {
            Out::Joint(cmd) => cmd,
            Out::Action(action) => {
                let a = self.p.amplitude_rad_s;
                return action.publish(Action {
                    header: Header::at(ctx.now),
                    twist: Twist {
                        linear: Vector3 {
                            x: a * (w * t).sin(),
                            y: a * (w * t).cos(),
                            z: a * (2.0 * w * t).sin(),
                        },
                        angular: Vector3::default(),
                    },
                    gripper: 0.5 + 0.5 * (w * t).sin(),
                    ..Default::default()
                });
            }
        };
        let data = (0..self.p.joints)
            .map(|j| self.p.amplitude_rad_s * (w * t + j as f64 * 0.7).sin())
            .collect();
        cmd.publish(Float64MultiArray::from_data(data))
    }
    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let cmd = match &self.out {
            Out::Joint(cmd) => cmd,
            Out::Action(action) => {
                return action.publish(Action {
                    header: Header::at(ctx.now),
                    ..Default::default()
                });
            }
        };
        cmd.publish(Float64MultiArray::from_data(vec![0.0; self.p.joints]))
    }
}

impl NodeKind for JointSineParams {
    const KIND: &'static str = "joint_sine";
    const DEFAULT_RATE_HZ: f64 = 50.0;

    fn validate(&self) -> rft_config::Result<()> {
        JointSineParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(JointSine::new(name, self.clone(), period, bus)?))
    }
}
