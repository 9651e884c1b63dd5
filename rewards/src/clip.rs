//! A CLIP image model (candle-transformers) loaded from a Hugging Face directory, with a
//! logistic probe on its image embeddings trained on the same labelled frames as the CNN.
//!
//! The directory holds `config.json` (the `CLIPConfig` layout: `vision_config`,
//! `projection_dim`), `model.safetensors` (or another `*.safetensors`) with the HF tensor
//! names (`vision_model.…`, `visual_projection.weight`; a full CLIP checkpoint's text tower is
//! present but not needed), and optionally `preprocessor_config.json` (`image_mean`,
//! `image_std`). Frames are resized (bilinear) to the model's `image_size` and normalised.
//! The task text is not encoded (no tokenizer is bundled); each probe is trained for one task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::Activation;
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::classifier::{ImageRef, SuccessClassifier};
use crate::data::LabelledFrames;
use crate::error::{Error, Result};
use crate::metrics::{Confusion, calibrate};

#[derive(Deserialize)]
struct HfVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "three")]
    num_channels: usize,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
}

fn three() -> usize {
    3
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}

#[derive(Deserialize)]
struct HfConfig {
    vision_config: HfVision,
    projection_dim: usize,
}

#[derive(Deserialize)]
struct HfPreprocessor {
    image_mean: [f32; 3],
    image_std: [f32; 3],
}

/// The vision tower and projection of a CLIP model.
pub struct ClipImageModel {
    dir: PathBuf,
    vision: ClipVisionTransformer,
    projection: candle_nn::Linear,
    image_size: usize,
    projection_dim: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: Device,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::model(path, format!("bad JSON: {e}")))
}

impl ClipImageModel {
    /// Loads `dir` (see the module docs); every tensor's name and shape is checked.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg: HfConfig = read_json(&cfg_path)?;
        let v = &cfg.vision_config;
        if v.hidden_act != "quick_gelu" {
            return Err(Error::model(
                &cfg_path,
                format!(
                    "vision_config.hidden_act {:?} is not supported (quick_gelu is)",
                    v.hidden_act
                ),
            ));
        }
        if v.patch_size == 0
            || !v.image_size.is_multiple_of(v.patch_size)
            || v.num_attention_heads == 0
            || !v.hidden_size.is_multiple_of(v.num_attention_heads)
        {
            return Err(Error::model(
                &cfg_path,
                "image_size must be a multiple of patch_size and hidden_size of num_attention_heads",
            ));
        }
        let vcfg = ClipVisionConfig {
            embed_dim: v.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: v.intermediate_size,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            projection_dim: cfg.projection_dim,
            num_channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
        };
        let pre = dir.join("preprocessor_config.json");
        let (mean, std) = if pre.exists() {
            let p: HfPreprocessor = read_json(&pre)?;
            (p.image_mean, p.image_std)
        } else {
            // OpenAI CLIP's normalisation.
            (
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
                [0.268_629_55, 0.261_302_6, 0.275_777_1],
            )
        };
        let weights = weights_file(dir)?;
        let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
            .map_err(|e| Error::model(&weights, format!("not a safetensors file: {e}")))?;
        for name in [
            "vision_model.embeddings.class_embedding",
            "visual_projection.weight",
        ] {
            if !vb.contains_tensor(name) {
                return Err(Error::model(
                    &weights,
                    format!("no tensor {name:?}; not a CLIP checkpoint in the HF layout"),
                ));
            }
        }
        let vision = ClipVisionTransformer::new(vb.pp("vision_model"), &vcfg)
            .map_err(|e| Error::model(&weights, e.to_string()))?;
        let projection = candle_nn::linear_no_bias(
            v.hidden_size,
            cfg.projection_dim,
            vb.pp("visual_projection"),
        )
        .map_err(|e| Error::model(&weights, e.to_string()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            vision,
            projection,
            image_size: v.image_size,
            projection_dim: cfg.projection_dim,
            mean,
            std,
            device: device.clone(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn embed_dim(&self) -> usize {
        self.projection_dim
    }

    /// `[N, 3, S, S]`: bilinear resize, scale to [0, 1], normalise.
    fn pixels(&self, frames: &[ImageRef<'_>]) -> Result<Tensor> {
        let s = self.image_size;
        let mut buf = vec![0f32; frames.len() * 3 * s * s];
        for (f, out) in frames.iter().zip(buf.chunks_exact_mut(3 * s * s)) {
            let (sx, sy) = (
                f64::from(f.width) / s as f64,
                f64::from(f.height) / s as f64,
            );
            for y in 0..s {
                let fy = ((y as f64 + 0.5) * sy - 0.5).max(0.0);
                let (y0, ty) = (fy.floor() as i64, fy.fract() as f32);
                for x in 0..s {
                    let fx = ((x as f64 + 0.5) * sx - 0.5).max(0.0);
                    let (x0, tx) = (fx.floor() as i64, fx.fract() as f32);
                    let p = [
                        f.pixel(x0, y0),
                        f.pixel(x0 + 1, y0),
                        f.pixel(x0, y0 + 1),
                        f.pixel(x0 + 1, y0 + 1),
                    ];
                    for c in 0..3 {
                        let v = (1.0 - ty)
                            * ((1.0 - tx) * f32::from(p[0][c]) + tx * f32::from(p[1][c]))
                            + ty * ((1.0 - tx) * f32::from(p[2][c]) + tx * f32::from(p[3][c]));
                        out[c * s * s + y * s + x] = (v / 255.0 - self.mean[c]) / self.std[c];
                    }
                }
            }
        }
        Ok(Tensor::from_vec(
            buf,
            (frames.len(), 3, s, s),
            &self.device,
        )?)
    }

    /// L2-normalised image embeddings, one row per frame.
    pub fn embed(&self, frames: &[ImageRef<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(32) {
            let x = self.pixels(chunk)?;
            let e = self.projection.forward(&self.vision.forward(&x)?)?;
            let n = e.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            out.extend(e.broadcast_div(&n)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

fn weights_file(dir: &Path) -> Result<PathBuf> {
    let direct = dir.join("model.safetensors");
    if direct.exists() {
        return Ok(direct);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| Error::model(dir, "no *.safetensors weights in the directory"))
}

/// Logistic regression on embeddings: `p = σ(w·e + b)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticProbe {
    pub w: Vec<f32>,
    pub b: f32,
    pub threshold: f32,
    pub task: String,
    pub report: Option<Confusion>,
}

const PROBE_FORMAT: &str = "rft.reward.clip_probe.v1";

impl LogisticProbe {
    /// Fits by Newton's method (IRLS) with an L2 penalty `l2`, on embeddings `x` with labels.
    pub fn fit(x: &[Vec<f32>], labels: &[bool], l2: f64, task: &str) -> Result<Self> {
        let n = x.len();
        let d = x.first().map_or(0, Vec::len);
        if n == 0 || d == 0 || labels.len() != n {
            return Err(Error::Data("no embeddings to fit a probe on".into()));
        }
        // Columns: the embedding, then 1 for the bias.
        let xm = DMatrix::from_fn(
            n,
            d + 1,
            |i, j| if j < d { f64::from(x[i][j]) } else { 1.0 },
        );
        let y = DVector::from_iterator(n, labels.iter().map(|&l| f64::from(u8::from(l))));
        let mut beta = DVector::zeros(d + 1);
        for _ in 0..50 {
            let z = &xm * &beta;
            let p = z.map(|v| 1.0 / (1.0 + (-v).exp()));
            let wts = p.map(|v| (v * (1.0 - v)).max(1e-9));
            let mut grad = xm.transpose() * (&p - &y);
            let mut reg = DMatrix::identity(d + 1, d + 1) * l2;
            reg[(d, d)] = 0.0;
            grad += &reg * &beta;
            let xw = DMatrix::from_fn(n, d + 1, |i, j| xm[(i, j)] * wts[i]);
            let h = xm.transpose() * xw + reg + DMatrix::identity(d + 1, d + 1) * 1e-9;
            let Some(chol) = h.cholesky() else {
                return Err(Error::Data("the probe's Hessian is singular".into()));
            };
            let step = chol.solve(&grad);
            beta -= &step;
            if step.norm() < 1e-8 {
                break;
            }
        }
        Ok(Self {
            w: beta.iter().take(d).map(|&v| v as f32).collect(),
            b: beta[d] as f32,
            threshold: 0.5,
            task: task.into(),
            report: None,
        })
    }

    pub fn probability(&self, e: &[f32]) -> f32 {
        let z: f32 = self.w.iter().zip(e).map(|(a, b)| a * b).sum::<f32>() + self.b;
        1.0 / (1.0 + (-z).exp())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        use rft_policies::store::RawTensor;
        let meta = serde_json::json!({
            "threshold": self.threshold, "task": self.task, "report": self.report,
        });
        let tensors = vec![
            ("b".to_string(), RawTensor::f32(vec![self.b], &[1])),
            (
                "w".to_string(),
                RawTensor::f32(self.w.clone(), &[self.w.len()]),
            ),
        ];
        let metadata = HashMap::from([
            ("format".to_string(), PROBE_FORMAT.to_string()),
            ("rft".to_string(), meta.to_string()),
        ]);
        Ok(rft_policies::store::write_tensors(path, tensors, metadata)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (t, meta) = rft_policies::store::read_tensors(path)?;
        if meta.get("format").map(String::as_str) != Some(PROBE_FORMAT) {
            return Err(Error::model(path, "not a CLIP probe file"));
        }
        #[derive(Deserialize)]
        struct M {
            threshold: f32,
            task: String,
            report: Option<Confusion>,
        }
        let m: M = serde_json::from_str(meta.get("rft").map_or("", String::as_str))
            .map_err(|e| Error::model(path, format!("bad metadata: {e}")))?;
        let get = |n: &str| {
            t.get(n)
                .ok_or_else(|| Error::model(path, format!("no `{n}` tensor")))?
                .to_f32_vec()
                .map_err(Error::from)
        };
        let (w, b) = (get("w")?, get("b")?);
        let [b] = b[..] else {
            return Err(Error::model(path, "`b` must hold one value"));
        };
        Ok(Self {
            w,
            b,
            threshold: m.threshold,
            task: m.task,
            report: m.report,
        })
    }
}

/// A CLIP image model with a probe: a [`SuccessClassifier`].
pub struct ClipClassifier {
    pub model: ClipImageModel,
    pub probe: LogisticProbe,
}

impl ClipClassifier {
    /// Embeds `data`, fits the probe on all but the held-out episodes, and sets τ for
    /// `target_precision` on them.
    pub fn train(
        model: ClipImageModel,
        data: &LabelledFrames,
        val_fraction: f64,
        target_precision: f64,
        l2: f64,
    ) -> Result<(Self, Confusion)> {
        let (train, val) = data.split_episodes(val_fraction);
        let emb = |d: &LabelledFrames| {
            let frames: Vec<ImageRef<'_>> = (0..d.len()).map(|i| d.image(i)).collect();
            model.embed(&frames)
        };
        let mut probe = LogisticProbe::fit(&emb(&train)?, &train.label, l2, &data.task)?;
        let scores: Vec<f32> = emb(&val)?.iter().map(|e| probe.probability(e)).collect();
        let (t, _) = calibrate(&scores, &val.label, target_precision);
        probe.threshold = t;
        let c = Confusion::at(&scores, &val.label, t);
        probe.report = Some(c);
        Ok((Self { model, probe }, c))
    }
}

impl SuccessClassifier for ClipClassifier {
    fn predict(&mut self, frames: &[ImageRef<'_>], _task: &str) -> Result<Vec<f32>> {
        Ok(self
            .model
            .embed(frames)?
            .iter()
            .map(|e| self.probe.probability(e))
            .collect())
    }
    fn threshold(&self) -> f32 {
        self.probe.threshold
    }
    fn name(&self) -> String {
        format!("clip:{}", self.probe.task)
    }
}
