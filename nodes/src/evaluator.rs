//! Ground-truth evaluation in the node graph: episodes from reset scenes, success read from the
//! simulator, never from a classifier.
//!
//! For each episode it asks the simulator for a scene (`/rft/sim/reset`, seed `seed + i`, the
//! object where the direction starts), holds the episode stopped for `settle_s` (the runner
//! commands nothing), then runs it (`/rft/phase` running, a new episode id, the direction's
//! task id) until the simulator's ground truth (`/rft/metrics`, `sim/<task>/<dir>/success`)
//! says success or `max_s` pass. Whatever acts — the policy runner (`mode = "deterministic"`
//! for an evaluation), the scripted expert, a person — acts through the safety filter as in any
//! other run. At the end it writes the rates with their 95 % Wilson intervals and every
//! episode to `out` (JSON), logs them, and stops the launch (`stop_when_done`).
//!
//! It takes the place of the episode manager; run one or the other.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rft_autonomy::demos::task_id;
use rft_autonomy::eval::Rate;
use rft_msgs::{EpisodePhase, Header, PHASE_RUNNING, PHASE_STOPPED, SceneReset};

use crate::sim_truth::SimTruth;
use rft_sim::{Direction, TaskKind};
use serde::{Deserialize, Serialize};

use rft_config::check;
use rft_runtime::bus::{NodeHandle, Publisher};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Error, Node, Result, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorParams {
    /// The simulated task (names the ground-truth metrics).
    #[serde(default = "default_task")]
    pub task: TaskKind,
    /// Episodes per direction.
    #[serde(default = "default_episodes")]
    pub episodes: usize,
    /// Directions, in order (`forward`, `backward`).
    #[serde(default = "default_directions")]
    pub directions: Vec<String>,
    /// Longest episode, seconds on the node's clock.
    #[serde(default = "default_max_s")]
    pub max_s: f64,
    /// Seconds between a scene reset and the episode's start.
    #[serde(default = "default_settle_s")]
    pub settle_s: f64,
    /// Episode `i` of every direction starts from scene `seed + i` (as `rft eval` does).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Results (JSON).
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// Stop the launch when the last episode ends.
    #[serde(default = "yes")]
    pub stop_when_done: bool,
}

fn default_task() -> TaskKind {
    TaskKind::Push
}
fn default_episodes() -> usize {
    10
}
fn default_directions() -> Vec<String> {
    vec!["forward".into(), "backward".into()]
}
fn default_max_s() -> f64 {
    20.0
}
fn default_settle_s() -> f64 {
    0.5
}
fn default_seed() -> u64 {
    2_000_000
}
fn default_out() -> PathBuf {
    PathBuf::from("{run_dir}/eval.json")
}
fn yes() -> bool {
    true
}

fn direction(name: &str) -> Option<Direction> {
    Direction::ALL.into_iter().find(|d| d.name() == name)
}

impl EvaluatorParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check(self.episodes >= 1, "episodes", || {
            "must be at least 1".into()
        })?;
        check(!self.directions.is_empty(), "directions", || {
            "name at least one direction".into()
        })?;
        for (i, d) in self.directions.iter().enumerate() {
            check(direction(d).is_some(), &format!("directions[{i}]"), || {
                format!("`{d}`: use `forward` or `backward`")
            })?;
        }
        for (k, v) in [("max_s", self.max_s), ("settle_s", self.settle_s)] {
            check(v.is_finite() && v >= 0.0, k, || format!("{v} must be ≥ 0"))?;
        }
        check(self.max_s > 0.0, "max_s", || "must be positive".into())
    }
}

/// One evaluation episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedEpisode {
    pub direction: String,
    pub seed: u64,
    pub success: bool,
    /// Seconds from the start to success (or to `max_s`).
    pub time_s: f64,
}

/// What the evaluator found (shared, readable while it runs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalReport {
    pub episodes: Vec<EvaluatedEpisode>,
    /// Per direction, in the order evaluated.
    pub rates: Vec<(String, Rate)>,
    pub done: bool,
}

enum State {
    /// The next episode (index into the plan) is due.
    Next(usize),
    /// Scene reset asked at `since`; the episode starts after `settle_s`.
    Settling {
        k: usize,
        since: i64,
    },
    /// Episode running since `since`.
    Running {
        k: usize,
        since: i64,
    },
    Done,
}

pub struct Evaluator {
    name: String,
    p: EvaluatorParams,
    period: Duration,
    /// (direction, seed) of every episode, in order.
    plan: Vec<(Direction, u64)>,
    reset: Publisher<SceneReset>,
    phase: Publisher<EpisodePhase>,
    state: State,
    /// The simulator's ground-truth success per task id.
    truth: SimTruth,
    episode_id: u64,
    report: Arc<Mutex<EvalReport>>,
}

impl Evaluator {
    pub fn new(
        name: String,
        p: EvaluatorParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        let dirs: Vec<Direction> = p.directions.iter().filter_map(|d| direction(d)).collect();
        let plan = dirs
            .iter()
            .flat_map(|d| (0..p.episodes).map(move |i| (*d, p.seed + i as u64)))
            .collect();
        Ok(Self {
            reset: bus.publisher("/rft/sim/reset")?,
            phase: bus.publisher("/rft/phase")?,
            state: State::Next(0),
            truth: SimTruth::new(bus, Some(p.task))?,
            episode_id: 0,
            report: Arc::new(Mutex::new(EvalReport::default())),
            plan,
            name,
            p,
            period,
        })
    }

    pub fn report(&self) -> Arc<Mutex<EvalReport>> {
        self.report.clone()
    }

    fn publish_phase(
        &self,
        now: rft_msgs::Time,
        task_id: u8,
        phase: u8,
        reason: &str,
    ) -> Result<()> {
        self.phase.publish(EpisodePhase {
            header: Header::at(now),
            episode_id: self.episode_id,
            task_id,
            phase,
            reason: reason.into(),
            ..Default::default()
        })
    }

    fn finish(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        self.publish_phase(ctx.now, 0, PHASE_STOPPED, "evaluation_done")?;
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        r.rates = self
            .p
            .directions
            .iter()
            .map(|d| {
                let eps: Vec<_> = r.episodes.iter().filter(|e| &e.direction == d).collect();
                let won = eps.iter().filter(|e| e.success).count();
                (d.clone(), Rate::new(won, eps.len()))
            })
            .collect();
        r.done = true;
        for (d, rate) in &r.rates {
            tracing::info!(node = %self.name, direction = %d, "evaluation: {rate}");
        }
        let json = serde_json::to_string_pretty(&*r)
            .map_err(|e| Error::node(&self.name, e.to_string()))?;
        drop(r);
        if let Some(dir) = self.p.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::node(&self.name, format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(&self.p.out, json)
            .map_err(|e| Error::node(&self.name, format!("{}: {e}", self.p.out.display())))?;
        self.state = State::Done;
        if self.p.stop_when_done {
            ctx.request_shutdown("evaluation done");
        }
        Ok(())
    }
}

impl Node for Evaluator {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        self.truth.update();
        let now = ctx.now.as_nanos();
        let ns = |s: f64| (s * 1e9) as i64;
        match self.state {
            State::Next(k) => {
                let Some(&(dir, seed)) = self.plan.get(k) else {
                    return self.finish(ctx);
                };
                self.reset.publish(SceneReset {
                    header: Header::at(ctx.now),
                    seed,
                    task_id: task_id(dir),
                })?;
                self.publish_phase(ctx.now, task_id(dir), PHASE_STOPPED, "evaluation_reset")?;
                self.state = State::Settling { k, since: now };
            }
            State::Settling { k, since } => {
                if now - since >= ns(self.p.settle_s) {
                    let dir = self.plan[k].0;
                    self.episode_id += 1;
                    self.publish_phase(ctx.now, task_id(dir), PHASE_RUNNING, "evaluation")?;
                    self.state = State::Running { k, since: now };
                }
            }
            State::Running { k, since } => {
                let (dir, seed) = self.plan[k];
                // Only ground truth from after the episode started counts.
                let success = self
                    .truth
                    .newest(task_id(dir))
                    .is_some_and(|(t, s)| s && t > since);
                let elapsed = (now - since) as f64 * 1e-9;
                if success || elapsed >= self.p.max_s {
                    tracing::debug!(node = %self.name, direction = dir.name(), seed, success, elapsed, "evaluation episode");
                    self.report
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .episodes
                        .push(EvaluatedEpisode {
                            direction: dir.name().into(),
                            seed,
                            success,
                            time_s: elapsed,
                        });
                    self.state = State::Next(k + 1);
                }
            }
            State::Done => {}
        }
        Ok(())
    }
}

impl NodeKind for EvaluatorParams {
    const KIND: &'static str = "evaluator";
    const DEFAULT_RATE_HZ: f64 = 10.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.out]
    }

    fn validate(&self) -> rft_config::Result<()> {
        EvaluatorParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(Evaluator::new(name, self.clone(), period, bus)?))
    }
}
