//! `rft pipeline` and `rft eval`: the sim pipeline's stages and ground-truth evaluation.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rft_autonomy::action::ACTION_DIM;
use rft_autonomy::eval::{EvalEpisode, EvalResult, evaluate, failure_summary};
use rft_autonomy::pipeline::{PipelineSummary, load_policy, read_config, run};
use rft_autonomy::plant::{ObservationKind, SimPlant};
use rft_policies::handle::PolicyHandle;
use rft_sim::Direction;

/// `rft pipeline`: the stages on the simulated push task, configured by an optional TOML file
/// (the `PipelineConfig` fields) and `--set key=value` overrides.
#[derive(clap::Args, Debug)]
pub struct PipelineArgs {
    /// TOML file with the pipeline's settings, or a launch file (its `[pipeline]` table);
    /// defaults for everything left out.
    pub config: Option<PathBuf>,
    /// Override a value: `--set pretrain.steps=2000`, `--set stages=["eval"]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default `runs/<time>-pipeline`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_cli(a: &PipelineArgs) -> anyhow::Result<()> {
    let (path, cfg) = read_config(a.config.as_deref(), &a.set)?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.under("pipeline")))?;
    let dir = crate::learntools::run_dir(a.out.as_deref(), "pipeline");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("pipeline.toml"), toml::to_string_pretty(&cfg)?)?;
    tracing::info!(run_dir = %dir.display(), "pipeline");
    let s = run(&cfg, &dir)?;
    print_summary(&s);
    println!("{}", dir.join("summary.json").display());
    Ok(())
}

/// The before/after lines of a pipeline run.
pub fn print_summary(s: &PipelineSummary) {
    if let (Some(b), Some(f)) = (&s.pretrained_eval, &s.final_eval) {
        println!(
            "forward success: pre-trained {} → fine-tuned {}",
            b[0].rate, f[0].rate
        );
        println!(
            "backward success: pre-trained {} → fine-tuned {}",
            b[1].rate, f[1].rate
        );
    }
}

/// One line on the node graph's fine-tuning, from the episode manager's `episodes.csv`
/// (none when the launch had no episode manager).
pub fn graph_summary(run_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("episodes.csv")).ok()?;
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name);
    let (dir, why, resets) = (col("direction")?, col("reason")?, col("human_resets")?);
    let (posture, escape) = (col("posture_home"), col("stall_escape"));
    let (mut n, mut fwd, mut fwd_ok, mut humans, mut postures, mut escapes) = (0, 0, 0, 0, 0, 0);
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        n += 1;
        if f.get(dir) == Some(&"forward") {
            fwd += 1;
            fwd_ok += usize::from(matches!(f.get(why), Some(&"success" | &"success_at_home")));
        }
        humans = f.get(resets).and_then(|v| v.parse().ok()).unwrap_or(humans);
        let yes = |c: Option<usize>| c.and_then(|c| f.get(c)).is_some_and(|v| *v == "1");
        postures += usize::from(yes(posture));
        escapes += usize::from(yes(escape));
    }
    Some(format!(
        "fine-tuning (node graph): {n} episodes, forward {fwd_ok}/{fwd} ended by the classifier's success, {humans} human resets, {postures} posture resets, {escapes} stall escapes"
    ))
}

/// `rft eval`: ground-truth success rates of a policy on the simulated task.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A policy: `policy.safetensors`, a checkpoint directory, or a checkpoints root with
    /// `LATEST` (the newest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Episodes per direction.
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    /// forward | backward | both
    #[arg(long, default_value = "both")]
    pub direction: String,
    /// Seed of the first scene (episode i uses seed + i).
    #[arg(long, default_value_t = 5_000_000)]
    pub seed: u64,
    /// Episode length, simulated seconds.
    #[arg(long, default_value_t = 20.0)]
    pub max_s: f64,
    /// Pipeline settings the policy was trained with (plant, action scaling).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Write every episode (start, end, closest approach to the goal) to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub episodes_csv: Option<PathBuf>,
}

pub fn eval_cli(a: &EvalArgs) -> anyhow::Result<Vec<EvalResult>> {
    let (_, cfg) = read_config(a.config.as_deref(), &a.set)?;
    let dirs: Vec<Direction> = match a.direction.as_str() {
        "both" => Direction::ALL.to_vec(),
        "forward" => vec![Direction::Forward],
        "backward" => vec![Direction::Backward],
        d => {
            return Err(anyhow::anyhow!(
                "--direction {d}: expected forward, backward or both"
            ));
        }
    };
    if a.episodes == 0 {
        return Err(anyhow::anyhow!("--episodes must be at least 1"));
    }
    let policy = load_policy(&a.checkpoint)?;
    let spec = policy.spec.clone();
    // The policy says what it observes: an image encoder means image observations.
    let mut cfg = cfg;
    match &spec.encoder {
        Some(e) => {
            cfg.plant.observation = ObservationKind::Image;
            cfg.plant.policy_image_size = e.height as u32;
        }
        None => cfg.plant.observation = ObservationKind::State,
    }
    let obs_dim = cfg.plant.obs_dim();
    if spec.obs_dim != obs_dim || spec.act_dim != ACTION_DIM || spec.num_tasks < 2 {
        return Err(anyhow::anyhow!(
            "{}: the policy has observation {} / action {} / {} tasks; the sim task needs {obs_dim} / {ACTION_DIM} / 2",
            a.checkpoint.display(),
            spec.obs_dim,
            spec.act_dim,
            spec.num_tasks
        ));
    }
    let mut csv = match &a.episodes_csv {
        Some(p) => {
            let mut f = std::fs::File::create(p)
                .with_context(|| format!("--episodes-csv {}", p.display()))?;
            writeln!(f, "{}", EvalEpisode::CSV_HEADER)?;
            Some(f)
        }
        None => None,
    };
    let mut h = PolicyHandle::new(policy, a.seed);
    let mut plant = SimPlant::new(&cfg.plant, a.seed)?;
    let mut out = Vec::new();
    for d in dirs {
        let r = evaluate(&mut h, &mut plant, d, a.episodes, a.seed, a.max_s)?;
        println!(
            "{} {}: success {}{}",
            cfg.plant.task,
            d.name(),
            r.rate,
            r.mean_time_s
                .map(|t| format!(", {t:.1} s to success on average"))
                .unwrap_or_default()
        );
        let failures = failure_summary(&r.episodes);
        if !failures.is_empty() {
            println!("  {failures}");
        }
        if let Some(f) = csv.as_mut() {
            for e in &r.episodes {
                writeln!(f, "{}", e.csv_row(d.name()))?;
            }
        }
        out.push(r);
    }
    if let Some(p) = &a.episodes_csv {
        println!("episodes written to {}", p.display());
    }
    Ok(out)
}
