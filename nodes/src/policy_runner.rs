//! The policy on the robot: at each control tick it builds the observation from the latest
//! joint state and object pose (the perception topic a pose estimator publishes), runs the
//! policy for the current task and publishes `/rft/action` (a tool twist for the safety
//! filter) and `/rft/transition` (the previous step, now that its next observation is known).
//! New weights from `/rft/policy` are validated and swapped in between two ticks; a bad update
//! is counted and dropped and the runner keeps acting on the weights it has.
//!
//! While the episode manager pauses for a human reset (or stops), the runner commands zero
//! motion and records no transitions. While the arm goes home between two episodes
//! (`switching`; the safety filter moves it) the runner is silent; the episode's last step
//! keeps the observation at the episode's end and is published once the next episode starts,
//! when its outcome is final (`done` for `success` and `success_at_home`). A phase that asks
//! for exploration noise (the episode manager's stall escape) overrides `explore_std`.
//!
//! A policy with an image encoder (the pipeline's `plant.observation = "image"`) observes the
//! tool pose and gripper (6 values) and the newest frame of `image_topic` (rgb8 at the
//! encoder's size, at most `max_obs_age_ms` from the joint state) instead of the object's
//! pose; its transitions carry both frames for the learner.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rft_msgs::{
    Action, EpisodePhase, Header, Image, JointState, PHASE_PAUSED_FOR_HUMAN, PHASE_STOPPED,
    PHASE_SWITCHING, PolicyUpdate, PoseStamped, Time, Transition, Twist, Vector3 as V3,
};
use rft_policies::handle::{ActMode, InferencePolicy, PolicyHandle, PolicySpec};
use serde::Deserialize;

use crate::robot_state::{ToolFk, iso};
use rft_autonomy::action::{ACTION_DIM, ActionMap};
use rft_autonomy::obs::{PROPRIO_OBS_DIM, STATE_OBS_DIM, proprio_obs, state_obs};
use rft_config::check;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Error, Result};
use rft_runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRunnerParams {
    /// The policy to start with: a `policy.safetensors` (as `rft pipeline` or the learner
    /// writes it) or a checkpoint directory (its `LATEST`). `{run_dir}/…` is inside the run
    /// directory. Without one the runner only records the steps a person (or the scripted
    /// expert) drives on `/rft/teleop`.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// For the tool pose (forward kinematics of `/joint_states`).
    #[serde(default = "rft_sim::world::default_urdf")]
    pub urdf: PathBuf,
    #[serde(default = "crate::robot_state::default_base_link")]
    pub base_link: String,
    #[serde(default = "crate::robot_state::default_tcp_link")]
    pub tcp_link: String,
    /// Finger joints and their travel, for the gripper opening.
    #[serde(default = "default_fingers")]
    pub finger_joints: Vec<String>,
    #[serde(default = "default_finger_max")]
    pub finger_max_m: f64,
    /// Scaling of the policy's [-1, 1] actions.
    #[serde(default)]
    pub action: ActionMap,
    /// `stochastic` samples from the policy (exploration while learning), `deterministic`
    /// takes its mean.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Above 0: the mean plus Gaussian noise of this standard deviation (overrides `mode`).
    #[serde(default)]
    pub explore_std: f64,
    /// The joint state and the object pose must be at most this far apart (and this old).
    #[serde(default = "default_sync_ms")]
    pub max_obs_age_ms: f64,
    #[serde(default = "default_object_topic")]
    pub object_topic: String,
    /// The camera an image-encoder policy sees (rgb8 at the encoder's size).
    #[serde(default = "default_image_topic")]
    pub image_topic: String,
    /// A `/rft/teleop` command this recent (node clock) is in control: the step records its
    /// action, flagged as an intervention, and the runner publishes none of its own. The safety
    /// filter's `stale_command_ms` should match.
    #[serde(default = "default_teleop_ms")]
    pub teleop_timeout_ms: f64,
    #[serde(default)]
    pub seed: u64,
    /// Ends the launch once this many steps were taken (the policy's or a person's; 0: no
    /// limit): a step budget independent of the time spent homing or paused.
    #[serde(default)]
    pub max_steps: u64,
}

fn default_teleop_ms() -> f64 {
    200.0
}

pub(crate) fn default_fingers() -> Vec<String> {
    vec!["panda_finger_joint1".into(), "panda_finger_joint2".into()]
}
pub(crate) fn default_finger_max() -> f64 {
    0.04
}
fn default_mode() -> String {
    "stochastic".into()
}
fn default_sync_ms() -> f64 {
    150.0
}
fn default_object_topic() -> String {
    "/rft/object_pose".into()
}
fn default_image_topic() -> String {
    "/policy_camera/color/image_raw".into()
}

/// What a policy observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sees {
    /// Tool pose, object pose and gripper.
    State,
    /// Tool pose and gripper, and a camera frame of this height and width.
    Image { height: usize, width: usize },
}

/// What a policy observes, or why the runner cannot act with it.
fn sees(spec: &PolicySpec) -> std::result::Result<Sees, String> {
    match &spec.encoder {
        None if spec.obs_dim == STATE_OBS_DIM && spec.act_dim == ACTION_DIM => Ok(Sees::State),
        Some(e)
            if spec.obs_dim == PROPRIO_OBS_DIM && spec.act_dim == ACTION_DIM && e.channels == 3 =>
        {
            Ok(Sees::Image {
                height: e.height,
                width: e.width,
            })
        }
        _ => Err(format!(
            "observation {} / action {}{}: the runner acts on state policies ({STATE_OBS_DIM} / \
             {ACTION_DIM}) and rgb image policies ({PROPRIO_OBS_DIM} / {ACTION_DIM} and an encoder)",
            spec.obs_dim,
            spec.act_dim,
            spec.encoder.as_ref().map_or(String::new(), |e| format!(
                ", an encoder of {} channels",
                e.channels
            )),
        )),
    }
}

/// An rgb8 frame as the policy's channel-first bytes, if it has the expected size.
fn chw(img: &Image, height: usize, width: usize, out: &mut Vec<u8>) -> bool {
    let (h, w) = (img.height as usize, img.width as usize);
    if img.encoding != "rgb8" || h != height || w != width || img.data.len() < 3 * h * w {
        return false;
    }
    let n = h * w;
    out.clear();
    out.resize(3 * n, 0);
    let stride = (img.step as usize).max(3 * w);
    for y in 0..h {
        let row = img.data.get(y * stride..y * stride + 3 * w);
        let Some(row) = row else { return false };
        for (x, px) in row.chunks_exact(3).enumerate() {
            for (c, v) in px.iter().enumerate() {
                out[c * n + y * w + x] = *v;
            }
        }
    }
    true
}

impl PolicyRunnerParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check(
            matches!(self.mode.as_str(), "stochastic" | "deterministic"),
            "mode",
            || format!("`{}`: use `stochastic` or `deterministic`", self.mode),
        )?;
        check(
            self.explore_std.is_finite() && (0.0..=1.0).contains(&self.explore_std),
            "explore_std",
            || format!("{} is outside [0, 1]", self.explore_std),
        )?;
        check(
            self.max_obs_age_ms.is_finite() && self.max_obs_age_ms > 0.0,
            "max_obs_age_ms",
            || format!("{} must be positive", self.max_obs_age_ms),
        )?;
        check(
            self.finger_max_m.is_finite() && self.finger_max_m > 0.0,
            "finger_max_m",
            || format!("{} must be positive", self.finger_max_m),
        )?;
        check(
            self.teleop_timeout_ms.is_finite() && self.teleop_timeout_ms > 0.0,
            "teleop_timeout_ms",
            || format!("{} must be positive", self.teleop_timeout_ms),
        )?;
        self.action.validate().map_err(|e| e.under("action"))
    }
}

/// Loads a policy file or the latest checkpoint of a directory.
pub fn load_policy(node: &str, path: &Path) -> Result<InferencePolicy> {
    let err = |e: String| Error::node(node, format!("params.policy {}: {e}", path.display()));
    if path.is_dir() {
        let dev = rft_policies::device(false);
        let r = if path.join("meta.json").exists() {
            rft_policies::checkpoint::load(path, None, &dev).map_err(|e| err(e.to_string()))?
        } else {
            rft_policies::checkpoint::load_latest(path, None, &dev)
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err("no checkpoint here (no LATEST)".into()))?
        };
        InferencePolicy::from_agent(&r.agent, r.meta.policy_version).map_err(|e| err(e.to_string()))
    } else {
        InferencePolicy::load(path).map_err(|e| err(e.to_string()))
    }
}

/// Timing and counters, shared so that tests and benchmarks can read them while it runs.
#[derive(Debug, Clone, Default)]
pub struct RunnerStats {
    pub actions: u64,
    pub transitions: u64,
    /// Ticks without a fresh, synchronised observation (nothing published).
    pub stale_obs: u64,
    pub paused_ticks: u64,
    /// Ticks spent while the arm went home between two episodes.
    pub switching_ticks: u64,
    /// Steps driven from `/rft/teleop` (recorded as interventions).
    pub teleop_steps: u64,
    pub swaps: u64,
    pub rejected_updates: u64,
    /// Camera frames an image policy could not use (encoding or size).
    pub bad_images: u64,
    pub version: u64,
    /// Observation read → action published, microseconds, per acting tick.
    pub obs_to_action_us: Vec<f32>,
    /// Wall time between tick starts minus the period, microseconds.
    pub jitter_us: Vec<f32>,
    /// Wall time of the weight swaps, microseconds.
    pub swap_us: Vec<f32>,
}

struct Pending {
    obs: Vec<f32>,
    image: Vec<u8>,
    action: [f32; ACTION_DIM],
    stamp: Time,
    task: u8,
    episode: u64,
    step: u32,
    version: u64,
    intervention: bool,
    /// The observation that followed, when it was taken before the step could be published
    /// (the episode ended and the arm went home first).
    next: Option<(Vec<f32>, Vec<u8>, Time)>,
}

pub struct PolicyRunner {
    name: String,
    p: PolicyRunnerParams,
    period: Duration,
    fk: ToolFk,
    policy: Option<PolicyHandle>,
    /// What the acting policy observes.
    sees: Sees,
    mode: ActMode,
    rng: rand::rngs::StdRng,
    joints: Subscription<JointState>,
    object: Subscription<PoseStamped>,
    image: Subscription<Image>,
    phase: Subscription<EpisodePhase>,
    updates: Subscription<PolicyUpdate>,
    teleop: Subscription<Action>,
    /// The newest teleop command and when it arrived (node clock, ns).
    last_teleop: Option<(Arc<Action>, i64)>,
    action_out: Publisher<Action>,
    transition_out: Publisher<Transition>,
    pending: Option<Pending>,
    last_phase: Option<EpisodePhase>,
    last_js: Option<Arc<JointState>>,
    last_obj: Option<Arc<PoseStamped>>,
    last_img: Option<Arc<Image>>,
    last_tick: Option<Instant>,
    last_state_stamp: Option<Time>,
    episode: Option<u64>,
    step_in_episode: u32,
    stats: Arc<Mutex<RunnerStats>>,
}

impl PolicyRunner {
    pub fn new(
        name: String,
        p: PolicyRunnerParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        use rand::SeedableRng;
        let (policy, sees) = match &p.policy {
            Some(path) => {
                let policy = load_policy(&name, path)?;
                let sees = sees(&policy.spec).map_err(|e| {
                    Error::node(&name, format!("params.policy {}: {e}", path.display()))
                })?;
                (Some(PolicyHandle::new(policy, p.seed)), sees)
            }
            None => (None, Sees::State),
        };
        let version = policy.as_ref().map_or(0, |h| h.version());
        let fk = ToolFk::new(
            &name,
            &p.urdf,
            &p.base_link,
            &p.tcp_link,
            &p.finger_joints,
            p.finger_max_m,
        )?;
        let latest = QueueConfig::latest_only();
        Ok(Self {
            fk,
            policy,
            sees,
            mode: if p.mode == "deterministic" {
                ActMode::Deterministic
            } else {
                ActMode::Stochastic
            },
            rng: rand::rngs::StdRng::seed_from_u64(p.seed ^ 0x7e57),
            joints: bus.subscribe("/joint_states", latest)?,
            object: bus.subscribe_quiet(&p.object_topic, latest)?,
            image: bus.subscribe_quiet(&p.image_topic, latest)?,
            phase: bus.subscribe_quiet("/rft/phase", latest)?,
            updates: bus.subscribe_quiet("/rft/policy", latest)?,
            teleop: bus.subscribe_quiet("/rft/teleop", latest)?,
            last_teleop: None,
            action_out: bus.publisher("/rft/action")?,
            transition_out: bus.publisher("/rft/transition")?,
            pending: None,
            last_phase: None,
            last_js: None,
            last_obj: None,
            last_img: None,
            last_tick: None,
            last_state_stamp: None,
            episode: None,
            step_in_episode: 0,
            stats: Arc::new(Mutex::new(RunnerStats {
                version,
                ..RunnerStats::default()
            })),
            name,
            p,
            period,
        })
    }

    /// The runner's counters and timings (shared; readable while it runs).
    pub fn stats(&self) -> Arc<Mutex<RunnerStats>> {
        self.stats.clone()
    }

    fn with_stats<R>(&self, f: impl FnOnce(&mut RunnerStats) -> R) -> R {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn swap_weights(&mut self) {
        let Some(u) = self.updates.try_recv() else {
            return;
        };
        if u.version <= self.version() {
            return;
        }
        let t = Instant::now();
        let ok =
            if !u.sha256.is_empty() && rft_policies::checkpoint::sha256_hex(&u.data) != u.sha256 {
                Err("sha256 does not match the bytes".to_string())
            } else {
                match &self.policy {
                    Some(h) => h.swap(&u.data).map_err(|e| e.to_string()),
                    // The first policy of a runner that started without one.
                    None => InferencePolicy::from_bytes(&u.data)
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            let s = sees(&p.spec)?;
                            let h = PolicyHandle::new(p, self.p.seed);
                            let v = h.version();
                            self.policy = Some(h);
                            self.sees = s;
                            Ok(v)
                        }),
                }
            };
        let us = t.elapsed().as_secs_f32() * 1e6;
        match ok {
            Ok(v) => self.with_stats(|s| {
                s.swaps += 1;
                s.version = v;
                s.swap_us.push(us);
            }),
            Err(e) => {
                let n = self.with_stats(|s| {
                    s.rejected_updates += 1;
                    s.rejected_updates
                });
                if n.is_power_of_two() {
                    tracing::warn!(node = %self.name, version = u.version, error = %e, rejected = n, "policy update rejected; acting on the current weights");
                }
            }
        }
    }

    /// The version of the acting policy (0: none yet).
    fn version(&self) -> u64 {
        self.policy.as_ref().map_or(0, |h| h.version())
    }

    fn publish_action(&self, stamp: Time, a: &[f32], tcp: &nalgebra::Isometry3<f64>) -> Result<()> {
        let t = self.p.action.twist(a, tcp);
        self.action_out.publish(Action {
            header: Header {
                stamp,
                frame_id: self.p.base_link.clone(),
            },
            policy_version: self.version(),
            twist: Twist {
                linear: V3 {
                    x: t[0],
                    y: t[1],
                    z: t[2],
                },
                angular: V3 {
                    x: t[3],
                    y: t[4],
                    z: t[5],
                },
            },
            gripper: self.p.action.gripper,
            intervention: false,
        })
    }
}

impl Node for PolicyRunner {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let tick = Instant::now();
        if let Some(prev) = self.last_tick.replace(tick) {
            let j = (tick - prev).as_secs_f32() - self.period.as_secs_f32();
            self.with_stats(|s| s.jitter_us.push(j * 1e6));
        }
        self.swap_weights();
        if let Some(ph) = self.phase.latest() {
            self.last_phase = Some((*ph).clone());
        }
        if let Some(t) = self.teleop.latest() {
            self.last_teleop = Some((t, ctx.now.as_nanos()));
        }
        let (task, episode, phase, phase_std) =
            self.last_phase.as_ref().map_or((0, 0, 0, 0.0), |p| {
                (p.task_id, p.episode_id, p.phase, p.explore_std)
            });
        // A fresh, synchronised observation.
        let t0 = Instant::now();
        let max_age = (self.p.max_obs_age_ms * 1e6) as i64;
        // `latest` takes the newest message off the queue: keep the last one of each.
        if let Some(m) = self.joints.latest() {
            self.last_js = Some(m);
        }
        if let Some(m) = self.object.latest() {
            self.last_obj = Some(m);
        }
        if let Some(m) = self.image.latest() {
            self.last_img = Some(m);
        }
        let now = ctx.now.as_nanos();
        let Some(js) = self.last_js.clone() else {
            self.with_stats(|s| s.stale_obs += 1);
            return Ok(());
        };
        let stamp = js.header.stamp;
        if self.last_state_stamp == Some(stamp) {
            // No new state since the last tick: nothing new to act on (and no frame to convert).
            self.with_stats(|s| s.stale_obs += 1);
            return Ok(());
        }
        let ts = stamp.as_nanos();
        // The other half of the observation: the object's pose, or the policy's camera.
        let other = match self.sees {
            Sees::State => self.last_obj.as_ref().map(|o| o.header.stamp.as_nanos()),
            Sees::Image { .. } => self.last_img.as_ref().map(|i| i.header.stamp.as_nanos()),
        };
        let fresh = other.is_some_and(|to| (ts - to).abs() <= max_age) && now - ts <= max_age;
        let tcp = if fresh { self.fk.tcp(&js) } else { None };
        let Some(tcp) = tcp else {
            self.with_stats(|s| s.stale_obs += 1);
            return Ok(());
        };
        let mut obs = Vec::with_capacity(STATE_OBS_DIM);
        let mut image = Vec::new();
        match (self.sees, &self.last_obj, &self.last_img) {
            (Sees::State, Some(obj), _) => {
                let mut o = [0.0f32; STATE_OBS_DIM];
                state_obs(&tcp, &iso(obj), self.fk.gripper_opening(&js), &mut o);
                obs.extend_from_slice(&o);
            }
            (Sees::Image { height, width }, _, Some(img)) => {
                if !chw(img, height, width, &mut image) {
                    let n = self.with_stats(|s| {
                        s.stale_obs += 1;
                        s.bad_images += 1;
                        s.bad_images
                    });
                    if n.is_power_of_two() {
                        tracing::warn!(node = %self.name, topic = %self.p.image_topic, encoding = %img.encoding, width = img.width, height = img.height, want = %format!("rgb8 {width}×{height}"), dropped = n, "camera frame does not fit the policy's encoder");
                    }
                    return Ok(());
                }
                let mut o = [0.0f32; PROPRIO_OBS_DIM];
                proprio_obs(&tcp, self.fk.gripper_opening(&js), &mut o);
                obs.extend_from_slice(&o);
            }
            _ => {
                self.with_stats(|s| s.stale_obs += 1);
                return Ok(());
            }
        }
        self.last_state_stamp = Some(stamp);
        if phase == PHASE_PAUSED_FOR_HUMAN || phase == PHASE_STOPPED {
            self.pending = None;
            self.publish_action(stamp, &[0.0; ACTION_DIM], &tcp)?;
            self.with_stats(|s| s.paused_ticks += 1);
            return Ok(());
        }
        if phase == PHASE_SWITCHING {
            if let Some(p) = self.pending.as_mut() {
                p.next.get_or_insert((obs, image, stamp));
            }
            self.with_stats(|s| s.switching_ticks += 1);
            return Ok(());
        }
        // The previous step's transition, now that its next observation is here.
        if let Some(prev) = self.pending.take() {
            let ended = prev.episode != episode;
            let success = ended
                && self
                    .last_phase
                    .as_ref()
                    .is_some_and(|p| matches!(p.reason.as_str(), "success" | "success_at_home"));
            let (next_obs, next_image, next_obs_stamp) = match prev.next {
                Some(n) => n,
                None => (obs.clone(), image.clone(), stamp),
            };
            self.transition_out.publish(Transition {
                header: Header {
                    stamp: prev.stamp,
                    frame_id: String::new(),
                },
                episode_id: prev.episode,
                task_id: prev.task,
                step: prev.step,
                obs: prev.obs,
                action: prev.action.to_vec(),
                next_obs,
                next_obs_stamp,
                done: success,
                truncated: ended && !success,
                intervention: prev.intervention,
                safety_override: false,
                policy_version: prev.version,
                image: prev.image,
                next_image,
            })?;
            self.with_stats(|s| s.transitions += 1);
        }
        if self.episode != Some(episode) {
            self.episode = Some(episode);
            self.step_in_episode = 0;
        }
        let mut a = [0.0f32; ACTION_DIM];
        // A person (or the scripted expert) in control: the step is theirs, in the policy's
        // action units, and the runner adds no command of its own.
        let teleop_ns = (self.p.teleop_timeout_ms * 1e6) as i64;
        let teleop = self
            .last_teleop
            .as_ref()
            .filter(|(_, at)| now - at <= teleop_ns)
            .map(|(t, _)| t.clone());
        let intervention = if let Some(t) = teleop {
            let lin = nalgebra::Vector3::new(t.twist.linear.x, t.twist.linear.y, t.twist.linear.z);
            if !(lin.iter().all(|x| x.is_finite()) && t.twist.angular.z.is_finite()) {
                // The safety filter stops on it; there is no step to record.
                self.pending = None;
                return Ok(());
            }
            a = self.p.action.action_of(&lin, t.twist.angular.z);
            self.with_stats(|s| s.teleop_steps += 1);
            true
        } else if let Some(policy) = &mut self.policy {
            let img = (!image.is_empty()).then_some(image.as_slice());
            let explore_std = if phase_std > 0.0 {
                phase_std
            } else {
                self.p.explore_std
            };
            if explore_std > 0.0 {
                use rand::Rng;
                policy
                    .act(&obs, task, img, ActMode::Deterministic, &mut a)
                    .map_err(|e| Error::node(&self.name, e))?;
                for x in &mut a {
                    let n: f64 = self.rng.sample(rand_distr::StandardNormal);
                    *x = (*x + (explore_std * n) as f32).clamp(-1.0, 1.0);
                }
            } else {
                policy
                    .act(&obs, task, img, self.mode, &mut a)
                    .map_err(|e| Error::node(&self.name, e))?;
            }
            self.publish_action(stamp, &a, &tcp)?;
            false
        } else {
            // No policy and nobody driving: nothing acts, nothing to record.
            return Ok(());
        };
        let step = self.step_in_episode;
        self.step_in_episode = self.step_in_episode.saturating_add(1);
        let us = t0.elapsed().as_secs_f32() * 1e6;
        self.pending = Some(Pending {
            obs,
            image,
            action: a,
            stamp,
            task,
            episode,
            step,
            version: self.version(),
            intervention,
            next: None,
        });
        let taken = self.with_stats(|s| {
            s.actions += 1;
            s.obs_to_action_us.push(us);
            s.actions
        });
        if self.p.max_steps > 0 && taken == self.p.max_steps {
            tracing::info!(node = %self.name, steps = taken, "step budget reached");
            ctx.request_shutdown("the policy runner's step budget (max_steps) is reached");
        }
        Ok(())
    }
}

impl NodeKind for PolicyRunnerParams {
    const KIND: &'static str = "policy_runner";
    // The control rate.
    const DEFAULT_RATE_HZ: f64 = 10.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        let mut v = vec![&mut self.urdf];
        v.extend(self.policy.as_mut());
        v
    }

    fn validate(&self) -> rft_config::Result<()> {
        PolicyRunnerParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(PolicyRunner::new(
            name,
            self.clone(),
            period,
            bus,
        )?))
    }
}
