//! `rft sim frames` and `rft train-reward`: labelled frames from scripted demos, and success
//! classifiers trained on them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use rft_rewards::clip::{ClipClassifier, ClipImageModel};
use rft_rewards::metrics::Confusion;
use rft_rewards::{
    CnnClassifier, CnnConfig, CnnTrainConfig, ImageRef, LabelledFrames, SuccessClassifier,
};
use rft_sim::{DemoFramesConfig, DemoKind, Direction, TaskKind, demo_frames};

/// What `rft sim frames` writes.
pub struct FramesArgs {
    pub task: TaskKind,
    pub direction: Direction,
    pub episodes: usize,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub frame_hz: f64,
    pub failure_fraction: f64,
}

/// Renders scripted demos (successes, near misses, partial attempts) and saves the frames with
/// their ground-truth success labels. Returns a one-line summary.
pub fn frames(a: &FramesArgs, out: &Path) -> anyhow::Result<String> {
    if a.episodes < 2 {
        bail!("--episodes must be at least 2 (training holds one out)");
    }
    if !(0.0..=1.0).contains(&a.failure_fraction) {
        bail!(
            "--failure-fraction {} is outside [0, 1]",
            a.failure_fraction
        );
    }
    let mut cfg = DemoFramesConfig::new(a.task, a.direction, a.episodes, a.seed);
    cfg.width = a.width;
    cfg.height = a.height;
    cfg.frame_hz = a.frame_hz;
    cfg.failure_fraction = a.failure_fraction;
    let tty = std::io::stderr().is_terminal();
    let d = demo_frames(&cfg, |i, n| {
        if tty {
            eprint!("\rdemo {i}/{n}");
        } else if i % 10 == 0 || i == n {
            eprintln!("demo {i}/{n}");
        }
    })?;
    if tty {
        eprintln!();
    }
    let mut lf = LabelledFrames::new(
        d.width,
        d.height,
        format!("{}/{}", a.task, a.direction.name()),
    );
    for i in 0..d.len() {
        lf.push(d.frame(i), d.success[i], d.episode[i])?;
    }
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    lf.save(out)?;
    let count = |k: DemoKind| d.kinds.iter().filter(|x| **x == k).count();
    Ok(format!(
        "{} frames ({} successful) from {} demos: {} successes, {} near misses, {} partial attempts",
        lf.len(),
        lf.positives(),
        d.kinds.len(),
        count(DemoKind::Success),
        count(DemoKind::NearMiss),
        count(DemoKind::Partial)
    ))
}

#[derive(Args, Debug)]
pub struct TrainRewardArgs {
    /// Labelled frames (`rft sim frames --out …`, or any file in that format).
    #[arg(long)]
    pub data: PathBuf,
    /// The task the classifier is for (default: the one stored with the frames).
    #[arg(long)]
    pub task: Option<String>,
    /// cnn (trained from scratch) | clip (a logistic probe on a CLIP model's embeddings).
    #[arg(long, default_value = "cnn")]
    pub kind: String,
    /// A Hugging Face CLIP directory (config.json + *.safetensors) for --kind clip.
    #[arg(long)]
    pub clip_model: Option<PathBuf>,
    /// Frames from other episodes to report final metrics on (never used for training or τ).
    #[arg(long)]
    pub test: Option<PathBuf>,
    #[arg(long, default_value_t = 800)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.95)]
    pub target_precision: f64,
    #[arg(long, default_value_t = 0.25)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default runs/<time>-reward-<task>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `rft train-reward`: trains, calibrates τ, reports, saves `reward.safetensors` (or
/// `probe.safetensors`) and `report.json`; returns the output directory.
pub fn train_reward(a: &TrainRewardArgs) -> anyhow::Result<PathBuf> {
    let mut data = LabelledFrames::load(&a.data)?;
    if let Some(t) = &a.task {
        data.task = t.clone();
    }
    if data.task.is_empty() {
        bail!(
            "{} names no task; pass --task (e.g. push/forward)",
            a.data.display()
        );
    }
    if !(0.0..1.0).contains(&a.val_fraction) || a.val_fraction == 0.0 {
        bail!("--val-fraction {} is outside (0, 1)", a.val_fraction);
    }
    if !(0.0..=1.0).contains(&a.target_precision) {
        bail!(
            "--target-precision {} is outside [0, 1]",
            a.target_precision
        );
    }
    let slug: String = data
        .task
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect();
    let out = crate::learntools::run_dir(a.out.as_deref(), &format!("reward-{slug}"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    eprintln!(
        "{}: {} frames ({} successful) from {} episodes",
        data.task,
        data.len(),
        data.positives(),
        data.episodes().len()
    );
    let dev = rft_policies::device(false);
    let (mut clf, val, file): (Box<dyn SuccessClassifier>, Confusion, PathBuf) =
        match a.kind.as_str() {
            "cnn" => {
                let mut c =
                    CnnClassifier::new(CnnConfig::default(), data.task.clone(), a.seed, &dev)?;
                let tc = CnnTrainConfig {
                    steps: a.steps,
                    val_fraction: a.val_fraction,
                    target_precision: a.target_precision,
                    seed: a.seed,
                    ..CnnTrainConfig::default()
                };
                let r = c.train(&data, &tc, |s, n, loss| {
                    eprintln!("step {s}/{n} loss {loss:.4}");
                })?;
                if !r.target_reached {
                    eprintln!(
                        "warning: no threshold reached precision {} on the held-out episodes",
                        a.target_precision
                    );
                }
                let file = out.join("reward.safetensors");
                c.save(&file)?;
                (Box::new(c), r.val, file)
            }
            "clip" => {
                let Some(dir) = &a.clip_model else {
                    bail!("--kind clip needs --clip-model <HF directory>");
                };
                let model = ClipImageModel::load(dir, &dev)?;
                let (c, val) =
                    ClipClassifier::train(model, &data, a.val_fraction, a.target_precision, 1e-3)?;
                let file = out.join("probe.safetensors");
                c.probe.save(&file)?;
                (Box::new(c), val, file)
            }
            k => bail!("unknown --kind {k}; kinds: cnn, clip"),
        };
    println!("held-out episodes: {val}\n{}", val.table());
    let mut report = serde_json::json!({
        "task": data.task, "kind": a.kind, "data": a.data, "weights": file,
        "threshold": clf.threshold(), "validation": val,
    });
    if let Some(t) = &a.test {
        let test = LabelledFrames::load(t)?;
        let imgs: Vec<ImageRef<'_>> = (0..test.len()).map(|i| test.image(i)).collect();
        let p = clf.predict(&imgs, &data.task)?;
        let c = Confusion::at(&p, &test.label, clf.threshold());
        println!("test {}: {c}\n{}", t.display(), c.table());
        report["test"] = serde_json::to_value(c)?;
    }
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("wrote {} and report.json", file.display());
    Ok(out)
}
