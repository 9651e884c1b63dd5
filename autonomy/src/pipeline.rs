//! The offline stages from zero on the simulated push task: (1) scripted demos, (2) the success
//! classifiers trained on labelled frames of scripted demos, (3) Cal-QL pre-training of one
//! task-conditioned policy for both directions, (4) evaluation against ground truth. Each stage
//! writes its artifacts under the run directory; a stage given an existing artifact skips its
//! work. Reset-free fine-tuning is not a stage: the launch file's node graph does it (the
//! robot's own loop), and [`evaluate_after_launch`] scores what its learner left.

use std::path::{Path, PathBuf};

use crate::error::Context;
use rft_policies::dataset::{buffer_from_episodes, buffer_from_image_episodes};
use rft_policies::handle::{InferencePolicy, PolicyHandle};
use rft_policies::train::{MetricsCsv, ProgressLine, train_offline};
use rft_policies::{Agent, AgentConfig, Algorithm, ObsNorm, ReplayBuffer, checkpoint};
use rft_rewards::{
    CnnClassifier, CnnConfig, CnnTrainConfig, LabelledFrames, SuccessClassifier, TrainReport,
};
use rft_sim::{DemoFramesConfig, Direction, demo_frames};
use serde::{Deserialize, Serialize};

use super::action::ACTION_DIM;
use super::demos::{DemoConfig, collect, successes};
use super::eval::{EvalResult, evaluate};
use super::plant::{PlantConfig, SimPlant};
use rft_config::ConfigError;
use rft_policies::nets::EncoderConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardStageConfig {
    /// Scripted demos per direction whose frames train the classifier (successes, near
    /// misses and partial attempts).
    pub episodes: usize,
    pub steps: usize,
    pub target_precision: f64,
    pub seed: u64,
    /// Classifiers trained per direction, candidate i with seed `seed + i` (its own demo
    /// frames, held-out episodes and initialisation); the run keeps the one with the best
    /// held-out result: the target precision reached first, then recall, then ROC-AUC.
    /// One training's held-out recall at the target precision can land anywhere from 0.2 to
    /// 1.0, and a classifier that almost never fires (or fires too early) starves the loop.
    pub candidates: usize,
    /// After each demo the arm wanders over the table for `hold_s` (see `DemoFramesConfig`).
    pub wander: bool,
    /// Successful demos push the cube to a random point up to this far (per axis, metres)
    /// from the goal's centre, so the classifier sees it near the region's edges too.
    pub goal_jitter_m: f64,
    /// A frame is labelled a success only if ground truth says so and the cube's centre is at
    /// least this far inside the goal region (metres; 0: the region itself). Successes
    /// closer to an edge become negatives, so the classifier fires for cubes well inside;
    /// with `goal_jitter_m` the demos leave cubes on both sides of that line.
    pub success_margin_m: f64,
    pub hold_s: f64,
    /// After the hold the arm goes home and the scene is recorded this long there (see
    /// `DemoFramesConfig::home_s`; 0: off): frames for the loop's second look with the arm
    /// home (the episode manager's `confirm_at_home`).
    pub home_s: f64,
    /// The part of the scene camera's frame the classifiers see, `[x, y, width, height]`
    /// pixels (None: the whole frame, downsized to the network's 64×64).
    pub crop: Option<[u32; 4]>,
    /// Existing classifiers (`rft train-reward` output) instead of training.
    pub forward: Option<PathBuf>,
    pub backward: Option<PathBuf>,
}

impl Default for RewardStageConfig {
    fn default() -> Self {
        Self {
            episodes: 45,
            steps: 800,
            target_precision: 0.95,
            seed: 0,
            candidates: 1,
            wander: true,
            goal_jitter_m: 0.0,
            success_margin_m: 0.0,
            hold_s: 5.0,
            home_s: 0.0,
            crop: None,
            forward: None,
            backward: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainStageConfig {
    /// calql | cql | bc
    pub algorithm: String,
    pub steps: u64,
    pub hidden: Vec<usize>,
    pub batch_size: usize,
    pub lr: f64,
    pub critics: usize,
    /// LayerNorm in actor and critics (keeps Q-values bounded when fine-tuning starts).
    pub layer_norm: bool,
    /// CQL actions sampled per state from each source.
    pub cql_actions: usize,
    /// Behaviour-cloning term on the actor (Cal-QL + BC; `bc` is the term alone).
    pub bc_weight: f64,
    /// Squared error between the policy's mode and the demonstrated action inside the
    /// behaviour-cloning term (kept by fine-tuning's BC term too); 0 leaves the likelihood
    /// alone.
    pub bc_mode_weight: f64,
    pub seed: u64,
    /// An existing checkpoint (directory, or a checkpoints root with LATEST).
    pub checkpoint: Option<PathBuf>,
}

impl Default for PretrainStageConfig {
    fn default() -> Self {
        Self {
            algorithm: "calql".into(),
            steps: 3_000,
            hidden: vec![256, 256],
            batch_size: 256,
            lr: 3e-4,
            critics: 2,
            layer_norm: true,
            cql_actions: 4,
            bc_weight: 1.0,
            bc_mode_weight: 100.0,
            seed: 0,
            checkpoint: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalStageConfig {
    pub episodes: usize,
    pub seed: u64,
    pub max_s: f64,
    /// In a launch file: after the node graph has run, evaluate this policy as the fine-tuned
    /// one (e.g. `{run_dir}/learner/checkpoints`, what the graph's learner left), with the
    /// pre-trained policy's evaluation beside it. `{run_dir}` is the run directory.
    pub after_launch: Option<PathBuf>,
}

impl Default for EvalStageConfig {
    fn default() -> Self {
        Self {
            episodes: 50,
            seed: 5_000_000,
            max_s: 20.0,
            after_launch: None,
        }
    }
}

/// Which stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Demos,
    Reward,
    Pretrain,
    Eval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// `rft launch` runs the pipeline before the nodes (false: only the nodes).
    pub enabled: bool,
    pub stages: Vec<Stage>,
    pub plant: PlantConfig,
    pub demos: DemoConfig,
    /// An existing demo buffer (`demos.safetensors` of an earlier run) instead of collecting.
    pub demos_path: Option<PathBuf>,
    pub reward: RewardStageConfig,
    pub pretrain: PretrainStageConfig,
    pub eval: EvalStageConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stages: vec![Stage::Demos, Stage::Reward, Stage::Pretrain, Stage::Eval],
            plant: PlantConfig::default(),
            demos: DemoConfig::default(),
            demos_path: None,
            reward: RewardStageConfig::default(),
            pretrain: PretrainStageConfig::default(),
            eval: EvalStageConfig::default(),
        }
    }
}

impl PipelineConfig {
    /// Checks every value before anything runs; errors name the key.
    pub fn validate(&self) -> rft_config::Result<()> {
        let e = |k: &str, r: String| Err(ConfigError::new(k.to_string(), r));
        self.plant.validate().map_err(|e| e.under("plant"))?;
        if self.plant.task != rft_sim::TaskKind::Push {
            return e(
                "plant.task",
                "the sim loop's observation and demos are built for push".into(),
            );
        }
        let d = &self.demos;
        if d.episodes_per_direction == 0 {
            return e("demos.episodes_per_direction", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&d.noisy_fraction) {
            return e(
                "demos.noisy_fraction",
                format!("{} is outside [0, 1]", d.noisy_fraction),
            );
        }
        if !(d.noise_std.is_finite() && d.noise_std >= 0.0) {
            return e("demos.noise_std", format!("{} must be ≥ 0", d.noise_std));
        }
        if self.reward.episodes < 4 {
            return e(
                "reward.episodes",
                "need at least 4 demos (one is held out)".into(),
            );
        }
        if !(self.reward.goal_jitter_m.is_finite()
            && (0.0..=0.05).contains(&self.reward.goal_jitter_m))
        {
            return e(
                "reward.goal_jitter_m",
                format!(
                    "{} is outside [0, 0.05] (the goal region's half size)",
                    self.reward.goal_jitter_m
                ),
            );
        }
        let half = self
            .plant
            .task
            .goal_region()
            .half
            .min(self.plant.task.start_region().half);
        if !(self.reward.success_margin_m.is_finite()
            && self.reward.success_margin_m >= 0.0
            && self.reward.success_margin_m < half)
        {
            return e(
                "reward.success_margin_m",
                format!(
                    "{} is outside [0, {half}) (the regions' half size)",
                    self.reward.success_margin_m
                ),
            );
        }
        if !(self.reward.home_s.is_finite() && self.reward.home_s >= 0.0) {
            return e(
                "reward.home_s",
                format!("{} must be ≥ 0", self.reward.home_s),
            );
        }
        if let Some([x, y, w, h]) = self.reward.crop
            && (w == 0
                || h == 0
                || x + w > self.plant.camera_width
                || y + h > self.plant.camera_height)
        {
            return e(
                "reward.crop",
                format!(
                    "[{x}, {y}, {w}, {h}] must be a non-empty area inside the {}×{} camera frame",
                    self.plant.camera_width, self.plant.camera_height
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.reward.target_precision) {
            return e("reward.target_precision", "must be in [0, 1]".into());
        }
        let algo: Algorithm =
            self.pretrain
                .algorithm
                .parse()
                .map_err(|x: rft_policies::Error| {
                    ConfigError::new("pretrain.algorithm".to_string(), x.to_string())
                })?;
        if !matches!(algo, Algorithm::Calql | Algorithm::Cql | Algorithm::Bc) {
            return e(
                "pretrain.algorithm",
                format!("{algo} is not offline (calql, cql, bc)"),
            );
        }
        if self.pretrain.hidden.is_empty() || self.pretrain.hidden.contains(&0) {
            return e("pretrain.hidden", "layer sizes must be positive".into());
        }
        if self.pretrain.critics == 0 || self.pretrain.batch_size == 0 {
            return e(
                "pretrain.critics",
                "critics and batch_size must be ≥ 1".into(),
            );
        }
        for (k, v) in [
            ("pretrain.bc_weight", self.pretrain.bc_weight),
            ("pretrain.bc_mode_weight", self.pretrain.bc_mode_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return e(k, format!("{v} must be ≥ 0"));
            }
        }
        if self.reward.candidates == 0 {
            return e("reward.candidates", "must be at least 1".into());
        }
        if self.eval.episodes == 0 && self.stages.contains(&Stage::Eval) {
            return e("eval.episodes", "must be at least 1".into());
        }
        let has = |s: Stage| self.stages.contains(&s);
        if has(Stage::Pretrain) && !has(Stage::Demos) && self.demos_path.is_none() {
            return e(
                "stages",
                "pretrain needs the demos stage or demos_path".into(),
            );
        }
        for (k, p) in [
            ("demos_path", &self.demos_path),
            ("reward.forward", &self.reward.forward),
            ("reward.backward", &self.reward.backward),
            ("pretrain.checkpoint", &self.pretrain.checkpoint),
        ] {
            if let Some(p) = p
                && !p.exists()
            {
                return e(k, format!("{} does not exist", p.display()));
            }
        }
        Ok(())
    }
}

/// What the pipeline produced (also `summary.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineSummary {
    pub demos: Option<PathBuf>,
    pub demo_successes: Option<[usize; 2]>,
    pub reward_forward: Option<PathBuf>,
    pub reward_backward: Option<PathBuf>,
    pub pretrained: Option<PathBuf>,
    pub pretrained_eval: Option<[EvalResult; 2]>,
    /// The fine-tuned policy (what the node graph's learner left) and its evaluation.
    pub finetuned: Option<PathBuf>,
    pub final_eval: Option<[EvalResult; 2]>,
    pub stage_wall_s: Vec<(Stage, f64)>,
}

/// Progress of the pipeline's stages, for the person running it.
fn say(msg: impl AsRef<str>) {
    tracing::info!(target: "rft::pipeline", "{}", msg.as_ref());
}

/// Runs the configured stages under `dir`.
pub fn run(cfg: &PipelineConfig, dir: &Path) -> crate::Result<PipelineSummary> {
    cfg.validate()
        .map_err(|e| crate::Error::Config(e.under("pipeline")))?;
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let mut s = PipelineSummary::default();
    let has = |st: Stage| cfg.stages.contains(&st);
    let timed = |s: &mut PipelineSummary, st: Stage, t: std::time::Instant| {
        s.stage_wall_s.push((st, t.elapsed().as_secs_f64()));
        say(format!("{st:?} took {:.0} s", t.elapsed().as_secs_f64()));
    };
    let dev = rft_policies::device(true);
    // (1) demos
    let demos_file = dir.join("demos").join("demos.safetensors");
    let mut demos: Option<ReplayBuffer> = None;
    if let Some(p) = &cfg.demos_path {
        demos = Some(ReplayBuffer::load(p).context(|| format!("demos_path {}", p.display()))?);
        s.demos = Some(p.clone());
    } else if has(Stage::Demos) {
        let t = std::time::Instant::now();
        let n = cfg.demos.episodes(Direction::Forward) + cfg.demos.episodes(Direction::Backward);
        say(format!("collecting {n} scripted demos (both directions)"));
        let eps = collect(&cfg.plant, &cfg.demos, |i, n| {
            if i % 10 == 0 || i == n {
                say(format!("demo {i}/{n}"));
            }
        })?;
        let ok = successes(&eps);
        say(format!(
            "demos: {} transitions; successful forward {}/{}, backward {}/{}",
            eps.iter().map(|e| e.len()).sum::<usize>(),
            ok[0],
            cfg.demos.episodes(Direction::Forward),
            ok[1],
            cfg.demos.episodes(Direction::Backward)
        ));
        let buf = match cfg.plant.image_shape() {
            Some(shape) => buffer_from_image_episodes(&eps, shape, 0.99, None, 0)?,
            None => buffer_from_episodes(&eps, 0.99, None, 0)?,
        };
        std::fs::create_dir_all(demos_file.parent().unwrap_or(dir))
            .map_err(crate::Error::io(demos_file.parent().unwrap_or(dir)))?;
        buf.save(&demos_file)?;
        s.demos = Some(demos_file.clone());
        s.demo_successes = Some(ok);
        demos = Some(buf);
        timed(&mut s, Stage::Demos, t);
    } else if demos_file.exists() {
        demos = Some(ReplayBuffer::load(&demos_file)?);
        s.demos = Some(demos_file.clone());
    }
    // (2) success classifiers
    let t = std::time::Instant::now();
    for dir_ in Direction::ALL {
        let given = match dir_ {
            Direction::Forward => &cfg.reward.forward,
            Direction::Backward => &cfg.reward.backward,
        };
        let task = format!("{}/{}", cfg.plant.task, dir_.name());
        let file = dir
            .join("reward")
            .join(dir_.name())
            .join("reward.safetensors");
        let path = if let Some(p) = given {
            p.clone()
        } else if has(Stage::Reward) {
            train_classifier(cfg, dir_, &task, &file, &dev)?;
            file
        } else if file.exists() {
            file
        } else {
            continue;
        };
        // Refuses a file that is not a classifier now, not when a launch loads it.
        CnnClassifier::load(&path, &dev)
            .context(|| format!("reward classifier {}", path.display()))?;
        match dir_ {
            Direction::Forward => s.reward_forward = Some(path),
            Direction::Backward => s.reward_backward = Some(path),
        }
    }
    if has(Stage::Reward) && cfg.reward.forward.is_none() {
        timed(&mut s, Stage::Reward, t);
    }
    // (3) pre-training
    let pre_root = dir.join("pretrain");
    let mut agent: Option<Agent> = None;
    if let Some(p) = &cfg.pretrain.checkpoint {
        agent = Some(load_agent(p, &dev)?);
        s.pretrained = Some(p.clone());
    } else if has(Stage::Pretrain) {
        let Some(data) = demos.as_ref() else {
            return Err(crate::Error::Stage(
                "the pretrain stage needs demos: run the demos stage or set demos_path".to_string(),
            ));
        };
        let t = std::time::Instant::now();
        let a = pretrain(cfg, data, &pre_root, &dev)?;
        s.pretrained = Some(pre_root.join("checkpoints"));
        agent = Some(a);
        timed(&mut s, Stage::Pretrain, t);
    } else if pre_root.join("checkpoints").exists() {
        agent = Some(load_agent(&pre_root.join("checkpoints"), &dev)?);
        s.pretrained = Some(pre_root.join("checkpoints"));
    }
    // Ground truth of the pre-trained policy, for the before/after comparison.
    if let Some(a) = agent.as_ref()
        && has(Stage::Eval)
    {
        let t = std::time::Instant::now();
        let r = eval_agent(a, cfg)?;
        say(format!(
            "pre-trained policy: forward {}, backward {}",
            r[0].rate, r[1].rate
        ));
        s.pretrained_eval = Some(r);
        s.stage_wall_s
            .push((Stage::Eval, t.elapsed().as_secs_f64()));
    }
    write_json(&dir.join("summary.json"), &s)?;
    Ok(s)
}

fn train_classifier(
    cfg: &PipelineConfig,
    dir_: Direction,
    task: &str,
    out: &Path,
    dev: &candle_core::Device,
) -> crate::Result<()> {
    let r = &cfg.reward;
    let n = r.candidates;
    let mut best: Option<(usize, CnnClassifier, TrainReport)> = None;
    let mut tried = Vec::new();
    for i in 0..n {
        let seed = r
            .seed
            .wrapping_add(i as u64)
            .wrapping_add(if dir_ == Direction::Forward { 0 } else { 500 });
        let who = if n > 1 {
            format!("{task} candidate {}/{n}", i + 1)
        } else {
            task.to_string()
        };
        let (c, rep) = train_candidate(cfg, dir_, task, &who, seed, dev)?;
        if n > 1 {
            say(format!(
                "{who}: held-out precision {:.3} recall {:.3} at τ {:.3} (ROC-AUC {:.4}{})",
                rep.val.precision,
                rep.val.recall,
                c.threshold(),
                rep.val.roc_auc,
                if rep.target_reached {
                    ""
                } else {
                    "; target precision NOT reached"
                }
            ));
        }
        tried.push(Candidate {
            seed,
            report: rep.clone(),
        });
        if best.as_ref().is_none_or(|(_, _, b)| better(&rep, b)) {
            best = Some((i, c, rep));
        }
    }
    let Some((i, c, rep)) = best else {
        return Err(crate::Error::Stage(
            "reward.candidates must be at least 1".to_string(),
        ));
    };
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))
        .map_err(crate::Error::io(out.parent().unwrap_or(Path::new("."))))?;
    c.save(out)?;
    write_json(&out.with_file_name("report.json"), &rep)?;
    if n > 1 {
        write_json(&out.with_file_name("candidates.json"), &tried)?;
    }
    say(format!(
        "{task}: {}held-out precision {:.3} recall {:.3} at τ {:.3} → {}",
        if n > 1 {
            format!("kept candidate {}/{n}: ", i + 1)
        } else {
            String::new()
        },
        rep.val.precision,
        rep.val.recall,
        c.threshold(),
        out.display()
    ));
    Ok(())
}

/// One classifier the reward stage trained, in `candidates.json`.
#[derive(Serialize)]
struct Candidate {
    seed: u64,
    report: TrainReport,
}

/// Whether held-out report `a` ranks above `b`: the target precision reached, then recall,
/// then ROC-AUC.
fn better(a: &TrainReport, b: &TrainReport) -> bool {
    let key = |r: &TrainReport| (r.target_reached, r.val.recall, r.val.roc_auc);
    key(a).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Greater)
}

/// One classifier trained on its own scripted-demo frames (seeded by `seed`).
fn train_candidate(
    cfg: &PipelineConfig,
    dir_: Direction,
    task: &str,
    who: &str,
    seed: u64,
    dev: &candle_core::Device,
) -> crate::Result<(CnnClassifier, TrainReport)> {
    let r = &cfg.reward;
    let mut fc = DemoFramesConfig::new(cfg.plant.task, dir_, r.episodes, 20_000 + seed);
    fc.width = cfg.plant.camera_width;
    fc.height = cfg.plant.camera_height;
    fc.wander = r.wander;
    fc.goal_jitter_m = r.goal_jitter_m;
    fc.hold_s = r.hold_s;
    fc.home_s = r.home_s;
    say(format!("{who}: frames from {} scripted demos", r.episodes));
    let d = demo_frames(&fc, |_, _| {})?;
    let (lf, relabelled) =
        labelled_frames(&d, task, cfg.plant.task.regions(dir_).1, r.success_margin_m)?;
    if r.success_margin_m > 0.0 {
        say(format!(
            "{who}: {relabelled} of {} successful frames lie within {} m of the goal's edge → labelled failures",
            d.success.iter().filter(|s| **s).count(),
            r.success_margin_m
        ));
    }
    let net = CnnConfig {
        crop: r.crop,
        ..CnnConfig::default()
    };
    let mut c = CnnClassifier::new(net, task.to_string(), seed, dev)?;
    let tc = CnnTrainConfig {
        steps: r.steps,
        target_precision: r.target_precision,
        seed,
        ..CnnTrainConfig::default()
    };
    let rep = c.train(&lf, &tc, |s, n, loss| {
        if s % 200 == 0 || s == n {
            say(format!("{who}: classifier step {s}/{n} loss {loss:.4}"));
        }
    })?;
    Ok((c, rep))
}

/// The classifier's training frames: ground truth's success, but only with the cube's centre at
/// least `margin` inside `goal`; returns the frames and how many successes the margin turned
/// into failures.
fn labelled_frames(
    d: &rft_sim::DemoFrames,
    task: &str,
    goal: rft_sim::Region,
    margin: f64,
) -> crate::Result<(LabelledFrames, usize)> {
    let mut lf = LabelledFrames::new(d.width, d.height, task.to_string());
    let mut relabelled = 0;
    for i in 0..d.len() {
        let c = nalgebra::Vector3::from(d.cube[i]).cast::<f64>();
        let inside = goal.contains_xy_inset(&c, margin);
        relabelled += usize::from(d.success[i] && !inside);
        lf.push(d.frame(i), d.success[i] && inside, d.episode[i])?;
    }
    Ok((lf, relabelled))
}

fn pretrain(
    cfg: &PipelineConfig,
    data: &ReplayBuffer,
    root: &Path,
    dev: &candle_core::Device,
) -> crate::Result<Agent> {
    let p = &cfg.pretrain;
    let algo: Algorithm = p.algorithm.parse()?;
    if !matches!(algo, Algorithm::Calql | Algorithm::Cql | Algorithm::Bc) {
        return Err(crate::Error::Stage(format!(
            "pipeline.pretrain.algorithm: {algo} is not an offline algorithm (calql, cql, bc)"
        )));
    }
    let obs_dim = cfg.plant.obs_dim();
    if data.obs_dim != obs_dim || data.image != cfg.plant.image_shape() {
        return Err(crate::Error::Stage(format!(
            "pipeline.demos_path: the demos have {} observation values and images {:?}; {:?} observations need {obs_dim} and {:?}",
            data.obs_dim,
            data.image,
            cfg.plant.observation,
            cfg.plant.image_shape()
        )));
    }
    let mut ac = AgentConfig::preset(algo, obs_dim, ACTION_DIM);
    ac.num_tasks = 2;
    ac.encoder = cfg.plant.image_shape().map(|s| EncoderConfig {
        channels: s.channels,
        height: s.height,
        width: s.width,
        ..EncoderConfig::default()
    });
    ac.hidden = p.hidden.clone();
    ac.batch_size = p.batch_size;
    (ac.lr_actor, ac.lr_critic, ac.lr_alpha) = (p.lr, p.lr, p.lr);
    ac.n_critics = p.critics;
    ac.critic_subsample = ac.critic_subsample.min(p.critics);
    ac.bc_weight = p.bc_weight;
    ac.bc_mode_weight = p.bc_mode_weight;
    ac.actor_layer_norm = p.layer_norm;
    ac.critic_layer_norm = p.layer_norm;
    if let Some(c) = ac.cql.as_mut() {
        c.n_actions = p.cql_actions.max(1);
    }
    ac.seed = p.seed;
    let mut agent = Agent::new(ac, dev)?;
    agent.norm = ObsNorm::fit(obs_dim, data.observations());
    std::fs::create_dir_all(root).map_err(crate::Error::io(root))?;
    say(format!(
        "pre-training {algo} on {} demo transitions for {} steps",
        data.len(),
        p.steps
    ));
    let mut csv = MetricsCsv::create(&root.join("metrics.csv"))?;
    let mut line = ProgressLine::default();
    train_offline(
        &mut agent,
        data,
        p.steps,
        None,
        0,
        Some(&mut csv),
        &mut |pr| line.show(pr),
    )?;
    rft_policies::store::atomic_write(
        &root.join("policy.safetensors"),
        &rft_policies::handle::policy_bytes(&agent, 1)?,
    )?;
    checkpoint::save(
        &root.join("checkpoints"),
        &agent,
        None,
        0,
        1,
        serde_json::json!({ "pretrain": p }),
        2,
    )?;
    Ok(agent)
}

fn load_agent(p: &Path, dev: &candle_core::Device) -> crate::Result<Agent> {
    let r = if p.join("meta.json").exists() {
        checkpoint::load(p, None, dev)?
    } else {
        checkpoint::load_latest(p, None, dev)?
            .context(|| format!("{}: no checkpoint (no LATEST)", p.display()))?
    };
    Ok(r.agent)
}

/// Forward and backward success rates of `agent`'s deterministic policy.
pub fn eval_agent(agent: &Agent, cfg: &PipelineConfig) -> crate::Result<[EvalResult; 2]> {
    let mut h = PolicyHandle::new(InferencePolicy::from_agent(agent, 0)?, 0);
    eval_policy(&mut h, cfg)
}

/// After a launch's node graph: evaluates `cfg.eval.after_launch` (when set, and the eval
/// stage is on) as the fine-tuned policy, records it in `summary` and rewrites the run's
/// `summary.json`. Returns whether it evaluated.
pub fn evaluate_after_launch(
    cfg: &PipelineConfig,
    run_dir: &Path,
    summary: &mut PipelineSummary,
) -> crate::Result<bool> {
    let Some(path) = cfg
        .eval
        .after_launch
        .as_ref()
        .filter(|_| cfg.enabled && cfg.stages.contains(&Stage::Eval))
    else {
        return Ok(false);
    };
    let text = path.to_string_lossy();
    let path = match text.strip_prefix("{run_dir}") {
        Some(rest) => run_dir.join(rest.trim_start_matches('/')),
        None => path.clone(),
    };
    // A graph that stopped before the learner's first update leaves no checkpoint: nothing was
    // fine-tuned, which is worth a clear line, not a failed run.
    if !path.is_file()
        && !path.join("policy.safetensors").is_file()
        && checkpoint::latest(&path)?.is_none()
    {
        tracing::warn!(target: "rft::pipeline", path = %path.display(), "no fine-tuned policy to evaluate: the learner made no update (fewer rewarded transitions than its warmup_transitions?)");
        return Ok(false);
    }
    let t = std::time::Instant::now();
    let mut h = PolicyHandle::new(load_policy(&path)?, 0);
    let r = eval_policy(&mut h, cfg)?;
    say(format!(
        "fine-tuned policy ({}): forward {}, backward {}",
        path.display(),
        r[0].rate,
        r[1].rate
    ));
    summary.finetuned = Some(path);
    summary.final_eval = Some(r);
    summary
        .stage_wall_s
        .push((Stage::Eval, t.elapsed().as_secs_f64()));
    write_json(&run_dir.join("summary.json"), summary)?;
    Ok(true)
}

pub fn eval_policy(h: &mut PolicyHandle, cfg: &PipelineConfig) -> crate::Result<[EvalResult; 2]> {
    let mut plant = SimPlant::new(&cfg.plant, cfg.eval.seed)?;
    let e = &cfg.eval;
    say(format!(
        "evaluating against ground truth: {} episodes per direction",
        e.episodes
    ));
    let f = evaluate(
        h,
        &mut plant,
        Direction::Forward,
        e.episodes,
        e.seed,
        e.max_s,
    )?;
    let b = evaluate(
        h,
        &mut plant,
        Direction::Backward,
        e.episodes,
        e.seed,
        e.max_s,
    )?;
    Ok([f, b])
}

/// Parses pipeline settings from TOML text — a pipeline TOML, or a launch file (its `[pipeline]`
/// table) — with `--set` overrides relative to the pipeline table; errors name the key.
pub fn parse_config(path: &Path, text: &str, set: &[String]) -> crate::Result<PipelineConfig> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        crate::Error::Stage(format!(
            "{}: not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    // A launch file: its `[pipeline]` table (keys stay relative to it).
    if table.contains_key("nodes")
        && let Some(toml::Value::Table(p)) = table.remove("pipeline")
    {
        table = p;
    }
    for o in set {
        rft_config::apply_override(&mut table, o)
            .context(|| format!("{}: --set", path.display()))?;
    }
    let cfg: PipelineConfig =
        rft_config::from_table(&with_defaults(table)).context(|| path.display().to_string())?;
    Ok(cfg)
}

/// The launch file's `[pipeline]` table, completed with the defaults (so the resolved launch
/// file shows every setting) and, when the pipeline is enabled, validated. Keys in errors are
/// relative to `pipeline`.
pub fn launch_section(table: &mut toml::Table) -> rft_config::Result<()> {
    *table = with_defaults(std::mem::take(table));
    let cfg: PipelineConfig = rft_config::from_table(table)?;
    if cfg.enabled {
        cfg.validate()?;
    }
    Ok(())
}

/// `user`'s pipeline settings laid over the defaults, key by key at every depth. Without this a
/// partial nested table (`[demos]` with one key, `--set demos.X=..` with no file, or
/// `--set 'plant.action={ .. }'`) would take the nested struct's own defaults for the keys it
/// leaves out, not the pipeline's.
pub fn with_defaults(user: toml::Table) -> toml::Table {
    let mut table = match toml::Table::try_from(PipelineConfig::default()) {
        Ok(t) => t,
        // Unreachable: the defaults are plain data. Without them serde's own defaults apply.
        Err(_) => toml::Table::new(),
    };
    rft_config::merge(&mut table, user);
    table
}

/// Reads pipeline settings from `file` (none: the defaults) with overrides; returns the name
/// errors should use and the settings.
pub fn read_config(
    file: Option<&Path>,
    set: &[String],
) -> crate::Result<(PathBuf, PipelineConfig)> {
    let (path, text) = match file {
        Some(p) => (
            p.to_path_buf(),
            std::fs::read_to_string(p).context(|| format!("reading {}", p.display()))?,
        ),
        None => (PathBuf::from("(defaults)"), String::new()),
    };
    let cfg = parse_config(&path, &text, set)?;
    Ok((path, cfg))
}

/// Loads the policy `rft eval --checkpoint` names.
pub fn load_policy(p: &Path) -> crate::Result<InferencePolicy> {
    let file = if p.is_file() {
        p.to_path_buf()
    } else if p.join("policy.safetensors").is_file() {
        p.join("policy.safetensors")
    } else {
        checkpoint::latest(p)?
            .context(|| {
                format!(
                    "{}: neither a policy file, a checkpoint nor a checkpoints root with LATEST",
                    p.display()
                )
            })?
            .join("policy.safetensors")
    };
    InferencePolicy::load(&file).context(|| format!("loading policy {}", file.display()))
}

/// Writes `v` as pretty JSON to `path` (atomically: a crash leaves the old file).
pub fn write_json(path: &Path, v: &impl Serialize) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    rft_policies::store::atomic_write(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rft_sim::TaskKind;

    #[test]
    fn success_margin_relabels_only_successes_near_the_goal_edge() {
        let goal = TaskKind::Push.goal_region();
        let (cx, cy, h) = (goal.center.x as f32, goal.center.y as f32, goal.half as f32);
        // centre, 1 cm inside the +y edge, 3 cm inside the -x edge, and a near miss outside.
        let cubes = [
            [cx, cy, 0.02],
            [cx, cy + h - 0.01, 0.02],
            [cx - h + 0.03, cy, 0.02],
            [cx, cy + h + 0.03, 0.02],
        ];
        let d = rft_sim::DemoFrames {
            width: 2,
            height: 2,
            rgb: vec![0; 4 * 12],
            success: vec![true, true, true, false],
            progress: vec![1.0; 4],
            episode: vec![0, 0, 1, 2],
            tcp: vec![[0.0; 3]; 4],
            cube: cubes.to_vec(),
            ..Default::default()
        };
        let (lf, n) = labelled_frames(&d, "push_forward", goal, 0.02).unwrap();
        assert_eq!(lf.label, vec![true, false, true, false]);
        assert_eq!(n, 1);
        let (lf, n) = labelled_frames(&d, "push_forward", goal, 0.0).unwrap();
        assert_eq!(lf.label, d.success);
        assert_eq!(n, 0);
    }

    fn report(reached: bool, recall: f64, auc: f64) -> TrainReport {
        serde_json::from_value(serde_json::json!({
            "task": "push/forward", "train_frames": 10, "train_positives": 5, "val_frames": 10,
            "val_positives": 5, "steps": 1, "final_loss": 0.1, "seconds": 1.0,
            "target_precision": 0.95, "target_reached": reached,
            "val": { "threshold": 0.5, "tp": 1, "fp": 0, "tn": 1, "fn": 0, "precision": 0.96,
                     "recall": recall, "roc_auc": auc }
        }))
        .unwrap()
    }

    #[test]
    fn the_kept_candidate_reached_the_target_precision_then_has_the_best_recall() {
        // The measured pair of stop 24: recall 0.651 (τ 0.9999) against 1.000; a candidate
        // that missed the target precision ranks below any that reached it, whatever its recall.
        assert!(better(
            &report(true, 1.0, 0.999),
            &report(true, 0.651, 0.978)
        ));
        assert!(!better(
            &report(true, 0.651, 0.978),
            &report(true, 1.0, 0.999)
        ));
        assert!(better(&report(true, 0.2, 0.9), &report(false, 1.0, 0.999)));
        assert!(better(&report(true, 0.9, 0.99), &report(true, 0.9, 0.98)));
        // A tie keeps the earlier candidate.
        assert!(!better(&report(true, 0.9, 0.99), &report(true, 0.9, 0.99)));
    }

    #[test]
    fn success_margin_outside_the_region_is_rejected() {
        let mut cfg = PipelineConfig::default();
        cfg.reward.success_margin_m = 0.05;
        let rft_config::ConfigError { key, reason: why } = cfg.validate().unwrap_err();
        assert_eq!(key, "reward.success_margin_m", "{why}");
        cfg.reward.success_margin_m = 0.02;
        cfg.validate().unwrap();
    }
}
