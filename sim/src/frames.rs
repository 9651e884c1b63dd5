//! Labelled camera frames from scripted demos, for training and checking success classifiers.
//!
//! Each episode is one of three kinds: a successful demo (the direction's expert, then a hold
//! after it finishes), a near miss (the expert aims just outside the goal region, so the cube
//! comes to rest beside it) or a partial attempt (the expert stops part of the way). Every frame
//! carries the ground-truth success of that instant, the task progress and the tool and cube
//! positions, so the same data also checks dense rewards.

use nalgebra::{Vector2, Vector3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::expert::{
    Expert, ExpertObs, HOME_CLEAR_Z, PhasedPushExpert, TwistController, expert_for, homing_velocity,
};
use crate::render::{Camera, Frame, Renderer};
use crate::task::{Direction, TaskKind};
use crate::world::{Sim, SimConfig};

/// How a demo episode is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoKind {
    Success,
    /// The cube comes to rest just outside the goal region (push only).
    NearMiss,
    /// The expert stops part of the way, leaving the cube between the regions.
    Partial,
}

/// What [`demo_frames`] records.
#[derive(Debug, Clone)]
pub struct DemoFramesConfig {
    pub task: TaskKind,
    pub dir: Direction,
    pub episodes: usize,
    /// Seed of the first episode; episode `i` uses `seed + i`.
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// Camera frames per simulated second.
    pub frame_hz: f64,
    /// How long the scene is recorded after the expert has finished or stopped.
    pub hold_s: f64,
    /// Longest episode, simulated seconds.
    pub max_s: f64,
    /// Share of episodes that are failures: two near misses for each partial attempt (push);
    /// partial attempts only for tasks without near misses.
    pub failure_fraction: f64,
    /// After the expert finishes, the tool wanders to random points over the table (low ones
    /// included) instead of lifting and holding still, so the classifier sees the scene with
    /// the arm anywhere, as a learning policy leaves it. Labels stay ground truth per frame.
    pub wander: bool,
    /// Successful push demos aim at a random point up to this far (per axis, metres) from the
    /// goal region's centre instead of the centre itself, so the classifier also sees the
    /// cube resting near the region's edges, where a learning policy leaves it.
    pub goal_jitter_m: f64,
    /// After the hold, the tool goes home (straight up to 15 cm, across, down to where the
    /// episode's reset put it) and the scene is recorded this long once it is there (0: no
    /// homing): the reset-free loop takes a second look with the arm home, and without these
    /// frames the classifier has only seen the arm home at the start of a demo, where the
    /// answer is always "no".
    pub home_s: f64,
}

impl DemoFramesConfig {
    pub fn new(task: TaskKind, dir: Direction, episodes: usize, seed: u64) -> Self {
        Self {
            task,
            dir,
            episodes,
            seed,
            width: 128,
            height: 128,
            frame_hz: 5.0,
            hold_s: 3.0,
            max_s: 20.0,
            failure_fraction: 1.0 / 3.0,
            wander: false,
            goal_jitter_m: 0.0,
            home_s: 0.0,
        }
    }

    /// The kind of episode `i`: failures spread evenly among the successes.
    pub fn kind(&self, i: usize) -> DemoKind {
        let f = self.failure_fraction.clamp(0.0, 1.0);
        let failures_before = |k: usize| (k as f64 * f).floor() as usize;
        if failures_before(i + 1) > failures_before(i) {
            if failures_before(i) % 3 != 2 && self.task == TaskKind::Push {
                DemoKind::NearMiss
            } else {
                DemoKind::Partial
            }
        } else {
            DemoKind::Success
        }
    }
}

/// Frames and their ground truth, frame-major.
#[derive(Debug, Clone, Default)]
pub struct DemoFrames {
    pub width: u32,
    pub height: u32,
    /// `len × height × width × 3` rgb8.
    pub rgb: Vec<u8>,
    /// Ground-truth success at each frame.
    pub success: Vec<bool>,
    /// Ground-truth progress (0 at the start region, 1 at the goal).
    pub progress: Vec<f32>,
    /// Episode index of each frame.
    pub episode: Vec<u32>,
    /// Tool-centre point and cube centre (world, metres) at each frame.
    pub tcp: Vec<[f32; 3]>,
    pub cube: Vec<[f32; 3]>,
    /// Kind of each episode.
    pub kinds: Vec<DemoKind>,
    /// The camera the frames were rendered with.
    pub camera: Option<Camera>,
}

impl DemoFrames {
    pub fn len(&self) -> usize {
        self.success.len()
    }
    pub fn is_empty(&self) -> bool {
        self.success.is_empty()
    }
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }
    /// The rgb8 bytes of frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.frame_len();
        &self.rgb[i * n..(i + 1) * n]
    }
}

/// Runs the scripted demos of `cfg` on a fresh simulator and renders the scene camera.
/// `progress` is called after each episode with (done, total).
pub fn demo_frames(
    cfg: &DemoFramesConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<DemoFrames> {
    if !(cfg.home_s.is_finite() && cfg.home_s >= 0.0) {
        return Err(Error::Config {
            key: "home_s".into(),
            reason: format!("{} must be ≥ 0", cfg.home_s),
        });
    }
    if !(cfg.frame_hz > 0.0 && cfg.frame_hz <= 100.0) {
        return Err(Error::Config {
            key: "frame_hz".into(),
            reason: format!("{} is outside (0, 100]", cfg.frame_hz),
        });
    }
    let mut sim = Sim::new(SimConfig {
        task: cfg.task,
        seed: cfg.seed,
        ..SimConfig::default()
    })?;
    let cam = Camera::scene(cfg.width, cfg.height);
    let mut renderer = Renderer::new();
    let (mut frame, mut vis) = (Frame::default(), Vec::new());
    let mut out = DemoFrames {
        width: cfg.width,
        height: cfg.height,
        camera: Some(cam),
        ..DemoFrames::default()
    };
    const POLICY_HZ: f64 = 20.0;
    const CONTROL_HZ: f64 = 100.0;
    let control_steps = ((1.0 / CONTROL_HZ) / sim.physics_dt()).round().max(1.0) as u64;
    let per_action = (CONTROL_HZ / POLICY_HZ).round() as u64;
    let frame_every = (CONTROL_HZ / cfg.frame_hz).round().max(1.0) as u64;
    for i in 0..cfg.episodes {
        let seed = cfg.seed + i as u64;
        let kind = cfg.kind(i);
        sim.reset_for(seed, cfg.dir);
        let home = sim.tcp_pose().translation.vector;
        // When the tool started for home, and when it got there.
        let (mut homing, mut at_home): (Option<f64>, Option<f64>) = (None, None);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f4a3);
        let (from, to) = cfg.task.regions(cfg.dir);
        let mut expert: Box<dyn Expert> = match kind {
            DemoKind::NearMiss => {
                // Aim short of the region or beside it, 8-10 cm from its centre: the cube's
                // centre rests 3-5 cm outside.
                let u = (to.center - from.center).normalize();
                let side = Vector2::new(-u.y, u.x);
                let off = rng.random_range(0.08..0.10);
                let goal = match rng.random_range(0..3) {
                    0 => to.center - u * off,
                    1 => to.center + side * off,
                    _ => to.center - side * off,
                };
                Box::new(PhasedPushExpert::new(cfg.task, cfg.dir).with_goal(goal))
            }
            _ if cfg.task == TaskKind::Push => {
                let j = cfg.goal_jitter_m.abs();
                let mut e = PhasedPushExpert::new(cfg.task, cfg.dir);
                if kind == DemoKind::Success && j > 0.0 {
                    e = e.with_goal(
                        to.center
                            + Vector2::new(rng.random_range(-j..=j), rng.random_range(-j..=j)),
                    );
                }
                Box::new(e)
            }
            _ => expert_for(cfg.task, cfg.dir),
        };
        let stop_at_progress = (kind == DemoKind::Partial).then(|| rng.random_range(0.15..0.7));
        let mut ctrl = TwistController::for_sim(&sim)?;
        let t0 = sim.time_s();
        let mut finished_at: Option<f64> = None;
        let mut wander_to: Option<Vector3<f64>> = None;
        let mut action = expert.act(&ExpertObs::from_sim(&sim));
        let mut k = 0u64;
        loop {
            let t = sim.time_s() - t0;
            if let Some(f) = finished_at {
                if t - f >= cfg.hold_s {
                    if cfg.home_s <= 0.0 {
                        break;
                    }
                    let since = *homing.get_or_insert(t);
                    let p = sim.tcp_pose().translation.vector;
                    if at_home.is_none() && (p - home).norm() < 0.02 {
                        at_home = Some(t);
                    }
                    // Give up on a tool that cannot get home (never seen; a bound, not a wait).
                    if at_home.is_some_and(|a| t - a >= cfg.home_s) || t - since > 10.0 {
                        break;
                    }
                }
            } else if t >= cfg.max_s {
                break;
            }
            let status = sim.task_status(cfg.dir);
            if k.is_multiple_of(frame_every) {
                sim.visuals(&mut vis);
                renderer.render(&vis, &cam, &mut frame);
                out.rgb.extend_from_slice(&frame.rgb);
                out.success.push(status.success);
                out.progress.push(status.progress as f32);
                out.episode.push(i as u32);
                let p = sim.tcp_pose().translation.vector;
                let c = sim.object_pose().translation.vector;
                out.tcp.push(to_f32(&p));
                out.cube.push(to_f32(&c));
            }
            let stopped = stop_at_progress.is_some_and(|s| status.progress >= s);
            if finished_at.is_none() && (stopped || (expert.done() && kind != DemoKind::Partial)) {
                finished_at = Some(t);
            }
            if k.is_multiple_of(per_action) {
                action = expert.act(&ExpertObs::from_sim(&sim));
            }
            k += 1;
            let twist = if homing.is_some() {
                let p = sim.tcp_pose().translation.vector;
                let v = homing_velocity(&p, &home, HOME_CLEAR_Z, 0.2);
                nalgebra::Vector6::new(v.x, v.y, v.z, 0.0, 0.0, 0.0)
            } else if let (true, Some(_)) = (cfg.wander, finished_at) {
                // A new random target every second; go there at up to 0.15 m/s.
                if k.is_multiple_of(CONTROL_HZ as u64) || wander_to.is_none() {
                    wander_to = Some(Vector3::new(
                        rng.random_range(0.3..0.7),
                        rng.random_range(-0.3..0.3),
                        rng.random_range(0.03..0.25),
                    ));
                }
                let p = sim.tcp_pose().translation.vector;
                let mut v = (wander_to.unwrap_or(p) - p) * 3.0;
                if v.norm() > 0.15 {
                    v *= 0.15 / v.norm();
                }
                nalgebra::Vector6::new(v.x, v.y, v.z, 0.0, 0.0, 0.0)
            } else if stopped || (kind == DemoKind::Partial && finished_at.is_some()) {
                nalgebra::Vector6::zeros()
            } else {
                action.twist()
            };
            let qd = ctrl.joint_velocity(sim.q(), &twist);
            // Both are well formed by construction.
            let _ = sim.set_joint_velocity(qd);
            let _ = sim.set_gripper(action.gripper);
            for _ in 0..control_steps {
                sim.step();
            }
        }
        out.kinds.push(kind);
        progress(i + 1, cfg.episodes);
    }
    Ok(out)
}

fn to_f32(v: &Vector3<f64>) -> [f32; 3] {
    [v.x as f32, v.y as f32, v.z as f32]
}
