//! Reset-free autonomous fine-tuning on the simulated plant, in one thread and in lockstep:
//! at each control tick the policy acts (the runner's allocation-free `PolicyHandle`), the
//! plant runs one control period through the safety filter, the scene camera's frame goes to
//! the success classifier of the current task, the schedule decides whether the episode goes
//! on, and the learner takes its update round and publishes new weights every
//! `publish_every` rounds.
//!
//! Rewards come only from the classifier. Ground truth is read for measurement only: the
//! classifier's confusion against it, and the training episodes' true outcomes. The one
//! exception is an ablation a user asks for by name (`truth_rewards`): it tells how much of
//! what the loop leaves undone is the classifier's doing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use rft_policies::handle::{
    ActMode, InferencePolicy, PolicyHandle, policy_bytes, policy_bytes_from,
};
use rft_policies::replay::{Batch, ReplayBuffer, TransitionIn};
use rft_policies::train::sample_round;
use rft_policies::{Agent, checkpoint};
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
    /// Share of each batch drawn from the demos (RLPD-style mixing; 0 keeps none).
    pub offline_ratio: f64,
    /// Critic updates per robot step.
    pub utd: usize,
    /// Keep the pre-training's CQL regulariser online (Cal-QL fine-tuning); false drops it
    /// and fine-tunes with plain SAC updates (as WSRL and RLPD do).
    pub keep_cql: bool,
    /// Learner rounds that update only the critics (the actor waits until the critics have
    /// seen the classifier's rewards); needed after behaviour-cloning pre-training.
    pub critic_warmup_rounds: u64,
    /// Entropy temperature at the start of fine-tuning (unset: the pre-trained one).
    pub init_alpha: Option<f64>,
    /// Behaviour-cloning weight on the actor during fine-tuning (0: none).
    pub bc_weight: f64,
    /// Exploration: 0 samples actions from the policy (SAC); above 0 acts with the policy's
    /// mean plus Gaussian noise of this standard deviation (in the [-1, 1] action units).
    pub explore_std: f64,
    /// Self-imitation: an episode the classifier ends as a success is copied into the demo
    /// buffer, so the behaviour-cloning term and the demo share of each batch learn from the
    /// policy's own successes as well as the demonstrations.
    pub promote_successes: bool,
    /// Learner update rounds between published policy versions.
    pub publish_every: u64,
    /// The policy that acts, is evaluated and is saved is an exponential moving average of
    /// the actor's weights with this decay per actor update (0: the actor itself). Averaging
    /// smooths the swings of a policy fitted to a changing buffer (0.999: about the last
    /// 1,000 updates).
    pub policy_ema: f64,
    /// Learning-rate anneal: the actor's and critics' step sizes fall linearly from the
    /// configured ones (at the first actor update, after the warm-up and critic warm-up) to
    /// this fraction of them at the last step (1: constant). A policy still moving at full
    /// step size late in the run can lose what it learnt.
    pub lr_final: f64,
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
            offline_ratio: 0.5,
            utd: 1,
            keep_cql: false,
            critic_warmup_rounds: 0,
            init_alpha: None,
            bc_weight: 0.0,
            explore_std: 0.0,
            promote_successes: false,
            publish_every: 50,
            policy_ema: 0.0,
            lr_final: 1.0,
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

pub fn prepare_online(
    agent: &mut Agent,
    utd: usize,
    keep_cql: bool,
    bc_weight: f64,
    init_alpha: Option<f64>,
) -> Result<(), String> {
    if utd == 0 {
        return Err("utd must be at least 1".into());
    }
    if let Some(a) = init_alpha
        && !(a.is_finite() && a > 0.0)
    {
        return Err(format!("init_alpha {a} must be positive"));
    }
    agent.cfg.utd = utd;
    if !keep_cql {
        agent.cfg.cql = None;
        agent.cfg.algorithm = rft_policies::Algorithm::Sac;
    }
    agent.cfg.bc_weight = bc_weight;
    if let Some(a) = init_alpha {
        agent.log_alpha.value = a.ln();
    }
    Ok(())
}

/// Reset-free fine-tuning of `agent` for `cfg.steps` steps. `offline` (the demos) is mixed into
/// each batch at `cfg.offline_ratio`. Writes `metrics.csv`, `episodes.csv`, checkpoints and the
/// final policy under `files.dir`.
pub fn finetune(
    agent: &mut Agent,
    classifiers: &mut Classifiers,
    offline: Option<&ReplayBuffer>,
    plant_cfg: &PlantConfig,
    cfg: &FinetuneConfig,
    files: &RunFiles,
    mut on_progress: impl FnMut(&FinetuneProgress),
) -> crate::Result<FinetuneLog> {
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
    if !(cfg.policy_ema.is_finite() && (0.0..1.0).contains(&cfg.policy_ema)) {
        return Err(crate::Error::Stage(format!(
            "finetune.policy_ema {} must be in [0, 1)",
            cfg.policy_ema
        )));
    }
    if !(cfg.lr_final.is_finite() && (0.0..=1.0).contains(&cfg.lr_final)) {
        return Err(crate::Error::Stage(format!(
            "finetune.lr_final {} must be in [0, 1]",
            cfg.lr_final
        )));
    }
    prepare_online(agent, cfg.utd, cfg.keep_cql, cfg.bc_weight, cfg.init_alpha)
        .map_err(|e| crate::Error::Stage(format!("finetune.{e}")))?;
    let grad0 = agent.steps;
    std::fs::create_dir_all(&files.dir).map_err(crate::Error::io(&files.dir))?;
    let mut plant = SimPlant::new(plant_cfg, cfg.seed)?;
    let mut eval_plant = SimPlant::new(plant_cfg, cfg.seed ^ 0xe7a1)?;
    let mut version = 1u64;
    let mut policy = PolicyHandle::new(InferencePolicy::from_agent(agent, version)?, cfg.seed);
    let mut eval_policy = policy.clone();
    // The averaged actor (deep copies: the actor's variables are updated in place).
    let mut ema = if cfg.policy_ema > 0.0 {
        let w = agent.policy_weights();
        let copies: candle_core::Result<Vec<_>> = w
            .into_iter()
            .map(|(n, t)| Ok((n, t.detach().copy()?)))
            .collect();
        Some(copies?)
    } else {
        None
    };
    let mut buffer = ReplayBuffer::new(cfg.steps as usize + 1, obs_dim, ACTION_DIM, image_shape);
    // The demos, in a buffer with room for the episodes promoted to them.
    let mut demos = match offline {
        Some(o) if cfg.promote_successes => {
            let mut d = ReplayBuffer::new(
                o.len() + cfg.steps as usize + 1,
                obs_dim,
                ACTION_DIM,
                image_shape,
            );
            o.copy_into(0, o.len(), &mut d)?;
            Some(d)
        }
        _ => None,
    };
    let mut ep_first_row = 0usize;
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut batches: Vec<Batch> = Vec::new();
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
        buffer.push(&TransitionIn {
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
            if let Some(d) = demos.as_mut()
                && terminal
            {
                buffer.copy_into(ep_first_row, buffer.len(), d)?;
                log.promoted_episodes += 1;
            }
            ep_first_row = buffer.len();
            if homed {
                schedule.restart_clock(plant.time_s());
            }
        }
        // The learner's round.
        if step > cfg.warmup_steps {
            let u0 = Instant::now();
            sample_round(
                agent,
                &buffer,
                demos.as_ref().or(offline),
                cfg.offline_ratio,
                &mut rng,
                &mut batches,
            )?;
            let refs: Vec<&Batch> = batches.iter().collect();
            if cfg.lr_final < 1.0 {
                agent.set_lr_scale(lr_scale(cfg, step));
            }
            if step - cfg.warmup_steps <= cfg.critic_warmup_rounds {
                agent.update_critics(&refs)?;
            } else {
                agent.update(&refs)?;
                if let Some(ema) = ema.as_mut() {
                    average_into(ema, &agent.policy_weights(), cfg.policy_ema)?;
                }
            }
            log.update_ms.push(u0.elapsed().as_secs_f32() * 1e3);
            if (step - cfg.warmup_steps).is_multiple_of(cfg.publish_every.max(1)) {
                version += 1;
                policy.swap(&published(agent, ema.as_deref(), version)?)?;
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
            checkpoint::save_with_policy(
                &files.checkpoints(),
                agent,
                published(agent, ema.as_deref(), version)?,
                Some(&buffer),
                step,
                version,
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
                agent.steps - grad0,
                (agent.steps - grad0) as f64 / elapsed.max(1e-9),
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
                grad_steps_per_s: (agent.steps - grad0) as f64 / elapsed.max(1e-9),
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
    log.grad_steps = agent.steps - grad0;
    log.policy_version = version;
    log.wall_s = start.elapsed().as_secs_f64();
    log.human_resets = schedule.human_resets().max(log.human_resets);
    rft_policies::store::atomic_write(
        &files.dir.join("policy.safetensors"),
        &published(agent, ema.as_deref(), version)?,
    )?;
    Ok(log)
}

/// The learning-rate multiplier at online step `step`: 1 until the first actor update, then
/// linear to `cfg.lr_final` at `cfg.steps`.
fn lr_scale(cfg: &FinetuneConfig, step: u64) -> f64 {
    let first = cfg.warmup_steps + cfg.critic_warmup_rounds;
    if step <= first || cfg.steps <= first {
        return 1.0;
    }
    let frac = ((step - first) as f64 / (cfg.steps - first) as f64).min(1.0);
    1.0 - (1.0 - cfg.lr_final) * frac
}

/// `avg ← decay · avg + (1 − decay) · w`, tensor by tensor (the same names in the same order).
fn average_into(
    avg: &mut [(String, candle_core::Tensor)],
    w: &[(String, candle_core::Tensor)],
    decay: f64,
) -> crate::Result<()> {
    for ((an, a), (wn, x)) in avg.iter_mut().zip(w) {
        if an != wn {
            return Err(crate::Error::Stage(format!(
                "policy weights {an} and {wn} out of order"
            )));
        }
        // Detached: the average must not record the actor's graph (it would keep every past
        // update alive).
        *a = ((&*a * decay)? + (x.detach() * (1.0 - decay))?)?.detach();
    }
    Ok(())
}

/// The policy bytes the loop publishes: the averaged actor when there is one.
fn published(
    agent: &Agent,
    ema: Option<&[(String, candle_core::Tensor)]>,
    version: u64,
) -> crate::Result<Vec<u8>> {
    Ok(match ema {
        Some(w) => policy_bytes_from(agent, w, version)?,
        None => policy_bytes(agent, version)?,
    })
}

/// Writes `v` as pretty JSON to `path` (atomically).
pub fn write_json(path: &Path, v: &impl Serialize) -> crate::Result<()> {
    let s = serde_json::to_string_pretty(v)?;
    rft_policies::store::atomic_write(path, s.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn the_learning_rate_falls_linearly_from_the_first_actor_update_to_lr_final() {
        let cfg = FinetuneConfig {
            steps: 1_100,
            warmup_steps: 50,
            critic_warmup_rounds: 50,
            lr_final: 0.1,
            ..FinetuneConfig::default()
        };
        // Full step size through the warm-ups (critic warm-up included).
        assert_eq!(lr_scale(&cfg, 1), 1.0);
        assert_eq!(lr_scale(&cfg, 100), 1.0);
        // Half-way from the first actor update (100) to the end (1,100): half-way to 0.1.
        assert!((lr_scale(&cfg, 600) - 0.55).abs() < 1e-12);
        assert!((lr_scale(&cfg, 1_100) - 0.1).abs() < 1e-12);
        let constant = FinetuneConfig {
            lr_final: 1.0,
            ..cfg.clone()
        };
        assert_eq!(lr_scale(&constant, 1_100), 1.0);
    }

    #[test]
    fn the_moving_average_moves_by_one_minus_decay_per_update() {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::new(v, &dev).unwrap();
        let mut avg = vec![("a".to_string(), t(&[1.0, 2.0])), ("b".into(), t(&[0.0]))];
        let w = vec![("a".to_string(), t(&[5.0, 6.0])), ("b".into(), t(&[-4.0]))];
        average_into(&mut avg, &w, 0.75).unwrap();
        assert_eq!(avg[0].1.to_vec1::<f32>().unwrap(), [2.0, 3.0]);
        assert_eq!(avg[1].1.to_vec1::<f32>().unwrap(), [-1.0]);
        // The same weights again: the average closes a quarter of the remaining gap.
        average_into(&mut avg, &w, 0.75).unwrap();
        assert_eq!(avg[0].1.to_vec1::<f32>().unwrap(), [2.75, 3.75]);
        // Averaging the actor's variables records no graph: an average that tracked them
        // would keep every past update alive (it ran a 20k-step run out of memory).
        let var = candle_core::Var::new(&[1.0f32, 1.0], &dev).unwrap();
        let live = vec![("a".to_string(), var.as_tensor().clone()), w[1].clone()];
        average_into(&mut avg, &live, 0.5).unwrap();
        assert!(!avg[0].1.track_op());
        assert_eq!(avg[0].1.to_vec1::<f32>().unwrap(), [1.875, 2.375]);
        let swapped = vec![w[1].clone(), w[0].clone()];
        let e = average_into(&mut avg, &swapped, 0.5).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
    }
}
