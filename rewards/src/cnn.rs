//! A small CNN success classifier trained with candle on labelled frames (RoboFuME's recipe:
//! successes from the ends of successful demos, failures from everything else and from failed
//! attempts), with augmentation, a held-out split, ROC-AUC and a threshold chosen for a target
//! precision. Saved as safetensors with its config, threshold and validation report as
//! metadata.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, Optimizer, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::classifier::{ImageRef, SuccessClassifier};
use crate::data::LabelledFrames;
use crate::error::{Error, Result};
use crate::metrics::{Confusion, calibrate};

/// The network's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnConfig {
    /// Input size; frames of another size are resized to it (box filter when they are an
    /// integer multiple of it, e.g. 128×128 frames to the default 64×64, else nearest).
    pub width: u32,
    pub height: u32,
    /// Output channels of each stride-2 3×3 convolution.
    pub channels: Vec<usize>,
    /// Width of the hidden fully connected layer.
    pub hidden: usize,
    /// The part of the camera frame the network sees, `[x, y, width, height]` in the frame's
    /// pixels (None: the whole frame). With a fixed camera, cropping to the work area keeps
    /// the object's pixels instead of averaging them away when the frame is downsized.
    pub crop: Option<[u32; 4]>,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            width: 64,
            height: 64,
            channels: vec![16, 32, 32],
            hidden: 64,
            crop: None,
        }
    }
}

impl CnnConfig {
    fn validate(&self) -> Result<()> {
        if !(8..=1024).contains(&self.width) || !(8..=1024).contains(&self.height) {
            return Err(Error::config(
                "width/height",
                format!("{}x{} is outside 8..=1024", self.width, self.height),
            ));
        }
        if self.channels.is_empty() || self.channels.contains(&0) || self.hidden == 0 {
            return Err(Error::config(
                "channels/hidden",
                "need at least one convolution and positive sizes",
            ));
        }
        if let Some([_, _, w, h]) = self.crop
            && (w == 0 || h == 0)
        {
            return Err(Error::config("crop", "width and height must be positive"));
        }
        if self.feature_hw().0 == 0 {
            return Err(Error::config(
                "channels",
                "too many stride-2 convolutions for the image size",
            ));
        }
        Ok(())
    }

    /// Spatial size after the convolutions.
    fn feature_hw(&self) -> (usize, usize) {
        let mut h = self.height as usize;
        let mut w = self.width as usize;
        for _ in &self.channels {
            h = crate::conv::out_size(h);
            w = crate::conv::out_size(w);
        }
        (h, w)
    }
}

/// How a classifier is trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Random-shift augmentation, pixels each way (edge pixels repeat).
    pub shift_px: u32,
    /// Brightness jitter: each frame is scaled by a factor in `1 ± brightness`.
    pub brightness: f32,
    /// Share of episodes held out to choose τ and report metrics.
    pub val_fraction: f64,
    /// Every this many steps the training negatives are scored, and half of each batch's
    /// negatives come from the highest-scoring fifth (hard-negative mining); 0 turns it off.
    pub hard_negative_every: usize,
    /// τ is the lowest threshold with this precision on the held-out episodes.
    pub target_precision: f64,
    pub seed: u64,
}

impl Default for CnnTrainConfig {
    fn default() -> Self {
        Self {
            steps: 800,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            shift_px: 2,
            brightness: 0.1,
            val_fraction: 0.25,
            hard_negative_every: 100,
            target_precision: 0.95,
            seed: 0,
        }
    }
}

/// What training measured on the held-out episodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub task: String,
    pub train_frames: usize,
    pub train_positives: usize,
    pub val_frames: usize,
    pub val_positives: usize,
    pub steps: usize,
    pub final_loss: f64,
    pub seconds: f64,
    pub target_precision: f64,
    /// False when no threshold reached the target on the held-out episodes; τ then is the
    /// one with the best precision, and the classifier should not be trusted.
    pub target_reached: bool,
    /// Metrics at τ on the held-out episodes.
    pub val: Confusion,
}

const FORMAT: &str = "rft.reward.cnn.v1";

#[derive(Serialize, Deserialize)]
struct Meta {
    config: CnnConfig,
    threshold: f32,
    task: String,
    report: Option<TrainReport>,
}

/// The classifier: stride-2 convolutions with ReLU, a hidden layer, one logit.
pub struct CnnClassifier {
    cfg: CnnConfig,
    layers: Vec<Dense>,
    threshold: f32,
    task: String,
    report: Option<TrainReport>,
    device: Device,
    varmap: Option<VarMap>,
    input: Vec<f32>,
}

/// Weights `[in, out]` and bias `[out]`: a 3×3 convolution's `in` is `9 · channels`.
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn new(vb: &VarBuilder, name: &str, din: usize, dout: usize) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        let bound = (6.0 / din as f64).sqrt();
        Ok(Self {
            w: vb.get_with_hints(
                (din, dout),
                "weight",
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?,
            b: vb.get_with_hints(dout, "bias", Init::Const(0.0))?,
        })
    }
}

impl CnnClassifier {
    /// Convolutions, then the hidden and the output layer.
    fn build(cfg: &CnnConfig, vb: &VarBuilder) -> Result<Vec<Dense>> {
        let mut layers = Vec::new();
        let mut cin = 3;
        for (i, &c) in cfg.channels.iter().enumerate() {
            layers.push(Dense::new(vb, &format!("conv{i}"), 9 * cin, c)?);
            cin = c;
        }
        let (h, w) = cfg.feature_hw();
        layers.push(Dense::new(vb, "fc1", cin * h * w, cfg.hidden)?);
        layers.push(Dense::new(vb, "fc2", cfg.hidden, 1)?);
        Ok(layers)
    }

    /// A freshly initialised classifier for `task` (He-uniform weights from `seed`).
    pub fn new(
        cfg: CnnConfig,
        task: impl Into<String>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let layers = Self::build(&cfg, &vb)?;
        {
            let data = varmap.data().lock().map_err(|_| {
                Error::Data("the classifier's variables were poisoned by a panic".into())
            })?;
            let mut names: Vec<&String> = data.keys().filter(|k| k.ends_with("weight")).collect();
            names.sort();
            let mut rng = rft_policies::nets::TensorRng::new(seed);
            for name in names {
                let v = &data[name];
                let bound = (6.0 / v.dims()[0] as f32).sqrt();
                v.set(&rng.uniform(-bound, bound, v.dims(), device)?)?;
            }
        }
        Ok(Self {
            cfg,
            layers,
            threshold: 0.5,
            task: task.into(),
            report: None,
            device: device.clone(),
            varmap: Some(varmap),
            input: Vec::new(),
        })
    }

    pub fn config(&self) -> &CnnConfig {
        &self.cfg
    }
    pub fn task(&self) -> &str {
        &self.task
    }
    pub fn report(&self) -> Option<&TrainReport> {
        self.report.as_ref()
    }
    pub fn set_threshold(&mut self, t: f32) {
        self.threshold = t;
    }

    /// `x` is `[batch, H, W, 3]`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.cfg.channels.len();
        let mut h = x.clone();
        for l in &self.layers[..n] {
            h = crate::conv::conv_relu(&h, &l.w, &l.b)?;
        }
        let h = h.flatten_from(1)?;
        let (fc1, fc2) = (&self.layers[n], &self.layers[n + 1]);
        let h = rft_policies::fused::linear(&h, &fc1.w, &fc1.b, true)?;
        let y = rft_policies::fused::linear(&h, &fc2.w, &fc2.b, false)?;
        Ok(y.squeeze(1)?)
    }

    /// Writes frame `img` into `out` (`H × W × 3`, channel-last, centred on 0), resized to
    /// the input size, shifted by `(dx, dy)` input pixels and scaled by `gain`.
    fn write_input(&self, img: &ImageRef<'_>, dx: i64, dy: i64, gain: f32, out: &mut [f32]) {
        let (w, h) = (self.cfg.width as usize, self.cfg.height as usize);
        let (x0, y0, iw, ih) = match self.cfg.crop {
            Some([x, y, cw, ch]) => (i64::from(x), i64::from(y), cw as usize, ch as usize),
            None => (0, 0, img.width as usize, img.height as usize),
        };
        // Box filter over `fx × fy` source pixels when the sizes divide, else nearest.
        let (fx, fy) = if iw % w == 0 && ih % h == 0 {
            (iw / w, ih / h)
        } else {
            (1, 1)
        };
        let scale = gain / (255.0 * (fx * fy) as f32);
        for y in 0..h {
            let sy = y0 + (y * ih / h) as i64 + dy * fy as i64;
            for x in 0..w {
                let sx = x0 + (x * iw / w) as i64 + dx * fx as i64;
                let mut acc = [0u32; 3];
                for oy in 0..fy as i64 {
                    for ox in 0..fx as i64 {
                        let p = img.pixel(sx + ox, sy + oy);
                        for c in 0..3 {
                            acc[c] += u32::from(p[c]);
                        }
                    }
                }
                let o = (y * w + x) * 3;
                for c in 0..3 {
                    out[o + c] = (acc[c] as f32 * scale).min(1.0) - 0.5;
                }
            }
        }
    }

    fn batch_tensor(&mut self, frames: &[ImageRef<'_>]) -> Result<Tensor> {
        let n = 3 * self.cfg.width as usize * self.cfg.height as usize;
        let mut buf = std::mem::take(&mut self.input);
        buf.resize(frames.len() * n, 0.0);
        for (f, out) in frames.iter().zip(buf.chunks_exact_mut(n)) {
            self.write_input(f, 0, 0, 1.0, out);
        }
        let t = Tensor::from_slice(
            &buf,
            (
                frames.len(),
                self.cfg.height as usize,
                self.cfg.width as usize,
                3,
            ),
            &self.device,
        );
        self.input = buf;
        Ok(t?)
    }

    /// Probabilities for frames, in batches of at most 256.
    pub fn probabilities(&mut self, frames: &[ImageRef<'_>]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(256) {
            let x = self.batch_tensor(chunk)?;
            let p = candle_nn::ops::sigmoid(&self.logits(&x)?)?;
            out.extend(p.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Trains on `data` (split by episode into training and held-out parts), then sets τ for
    /// the target precision. `progress` gets (step, steps, loss) every 50 steps.
    pub fn train(
        &mut self,
        data: &LabelledFrames,
        tc: &CnnTrainConfig,
        mut progress: impl FnMut(usize, usize, f64),
    ) -> Result<TrainReport> {
        let t0 = Instant::now();
        if data.episodes().len() < 2 {
            return Err(Error::Data(
                "need frames from at least two episodes (one is held out)".into(),
            ));
        }
        let (train, val) = data.split_episodes(tc.val_fraction);
        let pos: Vec<usize> = (0..train.len()).filter(|&i| train.label[i]).collect();
        let neg: Vec<usize> = (0..train.len()).filter(|&i| !train.label[i]).collect();
        if pos.is_empty() || neg.is_empty() {
            return Err(Error::Data(format!(
                "the training episodes have {} successful and {} failed frames; both are needed",
                pos.len(),
                neg.len()
            )));
        }
        let Some(varmap) = self.varmap.clone() else {
            return Err(Error::Data(
                "this classifier was loaded for inference; create a new one to train".into(),
            ));
        };
        let mut opt = candle_nn::AdamW::new(
            varmap.all_vars(),
            candle_nn::ParamsAdamW {
                lr: tc.lr,
                weight_decay: tc.weight_decay,
                ..Default::default()
            },
        )?;
        let mut rng = StdRng::seed_from_u64(tc.seed);
        let (w, h) = (self.cfg.width as usize, self.cfg.height as usize);
        let n = 3 * w * h;
        let bs = tc.batch_size.max(2);
        let mut buf = vec![0f32; bs * n];
        let mut labels = vec![0f32; bs];
        let mut final_loss = f64::NAN;
        let shift = i64::from(tc.shift_px);
        let mut hard: Vec<usize> = Vec::new();
        for step in 0..tc.steps {
            if tc.hard_negative_every > 0 && step > 0 && step % tc.hard_negative_every == 0 {
                hard = self.hardest(&train, &neg, neg.len().div_ceil(5))?;
            }
            // Balanced batches: successes are a small share of the frames.
            for (j, out) in buf.chunks_exact_mut(n).enumerate() {
                let positive = j % 2 == 0;
                let set = if positive {
                    &pos
                } else if j % 4 == 1 && !hard.is_empty() {
                    &hard
                } else {
                    &neg
                };
                let i = set[rng.random_range(0..set.len())];
                let (dx, dy) = if shift > 0 {
                    (
                        rng.random_range(-shift..=shift),
                        rng.random_range(-shift..=shift),
                    )
                } else {
                    (0, 0)
                };
                let gain = 1.0 + tc.brightness * rng.random_range(-1.0f32..=1.0);
                self.write_input(&train.image(i), dx, dy, gain, out);
                labels[j] = if positive { 1.0 } else { 0.0 };
            }
            let x = Tensor::from_slice(&buf, (bs, h, w, 3), &self.device)?;
            let y = Tensor::from_slice(&labels, bs, &self.device)?;
            let loss = bce_with_logits(&self.logits(&x)?, &y)?;
            opt.backward_step(&loss)?;
            final_loss = f64::from(loss.to_scalar::<f32>()?);
            if !final_loss.is_finite() {
                return Err(Error::Data(format!(
                    "training diverged at step {step} (loss {final_loss})"
                )));
            }
            if (step + 1) % 50 == 0 || step + 1 == tc.steps {
                progress(step + 1, tc.steps, final_loss);
            }
        }
        let frames: Vec<ImageRef<'_>> = (0..val.len()).map(|i| val.image(i)).collect();
        let scores = self.probabilities(&frames)?;
        let (threshold, reached) = calibrate(&scores, &val.label, tc.target_precision);
        self.threshold = threshold;
        let report = TrainReport {
            task: self.task.clone(),
            train_frames: train.len(),
            train_positives: pos.len(),
            val_frames: val.len(),
            val_positives: val.positives(),
            steps: tc.steps,
            final_loss,
            seconds: t0.elapsed().as_secs_f64(),
            target_precision: tc.target_precision,
            target_reached: reached,
            val: Confusion::at(&scores, &val.label, threshold),
        };
        self.report = Some(report.clone());
        Ok(report)
    }

    /// The `k` frames of `idx` with the highest success probability.
    fn hardest(&mut self, data: &LabelledFrames, idx: &[usize], k: usize) -> Result<Vec<usize>> {
        let frames: Vec<ImageRef<'_>> = idx.iter().map(|&i| data.image(i)).collect();
        let p = self.probabilities(&frames)?;
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        Ok(order.into_iter().take(k).map(|o| idx[o]).collect())
    }

    /// Saves weights and metadata atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let Some(varmap) = &self.varmap else {
            return Err(Error::Data("only a trained classifier is saved".into()));
        };
        let data = varmap.data().lock().map_err(|_| {
            Error::Data("the classifier's variables were poisoned by a panic".into())
        })?;
        let mut tensors: Vec<(String, rft_policies::store::RawTensor)> = data
            .iter()
            .map(|(k, v)| Ok((k.clone(), rft_policies::store::RawTensor::from_tensor(v)?)))
            .collect::<std::result::Result<_, rft_policies::Error>>()?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = Meta {
            config: self.cfg.clone(),
            threshold: self.threshold,
            task: self.task.clone(),
            report: self.report.clone(),
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::Data(format!("cannot encode metadata: {e}")))?;
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("rft".to_string(), json),
        ]);
        Ok(rft_policies::store::write_tensors(path, tensors, metadata)?)
    }

    /// Loads a classifier saved by [`CnnClassifier::save`], checking every tensor's shape.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (raw, meta) = rft_policies::store::read_tensors(path)?;
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(Error::model(
                path,
                format!(
                    "not a CNN success classifier (format {:?}, expected {FORMAT:?})",
                    meta.get("format")
                ),
            ));
        }
        let m: Meta = meta
            .get("rft")
            .ok_or_else(|| Error::model(path, "no `rft` metadata"))
            .and_then(|s| {
                serde_json::from_str(s)
                    .map_err(|e| Error::model(path, format!("bad `rft` metadata: {e}")))
            })?;
        m.config
            .validate()
            .map_err(|e| Error::model(path, e.to_string()))?;
        if !(0.0..=1.0).contains(&m.threshold) {
            return Err(Error::model(
                path,
                format!("threshold {} is outside [0, 1]", m.threshold),
            ));
        }
        let tensors = rft_policies::store::named_to_candle(&raw, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let layers = Self::build(&m.config, &vb).map_err(|e| Error::model(path, e.to_string()))?;
        Ok(Self {
            cfg: m.config,
            layers,
            threshold: m.threshold,
            task: m.task,
            report: m.report,
            device: device.clone(),
            varmap: None,
            input: Vec::new(),
        })
    }
}

impl SuccessClassifier for CnnClassifier {
    fn predict(&mut self, frames: &[ImageRef<'_>], _task: &str) -> Result<Vec<f32>> {
        self.probabilities(frames)
    }
    fn threshold(&self) -> f32 {
        self.threshold
    }
    fn name(&self) -> String {
        format!("cnn:{}", self.task)
    }
}

/// Mean binary cross-entropy of logits, in the stable form `max(x, 0) − x·y + log(1 + e^−|x|)`.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let soft = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (logits.relu()? - (logits * target)? + soft)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 128×128 frame whose pixel (x, y) is (x, y, x ^ y).
    fn pattern() -> Vec<u8> {
        let mut rgb = Vec::with_capacity(128 * 128 * 3);
        for y in 0..128u32 {
            for x in 0..128u32 {
                rgb.extend_from_slice(&[x as u8, y as u8, (x ^ y) as u8]);
            }
        }
        rgb
    }

    fn input(c: &CnnClassifier, img: &ImageRef<'_>) -> Vec<f32> {
        let mut out = vec![0f32; 3 * 64 * 64];
        c.write_input(img, 0, 0, 1.0, &mut out);
        out
    }

    #[test]
    fn crop_feeds_the_network_that_part_of_the_frame_at_full_resolution() {
        let rgb = pattern();
        let img = ImageRef::new(128, 128, &rgb).unwrap();
        let cfg = CnnConfig {
            crop: Some([28, 48, 64, 64]),
            ..CnnConfig::default()
        };
        let c = CnnClassifier::new(cfg.clone(), "t", 0, &Device::Cpu).unwrap();
        let v = input(&c, &img);
        let px = |x: usize, y: usize| &v[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        for (x, y) in [(0, 0), (10, 3), (63, 63), (31, 40)] {
            let want = [
                (28 + x) as f32,
                (48 + y) as f32,
                ((28 + x) ^ (48 + y)) as f32,
            ];
            for ch in 0..3 {
                assert!(
                    (px(x, y)[ch] - (want[ch] / 255.0 - 0.5)).abs() < 1e-6,
                    "({x}, {y}) channel {ch}: {:?} vs {want:?}",
                    px(x, y)
                );
            }
        }
        // Without a crop the whole frame is box-filtered to 64×64: pixel (0, 0) averages
        // source pixels (0..2, 0..2).
        let whole = CnnClassifier::new(CnnConfig::default(), "t", 0, &Device::Cpu).unwrap();
        let w = input(&whole, &img);
        assert!((w[0] - (0.5 / 255.0 - 0.5)).abs() < 1e-6, "{}", w[0]);
        // The crop travels with the saved classifier and gives the same answers after loading.
        let dir = std::env::temp_dir().join(format!("rft-crop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        let mut c = c;
        c.save(&path).unwrap();
        let mut back = CnnClassifier::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.config().crop, cfg.crop);
        let a = c.predict(&[img], "t").unwrap();
        let b = back.predict(&[img], "t").unwrap();
        assert_eq!(a, b);
        std::fs::remove_dir_all(&dir).ok();
        // An empty crop is refused, naming the setting.
        let bad = CnnConfig {
            crop: Some([0, 0, 0, 10]),
            ..CnnConfig::default()
        };
        let e = CnnClassifier::new(bad, "t", 0, &Device::Cpu).err().unwrap();
        assert!(e.to_string().contains("crop"), "{e}");
    }
}
