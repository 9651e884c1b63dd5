//! The learner: joins each `/rft/transition` with the `/rft/reward` of the camera frame at its
//! next observation's stamp and trains an [`OnlineLearner`] on its `recipe` (the pipeline's:
//! UTD, RLPD-style mixing with the demos, critic warm-up, moving average, anneal, promoted
//! successes). It publishes versioned weights on `/rft/policy` every `recipe.publish_every`
//! rounds and checkpoints weights, optimiser state, replay buffer and round count.
//!
//! Rewards come only from the reward node. A transition whose reward does not come (the frame
//! was never scored, or the classifier was unavailable) is counted and dropped, never guessed.
//! On start it resumes from its own latest checkpoint (with the replay buffer) when there is
//! one, otherwise it starts from the pre-trained policy.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{SeedableRng, rngs::StdRng};
use rft_msgs::{EpisodePhase, Header, PolicyUpdate, Reward, Transition};
use rft_policies::online::{self, OnlineLearner, Recipe};
use rft_policies::replay::{ImageShape, ReplayBuffer, TransitionIn};
use rft_policies::{Agent, checkpoint};
use serde::Deserialize;

use rft_config::check;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Error, Result};
use rft_runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnerParams {
    /// The pre-trained agent: a checkpoint directory or a directory of checkpoints (`LATEST`).
    pub init: PathBuf,
    /// Demonstrations (replay-buffer safetensors) mixed into each batch at `offline_ratio`.
    #[serde(default)]
    pub demos: Option<PathBuf>,
    /// Checkpoints go to `<out>/checkpoints`; a restart resumes from there.
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// The update recipe (UTD, demo mixing, critic warm-up, moving average, anneal, promotion,
    /// publish cadence): the same type `rft train` takes.
    #[serde(default = "default_recipe")]
    pub recipe: Recipe,
    /// Transitions in the buffer before the first update.
    #[serde(default = "default_warmup")]
    pub warmup_transitions: usize,
    /// Update rounds between checkpoints (and one at shutdown).
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    #[serde(default = "two")]
    pub keep: usize,
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// A reward matches a transition when its frame stamp is this close to the transition's
    /// next observation.
    #[serde(default = "default_tolerance")]
    pub reward_tolerance_ms: f64,
    /// How long to wait for a transition's reward before dropping it, on the node's clock
    /// (simulated time in a sim run, where a slow machine must not drop rewards).
    #[serde(default = "default_wait")]
    pub reward_wait_ms: f64,
    /// At most this many update rounds per tick (and never more rounds than transitions).
    #[serde(default = "default_rounds")]
    pub max_rounds_per_tick: usize,
    /// The reward of an episode's last step when the episode manager confirmed the episode a
    /// success only on its second look with the arm home (`success_at_home`: the runner marks
    /// that step `done` while its frame was not called a success). The reward node's
    /// `fusion.success_reward`.
    #[serde(default = "default_confirmed_reward")]
    pub confirmed_reward: f32,
    #[serde(default)]
    pub seed: u64,
}

fn default_out() -> PathBuf {
    PathBuf::from("{run_dir}/learner")
}
fn two() -> usize {
    2
}
fn default_recipe() -> Recipe {
    Recipe::default()
}
fn default_warmup() -> usize {
    500
}
fn default_ckpt() -> u64 {
    1000
}
fn default_capacity() -> usize {
    200_000
}
fn default_tolerance() -> f64 {
    60.0
}
fn default_wait() -> f64 {
    2000.0
}
fn default_confirmed_reward() -> f32 {
    1.0
}
/// Rewards are kept at least this long (node clock) after the newest one: an episode's last
/// step is published only once the arm is home again, seconds after its frame was scored.
const KEEP_REWARDS_NS: i64 = 30_000_000_000;
fn default_rounds() -> usize {
    4
}

impl LearnerParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        self.recipe.validate().map_err(|e| e.under("recipe"))?;
        check(self.keep >= 1, "keep", || "must be at least 1".into())?;
        check(self.capacity >= 1, "capacity", || {
            "must be at least 1".into()
        })?;
        check(self.max_rounds_per_tick >= 1, "max_rounds_per_tick", || {
            "must be at least 1".into()
        })?;
        for (k, v) in [
            ("reward_tolerance_ms", self.reward_tolerance_ms),
            ("reward_wait_ms", self.reward_wait_ms),
        ] {
            check(v.is_finite() && v > 0.0, k, || {
                format!("{v} must be positive")
            })?;
        }
        check(
            self.confirmed_reward.is_finite(),
            "confirmed_reward",
            || format!("{} must be finite", self.confirmed_reward),
        )
    }
}

/// Counters, shared so that tests can read them while it runs.
#[derive(Debug, Clone, Default)]
pub struct LearnerStats {
    pub transitions: u64,
    pub rewarded: u64,
    /// Dropped: no reward for the frame arrived in time, or the reward was marked invalid.
    pub unrewarded: u64,
    pub invalid_rewards: u64,
    /// Transitions that do not fit the policy (wrong sizes, task ids).
    pub malformed: u64,
    pub successes: u64,
    /// Successful episodes copied into the demos (`recipe.promote_successes`).
    pub promoted: u64,
    pub rounds: u64,
    pub version: u64,
    pub checkpoints: u64,
    pub buffer_len: usize,
    /// Whether it resumed from its own checkpoint.
    pub resumed: bool,
    pub update_ms: Vec<f32>,
}

/// What the reward node said about one camera frame.
#[derive(Debug, Clone, Copy)]
struct Scored {
    reward: f32,
    valid: bool,
    /// The classifier's (debounced) success: the frame shows the task done.
    success: bool,
    task_id: u8,
}

struct Waiting {
    t: Transition,
    /// When it arrived, on the node's clock (simulated time in a sim run).
    since_ns: i64,
}

pub struct Learner {
    name: String,
    p: LearnerParams,
    period: Duration,
    learner: OnlineLearner,
    rng: StdRng,
    transitions: Subscription<Transition>,
    rewards: Subscription<Reward>,
    phase: Subscription<EpisodePhase>,
    out: Publisher<PolicyUpdate>,
    waiting: VecDeque<Waiting>,
    /// Rewards by frame stamp (ns): (reward, valid).
    scored: BTreeMap<i64, Scored>,
    /// Rounds the data allows (one per rewarded transition after the warm-up).
    allowance: u64,
    last_ckpt_round: u64,
    stats: Arc<Mutex<LearnerStats>>,
}

impl Learner {
    pub fn new(name: String, p: LearnerParams, period: Duration, bus: &NodeHandle) -> Result<Self> {
        let dev = rft_policies::device(false);
        let err = |k: &str, e: String| Error::node(&name, format!("params.{k}: {e}"));
        let ckpts = p.out.join("checkpoints");
        let resumed = checkpoint::load_latest(&ckpts, None, &dev)
            .map_err(|e| err("out", format!("{}: {e}", ckpts.display())))?;
        let (mut agent, buffer, version, rounds) = match resumed {
            Some(r) => {
                let buffer = r.replay.ok_or_else(|| {
                    err(
                        "out",
                        format!("{}: the checkpoint has no replay buffer", r.dir.display()),
                    )
                })?;
                tracing::info!(node = %name, checkpoint = %r.dir.display(), transitions = buffer.len(), version = r.meta.policy_version, "resuming from the learner's checkpoint");
                let rounds = r.meta.extra.get("online_rounds").and_then(|v| v.as_u64());
                (
                    r.agent,
                    buffer,
                    r.meta.policy_version,
                    Some(rounds.unwrap_or(0)),
                )
            }
            None => {
                let r = if p.init.join("meta.json").exists() {
                    checkpoint::load(&p.init, None, &dev)
                        .map_err(|e| err("init", format!("{}: {e}", p.init.display())))?
                } else {
                    checkpoint::load_latest(&p.init, None, &dev)
                        .map_err(|e| err("init", format!("{}: {e}", p.init.display())))?
                        .ok_or_else(|| {
                            err(
                                "init",
                                format!("{}: no checkpoint here (no LATEST)", p.init.display()),
                            )
                        })?
                };
                let mut agent = r.agent;
                agent
                    .reset_optimizers()
                    .map_err(|e| err("init", e.to_string()))?;
                // An image-encoder policy learns from the frames the runner's transitions carry.
                let image = agent.cfg.encoder.as_ref().map(ImageShape::from);
                let buffer =
                    ReplayBuffer::new(p.capacity, agent.cfg.obs_dim, agent.cfg.act_dim, image);
                (agent, buffer, r.meta.policy_version.max(1), None)
            }
        };
        let resumed = rounds.is_some();
        if !resumed {
            online::prepare(&mut agent, &p.recipe).map_err(|e| err("recipe", e.to_string()))?;
        }
        let demos = match &p.demos {
            Some(d) => Some(
                ReplayBuffer::load(d).map_err(|e| err("demos", format!("{}: {e}", d.display())))?,
            ),
            None => None,
        };
        let buffer_len = buffer.len();
        let mut learner =
            OnlineLearner::new(agent, p.recipe.clone(), buffer, demos.as_ref(), version)
                .map_err(|e| err("recipe", e.to_string()))?;
        learner.set_rounds(rounds.unwrap_or(0));
        let q = QueueConfig::drop_oldest(4096);
        Ok(Self {
            rng: StdRng::seed_from_u64(p.seed ^ 0x1ea2),
            transitions: bus.subscribe("/rft/transition", q)?,
            rewards: bus.subscribe_quiet("/rft/reward", q)?,
            phase: bus.subscribe_quiet("/rft/phase", QueueConfig::latest_only())?,
            out: bus.publisher("/rft/policy")?,
            waiting: VecDeque::new(),
            scored: BTreeMap::new(),
            allowance: 0,
            last_ckpt_round: 0,
            stats: Arc::new(Mutex::new(LearnerStats {
                version,
                resumed,
                buffer_len,
                ..LearnerStats::default()
            })),
            learner,
            name,
            p,
            period,
        })
    }

    pub fn stats(&self) -> Arc<Mutex<LearnerStats>> {
        self.stats.clone()
    }

    pub fn agent(&self) -> &Agent {
        &self.learner.agent
    }

    fn with_stats<R>(&self, f: impl FnOnce(&mut LearnerStats) -> R) -> R {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Moves transitions whose reward is known into the buffer; drops the ones whose reward
    /// will not come.
    fn join(&mut self, now_ns: i64) -> Result<()> {
        let tol = (self.p.reward_tolerance_ms * 1e6) as i64;
        let wait_ns = (self.p.reward_wait_ms * 1e6) as i64;
        let newest = self.scored.keys().next_back().copied();
        while let Some(w) = self.waiting.front() {
            let at = w.t.next_obs_stamp.as_nanos();
            let best = self
                .scored
                .range(at - tol..=at + tol)
                .min_by_key(|(k, _)| (**k - at).abs())
                .map(|(_, v)| *v);
            let outcome = match best {
                Some(r) if r.task_id == w.t.task_id => Some(Some(r)),
                // The frame was scored for another task (the episode switched between the
                // observation and the next one): it does not say how this action did.
                Some(_) => Some(None),
                // Rewards arrive in stamp order: one past the window means none will match.
                None if newest.is_some_and(|n| n > at + tol) || now_ns - w.since_ns > wait_ns => {
                    Some(None)
                }
                None => None,
            };
            let Some(outcome) = outcome else { break };
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            match outcome {
                Some(Scored {
                    reward,
                    valid: true,
                    success,
                    ..
                }) => {
                    let t = &w.t;
                    // Terminal when the classifier calls the next frame a success: that is
                    // the step that reached the goal. (The runner learns of the success only
                    // at its next tick, so its `done` marks the step after; that one only ends
                    // the episode.) An episode confirmed a success with the arm home ends
                    // with a `done` step whose frame was not: a success all the same.
                    let confirmed = t.done && !success;
                    let reward = if confirmed {
                        reward + self.p.confirmed_reward
                    } else {
                        reward
                    };
                    let promoted = self.learner.promoted();
                    let pushed = self.learner.push(&TransitionIn {
                        obs: &t.obs,
                        action: &t.action,
                        reward,
                        next_obs: &t.next_obs,
                        terminated: success || t.done,
                        episode_end: success || t.done || t.truncated,
                        task_id: t.task_id,
                        intervention: t.intervention,
                        safety_override: t.safety_override,
                        mc_return: f32::NEG_INFINITY,
                        image: (!t.image.is_empty()).then_some(t.image.as_slice()),
                        next_image: (!t.next_image.is_empty()).then_some(t.next_image.as_slice()),
                    });
                    match pushed {
                        Ok(()) => {
                            if self.learner.buffer.len() >= self.p.warmup_transitions {
                                self.allowance += 1;
                            }
                            let len = self.learner.buffer.len();
                            let promoted = self.learner.promoted() - promoted;
                            self.with_stats(|s| {
                                s.rewarded += 1;
                                s.successes += u64::from(success);
                                s.promoted += promoted;
                                s.buffer_len = len;
                            });
                        }
                        Err(e) => {
                            let n = self.with_stats(|s| {
                                s.malformed += 1;
                                s.malformed
                            });
                            if n.is_power_of_two() {
                                tracing::warn!(node = %self.name, error = %e, dropped = n, "transition dropped");
                            }
                        }
                    }
                }
                Some(Scored { valid: false, .. }) => self.with_stats(|s| {
                    s.invalid_rewards += 1;
                    s.unrewarded += 1;
                }),
                None => self.with_stats(|s| s.unrewarded += 1),
            }
        }
        // Rewards older than every waiting transition are no longer needed.
        let keep_from = self
            .waiting
            .front()
            .map_or(i64::MAX, |w| w.t.next_obs_stamp.as_nanos() - tol);
        let keep_from = keep_from.min(newest.unwrap_or(i64::MAX) - tol.max(KEEP_REWARDS_NS));
        self.scored = self.scored.split_off(&keep_from);
        Ok(())
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        if self.stats_rounds() == self.last_ckpt_round {
            return Ok(());
        }
        let dir = self.p.out.join("checkpoints");
        let env_steps = self.learner.buffer.total_added;
        self.learner
            .checkpoint(
                &dir,
                env_steps,
                serde_json::json!({ "learner": format!("{:?}", self.p) }),
                self.p.keep,
            )
            .map_err(|e| Error::node(&self.name, format!("checkpoint: {e}")))?;
        self.last_ckpt_round = self.stats_rounds();
        self.with_stats(|s| s.checkpoints += 1);
        Ok(())
    }

    fn stats_rounds(&self) -> u64 {
        self.with_stats(|s| s.rounds)
    }

    /// Publishes the acting policy (the moving average when the recipe keeps one).
    fn publish(&mut self) -> Result<()> {
        let version = self.learner.version();
        let data = self
            .learner
            .policy_bytes()
            .map_err(|e| Error::node(&self.name, e.to_string()))?;
        let sha256 = checkpoint::sha256_hex(&data);
        self.out.publish(PolicyUpdate {
            header: Header::default(),
            version,
            algorithm: format!("{:?}", self.learner.agent.cfg.algorithm).to_lowercase(),
            format: "safetensors".into(),
            data,
            sha256,
        })?;
        self.with_stats(|s| s.version = version);
        Ok(())
    }
}

impl Node for Learner {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let _ = self.phase.latest();
        for t in self.transitions.drain() {
            self.with_stats(|s| s.transitions += 1);
            self.waiting.push_back(Waiting {
                t: (*t).clone(),
                since_ns: ctx.now.as_nanos(),
            });
        }
        for r in self.rewards.drain() {
            self.scored.insert(
                r.header.stamp.as_nanos(),
                Scored {
                    reward: r.reward,
                    valid: r.valid,
                    success: r.success,
                    task_id: r.task_id,
                },
            );
        }
        self.join(ctx.now.as_nanos())?;
        let mut rounds = 0;
        while self.allowance > 0 && rounds < self.p.max_rounds_per_tick && !ctx.is_shutting_down() {
            let t = Instant::now();
            let round = self
                .learner
                .round(&mut self.rng)
                .map_err(|e| Error::node(&self.name, e.to_string()))?;
            self.allowance -= 1;
            rounds += 1;
            let ms = t.elapsed().as_secs_f32() * 1e3;
            let n = self.with_stats(|s| {
                s.rounds += 1;
                s.update_ms.push(ms);
                s.rounds
            });
            if round.publish.is_some() {
                self.publish()?;
            }
            if n.is_multiple_of(self.p.checkpoint_every.max(1)) {
                self.save_checkpoint()?;
            }
        }
        Ok(())
    }

    fn shutdown(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        self.save_checkpoint()
    }
}

impl NodeKind for LearnerParams {
    const KIND: &'static str = "learner";
    // Each tick joins what arrived and runs at most a few update rounds.
    const DEFAULT_RATE_HZ: f64 = 50.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        let mut v = vec![&mut self.init, &mut self.out];
        v.extend(self.demos.as_mut());
        v
    }

    fn validate(&self) -> rft_config::Result<()> {
        LearnerParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(Learner::new(name, self.clone(), period, bus)?))
    }
}
