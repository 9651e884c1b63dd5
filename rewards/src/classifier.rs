//! The success-classifier interface: frames and a task description in, a probability of
//! success out. The threshold τ is calibrated per model; callers debounce with
//! [`Debouncer`] ("k consecutive frames above τ").

use crate::error::{Error, Result};

/// One rgb8 image, row-major, `height × width × 3` bytes (`sensor_msgs/Image` `rgb8`).
#[derive(Debug, Clone, Copy)]
pub struct ImageRef<'a> {
    pub width: u32,
    pub height: u32,
    pub rgb: &'a [u8],
}

impl<'a> ImageRef<'a> {
    /// Checks the byte count against the size.
    pub fn new(width: u32, height: u32, rgb: &'a [u8]) -> Result<Self> {
        let want = width as usize * height as usize * 3;
        if rgb.len() != want || width == 0 || height == 0 {
            return Err(Error::Frame(format!(
                "{width}x{height} rgb8 needs {want} bytes, got {}",
                rgb.len()
            )));
        }
        Ok(Self { width, height, rgb })
    }

    /// The pixel at (x, y), clamped to the image.
    #[inline]
    pub fn pixel(&self, x: i64, y: i64) -> [u8; 3] {
        let x = x.clamp(0, i64::from(self.width) - 1) as usize;
        let y = y.clamp(0, i64::from(self.height) - 1) as usize;
        let i = (y * self.width as usize + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// A model that says whether a task is complete in a camera frame.
pub trait SuccessClassifier: Send {
    /// Probability of success for each frame, in `[0, 1]`.
    fn predict(&mut self, frames: &[ImageRef<'_>], task: &str) -> Result<Vec<f32>>;
    /// The calibrated decision threshold τ.
    fn threshold(&self) -> f32;
    /// A short name for logs and the `source` field of `/rft/reward`.
    fn name(&self) -> String;
}

/// Turns per-frame probabilities into a debounced success: `k` consecutive frames above τ.
#[derive(Debug, Clone)]
pub struct Debouncer {
    pub threshold: f32,
    pub consecutive: u32,
    run: u32,
}

impl Debouncer {
    pub fn new(threshold: f32, consecutive: u32) -> Self {
        Self {
            threshold,
            consecutive: consecutive.max(1),
            run: 0,
        }
    }

    /// Feeds one probability; true once `consecutive` frames in a row were above τ.
    pub fn push(&mut self, p: f32) -> bool {
        if p > self.threshold {
            self.run = self.run.saturating_add(1);
        } else {
            self.run = 0;
        }
        self.run >= self.consecutive
    }

    /// A missing frame (classifier unavailable) breaks the run: success is never inferred
    /// across a gap.
    pub fn gap(&mut self) {
        self.run = 0;
    }

    pub fn reset(&mut self) {
        self.run = 0;
    }
}
