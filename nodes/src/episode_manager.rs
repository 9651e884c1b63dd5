//! The reset-free schedule over the bus: forward and backward alternate when the reward node
//! reports success (it debounces k frames), on a timeout, or when nothing moves for a while;
//! an object off the table, or out of the `reach` area, pauses everything and asks for a human
//! reset, counted.
//!
//! It publishes `/rft/phase` on every change (and again every `republish_s`, so late joiners
//! learn the phase), and the human-reset count on `/rft/metrics`. A reset is reported done on
//! `/rft/human_reset` (std_msgs/Bool `true`), by an operator or by the simulator.

use std::path::PathBuf;
use std::time::Duration;

use rft_msgs::{
    Bool, EpisodePhase, Header, JointState, Metric, PHASE_PAUSED_FOR_HUMAN, PHASE_RUNNING,
    PHASE_STOPPED, PoseStamped, Reward,
};
use rft_sim::Direction;
use serde::Deserialize;

use crate::policy_runner::{default_finger_max, default_fingers};
use crate::robot_state::{ToolFk, iso};
use rft_autonomy::demos::task_id;
use rft_autonomy::schedule::{Decision, Schedule, ScheduleConfig};
use rft_config::ConfigError;
use rft_runtime::Result;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeManagerParams {
    /// Timeout, stuck detection, off-table height. `consecutive` counts successful rewards
    /// (the reward node already debounces frames), so 1 is the usual value here.
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleConfig,
    #[serde(default = "rft_sim::world::default_urdf")]
    pub urdf: PathBuf,
    #[serde(default = "crate::robot_state::default_base_link")]
    pub base_link: String,
    #[serde(default = "crate::robot_state::default_tcp_link")]
    pub tcp_link: String,
    #[serde(default = "default_object_topic")]
    pub object_topic: String,
    /// Seconds between repeats of the current phase.
    #[serde(default = "default_republish")]
    pub republish_s: f64,
    /// Every episode's end (time, episode, direction, reason, human resets so far), written as
    /// it happens.
    #[serde(default = "default_episodes_csv")]
    pub episodes_csv: Option<PathBuf>,
}

fn default_episodes_csv() -> Option<PathBuf> {
    Some(PathBuf::from("{run_dir}/episodes.csv"))
}

fn default_schedule() -> ScheduleConfig {
    ScheduleConfig {
        consecutive: 1,
        home_s: 0.0,
        ..ScheduleConfig::default()
    }
}
fn default_object_topic() -> String {
    "/rft/object_pose".into()
}
fn default_republish() -> f64 {
    1.0
}

impl EpisodeManagerParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        self.schedule.validate().map_err(|e| e.under("schedule"))?;
        // What only the pipeline's sim loop does is refused here rather than ignored.
        for (key, on, what) in [
            (
                "home_s",
                self.schedule.home_s > 0.0,
                "moving the arm home between episodes",
            ),
            (
                "stall_escape",
                self.schedule.stall_escape > 0,
                "acting with the stall-escape noise",
            ),
        ] {
            if on {
                return Err(ConfigError::new(
                    format!("schedule.{key}"),
                    format!(
                        "{what} is done by the pipeline's sim loop only; \
                         the node graph does not do it yet (set 0)"
                    ),
                ));
            }
        }
        rft_config::check(
            self.republish_s.is_finite() && self.republish_s > 0.0,
            "republish_s",
            || format!("{} must be positive", self.republish_s),
        )
    }
}

/// What happened, for tests and the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeLog {
    /// (episode id, direction, reason it ended).
    pub ended: Vec<(u64, String, String)>,
    pub human_resets: u64,
    pub paused: bool,
}

pub struct EpisodeManager {
    name: String,
    p: EpisodeManagerParams,
    period: Duration,
    fk: ToolFk,
    schedule: Option<Schedule>,
    rewards: Subscription<Reward>,
    joints: Subscription<JointState>,
    object: Subscription<PoseStamped>,
    reset_done: Subscription<Bool>,
    phase_out: Publisher<EpisodePhase>,
    metric: Publisher<Metric>,
    last_reason: String,
    last_js: Option<std::sync::Arc<JointState>>,
    last_obj: Option<std::sync::Arc<PoseStamped>>,
    last_published_s: f64,
    log: std::sync::Arc<std::sync::Mutex<EpisodeLog>>,
    csv: Option<std::io::BufWriter<std::fs::File>>,
}

impl EpisodeManager {
    pub fn new(
        name: String,
        p: EpisodeManagerParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        let fk = ToolFk::new(
            &name,
            &p.urdf,
            &p.base_link,
            &p.tcp_link,
            &default_fingers(),
            default_finger_max(),
        )?;
        let latest = QueueConfig::latest_only();
        let csv = match &p.episodes_csv {
            Some(path) => match std::fs::File::create(path).and_then(|f| {
                use std::io::Write;
                let mut w = std::io::BufWriter::new(f);
                writeln!(w, "time_s,episode,direction,reason,human_resets")?;
                Ok(w)
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    // The schedule runs without its log rather than not at all.
                    tracing::warn!(node = %name, path = %path.display(), error = %e, "episodes.csv cannot be written");
                    None
                }
            },
            None => None,
        };
        Ok(Self {
            csv,
            fk,
            schedule: None,
            rewards: bus.subscribe_quiet("/rft/reward", QueueConfig::drop_oldest(256))?,
            joints: bus.subscribe_quiet("/joint_states", latest)?,
            object: bus.subscribe_quiet(&p.object_topic, latest)?,
            reset_done: bus.subscribe_quiet("/rft/human_reset", QueueConfig::drop_oldest(16))?,
            phase_out: bus.publisher("/rft/phase")?,
            metric: bus.publisher("/rft/metrics")?,
            last_reason: "start".into(),
            last_js: None,
            last_obj: None,
            last_published_s: f64::NEG_INFINITY,
            log: Default::default(),
            name,
            p,
            period,
        })
    }

    pub fn log(&self) -> std::sync::Arc<std::sync::Mutex<EpisodeLog>> {
        self.log.clone()
    }

    fn publish_phase(&mut self, ctx: &StepCtx<'_>, phase: u8) -> Result<()> {
        let Some(s) = &self.schedule else {
            return Ok(());
        };
        self.phase_out.publish(EpisodePhase {
            header: Header {
                stamp: ctx.now,
                frame_id: String::new(),
            },
            episode_id: s.episode(),
            task_id: task_id(s.direction()),
            phase,
            reason: self.last_reason.clone(),
        })?;
        self.last_published_s = ctx.now.as_secs_f64();
        Ok(())
    }
}

impl Node for EpisodeManager {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let now_s = ctx.now.as_secs_f64();
        let schedule = self.schedule.get_or_insert_with(|| {
            Schedule::new(self.p.schedule.clone(), Direction::Forward, now_s)
        });
        let before = (schedule.episode(), schedule.is_paused());
        // Only rewards scored for the current task count.
        let want = task_id(schedule.direction());
        let success = self
            .rewards
            .drain()
            .into_iter()
            .filter(|r| r.task_id == want && r.valid)
            .fold(None, |acc: Option<bool>, r| {
                Some(acc.unwrap_or(false) || r.success)
            });
        // `latest` takes the newest message off the queue: keep the last one of each.
        if let Some(m) = self.joints.latest() {
            self.last_js = Some(m);
        }
        if let Some(m) = self.object.latest() {
            self.last_obj = Some(m);
        }
        let (Some(js), Some(obj)) = (self.last_js.clone(), self.last_obj.clone()) else {
            return Ok(());
        };
        let Some(tool) = self.fk.tcp(&js) else {
            return Ok(());
        };
        // Set at the top of this step.
        let Some(schedule) = self.schedule.as_mut() else {
            return Ok(());
        };
        let object = iso(&obj).translation.vector;
        let mut decision = schedule.tick(now_s, success, &object, &tool.translation.vector);
        if decision == Decision::Paused && self.reset_done.drain().iter().any(|b| b.data) {
            decision = schedule.human_reset_done(now_s);
        }
        let after = (schedule.episode(), schedule.is_paused());
        let (dir, resets) = (schedule.direction(), schedule.human_resets());
        if let Decision::End { reason, .. } = decision {
            self.last_reason = reason.name().into();
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.ended
                .push((before.0, dir.reverse().name().into(), reason.name().into()));
            log.human_resets = resets;
            log.paused = false;
            drop(log);
            tracing::info!(node = %self.name, episode = before.0, reason = reason.name(), next = dir.name(), "episode ended");
            if let Some(csv) = self.csv.as_mut() {
                use std::io::Write;
                let row = writeln!(
                    csv,
                    "{:.2},{},{},{},{resets}",
                    now_s,
                    before.0,
                    dir.reverse().name(),
                    reason.name()
                )
                .and_then(|()| csv.flush());
                if let Err(e) = row {
                    tracing::warn!(node = %self.name, error = %e, "episodes.csv: not written; no more rows");
                    self.csv = None;
                }
            }
            self.metric.publish(Metric {
                header: Header {
                    stamp: ctx.now,
                    frame_id: String::new(),
                },
                source: self.name.clone(),
                name: "human_resets".into(),
                value: resets as f64,
            })?;
        }
        if after.1 && !before.1 {
            let cause = schedule.pause_cause().map_or("paused", |c| c.name());
            self.last_reason = cause.into();
            self.log.lock().unwrap_or_else(|p| p.into_inner()).paused = true;
            tracing::warn!(node = %self.name, cause, x = object.x, y = object.y, "paused for a human reset (publish true on /rft/human_reset when done)");
        }
        let phase = if after.1 {
            PHASE_PAUSED_FOR_HUMAN
        } else {
            PHASE_RUNNING
        };
        if before != after || now_s - self.last_published_s >= self.p.republish_s {
            self.publish_phase(ctx, phase)?;
        }
        Ok(())
    }

    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let successes = log.ended.iter().filter(|e| e.2 == "success").count();
        tracing::info!(node = %self.name, episodes = log.ended.len(), successes, human_resets = log.human_resets, "episodes");
        self.publish_phase(ctx, PHASE_STOPPED)
    }
}

impl NodeKind for EpisodeManagerParams {
    const KIND: &'static str = "episode_manager";
    const DEFAULT_RATE_HZ: f64 = 10.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        let mut v = vec![&mut self.urdf];
        v.extend(self.episodes_csv.as_mut());
        v
    }

    fn validate(&self) -> rft_config::Result<()> {
        EpisodeManagerParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(EpisodeManager::new(
            name,
            self.clone(),
            period,
            bus,
        )?))
    }
}
