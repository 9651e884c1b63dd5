//! The replay buffer: preallocated, contiguous, uniform sampling, optional n-step returns,
//! intervention and safety-override flags, u8 image storage, save/load as safetensors.

use std::collections::HashMap;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nets::EncoderConfig;
use crate::normalize::ObsNorm;
use crate::store::{RawTensor, read_tensors, write_tensors};

/// One transition as the learner receives it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransitionIn<'a> {
    pub obs: &'a [f32],
    pub action: &'a [f32],
    pub reward: f32,
    pub next_obs: &'a [f32],
    /// A true terminal state (no bootstrapping).
    pub terminated: bool,
    /// The episode ended here (terminal or cut): n-step sums stop.
    pub episode_end: bool,
    pub task_id: u8,
    pub intervention: bool,
    pub safety_override: bool,
    /// The Monte-Carlo return from this step (Cal-QL); `-inf` when unknown.
    pub mc_return: f32,
    pub image: Option<&'a [u8]>,
    pub next_image: Option<&'a [u8]>,
}

pub const FLAG_INTERVENTION: u8 = 1;
pub const FLAG_SAFETY_OVERRIDE: u8 = 2;
pub const FLAG_TERMINATED: u8 = 4;
const FLAG_EPISODE_END: u8 = 8;

/// A sampled minibatch, host side, ready for the agent. `obs`/`next_obs` are already
/// normalised and carry the task one-hot.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub size: usize,
    pub obs: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub act: Vec<f32>,
    pub reward: Vec<f32>,
    /// γᵏ·(1 − terminal) for the k steps summed into `reward`.
    pub discount: Vec<f32>,
    pub mc_return: Vec<f32>,
    pub images: Vec<u8>,
    pub next_images: Vec<u8>,
    pub flags: Vec<u8>,
    /// Leading rows drawn from the demonstrations (RLPD mixing); the behaviour-cloning term
    /// uses only these. 0: every row is a demonstration (offline training).
    pub demo_rows: usize,
}

/// How a buffer turns stored transitions into network inputs.
#[derive(Clone, Debug)]
pub struct SampleSpec {
    pub norm: ObsNorm,
    pub num_tasks: usize,
    pub gamma: f32,
    pub n_step: usize,
    /// Random-shift augmentation of images by up to this many pixels.
    pub crop_pad: usize,
}

/// Fixed-capacity ring buffer of transitions.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    pub capacity: usize,
    pub obs_dim: usize,
    pub act_dim: usize,
    pub image: Option<ImageShape>,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    act: Vec<f32>,
    reward: Vec<f32>,
    mc_return: Vec<f32>,
    task: Vec<u8>,
    flags: Vec<u8>,
    images: Vec<u8>,
    next_images: Vec<u8>,
    len: usize,
    head: usize,
    /// Transitions ever added (including overwritten ones).
    pub total_added: u64,
}

/// Shape of stored images (channel-first u8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&EncoderConfig> for ImageShape {
    fn from(e: &EncoderConfig) -> Self {
        ImageShape {
            channels: e.channels,
            height: e.height,
            width: e.width,
        }
    }
}

impl ReplayBuffer {
    /// Allocates all storage up front.
    pub fn new(capacity: usize, obs_dim: usize, act_dim: usize, image: Option<ImageShape>) -> Self {
        let il = image.map_or(0, |i| i.len());
        ReplayBuffer {
            capacity,
            obs_dim,
            act_dim,
            image,
            obs: vec![0.0; capacity * obs_dim],
            next_obs: vec![0.0; capacity * obs_dim],
            act: vec![0.0; capacity * act_dim],
            reward: vec![0.0; capacity],
            mc_return: vec![f32::NEG_INFINITY; capacity],
            task: vec![0; capacity],
            flags: vec![0; capacity],
            images: vec![0; capacity * il],
            next_images: vec![0; capacity * il],
            len: 0,
            head: 0,
            total_added: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a transition, overwriting the oldest when full. Sizes are checked.
    pub fn push(&mut self, t: &TransitionIn) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::Config("replay buffer capacity is 0".into()));
        }
        if t.obs.len() != self.obs_dim || t.next_obs.len() != self.obs_dim {
            return Err(Error::Spec(format!(
                "transition observation has {} / {} values, buffer expects {}",
                t.obs.len(),
                t.next_obs.len(),
                self.obs_dim
            )));
        }
        if t.action.len() != self.act_dim {
            return Err(Error::Spec(format!(
                "transition action has {} values, buffer expects {}",
                t.action.len(),
                self.act_dim
            )));
        }
        let i = self.head;
        if let Some(shape) = self.image {
            let n = shape.len();
            match (t.image, t.next_image) {
                (Some(a), Some(b)) if a.len() == n && b.len() == n => {
                    self.images[i * n..(i + 1) * n].copy_from_slice(a);
                    self.next_images[i * n..(i + 1) * n].copy_from_slice(b);
                }
                _ => {
                    return Err(Error::Spec(format!(
                        "transition needs two images of {n} bytes ({}x{}x{})",
                        shape.channels, shape.height, shape.width
                    )));
                }
            }
        }
        let (od, ad) = (self.obs_dim, self.act_dim);
        self.obs[i * od..(i + 1) * od].copy_from_slice(t.obs);
        self.next_obs[i * od..(i + 1) * od].copy_from_slice(t.next_obs);
        self.act[i * ad..(i + 1) * ad].copy_from_slice(t.action);
        self.reward[i] = t.reward;
        self.mc_return[i] = t.mc_return;
        self.task[i] = t.task_id;
        self.flags[i] = (t.intervention as u8 * FLAG_INTERVENTION)
            | (t.safety_override as u8 * FLAG_SAFETY_OVERRIDE)
            | (t.terminated as u8 * FLAG_TERMINATED)
            | ((t.episode_end || t.terminated) as u8 * FLAG_EPISODE_END);
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        self.total_added += 1;
        Ok(())
    }

    /// Appends stored transitions `from..to` (0 = oldest) to `dst`, flags, Monte-Carlo returns
    /// and images included: demos copied into a larger buffer, or an online episode promoted
    /// into the demo buffer.
    pub fn copy_into(&self, from: usize, to: usize, dst: &mut ReplayBuffer) -> Result<()> {
        if from > to || to > self.len {
            return Err(Error::Spec(format!(
                "rows {from}..{to} of a buffer holding {}",
                self.len
            )));
        }
        let (od, ad) = (self.obs_dim, self.act_dim);
        let il = self.image.map_or(0, |i| i.len());
        for i in from..to {
            let s = self.slot(i);
            let f = self.flags[s];
            dst.push(&TransitionIn {
                obs: &self.obs[s * od..(s + 1) * od],
                action: &self.act[s * ad..(s + 1) * ad],
                reward: self.reward[s],
                next_obs: &self.next_obs[s * od..(s + 1) * od],
                terminated: f & FLAG_TERMINATED != 0,
                episode_end: f & FLAG_EPISODE_END != 0,
                task_id: self.task[s],
                intervention: f & FLAG_INTERVENTION != 0,
                safety_override: f & FLAG_SAFETY_OVERRIDE != 0,
                mc_return: self.mc_return[s],
                image: self.image.map(|_| &self.images[s * il..(s + 1) * il]),
                next_image: self.image.map(|_| &self.next_images[s * il..(s + 1) * il]),
            })?;
        }
        Ok(())
    }

    /// Number of stored transitions flagged as interventions.
    pub fn interventions(&self) -> usize {
        self.flags[..self.len]
            .iter()
            .filter(|f| *f & FLAG_INTERVENTION != 0)
            .count()
    }

    /// Flags of stored transition `i` (0 = oldest).
    pub fn flags(&self, i: usize) -> u8 {
        self.flags[self.slot(i)]
    }

    /// Reward and task id of stored transition `i` (0 = oldest).
    pub fn reward_and_task(&self, i: usize) -> (f32, u8) {
        let s = self.slot(i);
        (self.reward[s], self.task[s])
    }

    /// The image and next image of stored transition `i` (0 = oldest), when the buffer holds
    /// images.
    pub fn images_of(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let n = self.image?.len();
        let s = self.slot(i);
        Some((
            self.images.get(s * n..(s + 1) * n)?,
            self.next_images.get(s * n..(s + 1) * n)?,
        ))
    }

    fn slot(&self, i: usize) -> usize {
        if self.len < self.capacity {
            i
        } else {
            (self.head + i) % self.capacity
        }
    }

    /// The observations stored, oldest first (for normalisation statistics).
    pub fn observations(&self) -> impl Iterator<Item = &[f32]> {
        (0..self.len).map(move |i| {
            let s = self.slot(i);
            &self.obs[s * self.obs_dim..(s + 1) * self.obs_dim]
        })
    }

    /// Fills `out` with `n` transitions drawn uniformly (appending when `out` already holds
    /// some: mixed batches are built by sampling two buffers into one batch).
    pub fn sample_into(
        &self,
        rng: &mut impl Rng,
        n: usize,
        spec: &SampleSpec,
        out: &mut Batch,
    ) -> Result<()> {
        if self.len == 0 {
            return Err(Error::Config("cannot sample an empty replay buffer".into()));
        }
        for _ in 0..n {
            let i = rng.random_range(0..self.len);
            self.write_sample(i, rng, spec, out);
        }
        out.size += n;
        Ok(())
    }

    fn write_sample(&self, i: usize, rng: &mut impl Rng, spec: &SampleSpec, out: &mut Batch) {
        let (od, ad) = (self.obs_dim, self.act_dim);
        let s0 = self.slot(i);
        // n-step: sum rewards until the episode ends or the newest transition is reached.
        let mut ret = 0.0f32;
        let mut disc = 1.0f32;
        let mut last = s0;
        for k in 0..spec.n_step.max(1) {
            if i + k >= self.len {
                break;
            }
            let s = self.slot(i + k);
            ret += disc * self.reward[s];
            disc *= spec.gamma;
            last = s;
            if self.flags[s] & FLAG_TERMINATED != 0 {
                disc = 0.0;
                break;
            }
            if self.flags[s] & FLAG_EPISODE_END != 0 {
                break;
            }
        }
        push_obs(
            &self.obs[s0 * od..(s0 + 1) * od],
            self.task[s0],
            spec,
            &mut out.obs,
        );
        push_obs(
            &self.next_obs[last * od..(last + 1) * od],
            self.task[s0],
            spec,
            &mut out.next_obs,
        );
        out.act.extend_from_slice(&self.act[s0 * ad..(s0 + 1) * ad]);
        out.reward.push(ret);
        out.discount.push(disc);
        out.mc_return.push(self.mc_return[s0]);
        out.flags.push(self.flags[s0]);
        if let Some(shape) = self.image {
            let n = shape.len();
            let (dx, dy) = if spec.crop_pad > 0 {
                let p = spec.crop_pad as i32;
                (rng.random_range(-p..=p), rng.random_range(-p..=p))
            } else {
                (0, 0)
            };
            shift_image(
                &self.images[s0 * n..(s0 + 1) * n],
                shape,
                dx,
                dy,
                &mut out.images,
            );
            shift_image(
                &self.next_images[last * n..(last + 1) * n],
                shape,
                dx,
                dy,
                &mut out.next_images,
            );
        }
    }

    /// Saves the stored transitions (not the free capacity) as one safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let order: Vec<usize> = (0..self.len).map(|i| self.slot(i)).collect();
        let gather_f = |v: &[f32], w: usize| -> Vec<f32> {
            order
                .iter()
                .flat_map(|&s| v[s * w..(s + 1) * w].iter().copied())
                .collect()
        };
        let gather_u = |v: &[u8], w: usize| -> Vec<u8> {
            order
                .iter()
                .flat_map(|&s| v[s * w..(s + 1) * w].iter().copied())
                .collect()
        };
        let n = self.len;
        let il = self.image.map_or(0, |s| s.len());
        let meta = BufferMeta {
            capacity: self.capacity,
            obs_dim: self.obs_dim,
            act_dim: self.act_dim,
            image: self.image,
            len: n,
            total_added: self.total_added,
        };
        let mut tensors = vec![
            (
                "obs",
                RawTensor::f32(gather_f(&self.obs, self.obs_dim), &[n, self.obs_dim]),
            ),
            (
                "next_obs",
                RawTensor::f32(gather_f(&self.next_obs, self.obs_dim), &[n, self.obs_dim]),
            ),
            (
                "act",
                RawTensor::f32(gather_f(&self.act, self.act_dim), &[n, self.act_dim]),
            ),
            ("reward", RawTensor::f32(gather_f(&self.reward, 1), &[n])),
            (
                "mc_return",
                RawTensor::f32(gather_f(&self.mc_return, 1), &[n]),
            ),
            ("task", RawTensor::u8(gather_u(&self.task, 1), &[n])),
            ("flags", RawTensor::u8(gather_u(&self.flags, 1), &[n])),
        ];
        if il > 0 {
            tensors.push((
                "images",
                RawTensor::u8(gather_u(&self.images, il), &[n, il]),
            ));
            tensors.push((
                "next_images",
                RawTensor::u8(gather_u(&self.next_images, il), &[n, il]),
            ));
        }
        let mut md = HashMap::new();
        md.insert(
            "replay_buffer".to_string(),
            serde_json::to_string(&meta).map_err(|e| Error::Spec(e.to_string()))?,
        );
        write_tensors(path, tensors, md)
    }

    /// Loads a buffer written by [`ReplayBuffer::save`]; the stored shapes must match.
    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, md) = read_tensors(path)?;
        let meta: BufferMeta = md
            .get("replay_buffer")
            .ok_or_else(|| Error::ckpt(path, "not a replay buffer (no metadata)"))
            .and_then(|s| {
                serde_json::from_str(s)
                    .map_err(|e| Error::ckpt(path, format!("bad replay metadata: {e}")))
            })?;
        let mut b = ReplayBuffer::new(meta.capacity, meta.obs_dim, meta.act_dim, meta.image);
        let n = meta.len;
        if n > meta.capacity {
            return Err(Error::ckpt(path, "more transitions than capacity"));
        }
        let get = |name: &str, want: usize| -> Result<&RawTensor> {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::ckpt(path, format!("missing array {name:?}")))?;
            if t.elements() != want {
                return Err(Error::ckpt(
                    path,
                    format!(
                        "array {name:?} has {} values, expected {want}",
                        t.elements()
                    ),
                ));
            }
            Ok(t)
        };
        let il = meta.image.map_or(0, |s| s.len());
        get("obs", n * meta.obs_dim)?.copy_f32(&mut b.obs[..n * meta.obs_dim])?;
        get("next_obs", n * meta.obs_dim)?.copy_f32(&mut b.next_obs[..n * meta.obs_dim])?;
        get("act", n * meta.act_dim)?.copy_f32(&mut b.act[..n * meta.act_dim])?;
        get("reward", n)?.copy_f32(&mut b.reward[..n])?;
        get("mc_return", n)?.copy_f32(&mut b.mc_return[..n])?;
        get("task", n)?.copy_u8(&mut b.task[..n])?;
        get("flags", n)?.copy_u8(&mut b.flags[..n])?;
        if il > 0 {
            get("images", n * il)?.copy_u8(&mut b.images[..n * il])?;
            get("next_images", n * il)?.copy_u8(&mut b.next_images[..n * il])?;
        }
        b.len = n;
        b.head = n % meta.capacity.max(1);
        b.total_added = meta.total_added;
        Ok(b)
    }
}

#[derive(Serialize, Deserialize)]
struct BufferMeta {
    capacity: usize,
    obs_dim: usize,
    act_dim: usize,
    image: Option<ImageShape>,
    len: usize,
    total_added: u64,
}

/// Appends a normalised observation and the task one-hot.
pub fn push_obs(obs: &[f32], task: u8, spec: &SampleSpec, out: &mut Vec<f32>) {
    let start = out.len();
    out.extend_from_slice(obs);
    spec.norm.apply(&mut out[start..]);
    if spec.num_tasks > 1 {
        out.extend((0..spec.num_tasks).map(|k| if k == task as usize { 1.0 } else { 0.0 }));
    }
}

/// Copies an image shifted by `(dx, dy)` pixels, repeating edge pixels (DrQ's random shift:
/// replicate-pad, then crop back to size).
fn shift_image(src: &[u8], s: ImageShape, dx: i32, dy: i32, out: &mut Vec<u8>) {
    if dx == 0 && dy == 0 {
        out.extend_from_slice(src);
        return;
    }
    let (h, w) = (s.height as i32, s.width as i32);
    for c in 0..s.channels {
        let plane = &src[c * s.height * s.width..(c + 1) * s.height * s.width];
        for y in 0..h {
            let sy = (y + dy).clamp(0, h - 1) as usize;
            let row = &plane[sy * s.width..(sy + 1) * s.width];
            out.extend((0..w).map(|x| row[(x + dx).clamp(0, w - 1) as usize]));
        }
    }
}

impl Batch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.size = 0;
        self.obs.clear();
        self.next_obs.clear();
        self.act.clear();
        self.reward.clear();
        self.discount.clear();
        self.mc_return.clear();
        self.images.clear();
        self.next_images.clear();
        self.flags.clear();
        self.demo_rows = 0;
    }
}
