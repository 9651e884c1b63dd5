//! The CLIP path on a tiny random model written in the Hugging Face layout (tensor names,
//! config.json, preprocessor_config.json): load → embed → probe training → save/load, and the
//! errors for broken directories.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rft_rewards::clip::{ClipClassifier, ClipImageModel, LogisticProbe};
use rft_rewards::{ImageRef, LabelledFrames, SuccessClassifier};
use serde_json::json;

type Named = HashMap<String, Tensor>;
type AddFn<'a> = dyn FnMut(&mut Named, String, &[usize]) + 'a;

const D: usize = 32; // vision hidden size
const T: usize = 24; // text hidden size
const P: usize = 16; // projection

/// Writes a tiny CLIP (vision 32² patch 8, 2 layers; text tower too, as real checkpoints have).
fn write_tiny_clip(dir: &Path, skip: Option<&str>) {
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut rng = StdRng::seed_from_u64(7);
    let mut rnd = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let fan_in = if shape.len() > 1 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let a = 1.0 / (fan_in as f32).sqrt();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let mut add = |t: &mut HashMap<String, Tensor>, name: String, shape: &[usize]| {
        t.insert(name, rnd(shape));
    };
    let ln = |t: &mut HashMap<String, Tensor>, name: &str, d: usize| {
        t.insert(
            format!("{name}.weight"),
            Tensor::ones(d, DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            format!("{name}.bias"),
            Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap(),
        );
    };
    let layers = |t: &mut HashMap<String, Tensor>, add: &mut AddFn<'_>, pre: &str, d: usize| {
        for i in 0..2 {
            let l = format!("{pre}.encoder.layers.{i}");
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                add(t, format!("{l}.self_attn.{p}.weight"), &[d, d]);
                add(t, format!("{l}.self_attn.{p}.bias"), &[d]);
            }
            add(t, format!("{l}.mlp.fc1.weight"), &[2 * d, d]);
            add(t, format!("{l}.mlp.fc1.bias"), &[2 * d]);
            add(t, format!("{l}.mlp.fc2.weight"), &[d, 2 * d]);
            add(t, format!("{l}.mlp.fc2.bias"), &[d]);
            t.insert(
                format!("{l}.layer_norm1.weight"),
                Tensor::ones(d, DType::F32, &Device::Cpu).unwrap(),
            );
            t.insert(
                format!("{l}.layer_norm1.bias"),
                Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap(),
            );
            t.insert(
                format!("{l}.layer_norm2.weight"),
                Tensor::ones(d, DType::F32, &Device::Cpu).unwrap(),
            );
            t.insert(
                format!("{l}.layer_norm2.bias"),
                Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap(),
            );
        }
    };
    add(
        &mut t,
        "vision_model.embeddings.class_embedding".into(),
        &[D],
    );
    add(
        &mut t,
        "vision_model.embeddings.patch_embedding.weight".into(),
        &[D, 3, 8, 8],
    );
    add(
        &mut t,
        "vision_model.embeddings.position_embedding.weight".into(),
        &[17, D],
    );
    ln(&mut t, "vision_model.pre_layrnorm", D);
    layers(&mut t, &mut add, "vision_model", D);
    ln(&mut t, "vision_model.post_layernorm", D);
    add(&mut t, "visual_projection.weight".into(), &[P, D]);
    add(
        &mut t,
        "text_model.embeddings.token_embedding.weight".into(),
        &[100, T],
    );
    add(
        &mut t,
        "text_model.embeddings.position_embedding.weight".into(),
        &[16, T],
    );
    layers(&mut t, &mut add, "text_model", T);
    ln(&mut t, "text_model.final_layer_norm", T);
    add(&mut t, "text_projection.weight".into(), &[P, T]);
    t.insert(
        "logit_scale".into(),
        Tensor::new(2.6592f32, &Device::Cpu).unwrap(),
    );
    if let Some(s) = skip {
        t.remove(s);
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let cfg = json!({
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": P,
        "logit_scale_init_value": 2.6592,
        "text_config": { "hidden_size": T, "intermediate_size": 2 * T, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16, "vocab_size": 100,
            "hidden_act": "quick_gelu", "projection_dim": P },
        "vision_config": { "hidden_size": D, "intermediate_size": 2 * D, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 32, "patch_size": 8,
            "hidden_act": "quick_gelu", "projection_dim": P },
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let pre = json!({ "crop_size": 32, "do_normalize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "size": 32 });
    std::fs::write(dir.join("preprocessor_config.json"), pre.to_string()).unwrap();
}

/// Frames with a bright square on the left (success) or on the right (failure), with noise.
fn frames() -> LabelledFrames {
    let mut out = LabelledFrames::new(48, 48, "square/left");
    for ep in 0..12u32 {
        for k in 0..10u32 {
            let success = ep % 2 == 0;
            let mut rgb = vec![0u8; 48 * 48 * 3];
            for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
                let (x, y) = (i % 48, i / 48);
                let noise = ((i as u32 * 7919 + ep * 104_729 + k * 31) % 40) as u8;
                let on = (8..24).contains(&y)
                    && if success {
                        (4..20).contains(&x)
                    } else {
                        (28..44).contains(&x)
                    };
                px.copy_from_slice(&if on {
                    [230, 40 + noise, 30]
                } else {
                    [60 + noise, 70, 80]
                });
            }
            out.push(&rgb, success, ep).unwrap();
        }
    }
    out
}

#[test]
fn tiny_hf_clip_loads_embeds_and_trains_a_probe() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(dir.path(), None);
    let model = ClipImageModel::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(model.embed_dim(), P);
    let data = frames();
    let imgs: Vec<ImageRef<'_>> = (0..3).map(|i| data.image(i)).collect();
    let e = model.embed(&imgs).unwrap();
    assert_eq!(e.len(), 3);
    for v in &e {
        assert_eq!(v.len(), P);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    // Different frames give different embeddings: the weights are really used.
    let far = model.embed(&[data.image(15)]).unwrap();
    assert!(e[0].iter().zip(&far[0]).any(|(a, b)| (a - b).abs() > 1e-3));

    let (mut clf, val) = ClipClassifier::train(model, &data, 0.34, 0.95, 1e-3).unwrap();
    eprintln!("tiny CLIP probe, held-out: {val}");
    assert!(
        val.roc_auc >= 0.95 && val.recall >= 0.9 && val.precision >= 0.9,
        "{val}"
    );

    let path = dir.path().join("probe.safetensors");
    clf.probe.save(&path).unwrap();
    let loaded = LogisticProbe::load(&path).unwrap();
    assert_eq!(loaded, clf.probe);
    let p = clf.predict(&imgs, "square/left").unwrap();
    let model2 = ClipImageModel::load(dir.path(), &Device::Cpu).unwrap();
    let mut clf2 = ClipClassifier {
        model: model2,
        probe: loaded,
    };
    assert_eq!(clf2.predict(&imgs, "square/left").unwrap(), p);
    assert_eq!(clf2.threshold(), clf.threshold());
}

#[test]
fn broken_clip_directories_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(
        dir.path(),
        Some("vision_model.encoder.layers.1.mlp.fc2.weight"),
    );
    let e = ClipImageModel::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.safetensors") && e.contains("fc2"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(dir.path(), Some("visual_projection.weight"));
    let e = ClipImageModel::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("visual_projection.weight"), "{e}");

    // A config that does not match the weights.
    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(dir.path(), None);
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        cfg.replace("\"intermediate_size\":64", "\"intermediate_size\":65"),
    )
    .unwrap();
    let e = ClipImageModel::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("shape"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = ClipImageModel::load(empty.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    assert!(LogisticProbe::load(&empty.path().join("nope.safetensors")).is_err());
}
