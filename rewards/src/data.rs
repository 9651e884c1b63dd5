//! Labelled frames: camera images with a success label and the episode they come from, saved
//! as one safetensors file (`rgb` u8 `[N, H, W, 3]`, `label` u8 `[N]`, `episode` f32 `[N]`,
//! metadata `task`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rft_policies::store::{RawTensor, read_tensors, write_tensors};

use crate::classifier::ImageRef;
use crate::error::{Error, Result};

/// Frames of one task with their success labels.
#[derive(Debug, Clone, Default)]
pub struct LabelledFrames {
    pub width: u32,
    pub height: u32,
    /// `len × height × width × 3` rgb8.
    pub rgb: Vec<u8>,
    pub label: Vec<bool>,
    /// Which episode each frame comes from: splits never cut an episode in two.
    pub episode: Vec<u32>,
    /// The task the labels are for, e.g. "push/forward".
    pub task: String,
}

impl LabelledFrames {
    pub fn new(width: u32, height: u32, task: impl Into<String>) -> Self {
        Self {
            width,
            height,
            task: task.into(),
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.label.len()
    }
    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }
    pub fn positives(&self) -> usize {
        self.label.iter().filter(|l| **l).count()
    }

    pub fn push(&mut self, rgb: &[u8], label: bool, episode: u32) -> Result<()> {
        if rgb.len() != self.frame_len() {
            return Err(Error::Data(format!(
                "frame of {} bytes does not fit {}x{} rgb8",
                rgb.len(),
                self.width,
                self.height
            )));
        }
        self.rgb.extend_from_slice(rgb);
        self.label.push(label);
        self.episode.push(episode);
        Ok(())
    }

    pub fn image(&self, i: usize) -> ImageRef<'_> {
        let n = self.frame_len();
        ImageRef {
            width: self.width,
            height: self.height,
            rgb: &self.rgb[i * n..(i + 1) * n],
        }
    }

    /// The distinct episodes, in order.
    pub fn episodes(&self) -> Vec<u32> {
        self.episode
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The frames whose episode `keep` accepts.
    pub fn filter_episodes(&self, keep: impl Fn(u32) -> bool) -> Self {
        let mut out = Self::new(self.width, self.height, self.task.clone());
        let n = self.frame_len();
        for i in 0..self.len() {
            if keep(self.episode[i]) {
                out.rgb.extend_from_slice(&self.rgb[i * n..(i + 1) * n]);
                out.label.push(self.label[i]);
                out.episode.push(self.episode[i]);
            }
        }
        out
    }

    /// Splits by episode: every `1/fraction`-th episode (spread evenly) goes to the second part.
    pub fn split_episodes(&self, fraction: f64) -> (Self, Self) {
        let eps = self.episodes();
        let k = (eps.len() as f64 * fraction).round().max(1.0) as usize;
        let held: BTreeSet<u32> = (0..k)
            .map(|j| eps[(j * eps.len()) / k + eps.len() / (2 * k)])
            .collect();
        (
            self.filter_episodes(|e| !held.contains(&e)),
            self.filter_episodes(|e| held.contains(&e)),
        )
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let tensors = vec![
            (
                "rgb".to_string(),
                RawTensor::u8(
                    self.rgb.clone(),
                    &[n, self.height as usize, self.width as usize, 3],
                ),
            ),
            (
                "label".to_string(),
                RawTensor::u8(self.label.iter().map(|&l| u8::from(l)).collect(), &[n]),
            ),
            (
                "episode".to_string(),
                RawTensor::f32(self.episode.iter().map(|&e| e as f32).collect(), &[n]),
            ),
        ];
        let meta = HashMap::from([
            ("format".to_string(), "rft.labelled_frames.v1".to_string()),
            ("task".to_string(), self.task.clone()),
        ]);
        Ok(write_tensors(path, tensors, meta)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (t, meta) = read_tensors(path)?;
        let bad = |why: String| Error::model(path, why);
        let get = |name: &str| {
            t.get(name)
                .ok_or_else(|| bad(format!("no `{name}` tensor; not a labelled-frames file")))
        };
        let rgb = get("rgb")?;
        let [n, h, w, 3] = rgb.shape[..] else {
            return Err(bad(format!(
                "`rgb` has shape {:?}; expected [N, H, W, 3]",
                rgb.shape
            )));
        };
        let mut out = Self::new(
            w as u32,
            h as u32,
            meta.get("task").cloned().unwrap_or_default(),
        );
        out.rgb = vec![0; n * h * w * 3];
        rgb.copy_u8(&mut out.rgb)?;
        let label = get("label")?;
        let mut l = vec![0u8; n];
        if label.shape != [n] {
            return Err(bad(format!(
                "`label` has shape {:?}; expected [{n}]",
                label.shape
            )));
        }
        label.copy_u8(&mut l)?;
        out.label = l.into_iter().map(|v| v != 0).collect();
        let ep = get("episode")?.to_f32_vec()?;
        if ep.len() != n {
            return Err(bad(format!(
                "`episode` has {} values; expected {n}",
                ep.len()
            )));
        }
        out.episode = ep.into_iter().map(|e| e as u32).collect();
        Ok(out)
    }
}
