//! `rft train`, `rft pretrain`, `rft dataset`: the learner on built-in benchmark environments
//! and on recorded data, with a progress line, a metrics CSV and checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use rft_policies::checkpoint;
use rft_policies::dataset::{buffer_from_episodes, episodes_from_mcap};
use rft_policies::env::make_env;
use rft_policies::train::{
    MetricsCsv, OnlineConfig, ProgressLine, TrainLog, train_offline, train_online,
};
use rft_policies::{Agent, AgentConfig, Algorithm, ObsNorm, ReplayBuffer};

/// Network and update options shared by `train` and `pretrain` (unset: the algorithm's preset).
#[derive(Args, Clone, Debug, Default)]
pub struct NetArgs {
    /// Hidden layer sizes, e.g. `256,256`.
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Learning rate for actor, critic and temperature.
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Critic updates per environment step.
    #[arg(long)]
    pub utd: Option<usize>,
    /// Size of the critic ensemble.
    #[arg(long)]
    pub critics: Option<usize>,
    /// LayerNorm in actor and critics.
    #[arg(long)]
    pub layer_norm: Option<bool>,
    #[arg(long)]
    pub gamma: Option<f64>,
    /// CQL actions sampled per state from each source (Cal-QL/CQL).
    #[arg(long)]
    pub cql_actions: Option<usize>,
    /// CQL regulariser weight (Cal-QL/CQL).
    #[arg(long)]
    pub cql_alpha: Option<f64>,
    /// Tune the CQL weight with a Lagrange multiplier towards this Q gap (Cal-QL/CQL).
    #[arg(long)]
    pub cql_lagrange_gap: Option<f64>,
    /// Train on the CPU even when built with `cuda` and a GPU is present.
    #[arg(long)]
    pub cpu: bool,
}

impl NetArgs {
    fn apply(&self, c: &mut AgentConfig) {
        if let Some(h) = &self.hidden {
            c.hidden = h.clone();
        }
        if let Some(lr) = self.lr {
            (c.lr_actor, c.lr_critic, c.lr_alpha) = (lr, lr, lr);
        }
        if let Some(b) = self.batch_size {
            c.batch_size = b;
        }
        if let Some(u) = self.utd {
            c.utd = u;
        }
        if let Some(n) = self.critics {
            c.n_critics = n;
            c.critic_subsample = c.critic_subsample.min(n);
        }
        if let Some(ln) = self.layer_norm {
            c.actor_layer_norm = ln;
            c.critic_layer_norm = ln;
        }
        if let Some(g) = self.gamma {
            c.gamma = g;
        }
        if let Some(cql) = c.cql.as_mut() {
            if let Some(n) = self.cql_actions {
                cql.n_actions = n;
            }
            if let Some(a) = self.cql_alpha {
                cql.alpha = a;
            }
            if let Some(g) = self.cql_lagrange_gap {
                cql.lagrange_gap = Some(g);
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Built-in environment: pendulum (Gymnasium's Pendulum-v1).
    #[arg(long, default_value = "pendulum")]
    pub env: String,
    /// sac | wsrl | rlpd
    #[arg(long, default_value = "sac")]
    pub algo: String,
    /// Environment steps.
    #[arg(long, default_value_t = 20_000)]
    pub steps: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory (default `runs/<time>-train-<env>-<algo>-s<seed>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start from this pre-trained checkpoint (a checkpoint directory or a checkpoints root
    /// with `LATEST`): its weights, normalisation and temperature; fresh optimisers.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Steps acting with the initial policy before any update (WSRL's warm-up;
    /// default 5000 for wsrl, else SAC's 100 random steps).
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Offline/demo data mixed into every batch (RLPD): an MCAP recording or a buffer
    /// written by `rft dataset` / a checkpoint.
    #[arg(long)]
    pub offline: Option<PathBuf>,
    /// Fraction of each batch from `--offline` (RLPD: 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub offline_ratio: f64,
    #[arg(long, default_value_t = 1000)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 10)]
    pub eval_episodes: usize,
    /// Also save a checkpoint (with the replay buffer) at the end.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub checkpoint: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Dataset: an MCAP recording (`rft record` with /rft/transition and /rft/reward) or a
    /// replay buffer (`.safetensors`, from `rft dataset` or a checkpoint).
    #[arg(long)]
    pub data: PathBuf,
    /// calql | cql | bc
    #[arg(long, default_value = "calql")]
    pub algo: String,
    /// Gradient steps.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory (default `runs/<time>-pretrain-<algo>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate on this built-in environment while training.
    #[arg(long)]
    pub env: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 10)]
    pub eval_episodes: usize,
    /// Number of tasks (one-hot task id input; 2 = forward and backward).
    #[arg(long)]
    pub num_tasks: Option<usize>,
    /// Sparse-reward failures: episodes whose rewards all equal this get r/(1-γ) as MC return.
    #[arg(long)]
    pub sparse_negative: Option<f32>,
    /// Normalise observations with the dataset's mean and standard deviation.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub normalize: bool,
    /// How much older than the next frame a joined reward may be (MCAP datasets).
    #[arg(long, default_value_t = 0)]
    pub reward_age_ms: u64,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// Built-in dataset source: pendulum (a noisy energy-pumping swing-up controller).
    #[arg(default_value = "pendulum")]
    pub source: String,
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    /// Probability of a uniformly random action at each step (0 = the controller alone).
    #[arg(long, default_value_t = 0.5)]
    pub noise: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.99)]
    pub gamma: f32,
    #[arg(long, default_value = "dataset.safetensors")]
    pub out: PathBuf,
}

/// `runs/<time>-<name>` unless given.
pub fn run_dir(out: Option<&Path>, name: &str) -> PathBuf {
    out.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{}-{name}", rft_runtime::app::timestamp_utc()))
    })
}

/// Loads an offline dataset: MCAP recordings or replay-buffer safetensors.
pub fn load_dataset(
    path: &Path,
    gamma: f32,
    sparse_negative: Option<f32>,
    reward_age_ms: u64,
) -> anyhow::Result<ReplayBuffer> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "mcap" => {
            let (eps, stats) = episodes_from_mcap(path, reward_age_ms as i64 * 1_000_000)?;
            eprintln!(
                "{}: {} transitions, {} rewards, {} episodes; dropped {} without a reward, {} malformed",
                path.display(),
                stats.transitions,
                stats.rewards,
                stats.episodes,
                stats.unrewarded,
                stats.malformed
            );
            Ok(buffer_from_episodes(&eps, gamma, sparse_negative, 0)?)
        }
        "safetensors" => Ok(ReplayBuffer::load(path)?),
        _ => bail!(
            "{}: unknown dataset type (expected .mcap from `rft record` or .safetensors from `rft dataset`)",
            path.display()
        ),
    }
}

fn write_summary(dir: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let p = dir.join("summary.json");
    std::fs::write(&p, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("cannot write {}", p.display()))
}

fn export_policy(dir: &Path, agent: &Agent, version: u64) -> anyhow::Result<PathBuf> {
    let p = dir.join("policy.safetensors");
    rft_policies::store::atomic_write(&p, &rft_policies::handle::policy_bytes(agent, version)?)?;
    Ok(p)
}

/// Resolves `--init`: a checkpoint directory, or a root holding `LATEST`.
fn resolve_checkpoint(p: &Path) -> anyhow::Result<PathBuf> {
    if p.join("meta.json").exists() {
        return Ok(p.to_path_buf());
    }
    for root in [p.to_path_buf(), p.join("checkpoints")] {
        if let Some(d) = checkpoint::latest(&root)? {
            return Ok(d);
        }
    }
    bail!(
        "{}: not a checkpoint (no meta.json) and no LATEST checkpoint under it",
        p.display()
    )
}

/// `rft train`: online learning on a built-in environment.
pub fn train(a: &TrainArgs) -> anyhow::Result<TrainLog> {
    let algo: Algorithm = a.algo.parse()?;
    if !matches!(algo, Algorithm::Sac | Algorithm::Wsrl | Algorithm::Rlpd) {
        bail!(
            "`rft train` runs online algorithms (sac, wsrl, rlpd); use `rft pretrain` for {algo}"
        );
    }
    if algo == Algorithm::Rlpd && a.offline.is_none() {
        bail!("rlpd needs --offline data to mix into its batches");
    }
    let spec = make_env(&a.env, a.seed)?.spec();
    let dev = rft_policies::device(a.net.cpu);
    let mut cfg = AgentConfig::preset(algo, spec.obs_dim, spec.act_dim);
    if a.env == "pendulum" && algo == Algorithm::Sac {
        // rl-baselines3-zoo's tuned Pendulum-v1 SAC: lr 1e-3 (everything else SB3's defaults).
        (cfg.lr_actor, cfg.lr_critic, cfg.lr_alpha) = (1e-3, 1e-3, 1e-3);
    }
    if algo == Algorithm::Wsrl {
        cfg.batch_size = 256; // small environments: the reference 1024 is for robot data
    }
    cfg.seed = a.seed;
    a.net.apply(&mut cfg);
    let agent = match &a.init {
        Some(p) => {
            let dir = resolve_checkpoint(p)?;
            let mut want = cfg.clone();
            let r = checkpoint::load(&dir, None, &dev)
                .with_context(|| format!("loading --init {}", dir.display()))?;
            // Keep the pre-trained networks' shape; take this run's learning settings.
            want.hidden = r.meta.agent.hidden.clone();
            want.actor_layer_norm = r.meta.agent.actor_layer_norm;
            want.critic_layer_norm = r.meta.agent.critic_layer_norm;
            want.n_critics = r.meta.agent.n_critics;
            want.critic_subsample = want.critic_subsample.min(want.n_critics);
            want.num_tasks = r.meta.agent.num_tasks;
            want.encoder = r.meta.agent.encoder.clone();
            let mut agent = Agent::new(want, &dev)?;
            agent.load_weights(&r.agent.weights())?;
            agent.norm = r.agent.norm.clone();
            agent.log_alpha.value = r.agent.log_alpha.value;
            eprintln!(
                "initialised from {} ({} after {} gradient steps)",
                dir.display(),
                r.meta.agent.algorithm,
                r.meta.grad_steps
            );
            agent
        }
        None => Agent::new(cfg, &dev)?,
    };
    let offline = match &a.offline {
        Some(p) => Some(load_dataset(p, agent.cfg.gamma as f32, None, 0)?),
        None => None,
    };
    let warm = a
        .warmup_steps
        .unwrap_or(if algo == Algorithm::Wsrl { 5000 } else { 100 });
    let oc = OnlineConfig {
        total_steps: a.steps,
        learning_starts: warm,
        random_before_learning: a.init.is_none() && algo != Algorithm::Wsrl,
        offline_ratio: if offline.is_some() {
            a.offline_ratio
        } else {
            0.0
        },
        eval_every: a.eval_every,
        eval_episodes: a.eval_episodes,
        seed: a.seed,
        ..Default::default()
    };
    let dir = run_dir(
        a.out.as_deref(),
        &format!("train-{}-{algo}-s{}", a.env, a.seed),
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "training {algo} on {} for {} steps ({} parameters, UTD {}, batch {}) into {}",
        a.env,
        a.steps,
        agent.num_params(),
        agent.cfg.utd,
        agent.cfg.batch_size,
        dir.display()
    );
    let mut csv = MetricsCsv::create(&dir.join("metrics.csv"))?;
    let mut line = ProgressLine::default();
    let (log, agent) = train_online(
        agent,
        &a.env,
        &oc,
        offline.as_ref(),
        Some(&mut csv),
        &mut |p| line.show(p),
    )?;
    let policy = export_policy(&dir, &agent, 1)?;
    if a.checkpoint {
        let extra = serde_json::json!({ "online": oc, "env": a.env });
        checkpoint::save(&dir.join("checkpoints"), &agent, None, a.steps, 1, extra, 3)?;
    }
    write_summary(
        &dir,
        &serde_json::json!({
            "command": "train", "env": a.env, "algorithm": algo.to_string(), "seed": a.seed,
            "steps": a.steps, "grad_steps": log.grad_steps, "wall_s": log.wall_s,
            "final_eval": log.final_eval(), "evals": log.evals, "agent": agent.cfg,
        }),
    )?;
    println!(
        "{algo} on {}: final eval return {} after {} steps ({} gradient steps, {:.0} s); policy {}",
        a.env,
        log.final_eval()
            .map(|r| format!("{r:.1}"))
            .unwrap_or_else(|| "n/a".into()),
        a.steps,
        log.grad_steps,
        log.wall_s,
        policy.display()
    );
    Ok(log)
}

/// `rft pretrain`: offline pre-training from a dataset.
pub fn pretrain(a: &PretrainArgs) -> anyhow::Result<TrainLog> {
    let algo: Algorithm = a.algo.parse()?;
    if !matches!(algo, Algorithm::Calql | Algorithm::Cql | Algorithm::Bc) {
        bail!(
            "`rft pretrain` runs offline algorithms (calql, cql, bc); use `rft train` for {algo}"
        );
    }
    let gamma = a.net.gamma.unwrap_or(0.99) as f32;
    let data = load_dataset(&a.data, gamma, a.sparse_negative, a.reward_age_ms)?;
    if data.is_empty() {
        bail!("{}: the dataset holds no transitions", a.data.display());
    }
    let dev = rft_policies::device(a.net.cpu);
    let mut cfg = AgentConfig::preset(algo, data.obs_dim, data.act_dim);
    cfg.seed = a.seed;
    if let Some(n) = a.num_tasks {
        cfg.num_tasks = n;
    }
    a.net.apply(&mut cfg);
    let mut agent = Agent::new(cfg, &dev)?;
    if a.normalize {
        agent.norm = ObsNorm::fit(data.obs_dim, data.observations());
    }
    if let Some(env) = &a.env {
        let s = make_env(env, a.seed)?.spec();
        if (s.obs_dim, s.act_dim) != (data.obs_dim, data.act_dim) {
            bail!(
                "--env {env} has obs {} / act {}, the dataset {} / {}",
                s.obs_dim,
                s.act_dim,
                data.obs_dim,
                data.act_dim
            );
        }
    }
    let dir = run_dir(a.out.as_deref(), &format!("pretrain-{algo}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "pre-training {algo} on {} transitions from {} for {} steps into {}",
        data.len(),
        a.data.display(),
        a.steps,
        dir.display()
    );
    let mut csv = MetricsCsv::create(&dir.join("metrics.csv"))?;
    let mut line = ProgressLine::default();
    let eval = a
        .env
        .as_deref()
        .map(|e| (e, a.seed + 10_000, a.eval_episodes));
    let log = train_offline(
        &mut agent,
        &data,
        a.steps,
        eval,
        a.eval_every,
        Some(&mut csv),
        &mut |p| line.show(p),
    )?;
    let policy = export_policy(&dir, &agent, 1)?;
    let extra = serde_json::json!({ "data": a.data, "steps": a.steps });
    let ck = checkpoint::save(&dir.join("checkpoints"), &agent, None, 0, 1, extra, 3)?;
    write_summary(
        &dir,
        &serde_json::json!({
            "command": "pretrain", "data": a.data, "algorithm": algo.to_string(), "seed": a.seed,
            "steps": a.steps, "wall_s": log.wall_s, "final_eval": log.final_eval(),
            "evals": log.evals, "agent": agent.cfg,
        }),
    )?;
    println!(
        "{algo}: {} gradient steps in {:.0} s{}; policy {}, checkpoint {}",
        log.grad_steps,
        log.wall_s,
        log.final_eval()
            .map(|r| format!(", final eval return {r:.1}"))
            .unwrap_or_default(),
        policy.display(),
        ck.display()
    );
    Ok(log)
}

/// `rft dataset`: writes a built-in offline dataset as a replay buffer with MC returns.
pub fn dataset(a: &DatasetArgs) -> anyhow::Result<()> {
    if a.source != "pendulum" {
        bail!("unknown dataset source `{}`; built in: pendulum", a.source);
    }
    if a.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let eps = rft_policies::pendulum::heuristic_episodes(a.episodes, a.noise, a.seed);
    let mean = eps.iter().map(|e| e.total_reward() as f64).sum::<f64>() / eps.len() as f64;
    let buf = buffer_from_episodes(&eps, a.gamma, None, 0)?;
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    buf.save(&a.out)?;
    println!(
        "wrote {} episodes ({} transitions, mean return {mean:.1}) to {}",
        eps.len(),
        buf.len(),
        a.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Metrics CSVs written by `rft train` / `rft pretrain` (one line each), optionally
    /// labelled: `label=path/metrics.csv`.
    #[arg(required = true)]
    pub files: Vec<String>,
    #[arg(long, default_value = "step")]
    pub x: String,
    #[arg(long, default_value = "eval_return")]
    pub y: String,
    #[arg(long, default_value = "")]
    pub title: String,
    /// Horizontal reference line `VALUE=LABEL` (repeatable).
    #[arg(long)]
    pub hline: Vec<String>,
    /// Vertical marker `X=LABEL` (repeatable).
    #[arg(long)]
    pub vline: Vec<String>,
    #[arg(long, default_value = "curve.png")]
    pub out: PathBuf,
}

fn split_label(s: &str) -> anyhow::Result<(f64, String)> {
    let (v, l) = s.split_once('=').unwrap_or((s, ""));
    Ok((
        v.trim()
            .parse()
            .with_context(|| format!("`{s}`: expected VALUE=LABEL"))?,
        l.to_string(),
    ))
}

/// `rft plot`: learning curves from metrics CSVs to a PNG.
pub fn plot(a: &PlotArgs) -> anyhow::Result<()> {
    use rft_autonomy::plot::{BLUE, Chart, GREEN, GREY, ORANGE, RED, Series, render_png};
    let colors = [BLUE, ORANGE, GREEN, RED];
    let mut chart = Chart {
        title: a.title.clone(),
        x_label: a.x.clone(),
        y_label: a.y.clone(),
        ..Default::default()
    };
    for (i, f) in a.files.iter().enumerate() {
        let (label, path) = match f.split_once('=') {
            Some((l, p)) => (l.to_string(), PathBuf::from(p)),
            None => (f.clone(), PathBuf::from(f)),
        };
        let points = rft_autonomy::plot::csv_column(&path, &a.x, &a.y)?;
        if points.is_empty() {
            bail!("{}: no rows with both {} and {}", path.display(), a.x, a.y);
        }
        chart.series.push(Series {
            label,
            points,
            color: colors[i % colors.len()],
        });
    }
    for h in &a.hline {
        let (v, l) = split_label(h)?;
        chart.hlines.push((v, l, GREY));
    }
    for v in &a.vline {
        chart.vlines.push(split_label(v)?);
    }
    render_png(&chart, 800, 480, &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
