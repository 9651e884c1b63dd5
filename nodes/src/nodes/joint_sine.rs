//! A test-pattern commander: sinusoidal joint velocities on `/joint_velocity_cmd`, and a final
//! zero command when it stops. The placeholder for the safety filter in the dry run.

use std::time::Duration;

use rft_msgs::Float64MultiArray;
use serde::Deserialize;

use super::check;
use crate::bus::{NodeHandle, Publisher};
use crate::error::Result;
use crate::runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointSineParams {
    #[serde(default = "default_joints")]
    pub joints: usize,
    #[serde(default = "default_amp")]
    pub amplitude_rad_s: f64,
    #[serde(default = "default_freq")]
    pub frequency_hz: f64,
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
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        check(self.joints > 0, "joints", || {
            "needs at least one joint".into()
        })?;
        check(
            self.amplitude_rad_s.is_finite() && self.amplitude_rad_s >= 0.0,
            "amplitude_rad_s",
            || "must be finite and not negative".into(),
        )?;
        check(
            self.frequency_hz.is_finite() && self.frequency_hz > 0.0,
            "frequency_hz",
            || "must be positive".into(),
        )
    }
}

pub struct JointSine {
    name: String,
    p: JointSineParams,
    period: Duration,
    cmd: Publisher<Float64MultiArray>,
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
            cmd: bus.publisher("/joint_velocity_cmd")?,
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
        let data = (0..self.p.joints)
            .map(|j| self.p.amplitude_rad_s * (w * t + j as f64 * 0.7).sin())
            .collect();
        self.cmd.publish(Float64MultiArray::from_data(data))
    }
    fn shutdown(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        self.cmd
            .publish(Float64MultiArray::from_data(vec![0.0; self.p.joints]))
    }
}
