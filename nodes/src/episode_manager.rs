//! The reset-free schedule over the bus: forward and backward alternate when the reward node
//! reports success (it debounces k frames), on a timeout, or when nothing moves for a while;
//! an object off the table, or out of the `reach` area, pauses everything and asks for a human
//! reset, counted.
//!
//! With `schedule.home_s` > 0 the arm goes home between two episodes: the manager publishes
//! the `switching` phase (the safety filter drives the arm home, with the joint posture when
//! `home_posture` asks or when the filter overrode more than `posture_reset_overridden` of the
//! episode's control steps) until the filter reports home on `/rft/at_home` or `home_s` has
//! passed. An episode that timed out or got stuck then gets a second look (`confirm_at_home`):
//! the reward node's answers on frames with the arm home can still make it a success
//! (`success_at_home`). After `stall_escape` episodes in a row that left the object where it
//! began, the next episodes' phase asks the runner for `stall_explore_std` of exploration
//! noise until one moves it.
//!
//! It publishes `/rft/phase` on every change (and again every `republish_s`, so late joiners
//! learn the phase), and the human-reset count on `/rft/metrics`. A reset is reported done on
//! `/rft/human_reset` (std_msgs/Bool `true`), by an operator or by the simulator.

use std::path::PathBuf;
use std::time::Duration;

use rft_msgs::{
    Bool, EpisodePhase, Header, JointState, Metric, PHASE_PAUSED_FOR_HUMAN, PHASE_RUNNING,
    PHASE_STOPPED, PHASE_SWITCHING, PoseStamped, Reward,
};
use rft_sim::Direction;
use serde::Deserialize;

use crate::policy_runner::{default_finger_max, default_fingers};
use crate::robot_state::{ToolFk, iso};
use rft_autonomy::demos::task_id;
use rft_autonomy::schedule::{Decision, EndReason, Schedule, ScheduleConfig};
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
    /// The second look with the arm home (`schedule.confirm_at_home`): this many of the reward
    /// node's answers on frames taken after the arm got home decide it (the last one's
    /// debounced success), or what came within `look_s`.
    #[serde(default = "default_look_frames")]
    pub look_frames: u32,
    #[serde(default = "default_look_s")]
    pub look_s: f64,
}

fn default_look_frames() -> u32 {
    3
}
fn default_look_s() -> f64 {
    1.0
}

/// Seconds the arm gets to go home with its posture after an episode the safety filter mostly
/// overrode (measured 5.4–5.6 s of simulated time after a full episode in the pipeline's loop).
pub const POSTURE_HOME_S: f64 = 8.0;

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
        rft_config::check(self.look_frames > 0, "look_frames", || {
            "must be at least 1".into()
        })?;
        rft_config::check(
            self.look_s.is_finite() && self.look_s > 0.0,
            "look_s",
            || format!("{} must be positive", self.look_s),
        )?;
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
    /// Episodes after which the arm went home with its posture because the safety filter had
    /// overridden too many of their steps, and episodes acted with the stall-escape noise.
    pub posture_resets: u64,
    pub stall_escape_episodes: u64,
}

/// An episode that ended: which, its task, why (so far) and how.
#[derive(Debug, Clone)]
struct Ended {
    episode: u64,
    dir: Direction,
    reason: EndReason,
    /// It acted with the stall-escape noise.
    escaping: bool,
    /// The arm goes home with its posture after it.
    posture: bool,
    /// Where the object was at its end (base frame, xy).
    object_xy: [f64; 2],
    /// The share of its control steps the safety filter overrode.
    overridden: f64,
}

/// The arm on its way home between two episodes.
#[derive(Debug, Clone)]
struct Switching {
    ended: Ended,
    since_s: f64,
    max_s: f64,
    /// When the filter reported home (or the time ran out).
    home_at_s: Option<f64>,
    second_look: bool,
    /// The reward node's debounced answers on frames after `home_at_s`.
    looks: Vec<bool>,
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
    at_home: Subscription<Bool>,
    safety_metrics: Subscription<Metric>,
    /// The safety filter's (control steps, overridden steps), newest and at the episode's start.
    overrides: (u64, u64),
    overrides_at_start: (u64, u64),
    switching: Option<Switching>,
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
                writeln!(w, "time_s,episode,direction,reason,human_resets,posture_home,stall_escape,object_x,object_y,overridden")?;
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
            at_home: bus.subscribe_quiet("/rft/at_home", QueueConfig::drop_oldest(64))?,
            safety_metrics: bus.subscribe_quiet("/rft/metrics", QueueConfig::drop_oldest(1024))?,
            overrides: (0, 0),
            overrides_at_start: (0, 0),
            switching: None,
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
        // While the arm goes home the phase still names the episode that ended and its task.
        let (episode_id, dir, home_posture) = match (&self.switching, phase) {
            (Some(sw), PHASE_SWITCHING) => (sw.ended.episode, sw.ended.dir, sw.ended.posture),
            _ => (s.episode(), s.direction(), false),
        };
        let explore_std = if phase == PHASE_RUNNING && s.escaping() {
            s.config().stall_explore_std
        } else {
            0.0
        };
        self.phase_out.publish(EpisodePhase {
            header: Header {
                stamp: ctx.now,
                frame_id: String::new(),
            },
            episode_id,
            task_id: task_id(dir),
            phase,
            reason: self.last_reason.clone(),
            home_posture,
            explore_std,
        })?;
        self.last_published_s = ctx.now.as_secs_f64();
        Ok(())
    }

    /// A step while the arm goes home: wait for the safety filter (or `max_s`), then for the
    /// second look, then start the next episode.
    fn switch_step(&mut self, ctx: &StepCtx<'_>, rewards: &[std::sync::Arc<Reward>]) -> Result<()> {
        let now_s = ctx.now.as_secs_f64();
        let home = self.at_home.drain().iter().any(|b| b.data);
        let (look_frames, look_s) = (self.p.look_frames as usize, self.p.look_s);
        let Some(sw) = self.switching.as_mut() else {
            return Ok(());
        };
        if sw.home_at_s.is_none() && (home || now_s - sw.since_s >= sw.max_s) {
            if !home {
                tracing::debug!(node = %self.name, max_s = sw.max_s, "home not reached in time; the next episode starts where the arm is");
            }
            sw.home_at_s = Some(now_s);
        }
        let done = match sw.home_at_s {
            None => false,
            Some(_) if !sw.second_look => true,
            Some(t_home) => {
                let want = task_id(sw.ended.dir);
                sw.looks.extend(
                    rewards
                        .iter()
                        .filter(|r| {
                            r.valid && r.task_id == want && r.header.stamp.as_secs_f64() >= t_home
                        })
                        .map(|r| r.success),
                );
                sw.looks.len() >= look_frames || now_s - t_home >= look_s
            }
        };
        if !done {
            if now_s - self.last_published_s >= self.p.republish_s {
                self.publish_phase(ctx, PHASE_SWITCHING)?;
            }
            return Ok(());
        }
        let Some(sw) = self.switching.take() else {
            return Ok(());
        };
        let Some(schedule) = self.schedule.as_mut() else {
            return Ok(());
        };
        let mut ended = sw.ended;
        if sw.second_look && sw.looks.last() == Some(&true) {
            ended.reason = EndReason::SuccessAtHome;
            schedule.confirm_success();
        }
        schedule.restart_clock(now_s);
        self.finish_episode(ctx, &ended)?;
        self.publish_phase(ctx, PHASE_RUNNING)
    }

    /// The episode's end, final: the log, a row of episodes.csv, the human-reset count.
    fn finish_episode(&mut self, ctx: &StepCtx<'_>, e: &Ended) -> Result<()> {
        let (episode, dir, reason, escaping) = (e.episode, e.dir, e.reason, e.escaping);
        let now_s = ctx.now.as_secs_f64();
        let Some(schedule) = self.schedule.as_ref() else {
            return Ok(());
        };
        let (next, resets) = (schedule.direction(), schedule.human_resets());
        self.overrides_at_start = self.overrides;
        self.last_reason = reason.name().into();
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.ended
            .push((episode, dir.name().into(), reason.name().into()));
        log.human_resets = resets;
        log.paused = false;
        log.stall_escape_episodes += u64::from(escaping);
        drop(log);
        tracing::info!(node = %self.name, episode, reason = reason.name(), next = next.name(), "episode ended");
        if let Some(csv) = self.csv.as_mut() {
            use std::io::Write;
            let row = writeln!(
                csv,
                "{:.2},{},{},{},{resets},{},{},{:.3},{:.3},{:.3}",
                now_s,
                episode,
                dir.name(),
                reason.name(),
                u8::from(e.posture),
                u8::from(escaping),
                e.object_xy[0],
                e.object_xy[1],
                e.overridden
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
        for m in self.safety_metrics.drain() {
            // The safety filter's cumulative counts (whatever else /rft/metrics carries).
            match m.name.as_str() {
                "control_steps" => self.overrides.0 = m.value as u64,
                "overridden_steps" => self.overrides.1 = m.value as u64,
                _ => {}
            }
        }
        let schedule = self.schedule.get_or_insert_with(|| {
            Schedule::new(self.p.schedule.clone(), Direction::Forward, now_s)
        });
        let rewards = self.rewards.drain();
        if self.switching.is_some() {
            return self.switch_step(ctx, &rewards);
        }
        let before = (schedule.episode(), schedule.is_paused());
        let ended_dir = schedule.direction();
        let escaping = schedule.escaping();
        // Only rewards scored for the current task count.
        let want = task_id(ended_dir);
        let success = rewards
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
        if let Decision::End { reason, .. } = decision {
            let cfg = schedule.config();
            let (steps, overridden) = (
                self.overrides.0.saturating_sub(self.overrides_at_start.0),
                self.overrides.1.saturating_sub(self.overrides_at_start.1),
            );
            let share = if steps > 0 {
                overridden as f64 / steps as f64
            } else {
                0.0
            };
            let mut ended = Ended {
                episode: before.0,
                dir: ended_dir,
                reason,
                escaping,
                posture: false,
                object_xy: [object.x, object.y],
                overridden: share,
            };
            if cfg.home_s > 0.0 {
                let unwind =
                    cfg.posture_reset_overridden > 0.0 && share > cfg.posture_reset_overridden;
                let second_look =
                    cfg.confirm_at_home && matches!(reason, EndReason::Timeout | EndReason::Stuck);
                ended.posture = unwind || cfg.home_posture;
                self.switching = Some(Switching {
                    ended,
                    since_s: now_s,
                    max_s: if unwind {
                        cfg.home_s.max(POSTURE_HOME_S)
                    } else {
                        cfg.home_s
                    },
                    home_at_s: None,
                    second_look,
                    looks: Vec::new(),
                });
                if unwind {
                    self.log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .posture_resets += 1;
                }
                // Answers about the arm on its way are no second look.
                self.at_home.drain();
                self.last_reason = reason.name().into();
                return self.publish_phase(ctx, PHASE_SWITCHING);
            }
            self.finish_episode(ctx, &ended)?;
        }
        let Some(schedule) = self.schedule.as_ref() else {
            return Ok(());
        };
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
        let successes = log
            .ended
            .iter()
            .filter(|e| e.2 == "success" || e.2 == "success_at_home")
            .count();
        tracing::info!(node = %self.name, episodes = log.ended.len(), successes, human_resets = log.human_resets,
            posture_resets = log.posture_resets, stall_escape_episodes = log.stall_escape_episodes, "episodes");
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
