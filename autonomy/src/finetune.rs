//! Reset-free autonomous fine-tuning on the simulated plant, in one thread and in lockstep:
//! at each control tick the policy acts (the runner's allocation-free `PolicyHandle`), the
//! plant runs one control period through the safety filter, the scene camera's frame goes to
//! the success classifier of the current task, the schedule decides whether the episode goes
//! on, and the learner ([`OnlineLearner`], the learner node's) takes its update round and
//! publishes new weights every `publish_every` rounds.
//!
//! Rewards come only from the classifier. Ground truth is read for measurement only: the
//! classifier's confusion against it, and the training episodes' true outcomes. The one
//! exception is an ablation a user asks for by name (`truth_rewards`): it tells how much of
//! what the loop leaves undone is the classifier's doing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use rft_policies::Agent;
use rft_policies::handle::{ActMode, InferencePolicy, PolicyHandle};
use rft_policies::online::{self, OnlineLearner, Recipe};
use rft_policies::replay::{ReplayBuffer, TransitionIn};
use rft_rewards::{ImageRef, SuccessClassifier};
use rft_sim::Direction;
use serde::{Deserialize, Serialize};

use super::action::ACTION_DIM;
use super::demos::task_id;
use super::eval::{EvalResult, Rate, evaluate};
use super::plant::{PlantConfig, SimPlant};
use super::schedule::{Decision, EndReason, Schedule, ScheduleConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Online (robot) steps.
    pub steps: u64,
    pub seed: u64,
    pub schedule: ScheduleConfig,
    /// Steps acting with the pre-trained policy before the first update.
    pub warmup_steps: u64,
    /// The learner's recipe (UTD, demo mixing, critic warm-up, moving average, anneal,
    /// promotion, publish cadence): the same type the learner node takes.
    pub recipe: Recipe,
    /// Exploration: 0 samples actions from the policy (SAC); above 0 acts with the policy's
    /// mean plus Gaussian noise of this standard deviation (in the [-1, 1] action units).
    pub explore_std: f64,
    /// Reward of a success (the classifier's), per-step penalty.
    pub success_reward: f32,
    pub step_penalty: f32,
    /// Ablation, simulation only: the schedule hears ground-truth success (the cube resting in
    /// the goal) instead of the classifier's answer, so the rewards and episode ends are what
    /// a perfect classifier would give. The classifier still runs and its confusion is still
    /// logged. Off by default; a real robot has no ground truth.
    pub truth_rewards: bool,
    /// Ground-truth evaluation every this many steps (0: only at the end), episodes per
    /// direction.
    pub eval_every: u64,
    pub eval_episodes: usize,
    /// Evaluation episode length, simulated seconds.
    pub eval_max_s: f64,
    /// Checkpoint (weights, optimiser, replay buffer) every this many steps (0: at the end).
    pub checkpoint_every: u64,
    /// Rows of metrics.csv every this many steps.
    pub log_every: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            steps: 20_000,
            seed: 0,
            schedule: ScheduleConfig {
                home_s: 4.0,
                confirm_at_home: true,
                ..ScheduleConfig::default()
            },
            warmup_steps: 500,
            recipe: Recipe::default(),
            explore_std: 0.0,
            success_reward: 1.0,
            step_penalty: 0.0,
            truth_rewards: false,
            eval_every: 2_500,
            eval_episodes: 20,
            eval_max_s: 20.0,
            checkpoint_every: 5_000,
            log_every: 250,
        }
    }
}

/// One training episode as it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub end_step: u64,
    pub direction: String,
    pub reason: String,
    pub steps: u64,
    /// Ground truth at the end (measurement only).
    pub true_success: bool,
    /// Where the object was at the end (table xy, metres): where the next episode starts.
    #[serde(default)]
    pub object_xy: [f64; 2],
    /// Control steps of the episode in which the safety filter overrode the policy.
    #[serde(default)]
    pub overridden_steps: u64,
    /// The joints went back to the reset posture after it
    /// (`schedule.posture_reset_overridden`, or `home_posture`).
    #[serde(default)]
    pub posture_reset: bool,
    /// It acted with the stall-escape noise (`schedule.stall_escape`).
    #[serde(default)]
    pub stall_escape: bool,
}

/// A ground-truth evaluation during the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub forward: EvalResult,
    pub backward: EvalResult,
}

/// Per-frame classifier decisions against ground truth.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl Counts {
    pub fn add(&mut self, predicted: bool, truth: bool) {
        match (predicted, truth) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }
    pub fn precision(&self) -> Option<f64> {
        let d = self.tp + self.fp;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }
    pub fn recall(&self) -> Option<f64> {
        let d = self.tp + self.fn_;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }
}

/// What a run produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FinetuneLog {
    pub episodes: Vec<EpisodeRecord>,
    pub evals: Vec<EvalPoint>,
    /// Classifier per frame vs ground truth, by direction (forward, backward).
    pub classifier: [Counts; 2],
    /// Episodes the classifier ended as successes that were not (ground truth).
    pub false_success_episodes: u64,
    pub human_resets: u64,
    /// Control steps in which the safety filter overrode the policy.
    pub safety_override_steps: u64,
    pub qp_failures: u64,
    /// Episodes copied into the demo buffer (`promote_successes`).
    #[serde(default)]
    pub promoted_episodes: u64,
    /// Episodes after which the joints went back to the reset posture because the safety
    /// filter had overridden too many of their steps (`schedule.posture_reset_overridden`).
    #[serde(default)]
    pub posture_resets: u64,
    /// Episodes that acted with the stall-escape noise (`schedule.stall_escape`).
    #[serde(default)]
    pub stall_escape_episodes: u64,
    pub grad_steps: u64,
    pub policy_version: u64,
    pub wall_s: f64,
    /// Observation → action, microseconds, every step.
    #[serde(skip)]
    pub act_us: Vec<f32>,
    /// Wall time of each learner round, milliseconds.
    #[serde(skip)]
    pub update_ms: Vec<f32>,
}

impl FinetuneLog {
    /// Ground-truth success rate of the training episodes of `dir` ending in `(from, to]`.
    pub fn episode_rate(&self, dir: Direction, from: u64, to: u64) -> Rate {
        let (mut s, mut n) = (0, 0);
        for e in &self.episodes {
            if e.direction == dir.name() && e.end_step > from && e.end_step <= to {
                n += 1;
                s += e.true_success as usize;
            }
        }
        Rate::new(s, n)
    }
}

/// A progress snapshot.
#[derive(Debug, Clone, Default)]
pub struct FinetuneProgress {
    pub step: u64,
    pub total: u64,
    pub episodes: usize,
    /// Ground-truth success of recent forward episodes (last 20).
    pub recent_forward: Option<f64>,
    /// Classifier successes per episode, recent.
    pub reward_rate: f64,
    pub grad_steps_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    pub last_eval: Option<(f64, f64)>,
    pub human_resets: u64,
}

/// The success classifier of each direction, with its task text.
pub struct Classifiers {
    pub forward: (Box<dyn SuccessClassifier>, String),
    pub backward: (Box<dyn SuccessClassifier>, String),
}

impl Classifiers {
    fn get(&mut self, dir: Direction) -> (&mut Box<dyn SuccessClassifier>, &str) {
        let c = match dir {
            Direction::Forward => &mut self.forward,
            Direction::Backward => &mut self.backward,
        };
        (&mut c.0, c.1.as_str())
    }
}

/// The current task's classifier on the scene camera's frame now: p > τ, or None when it
/// could not answer.
fn classify(
    plant: &mut SimPlant,
    classifiers: &mut Classifiers,
    dir: Direction,
) -> crate::Result<Option<bool>> {
    let frame = plant.render();
    let img = ImageRef::new(frame.width, frame.height, &frame.rgb)?;
    let (clf, text) = classifiers.get(dir);
    let p = clf.predict(&[img], text)?[0];
    Ok(p.is_finite().then(|| p > clf.threshold()))
}

/// One look at the scene: the classifier's answer is scored against ground truth in each of
/// `counts` (by task), and the schedule hears it — or, with `truth_rewards`, ground truth.
/// Returns (what the schedule hears, ground truth).
fn look(
    plant: &mut SimPlant,
    classifiers: &mut Classifiers,
    dir: Direction,
    truth_rewards: bool,
    counts: [&mut [Counts; 2]; 2],
) -> crate::Result<(Option<bool>, bool)> {
    let success = classify(plant, classifiers, dir)?;
    let truth = plant.truth(dir).success;
    if let Some(s) = success {
        for c in counts {
            c[task_id(dir) as usize].add(s, truth);
        }
    }
    Ok((if truth_rewards { Some(truth) } else { success }, truth))
}

/// Where a run writes.
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
}

const CSV_HEADER: &str = "step,episodes,forward_success,backward_success,classifier_precision,classifier_recall,false_success_episodes,human_resets,safety_override_steps,act_p50_us,act_p99_us,grad_steps,grad_steps_per_s,eval_forward,eval_forward_lo,eval_forward_hi,eval_backward,eval_backward_lo,eval_backward_hi,wall_s";

/// The `q` quantile of `v` (nearest rank; NaN when empty).
pub fn pct(v: &[f32], q: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:.4}"))
}

/// Reset-free fine-tuning of `agent` for `cfg.steps` steps with an [`OnlineLearner`] on
/// `cfg.recipe`. `offline` (the demos) is mixed into each batch at the recipe's
/// `offline_ratio`. Writes `metrics.csv`, `episodes.csv`, checkpoints and the final policy
/// under `files.dir`; returns the log and the trained agent.
pub fn finetune(
    mut agent: Agent,
    classifiers: &mut Classifiers,
    offline: Option<&ReplayBuffer>,
    plant_cfg: &PlantConfig,
    cfg: &FinetuneConfig,
    files: &RunFiles,
    mut on_progress: impl FnMut(&FinetuneProgress),
) -> crate::Result<(FinetuneLog, Agent)> {
    cfg.schedule
        .validate()
        .map_err(|e| crate::Error::Config(e.under("finetune.schedule")))?;
    let obs_dim = plant_cfg.obs_dim();
    let image_shape = plant_cfg.image_shape();
    if agent.cfg.obs_dim != obs_dim || agent.cfg.act_dim != ACTION_DIM {
        return Err(crate::Error::Stage(format!(
            "the policy has observation {} / action {}; the sim loop ({:?} observations) needs {obs_dim} / {ACTION_DIM}",
            agent.cfg.obs_dim, agent.cfg.act_dim, plant_cfg.observation
        )));
    }
    if agent.cfg.encoder.is_some() != image_shape.is_some() {
        return Err(crate::Error::Stage(format!(
            "the policy {} an image encoder but the plant's observation is {:?}",
            if agent.cfg.encoder.is_some() {
                "has"
            } else {
                "lacks"
            },
            plant_cfg.observation
        )));
    }
    if agent.cfg.num_tasks < 2 {
        return Err(crate::Error::Stage(
            "the policy must be task-conditioned (num_tasks = 2: forward, backward)".to_string(),
        ));
    }
    if !(cfg.explore_std.is_finite() && (0.0..=1.0).contains(&cfg.explore_std)) {
        return Err(crate::Error::Stage(format!(
            "finetune.explore_std {} must be in [0, 1]",
            cfg.explore_std
        )));
    }
    let mut recipe = cfg.recipe.clone();
    recipe
        .validate()
        .map_err(|e| crate::Error::Config(e.under("finetune.recipe")))?;
    if recipe.total_rounds == 0 {
        recipe.total_rounds = cfg.steps.saturating_sub(cfg.warmup_steps);
    }
    online::prepare(&mut agent, &recipe)?;
    let grad0 = agent.steps;
    std::fs::create_dir_all(&files.dir).map_err(crate::Error::io(&files.dir))?;
    let mut plant = SimPlant::new(plant_cfg, cfg.seed)?;
    let mut eval_plant = SimPlant::new(plant_cfg, cfg.seed ^ 0xe7a1)?;
    let version = 1u64;
    let mut policy = PolicyHandle::new(InferencePolicy::from_agent(&agent, version)?, cfg.seed);
    let mut eval_policy = policy.clone();
    let mut learner = OnlineLearner::with_capacity(
        agent,
        recipe,
        cfg.steps as usize + 1,
        image_shape,
        offline,
        version,
    )?;
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut schedule = Schedule::new(cfg.schedule.clone(), Direction::Forward, plant.time_s());
    let mut log = FinetuneLog::default();
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(files.dir.join("metrics.csv"))
            .map_err(crate::Error::io(files.dir.join("metrics.csv")))?,
    );
    writeln!(csv, "{CSV_HEADER}")?;
    let mut eps_csv = std::io::BufWriter::new(
        std::fs::File::create(files.dir.join("episodes.csv"))
            .map_err(crate::Error::io(files.dir.join("episodes.csv")))?,
    );
    writeln!(
        eps_csv,
        "end_step,direction,reason,steps,true_success,object_x,object_y,overridden_steps,posture_reset,stall_escape"
    )?;
    let start = Instant::now();
    let (mut obs, mut next) = (Vec::new(), Vec::new());
    let (mut pimg, mut next_pimg) = (Vec::new(), Vec::new());
    let mut a = [0.0f32; ACTION_DIM];
    let mut ep_start = 0u64;
    let mut ep_overridden = 0u64;
    let mut window = [Counts::default(); 2];
    let mut last_eval: Option<EvalPoint> = None;
    log.act_us.reserve(cfg.steps as usize);
    plant.observe(&mut obs, &mut pimg);
    for step in 1..=cfg.steps {
        let dir = schedule.direction();
        let task = task_id(dir);
        let t0 = Instant::now();
        plant.observe(&mut obs, &mut pimg);
        let image = (!pimg.is_empty()).then_some(pimg.as_slice());
        let escaping = schedule.escaping();
        let explore_std = if escaping {
            cfg.schedule.stall_explore_std
        } else {
            cfg.explore_std
        };
        if explore_std > 0.0 {
            policy.act(&obs, task, image, ActMode::Deterministic, &mut a)?;
            for x in &mut a {
                let n: f64 = rng.sample(rand_distr::StandardNormal);
                *x = (*x + (explore_std * n) as f32).clamp(-1.0, 1.0);
            }
        } else {
            policy.act(&obs, task, image, ActMode::Stochastic, &mut a)?;
        }
        log.act_us.push(t0.elapsed().as_secs_f32() * 1e6);
        let info = plant.apply(&a);
        if info.safety_override {
            log.safety_override_steps += 1;
            ep_overridden += 1;
        }
        log.qp_failures += u64::from(info.qp_failures);
        let (success, truth) = look(
            &mut plant,
            classifiers,
            dir,
            cfg.truth_rewards,
            [&mut log.classifier, &mut window],
        )?;
        let object = plant.object().translation.vector;
        let tool = plant.tcp().translation.vector;
        let mut decision = schedule.tick(plant.time_s(), success, &object, &tool);
        if decision == Decision::Paused {
            // In sim the "human" puts the cube back for the forward task at once.
            log.human_resets += 1;
            plant.reset_for(
                cfg.seed.wrapping_add(1_000_000 + log.human_resets),
                Direction::Forward,
            );
            decision = schedule.human_reset_done(plant.time_s());
        }
        plant.observe(&mut next, &mut next_pimg);
        let (ended, mut reason) = match decision {
            Decision::End { reason, .. } => (true, Some(reason)),
            _ => (false, None),
        };
        let mut truth = truth;
        let homed = ended && cfg.schedule.home_s > 0.0;
        let unwind = homed
            && cfg.schedule.posture_reset_overridden > 0.0
            && ep_overridden as f64
                > cfg.schedule.posture_reset_overridden * (step - ep_start) as f64;
        if homed {
            let (max_s, posture) = if unwind {
                log.posture_resets += 1;
                (cfg.schedule.home_s.max(super::plant::POSTURE_HOME_S), true)
            } else {
                (cfg.schedule.home_s, cfg.schedule.home_posture)
            };
            plant.go_home(rft_sim::expert::HOME_CLEAR_Z, max_s, posture);
        }
        let second_look = match reason {
            Some(EndReason::Timeout | EndReason::Stuck) => cfg.schedule.confirm_at_home,
            Some(EndReason::Success) => cfg.schedule.verify_at_home.applies_to(dir),
            _ => false,
        };
        if homed && second_look {
            // A second look with the arm out of the way.
            let success;
            (success, truth) = look(
                &mut plant,
                classifiers,
                dir,
                cfg.truth_rewards,
                [&mut log.classifier, &mut window],
            )?;
            if let Some(s) = success {
                if s && reason != Some(EndReason::Success) {
                    reason = Some(EndReason::SuccessAtHome);
                    schedule.confirm_success();
                } else if !s && reason == Some(EndReason::Success) {
                    reason = Some(EndReason::Unconfirmed);
                    schedule.reject_success();
                }
            }
        }
        let terminal = reason.is_some_and(EndReason::is_success);
        let reward = if terminal { cfg.success_reward } else { 0.0 } - cfg.step_penalty;
        let promoted = learner.promoted();
        learner.push(&TransitionIn {
            obs: &obs,
            action: &a,
            reward,
            next_obs: &next,
            terminated: terminal,
            episode_end: ended,
            task_id: task,
            safety_override: info.safety_override,
            mc_return: f32::NEG_INFINITY,
            image: (!pimg.is_empty()).then_some(pimg.as_slice()),
            next_image: (!next_pimg.is_empty()).then_some(next_pimg.as_slice()),
            ..Default::default()
        })?;
        if let Some(r) = reason {
            let rec = EpisodeRecord {
                end_step: step,
                direction: dir.name().into(),
                reason: r.name().into(),
                steps: step - ep_start,
                true_success: truth,
                object_xy: [object.x, object.y],
                overridden_steps: ep_overridden,
                posture_reset: homed && (unwind || cfg.schedule.home_posture),
                stall_escape: escaping,
            };
            log.stall_escape_episodes += u64::from(escaping);
            if terminal && !truth {
                log.false_success_episodes += 1;
            }
            writeln!(
                eps_csv,
                "{},{},{},{},{},{:.3},{:.3},{},{},{}",
                rec.end_step,
                rec.direction,
                rec.reason,
                rec.steps,
                rec.true_success,
                rec.object_xy[0],
                rec.object_xy[1],
                rec.overridden_steps,
                rec.posture_reset,
                rec.stall_escape
            )?;
            log.episodes.push(rec);
            ep_start = step;
            ep_overridden = 0;
            log.promoted_episodes += learner.promoted() - promoted;
            if homed {
                schedule.restart_clock(plant.time_s());
            }
        }
        // The learner's round.
        if step > cfg.warmup_steps {
            let u0 = Instant::now();
            let round = learner.round(&mut rng)?;
            log.update_ms.push(u0.elapsed().as_secs_f32() * 1e3);
            if round.publish.is_some() {
                policy.swap(&learner.policy_bytes()?)?;
            }
        }
        let eval_now =
            (cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every)) || step == cfg.steps;
        if eval_now && cfg.eval_episodes > 0 {
            let seed = cfg.seed.wrapping_add(2_000_000);
            let f = evaluate(
                &mut eval_policy,
                &mut eval_plant,
                Direction::Forward,
                cfg.eval_episodes,
                seed,
                cfg.eval_max_s,
            )?;
            let b = evaluate(
                &mut eval_policy,
                &mut eval_plant,
                Direction::Backward,
                cfg.eval_episodes,
                seed,
                cfg.eval_max_s,
            )?;
            let pt = EvalPoint {
                step,
                forward: f,
                backward: b,
            };
            log.evals.push(pt.clone());
            last_eval = Some(pt);
        }
        if (cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every))
            || step == cfg.steps
        {
            learner.checkpoint(
                &files.checkpoints(),
                step,
                serde_json::json!({ "finetune": cfg, "plant": plant_cfg }),
                2,
            )?;
        }
        if step.is_multiple_of(cfg.log_every.max(1)) || step == cfg.steps || eval_now {
            let from = step.saturating_sub(cfg.log_every.max(1) * 4);
            let fr = log.episode_rate(Direction::Forward, from, step);
            let br = log.episode_rate(Direction::Backward, from, step);
            let mut w = Counts::default();
            for c in &window {
                w.tp += c.tp;
                w.fp += c.fp;
                w.tn += c.tn;
                w.fn_ += c.fn_;
            }
            window = [Counts::default(); 2];
            let lo = log.act_us.len().saturating_sub(cfg.log_every as usize);
            let elapsed = start.elapsed().as_secs_f64();
            let e = last_eval.take();
            let ev = |r: Option<&EvalResult>| match r {
                Some(r) => format!("{:.4},{:.4},{:.4}", r.rate.rate, r.rate.lo, r.rate.hi),
                None => ",,".into(),
            };
            writeln!(
                csv,
                "{step},{},{},{},{},{},{},{},{},{:.1},{:.1},{},{:.1},{},{},{:.2}",
                log.episodes.len(),
                opt((fr.trials > 0).then_some(fr.rate)),
                opt((br.trials > 0).then_some(br.rate)),
                opt(w.precision()),
                opt(w.recall()),
                log.false_success_episodes,
                log.human_resets,
                log.safety_override_steps,
                pct(&log.act_us[lo..], 0.5),
                pct(&log.act_us[lo..], 0.99),
                learner.agent.steps - grad0,
                (learner.agent.steps - grad0) as f64 / elapsed.max(1e-9),
                ev(e.as_ref().map(|e| &e.forward)),
                ev(e.as_ref().map(|e| &e.backward)),
                elapsed,
            )?;
            csv.flush()?;
            eps_csv.flush()?;
            let recent: Vec<bool> = log
                .episodes
                .iter()
                .rev()
                .filter(|e| e.direction == "forward")
                .take(20)
                .map(|e| e.true_success)
                .collect();
            let n_eps = log.episodes.len().max(1);
            on_progress(&FinetuneProgress {
                step,
                total: cfg.steps,
                episodes: log.episodes.len(),
                recent_forward: (!recent.is_empty())
                    .then(|| recent.iter().filter(|x| **x).count() as f64 / recent.len() as f64),
                reward_rate: log
                    .episodes
                    .iter()
                    .filter(|e| {
                        e.reason == EndReason::Success.name()
                            || e.reason == EndReason::SuccessAtHome.name()
                    })
                    .count() as f64
                    / n_eps as f64,
                grad_steps_per_s: (learner.agent.steps - grad0) as f64 / elapsed.max(1e-9),
                elapsed_s: elapsed,
                eta_s: elapsed / step as f64 * (cfg.steps - step) as f64,
                last_eval: log
                    .evals
                    .last()
                    .map(|e| (e.forward.rate.rate, e.backward.rate.rate)),
                human_resets: log.human_resets,
            });
        }
    }
    log.grad_steps = learner.agent.steps - grad0;
    log.policy_version = learner.version();
    log.wall_s = start.elapsed().as_secs_f64();
    log.human_resets = schedule.human_resets().max(log.human_resets);
    rft_policies::store::atomic_write(
        &files.dir.join("policy.safetensors"),
        &learner.policy_bytes()?,
    )?;
    Ok((log, learner.agent))
}

/// Writes `v` as pretty JSON to `path` (atomically).
pub fn write_json(path: &Path, v: &impl Serialize) -> crate::Result<()> {
    let s = serde_json::to_string_pretty(v)?;
    rft_policies::store::atomic_write(path, s.as_bytes())?;
    Ok(())
}
