//! Training loops: online (SAC / WSRL / RLPD) on a built-in environment and offline
//! pre-training (Cal-QL / CQL / BC) from a replay buffer, with progress reports and a metrics
//! CSV.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, UpdateInfo};
use crate::env::{Env, make_env};
use crate::error::{Error, Result};
use crate::online::{OnlineLearner, Recipe};
use crate::replay::{Batch, ReplayBuffer, TransitionIn};

/// The online loop's schedule (the agent's own config holds the learning numbers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    pub total_steps: u64,
    /// Environment steps before the first update (SB3's `learning_starts`).
    pub learning_starts: u64,
    /// Act uniformly at random before `learning_starts` (SAC from scratch); otherwise act
    /// with the current policy (WSRL's warm-up with the pre-trained policy).
    pub random_before_learning: bool,
    pub buffer_capacity: usize,
    /// Fraction of each batch drawn from the offline/demo buffer (RLPD: 0.5).
    pub offline_ratio: f64,
    pub eval_every: u64,
    pub eval_episodes: usize,
    pub seed: u64,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            total_steps: 20_000,
            learning_starts: 100,
            random_before_learning: true,
            buffer_capacity: 1_000_000,
            offline_ratio: 0.0,
            eval_every: 1_000,
            eval_episodes: 5,
            seed: 0,
        }
    }
}

/// What a training run produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainLog {
    /// (environment step, mean deterministic evaluation return).
    pub evals: Vec<(u64, f64)>,
    /// (environment step at episode end, training episode return).
    pub episodes: Vec<(u64, f64)>,
    pub grad_steps: u64,
    pub wall_s: f64,
}

impl TrainLog {
    pub fn final_eval(&self) -> Option<f64> {
        self.evals.last().map(|e| e.1)
    }
}

/// A snapshot for progress displays.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub phase: &'static str,
    pub step: u64,
    pub total: u64,
    pub episodes: u64,
    pub last_return: Option<f64>,
    pub last_eval: Option<f64>,
    pub info: UpdateInfo,
    pub grad_steps: u64,
    pub elapsed_s: f64,
}

impl Progress {
    pub fn steps_per_s(&self) -> f64 {
        self.step as f64 / self.elapsed_s.max(1e-9)
    }
    pub fn eta_s(&self) -> f64 {
        (self.total.saturating_sub(self.step)) as f64 / self.steps_per_s().max(1e-9)
    }
}

/// Mean return of `episodes` deterministic episodes on a fresh environment.
pub fn evaluate(agent: &mut Agent, env: &mut dyn Env, episodes: usize) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..episodes {
        let mut obs = env.reset();
        loop {
            let a = agent.act(&obs, 0, None, true)?;
            let s = env.step(&a);
            total += s.reward as f64;
            obs = s.obs;
            if s.terminated || s.truncated {
                break;
            }
        }
    }
    Ok(total / episodes.max(1) as f64)
}

/// Draws one update round of batches (UTD of them), mixing in `offline` at `offline_ratio`.
pub fn sample_round(
    agent: &Agent,
    online: &ReplayBuffer,
    offline: Option<&ReplayBuffer>,
    offline_ratio: f64,
    rng: &mut StdRng,
    batches: &mut Vec<Batch>,
) -> Result<()> {
    let spec = agent.sample_spec();
    let bsz = agent.cfg.batch_size;
    let n_off = match offline {
        Some(o) if !o.is_empty() => ((bsz as f64) * offline_ratio).round() as usize,
        _ => 0,
    };
    batches.resize_with(agent.cfg.utd, Batch::default);
    for b in batches.iter_mut() {
        b.clear();
        if let (Some(off), true) = (offline, n_off > 0) {
            off.sample_into(rng, n_off, &spec, b)?;
            b.demo_rows = b.size;
        }
        if bsz > n_off {
            online.sample_into(rng, bsz - n_off, &spec, b)?;
        }
    }
    Ok(())
}

/// Online training on a built-in environment. `offline` (RLPD) is mixed into every batch at
/// `cfg.offline_ratio`; WSRL is `random_before_learning = false` with `learning_starts` =
/// its warm-up and no offline buffer. `on_progress` is called about every 1% of the run. The
/// updates are [`OnlineLearner`]'s (the agent's own UTD and BC weight, no warm-up, average or
/// anneal); returns the log and the trained agent.
pub fn train_online(
    agent: Agent,
    env_name: &str,
    cfg: &OnlineConfig,
    offline: Option<&ReplayBuffer>,
    metrics: Option<&mut MetricsCsv>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<(TrainLog, Agent)> {
    let mut env = make_env(env_name, cfg.seed)?;
    let mut eval_env = make_env(env_name, cfg.seed.wrapping_add(10_000))?;
    let spec = env.spec();
    if spec.obs_dim != agent.cfg.obs_dim || spec.act_dim != agent.cfg.act_dim {
        return Err(Error::Spec(format!(
            "environment {} has obs {} / act {}, the agent {} / {}",
            spec.name, spec.obs_dim, spec.act_dim, agent.cfg.obs_dim, agent.cfg.act_dim
        )));
    }
    let recipe = Recipe {
        utd: agent.cfg.utd,
        offline_ratio: cfg.offline_ratio,
        keep_cql: agent.cfg.cql.is_some(),
        bc_weight: agent.cfg.bc_weight,
        publish_every: cfg.total_steps.max(1),
        ..Recipe::default()
    };
    let mut learner = OnlineLearner::with_capacity(
        agent,
        recipe,
        cfg.buffer_capacity.min(cfg.total_steps as usize + 1),
        None,
        offline,
        0,
    )?;
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xb0ff);
    let mut log = TrainLog::default();
    let start = Instant::now();
    let mut obs = env.reset();
    let mut ep_return = 0.0f64;
    let mut progress = Progress {
        phase: "online",
        total: cfg.total_steps,
        ..Default::default()
    };
    let mut metrics = metrics;
    for step in 1..=cfg.total_steps {
        let action = if step <= cfg.learning_starts && cfg.random_before_learning {
            (0..spec.act_dim)
                .map(|_| rng.random_range(-1.0f32..=1.0))
                .collect()
        } else {
            learner.agent.act(&obs, 0, None, false)?
        };
        let s = env.step(&action);
        ep_return += s.reward as f64;
        learner.push(&TransitionIn {
            obs: &obs,
            action: &action,
            reward: s.reward,
            next_obs: &s.obs,
            terminated: s.terminated,
            episode_end: s.terminated || s.truncated,
            mc_return: f32::NEG_INFINITY,
            ..Default::default()
        })?;
        obs = s.obs;
        if s.terminated || s.truncated {
            log.episodes.push((step, ep_return));
            progress.last_return = Some(ep_return);
            progress.episodes += 1;
            ep_return = 0.0;
            obs = env.reset();
        }
        if step > cfg.learning_starts {
            progress.info = learner.round(&mut rng)?.info;
        }
        let eval_now = cfg.eval_every > 0 && step % cfg.eval_every == 0;
        if eval_now {
            let r = evaluate(&mut learner.agent, eval_env.as_mut(), cfg.eval_episodes)?;
            log.evals.push((step, r));
            progress.last_eval = Some(r);
        }
        report(
            &mut progress,
            step,
            learner.agent.steps,
            start,
            eval_now,
            &mut metrics,
            on_progress,
        )?;
    }
    log.grad_steps = learner.agent.steps;
    log.wall_s = start.elapsed().as_secs_f64();
    Ok((log, learner.agent))
}

/// Offline pre-training for `steps` gradient rounds on `data`; evaluates on `eval_env`
/// (when given) every `eval_every` steps.
pub fn train_offline(
    agent: &mut Agent,
    data: &ReplayBuffer,
    steps: u64,
    eval: Option<(&str, u64, usize)>,
    eval_every: u64,
    metrics: Option<&mut MetricsCsv>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<TrainLog> {
    if data.is_empty() {
        return Err(Error::Config("the offline dataset is empty".into()));
    }
    let mut eval_env = match eval {
        Some((name, seed, _)) => Some(make_env(name, seed)?),
        None => None,
    };
    let eval_episodes = eval.map_or(0, |e| e.2);
    let mut rng = StdRng::seed_from_u64(agent.cfg.seed ^ 0x0ff1);
    let spec = agent.sample_spec();
    let mut batch = Batch::default();
    let mut log = TrainLog::default();
    let start = Instant::now();
    let mut progress = Progress {
        phase: "offline",
        total: steps,
        ..Default::default()
    };
    let mut metrics = metrics;
    for step in 1..=steps {
        batch.clear();
        data.sample_into(&mut rng, agent.cfg.batch_size, &spec, &mut batch)?;
        progress.info = agent.update(&[&batch])?;
        let eval_now = eval_every > 0 && step % eval_every == 0;
        if let (Some(env), true) = (eval_env.as_mut(), eval_now) {
            let r = evaluate(agent, env.as_mut(), eval_episodes)?;
            log.evals.push((step, r));
            progress.last_eval = Some(r);
        }
        report(
            &mut progress,
            step,
            agent.steps,
            start,
            eval_now,
            &mut metrics,
            on_progress,
        )?;
    }
    log.grad_steps = agent.steps;
    log.wall_s = start.elapsed().as_secs_f64();
    Ok(log)
}

/// Updates the progress snapshot; writes a metrics row and calls `on_progress` about every 1%
/// of the run (metrics rows also at every evaluation).
fn report(
    progress: &mut Progress,
    step: u64,
    grad_steps: u64,
    start: Instant,
    eval_now: bool,
    metrics: &mut Option<&mut MetricsCsv>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    progress.step = step;
    progress.grad_steps = grad_steps;
    progress.elapsed_s = start.elapsed().as_secs_f64();
    let every = (progress.total / 100).max(1);
    if let Some(m) = metrics.as_deref_mut()
        && (eval_now || step.is_multiple_of(every))
    {
        m.row(progress, eval_now)?;
    }
    if step.is_multiple_of(every) || step == progress.total {
        on_progress(progress);
    }
    Ok(())
}

/// A metrics CSV: one row per report, flushed as it goes.
pub struct MetricsCsv {
    out: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

pub const METRICS_HEADER: &str = "phase,step,grad_steps,wall_s,episodes,episode_return,eval_return,critic_loss,actor_loss,q_mean,alpha,entropy,cql_loss,calql_bound_rate,bc_nll";

impl MetricsCsv {
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = std::io::BufWriter::new(f);
        writeln!(out, "{METRICS_HEADER}").map_err(|e| Error::io(path, e))?;
        Ok(MetricsCsv {
            out,
            path: path.to_path_buf(),
        })
    }

    pub fn row(&mut self, p: &Progress, with_eval: bool) -> Result<()> {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
        let i = &p.info;
        writeln!(
            self.out,
            "{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{}",
            p.phase,
            p.step,
            p.grad_steps,
            p.elapsed_s,
            p.episodes,
            opt(p.last_return),
            if with_eval {
                opt(p.last_eval)
            } else {
                String::new()
            },
            i.critic_loss,
            i.actor_loss,
            i.q_mean,
            i.alpha,
            i.entropy,
            i.cql_loss,
            i.calql_bound_rate,
            i.bc_nll
        )
        .and_then(|_| self.out.flush())
        .map_err(|e| Error::io(&self.path, e))
    }
}

/// A one-line progress display on stderr: redrawn in place on a terminal, a line per 10%
/// otherwise (logs stay readable).
pub struct ProgressLine {
    tty: bool,
    last_decile: u64,
}

impl Default for ProgressLine {
    fn default() -> Self {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            last_decile: u64::MAX,
        }
    }
}

impl ProgressLine {
    pub fn show(&mut self, p: &Progress) {
        let frac = p.step as f64 / p.total.max(1) as f64;
        let decile = (frac * 10.0) as u64;
        if !self.tty && decile == self.last_decile && p.step != p.total {
            return;
        }
        self.last_decile = decile;
        let width = 24;
        let filled = ((frac * width as f64) as usize).min(width);
        let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
        let ret = p
            .last_return
            .map(|r| format!("  return {r:8.1}"))
            .unwrap_or_default();
        let ev = p
            .last_eval
            .map(|r| format!("  eval {r:8.1}"))
            .unwrap_or_default();
        let line = format!(
            "{:7} [{bar}] {}/{}{ret}{ev}  q {:7.2}  {:6.0} steps/s  ETA {:5.0}s",
            p.phase,
            p.step,
            p.total,
            p.info.q_mean,
            p.steps_per_s(),
            p.eta_s()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            if p.step == p.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}
