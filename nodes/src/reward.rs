//! The reward node: scores camera frames with a success classifier (CNN, CLIP probe or an
//! OpenAI-compatible VLM), debounces success over k frames, adds the KAGI dense keypoint term
//! while there is no success, fuses them with the launch file's penalties, and publishes a
//! `/rft/reward` stamped with the frame it scored, at its own rate.
//!
//! A classifier that cannot answer (VLM endpoint down, bad frame) never yields a made-up
//! reward: the message goes out with `valid = false` and the node keeps running.
//!
//! `{ kind = "ground_truth" }` is an ablation for simulation only: success is the simulator's
//! ground truth for the frame (`/rft/metrics`, `sim/<task>/<dir>/success`), what a perfect
//! classifier would say, so a run can tell reward errors from learning errors.
//!
//! Where the simulator publishes that ground truth, the node also scores its classifier
//! against it, frame by frame (the classifier's answer `p ≥ τ` against the truth at the frame's
//! stamp, per task): the counts are in [`RewardCounts::confusion`], logged at shutdown with
//! precision and recall, and published then on `/rft/metrics`
//! (`reward/<forward|backward>/{tp,fp,tn,fn}`). Nothing of it reaches the rewards.

use std::path::PathBuf;
use std::time::Duration;

use nalgebra::{Point3, Vector3};
use rft_msgs::{
    Action, CameraInfo, EpisodePhase, Header, Image, JointState, Metric, PoseStamped, Reward,
    SafetyStatus, Time,
};
use rft_rewards::clip::{ClipClassifier, ClipImageModel, LogisticProbe};
use rft_rewards::fusion::{FusionConfig, RewardInputs};
use rft_rewards::keypoints::{
    DenseScorer, DepthRef, Intrinsics, KeypointProposer, MarkSource, Tracked, Waypoint, lift,
};
use rft_rewards::vlm::{VlmClient, VlmConfig};
use rft_rewards::{CnnClassifier, Debouncer, ImageRef, SuccessClassifier};
use rft_safety::kinematics::Chain;
use rft_sim::TaskKind;
use serde::Deserialize;

use crate::robot_state::iso;
use crate::sim_truth::SimTruth;
use rft_config::ConfigError;
use rft_config::check;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Error, Result};
use rft_runtime::{Node, StepCtx};

/// Which success classifier scores the frames.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClassifierSpec {
    /// A CNN from `rft train-reward` (`reward.safetensors`).
    Cnn {
        weights: PathBuf,
        /// Overrides the calibrated τ.
        threshold: Option<f32>,
    },
    /// A Hugging Face CLIP directory and a probe from `rft train-reward --kind clip`.
    Clip {
        model_dir: PathBuf,
        probe: PathBuf,
        threshold: Option<f32>,
    },
    /// Any OpenAI-compatible chat-completions endpoint with image input.
    Vlm(VlmConfig),
    /// Simulation only, an ablation: success is the simulator's ground truth at the frame's
    /// stamp (`/rft/metrics`, `sim/<task>/<dir>/success`; forward for task 0, backward for
    /// task 1), never a classifier's answer. Named alone: it serves every task.
    GroundTruth {
        #[serde(default = "default_truth_task")]
        task: TaskKind,
    },
}

fn default_truth_task() -> TaskKind {
    TaskKind::Push
}

/// The simulator's ground truth must be at most this far from a frame's stamp to count for it.
const TRUTH_MAX_AGE_NS: i64 = 150_000_000;

/// Where the dense term's waypoints come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeypointSpec {
    /// No dense term.
    None,
    /// Simulator ground truth: the tool to the cube's far side from the goal, then the cube to
    /// the goal of the current direction (forward = task 0, backward = task 1).
    Sim {
        task: TaskKind,
        #[serde(default = "default_cube_half")]
        cube_half_m: f64,
    },
    /// Fixed world waypoints, one list per task id.
    Config { waypoints: Vec<Vec<WaypointSpec>> },
    /// Proposed by a VLM on the first frame of each phase, lifted with depth: the tool goes to
    /// the first keypoint, then the object passes through the waypoints.
    Vlm {
        vlm: VlmConfig,
        #[serde(default = "default_marks")]
        marks: MarkSource,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaypointSpec {
    pub point: [f64; 3],
    pub track: Tracked,
}

fn default_cube_half() -> f64 {
    0.025
}
fn default_marks() -> MarkSource {
    MarkSource::Colour {
        max_marks: 12,
        min_area_px: 4,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardParams {
    /// One classifier per task id (forward, backward, …); a single entry serves every task.
    pub classifiers: Vec<ClassifierSpec>,
    /// Task descriptions by task id (the VLM prompts).
    #[serde(default = "default_tasks")]
    pub tasks: Vec<String>,
    /// Success once this many consecutive frames pass τ.
    #[serde(default = "default_consecutive")]
    pub consecutive: u32,
    #[serde(default = "default_keypoints")]
    pub keypoints: KeypointSpec,
    /// A waypoint is reached within this distance.
    #[serde(default = "default_radius")]
    pub radius_m: f64,
    #[serde(default)]
    pub fusion: FusionConfig,
    /// For the tool position (forward kinematics of `/joint_states`).
    pub urdf: Option<PathBuf>,
    #[serde(default = "crate::robot_state::default_base_link")]
    pub base_link: String,
    #[serde(default = "crate::robot_state::default_tcp_link")]
    pub tcp_link: String,
    /// The camera's topics: `<camera>/color/image_raw`, `/depth/image_raw`,
    /// `/color/camera_info`, `/pose`.
    #[serde(default = "default_camera")]
    pub camera: String,
    /// A teleop message this recent marks the step as an intervention.
    #[serde(default = "default_intervention_ms")]
    pub intervention_window_ms: f64,
}

fn default_tasks() -> Vec<String> {
    vec![
        "push the red cube onto the green square".into(),
        "push the red cube back onto the yellow square".into(),
    ]
}
fn default_consecutive() -> u32 {
    3
}
fn default_keypoints() -> KeypointSpec {
    KeypointSpec::None
}
fn default_radius() -> f64 {
    0.02
}
fn default_camera() -> String {
    "/camera".into()
}
fn default_intervention_ms() -> f64 {
    500.0
}

impl RewardParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check(!self.classifiers.is_empty(), "classifiers", || {
            "name at least one classifier".into()
        })?;
        check(self.consecutive >= 1, "consecutive", || {
            "must be ≥ 1".into()
        })?;
        check(
            self.radius_m.is_finite() && self.radius_m > 0.0,
            "radius_m",
            || format!("{} must be positive", self.radius_m),
        )?;
        self.fusion
            .validate()
            .map_err(|e| ConfigError::new("fusion".to_string(), e.to_string()))?;
        for (i, c) in self.classifiers.iter().enumerate() {
            match c {
                ClassifierSpec::Vlm(v) => v
                    .validate()
                    .map_err(|e| ConfigError::new(format!("classifiers.{i}"), e.to_string()))?,
                ClassifierSpec::GroundTruth { .. } => {
                    check(self.classifiers.len() == 1, "classifiers", || {
                        "ground_truth serves every task: name it alone".into()
                    })?;
                }
                _ => {}
            }
        }
        let needs_tool = match &self.keypoints {
            KeypointSpec::Sim { .. } | KeypointSpec::Vlm { .. } => true,
            KeypointSpec::Config { waypoints } => {
                waypoints.iter().flatten().any(|w| w.track == Tracked::Tool)
            }
            KeypointSpec::None => false,
        };
        check(!needs_tool || self.urdf.is_some(), "urdf", || {
            "the keypoint scorer tracks the tool, which needs the robot's URDF".into()
        })
    }
}

/// Counters, for tests and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewardCounts {
    pub published: u64,
    pub invalid: u64,
    pub successes: u64,
    pub proposal_failures: u64,
    /// The classifier's per-frame answers against the simulator's ground truth, by task id
    /// (forward, backward); empty where there is no ground truth.
    pub confusion: [Confusion; 2],
}

/// Frames by the classifier's answer and the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl Confusion {
    fn add(&mut self, said: bool, truth: bool) {
        match (said, truth) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    pub fn frames(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }
}

pub struct RewardNode {
    name: String,
    p: RewardParams,
    period: Duration,
    classifiers: Vec<Box<dyn SuccessClassifier>>,
    /// The simulator's ground truth (the ablation's rewards, or the classifier's score).
    truth: SimTruth,
    /// The rewards' source in the ablation.
    truth_source: String,
    /// The ablation: success is the ground truth, not a classifier's.
    ablation: bool,
    metrics_out: Publisher<Metric>,
    chain: Option<Chain>,
    proposer: Option<KeypointProposer>,
    image: Subscription<Image>,
    depth: Subscription<Image>,
    info: Subscription<CameraInfo>,
    cam_pose: Subscription<PoseStamped>,
    object: Subscription<PoseStamped>,
    joints: Subscription<JointState>,
    phase: Subscription<EpisodePhase>,
    safety: Subscription<SafetyStatus>,
    teleop: Subscription<Action>,
    out: Publisher<Reward>,
    task_id: u8,
    episode: Option<u64>,
    debouncer: Debouncer,
    scorer: Option<DenseScorer>,
    need_waypoints: bool,
    last_stamp: Option<Time>,
    last_teleop: Option<Time>,
    q: Vec<f64>,
    last_js: Option<std::sync::Arc<JointState>>,
    last_object: Option<std::sync::Arc<PoseStamped>>,
    counts: RewardCounts,
}

fn load_classifier(node: &str, c: &ClassifierSpec) -> Result<Box<dyn SuccessClassifier>> {
    let dev = rft_policies::device(false);
    let cfg_err = |e: rft_rewards::Error| Error::node(node, format!("params.classifiers: {e}"));
    Ok(match c {
        ClassifierSpec::Cnn { weights, threshold } => {
            let mut m = CnnClassifier::load(weights, &dev).map_err(cfg_err)?;
            if let Some(t) = threshold {
                m.set_threshold(*t);
            }
            Box::new(m)
        }
        ClassifierSpec::Clip {
            model_dir,
            probe,
            threshold,
        } => {
            let model = ClipImageModel::load(model_dir, &dev).map_err(cfg_err)?;
            let mut probe = LogisticProbe::load(probe).map_err(cfg_err)?;
            if let Some(t) = threshold {
                probe.threshold = *t;
            }
            if probe.w.len() != model.embed_dim() {
                return Err(Error::node(
                    node,
                    format!(
                        "params.classifiers: the probe has {} weights but the CLIP model embeds to {}",
                        probe.w.len(),
                        model.embed_dim()
                    ),
                ));
            }
            Box::new(ClipClassifier { model, probe })
        }
        ClassifierSpec::Vlm(v) => Box::new(VlmClient::new(v.clone()).map_err(cfg_err)?),
        ClassifierSpec::GroundTruth { .. } => {
            return Err(Error::node(
                node,
                "params.classifiers: ground_truth is not a model".to_string(),
            ));
        }
    })
}

impl RewardNode {
    pub fn new(name: String, p: RewardParams, period: Duration, bus: &NodeHandle) -> Result<Self> {
        let task = match p.classifiers.first() {
            Some(ClassifierSpec::GroundTruth { task, .. }) => Some(*task),
            _ => None,
        };
        let ablation = task.is_some();
        if ablation {
            tracing::warn!(node = %name, "ABLATION: success from the simulator's ground truth, not a classifier");
        }
        let truth = SimTruth::new(bus, task)?;
        let truth_source = format!("ground_truth:{}", task.map_or("sim", |t| t.name()));
        let classifiers = if ablation {
            Vec::new()
        } else {
            p.classifiers
                .iter()
                .map(|c| load_classifier(&name, c))
                .collect::<Result<Vec<_>>>()?
        };
        let chain =
            match &p.urdf {
                Some(u) => Some(Chain::from_urdf_file(u, &p.base_link, &p.tcp_link).map_err(
                    |e| Error::node(&name, format!("params.urdf: {}: {e}", u.display())),
                )?),
                None => None,
            };
        let proposer = match &p.keypoints {
            KeypointSpec::Vlm { vlm, marks } => Some(KeypointProposer {
                client: VlmClient::new(vlm.clone())
                    .map_err(|e| Error::node(&name, format!("params.keypoints.vlm: {e}")))?,
                marks: *marks,
                label_scale: 1,
            }),
            _ => None,
        };
        let latest = QueueConfig::latest_only();
        let cam = p.camera.trim_end_matches('/').to_string();
        Ok(Self {
            image: bus.subscribe_quiet(&format!("{cam}/color/image_raw"), latest)?,
            depth: bus.subscribe_quiet(&format!("{cam}/depth/image_raw"), latest)?,
            info: bus.subscribe_quiet(&format!("{cam}/color/camera_info"), latest)?,
            cam_pose: bus.subscribe_quiet(&format!("{cam}/pose"), latest)?,
            object: bus.subscribe_quiet("/rft/object_pose", latest)?,
            joints: bus.subscribe_quiet("/joint_states", latest)?,
            phase: bus.subscribe_quiet("/rft/phase", QueueConfig::drop_oldest(64))?,
            safety: bus.subscribe_quiet("/rft/safety", latest)?,
            teleop: bus.subscribe_quiet("/rft/teleop", QueueConfig::drop_oldest(64))?,
            out: bus.publisher("/rft/reward")?,
            debouncer: Debouncer::new(
                classifiers.first().map_or(0.5, |c| c.threshold()),
                p.consecutive,
            ),
            need_waypoints: !matches!(p.keypoints, KeypointSpec::None),
            classifiers,
            truth,
            truth_source,
            ablation,
            metrics_out: bus.publisher("/rft/metrics")?,
            chain,
            proposer,
            name,
            p,
            period,
            task_id: 0,
            episode: None,
            scorer: None,
            last_stamp: None,
            last_teleop: None,
            q: Vec::new(),
            last_js: None,
            last_object: None,
            counts: RewardCounts::default(),
        })
    }

    pub fn counts(&self) -> RewardCounts {
        self.counts
    }

    /// The dense scorer's waypoints for the current phase (empty before they are known).
    pub fn waypoints_now(&self) -> Vec<Waypoint> {
        self.scorer
            .as_ref()
            .map(|s| s.waypoints().to_vec())
            .unwrap_or_default()
    }

    fn classifier_index(&self) -> usize {
        usize::from(self.task_id).min(self.classifiers.len().saturating_sub(1))
    }

    /// The success threshold of the current task's classifier (0.5 for ground truth).
    fn threshold(&self) -> f32 {
        self.classifiers
            .get(self.classifier_index())
            .map_or(0.5, |c| c.threshold())
    }

    fn task_text(&self) -> String {
        self.p
            .tasks
            .get(usize::from(self.task_id))
            .cloned()
            .unwrap_or_else(|| format!("task {}", self.task_id))
    }

    /// A new task or episode: debouncing and waypoints start over.
    fn start_phase(&mut self) {
        let t = self.threshold();
        self.debouncer = Debouncer::new(t, self.p.consecutive);
        self.scorer = None;
        self.need_waypoints = !matches!(self.p.keypoints, KeypointSpec::None);
    }

    fn tool(&mut self) -> Option<Point3<f64>> {
        // `latest` takes the newest message off the queue: keep the last one.
        if let Some(m) = self.joints.latest() {
            self.last_js = Some(m);
        }
        let chain = self.chain.as_ref()?;
        let js = self.last_js.clone()?;
        self.q.clear();
        for j in &chain.joints {
            let i = js.name.iter().position(|n| *n == j.name)?;
            self.q.push(*js.position.get(i)?);
        }
        Some(Point3::from(
            chain.base_from_tip(&self.q).translation.vector,
        ))
    }

    fn object(&mut self) -> Option<Point3<f64>> {
        if let Some(m) = self.object.latest() {
            self.last_object = Some(m);
        }
        self.last_object
            .as_ref()
            .map(|p| Point3::from(iso(p).translation.vector))
    }

    /// Waypoints for the current phase, or None when what they need has not arrived yet.
    fn waypoints(&mut self, frame: &Image) -> Option<Vec<Waypoint>> {
        match self.p.keypoints.clone() {
            KeypointSpec::None => None,
            KeypointSpec::Config { waypoints } => {
                let list = waypoints
                    .get(usize::from(self.task_id))
                    .or(waypoints.last())?;
                Some(
                    list.iter()
                        .map(|w| Waypoint {
                            point: Point3::from(w.point),
                            track: w.track,
                        })
                        .collect(),
                )
            }
            KeypointSpec::Sim { task, cube_half_m } => {
                let cube = self.object()?.coords;
                let dir = rft_autonomy::demos::direction_of(self.task_id);
                let (_, to) = task.regions(dir);
                let goal = to.rest_point(cube_half_m);
                let u = (goal - cube).xy().try_normalize(1e-9)?;
                let behind = cube - Vector3::new(u.x, u.y, 0.0) * (cube_half_m + 0.03);
                Some(vec![
                    Waypoint {
                        point: Point3::from(behind),
                        track: Tracked::Tool,
                    },
                    Waypoint {
                        point: Point3::from(goal),
                        track: Tracked::Object,
                    },
                ])
            }
            KeypointSpec::Vlm { .. } => {
                let depth = self.depth.latest()?;
                let info = self.info.latest()?;
                let pose = self.cam_pose.latest()?;
                let task = self.task_text();
                let proposer = self.proposer.as_mut()?;
                let img = ImageRef::new(frame.width, frame.height, &frame.data).ok()?;
                let proposed = proposer.propose(&img, &task);
                let (marks, prop) = match proposed {
                    Ok(x) => x,
                    Err(e) => {
                        self.counts.proposal_failures += 1;
                        tracing::warn!(node = %self.name, error = %e, "keypoint proposal failed; no dense term this phase");
                        self.need_waypoints = false;
                        return None;
                    }
                };
                let d: Vec<f32> = depth
                    .data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let dref = DepthRef {
                    width: depth.width,
                    height: depth.height,
                    depth: &d,
                };
                let k = Intrinsics::from_k(&info.k).ok()?;
                let world_from_camera = iso(&pose);
                let at = |id: u32| {
                    let m = marks.iter().find(|m| m.id == id)?;
                    lift(m.u, m.v, &dref, &k, &world_from_camera).ok()
                };
                let mut wps = Vec::new();
                if let Some(p) = prop.keypoints.first().and_then(|&id| at(id)) {
                    wps.push(Waypoint {
                        point: p,
                        track: Tracked::Tool,
                    });
                }
                for &id in &prop.waypoints {
                    if let Some(p) = at(id) {
                        wps.push(Waypoint {
                            point: p,
                            track: Tracked::Object,
                        });
                    }
                }
                (!wps.is_empty()).then_some(wps)
            }
        }
    }
}

impl Node for RewardNode {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        for ph in self.phase.drain() {
            if ph.task_id != self.task_id || Some(ph.episode_id) != self.episode {
                self.task_id = ph.task_id;
                self.episode = Some(ph.episode_id);
                self.start_phase();
            }
        }
        if let Some(t) = self.teleop.drain().last() {
            self.last_teleop = Some(t.header.stamp);
        }
        let Some(frame) = self.image.latest() else {
            return Ok(());
        };
        if self.last_stamp == Some(frame.header.stamp) {
            return Ok(());
        }
        self.last_stamp = Some(frame.header.stamp);
        let task = self.task_text();
        let idx = self.classifier_index();
        let truth = self.truth.at(
            self.task_id,
            frame.header.stamp.as_nanos(),
            TRUTH_MAX_AGE_NS,
        );
        let prob = if self.ablation {
            truth.map(|yes| if yes { 1.0 } else { 0.0 }).ok_or_else(|| {
                rft_rewards::Error::Frame(format!(
                    "no ground truth within {} ms of the frame",
                    TRUTH_MAX_AGE_NS / 1_000_000
                ))
            })
        } else if frame.encoding == "rgb8" {
            ImageRef::new(frame.width, frame.height, &frame.data)
                .and_then(|img| self.classifiers[idx].predict(&[img], &task))
                .and_then(|v| {
                    v.first().copied().ok_or_else(|| {
                        rft_rewards::Error::Frame("the classifier returned nothing".into())
                    })
                })
        } else {
            Err(rft_rewards::Error::Frame(format!(
                "encoding {:?}; rgb8 is needed",
                frame.encoding
            )))
        };
        let (valid, p) = match prob {
            Ok(p) if p.is_finite() => (true, p),
            Ok(p) => {
                tracing::warn!(node = %self.name, "classifier gave {p}; reward marked missing");
                (false, 0.0)
            }
            Err(e) => {
                if self.counts.invalid.is_power_of_two() || self.counts.invalid == 0 {
                    tracing::warn!(node = %self.name, error = %e, missing = self.counts.invalid + 1, "no success probability; reward marked missing");
                }
                (false, 0.0)
            }
        };
        if valid
            && !self.ablation
            && let Some(truth) = truth
        {
            let said = p >= self.threshold();
            self.counts.confusion[usize::from(self.task_id).min(1)].add(said, truth);
        }
        let success = if valid {
            self.debouncer.push(p)
        } else {
            self.debouncer.gap();
            false
        };
        if self.need_waypoints
            && self.scorer.is_none()
            && let Some(w) = self.waypoints(&frame)
        {
            self.scorer = DenseScorer::new(w, self.p.radius_m).ok();
            self.need_waypoints = false;
        }
        let tool = self.tool();
        let object = self.object();
        let dense = match (&mut self.scorer, tool, object) {
            (Some(s), Some(t), Some(o)) => Some(s.score(&t, &o)),
            (Some(s), Some(t), None) => Some(s.score(&t, &Point3::origin())),
            _ => None,
        };
        let safety_override = self
            .safety
            .latest()
            .is_some_and(|s| s.state != rft_msgs::SAFETY_OK);
        let window = (self.p.intervention_window_ms * 1e6) as i64;
        let intervention = self
            .last_teleop
            .is_some_and(|t| frame.header.stamp.as_nanos() - t.as_nanos() <= window);
        let reward = self.p.fusion.reward(&RewardInputs {
            success,
            dense: if success { None } else { dense },
            intervention,
            safety_override,
        });
        self.out.publish(Reward {
            header: Header {
                stamp: frame.header.stamp,
                frame_id: frame.header.frame_id.clone(),
            },
            task_id: self.task_id,
            success_prob: if valid { p } else { f32::NAN },
            success,
            dense: dense.unwrap_or(0.0),
            reward: if valid { reward } else { 0.0 },
            source: match self.classifiers.get(idx) {
                Some(c) if !self.ablation => c.name(),
                _ => self.truth_source.clone(),
            },
            valid,
        })?;
        self.counts.published += 1;
        self.counts.invalid += u64::from(!valid);
        self.counts.successes += u64::from(success);
        Ok(())
    }

    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        for (dir, c) in ["forward", "backward"].iter().zip(self.counts.confusion) {
            if c.frames() == 0 {
                continue;
            }
            let ratio = |a: u64, b: u64| {
                if b == 0 {
                    f64::NAN
                } else {
                    a as f64 / b as f64
                }
            };
            tracing::info!(node = %self.name, task = dir, frames = c.frames(), tp = c.tp, fp = c.fp, tn = c.tn, fn_ = c.fn_,
                precision = %format!("{:.3}", ratio(c.tp, c.tp + c.fp)), recall = %format!("{:.3}", ratio(c.tp, c.tp + c.fn_)),
                "the classifier against the simulator's ground truth, frame by frame");
            for (what, v) in [("tp", c.tp), ("fp", c.fp), ("tn", c.tn), ("fn", c.fn_)] {
                self.metrics_out.publish(Metric {
                    header: Header::at(ctx.now),
                    source: self.name.clone(),
                    name: format!("reward/{dir}/{what}"),
                    value: v as f64,
                })?;
            }
        }
        Ok(())
    }
}

impl NodeKind for RewardParams {
    const KIND: &'static str = "reward";
    // At most the camera's rate; each new frame is scored once.
    const DEFAULT_RATE_HZ: f64 = 10.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        let mut v = Vec::new();
        for c in &mut self.classifiers {
            match c {
                ClassifierSpec::Cnn { weights, .. } => v.push(weights),
                ClassifierSpec::Clip {
                    model_dir, probe, ..
                } => {
                    v.push(model_dir);
                    v.push(probe);
                }
                ClassifierSpec::Vlm(_) | ClassifierSpec::GroundTruth { .. } => {}
            }
        }
        v
    }

    fn validate(&self) -> rft_config::Result<()> {
        RewardParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(RewardNode::new(name, self.clone(), period, bus)?))
    }
}
