//! Networks: fused kernels against plain candle ops (values and gradients), the ensemble as
//! independent networks, the tanh-Gaussian's log-probabilities, and the inference path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use candle_core::{D, Device, Tensor, Var};
use rft_policies::fused::{bias_act, linear, ln_act};
use rft_policies::handle::{ActMode, InferencePolicy, PolicyHandle, policy_bytes};
use rft_policies::nets::{EncoderConfig, LN_EPS, Mlp, Params, TensorRng};
use rft_policies::{Agent, AgentConfig, Algorithm};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn fused_bias_relu_matches_candle_ops_in_value_and_gradient() {
    let dev = Device::Cpu;
    let mut rng = TensorRng::new(1);
    for (xdims, bdims) in [(vec![7, 5], vec![5]), (vec![3, 7, 5], vec![3, 1, 5])] {
        for relu in [false, true] {
            let x = Var::from_tensor(&rng.normal(&xdims, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&rng.normal(&bdims, &dev).unwrap()).unwrap();
            let w = rng.normal(&xdims, &dev).unwrap();
            let fused = bias_act(&x, &b, relu).unwrap();
            let mut plain = x.broadcast_add(&b).unwrap();
            if relu {
                plain = plain.relu().unwrap();
            }
            assert!(max_diff(&fused, &plain) < 1e-6);
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &b] {
                let (a, c) = (gf.get(v).unwrap(), gp.get(v).unwrap());
                assert_eq!(a.dims(), c.dims());
                assert!(
                    max_diff(a, c) < 1e-5,
                    "gradient differs ({xdims:?}, relu {relu})"
                );
            }
        }
    }
}

#[test]
fn fused_linear_matches_candle_matmul_and_skips_unneeded_gradients() {
    let dev = Device::Cpu;
    let mut rng = TensorRng::new(5);
    // (x dims, w dims, b dims): plain, ensemble with a shared input, ensemble per member.
    let cases = [
        (vec![9, 4], vec![4, 6], vec![6]),
        (vec![9, 4], vec![3, 4, 6], vec![3, 1, 6]),
        (vec![3, 9, 4], vec![3, 4, 6], vec![3, 1, 6]),
    ];
    for (xd, wd, bd) in cases {
        for relu in [false, true] {
            let x = Var::from_tensor(&rng.normal(&xd, &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&rng.normal(&wd, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&rng.normal(&bd, &dev).unwrap()).unwrap();
            let fused = linear(&x, &w, &b, relu).unwrap();
            let mut plain = x.broadcast_matmul(&w).unwrap().broadcast_add(&b).unwrap();
            if relu {
                plain = plain.relu().unwrap();
            }
            assert_eq!(fused.dims(), plain.dims());
            assert!(max_diff(&fused, &plain) < 1e-5, "{xd:?} x {wd:?}");
            let up = rng.normal(plain.dims(), &dev).unwrap();
            let gf = (fused * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gp = (plain * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w, &b] {
                let (a, c) = (gf.get(v).unwrap(), gp.get(v).unwrap());
                assert_eq!(a.dims(), c.dims());
                assert!(
                    max_diff(a, c) < 1e-4,
                    "gradient differs ({xd:?} x {wd:?}, relu {relu})"
                );
            }
            // Detached weights (the actor's loss through the critic): input gradient only.
            let wd_ = w.as_tensor().detach();
            let bd_ = b.as_tensor().detach();
            let y = linear(&x, &wd_, &bd_, relu).unwrap();
            let g = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(max_diff(g.get(&x).unwrap(), gp.get(&x).unwrap()) < 1e-4);
            assert!(g.get(&w).is_none() && g.get(&wd_).is_none());
        }
    }
    // Shapes that do not fit are an error, not a panic.
    let x = rng.normal(&[2, 3], &dev).unwrap();
    let w = rng.normal(&[4, 5], &dev).unwrap();
    let b = rng.normal(&[5], &dev).unwrap();
    assert!(linear(&x, &w, &b, false).is_err());
}

#[test]
fn fused_layer_norm_matches_candle_ops_in_value_and_gradient() {
    let dev = Device::Cpu;
    let mut rng = TensorRng::new(2);
    for (xdims, pdims) in [(vec![6, 9], vec![9]), (vec![4, 6, 9], vec![4, 1, 9])] {
        for relu in [false, true] {
            let x = Var::from_tensor(&rng.normal(&xdims, &dev).unwrap()).unwrap();
            let g = Var::from_tensor(&rng.normal(&pdims, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&rng.normal(&pdims, &dev).unwrap()).unwrap();
            let w = rng.normal(&xdims, &dev).unwrap();
            let fused = ln_act(&x, &g, &b, relu).unwrap();
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let xc = x.broadcast_sub(&mean).unwrap();
            let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let mut plain = xc
                .broadcast_div(&(var + LN_EPS).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&g)
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            if relu {
                plain = plain.relu().unwrap();
            }
            assert!(max_diff(&fused, &plain) < 1e-5);
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &g, &b] {
                assert!(
                    max_diff(gf.get(v).unwrap(), gp.get(v).unwrap()) < 1e-4,
                    "gradient differs ({xdims:?}, relu {relu})"
                );
            }
        }
    }
}

#[test]
fn an_ensemble_is_n_independent_networks_in_one_pass() {
    let dev = Device::Cpu;
    let mut rng = TensorRng::new(3);
    let mut p = Params::new();
    let n = 4;
    let ens = Mlp::new(&mut p, "q", Some(n), 6, &[16, 16], 1, true, &mut rng, &dev).unwrap();
    let x = rng.normal(&[10, 6], &dev).unwrap();
    let out = ens.forward(&x, false).unwrap(); // [n, 10, 1]
    assert_eq!(out.dims(), &[n, 10, 1]);
    for i in 0..n {
        // Member i by hand with its slice of every parameter.
        let mut h = x.clone();
        for (l, layer) in ens.layers.iter().enumerate() {
            let w = layer.w.as_tensor().get(i).unwrap();
            let b = layer.b.as_tensor().get(i).unwrap();
            h = h.matmul(&w).unwrap().broadcast_add(&b).unwrap();
            if l + 1 < ens.layers.len() {
                let ln = ens.norms[l].as_ref().unwrap();
                let (g, bb) = (
                    ln.g.as_tensor().get(i).unwrap(),
                    ln.b.as_tensor().get(i).unwrap(),
                );
                let mean = h.mean_keepdim(D::Minus1).unwrap();
                let xc = h.broadcast_sub(&mean).unwrap();
                let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                h = xc
                    .broadcast_div(&(var + LN_EPS).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(&g)
                    .unwrap()
                    .broadcast_add(&bb)
                    .unwrap()
                    .relu()
                    .unwrap();
            }
        }
        assert!(max_diff(&out.get(i).unwrap(), &h) < 1e-5, "member {i}");
    }
    // Members differ (independent initialisation).
    assert!(max_diff(&out.get(0).unwrap(), &out.get(1).unwrap()) > 1e-3);
}

#[test]
fn tanh_gaussian_log_prob_matches_a_numerical_change_of_variables() {
    // An oracle that shares no code with the actor's log-density: the density of a = tanh(u),
    // u ~ N(μ, σ²), is the probability mass of u over [atanh(a − h), atanh(a + h)] (Simpson's
    // rule on the Gaussian pdf) divided by 2h; dimensions are independent, so log-densities add.
    let dev = Device::Cpu;
    let mut cfg = AgentConfig::preset(Algorithm::Sac, 3, 2);
    cfg.hidden = vec![32];
    let agent = Agent::new(cfg, &dev).unwrap();
    let mut rng = TensorRng::new(4);
    let x = rng.normal(&[64, 3], &dev).unwrap();
    let eps = rng.normal(&[64, 2], &dev).unwrap();
    let (a, logp) = agent.actor.sample(&x, &eps).unwrap();
    let lp_inv = agent.actor.log_prob(&x, &a).unwrap();
    let (mean, log_std) = agent.actor.dist(&x).unwrap();
    let m2 = |t: &Tensor| t.to_vec2::<f32>().unwrap();
    let (a, mean, log_std) = (m2(&a), m2(&mean), m2(&log_std));
    let (logp, lp_inv) = (
        logp.to_vec1::<f32>().unwrap(),
        lp_inv.to_vec1::<f32>().unwrap(),
    );
    let pdf = |u: f64, m: f64, s: f64| {
        (-(u - m).powi(2) / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
    };
    let mut checked = 0;
    for i in 0..a.len() {
        // Away from ±1, where f32 actions lose the precision atanh needs.
        if a[i].iter().any(|v| v.abs() > 0.98) {
            continue;
        }
        let mut numerical = 0.0;
        for j in 0..2 {
            let (aj, m, s) = (
                f64::from(a[i][j]),
                f64::from(mean[i][j]),
                f64::from(log_std[i][j]).exp(),
            );
            let h = 1e-4;
            let (lo, hi) = ((aj - h).atanh(), (aj + h).atanh());
            let n = 64;
            let du = (hi - lo) / f64::from(n);
            let mut mass = pdf(lo, m, s) + pdf(hi, m, s);
            for k in 1..n {
                let w = if k % 2 == 1 { 4.0 } else { 2.0 };
                mass += w * pdf(lo + f64::from(k) * du, m, s);
            }
            numerical += (mass * du / 3.0 / (2.0 * h)).ln();
        }
        let (from_sample, from_action) = (f64::from(logp[i]), f64::from(lp_inv[i]));
        assert!(
            (from_sample - numerical).abs() < 1e-3 * (1.0 + numerical.abs()),
            "row {i}: log-prob of the sample {from_sample} vs numerical {numerical}"
        );
        assert!(
            (from_action - numerical).abs() < 1e-2 * (1.0 + numerical.abs()),
            "row {i}: log-prob of the action {from_action} vs numerical {numerical}"
        );
        checked += 1;
    }
    assert!(checked >= 32, "only {checked} rows away from ±1");
}

fn agent_with(encoder: Option<EncoderConfig>, ln: bool, tasks: usize) -> Agent {
    seeded(encoder, ln, tasks, 0)
}

fn seeded(encoder: Option<EncoderConfig>, ln: bool, tasks: usize, seed: u64) -> Agent {
    let mut cfg = AgentConfig::preset(Algorithm::Sac, 5, 3);
    cfg.hidden = vec![32, 24];
    cfg.actor_layer_norm = ln;
    cfg.num_tasks = tasks;
    cfg.encoder = encoder;
    cfg.seed = seed;
    Agent::new(cfg, &Device::Cpu).unwrap()
}

#[test]
fn inference_matches_candle_for_mlp_layernorm_tasks_and_encoder() {
    let enc = EncoderConfig {
        height: 24,
        width: 20,
        stages: vec![4, 8],
        feature_dim: 6,
        ..Default::default()
    };
    for (encoder, ln, tasks) in [(None, false, 1), (None, true, 2), (Some(enc), true, 2)] {
        let mut agent = agent_with(encoder.clone(), ln, tasks);
        agent.norm = rft_policies::ObsNorm {
            mean: vec![0.1, -0.2, 0.3, 0.0, 1.0],
            std: vec![1.0, 2.0, 0.5, 1.0, 3.0],
            clip: 10.0,
        };
        let mut handle = PolicyHandle::new(InferencePolicy::from_agent(&agent, 7).unwrap(), 0);
        assert_eq!(handle.version(), 7);
        let img: Vec<u8> = (0..encoder.as_ref().map_or(0, |e| e.image_len()))
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        for k in 0..5 {
            let obs: Vec<f32> = (0..5)
                .map(|j| ((k * 5 + j) as f32 * 0.37).sin() * 2.0)
                .collect();
            let task = (k % tasks) as u8;
            let want = agent
                .act(&obs, task, encoder.as_ref().map(|_| img.as_slice()), true)
                .unwrap();
            let mut got = [0f32; 3];
            let v = handle
                .act(
                    &obs,
                    task,
                    encoder.as_ref().map(|_| img.as_slice()),
                    ActMode::Deterministic,
                    &mut got,
                )
                .unwrap();
            assert_eq!(v, 7);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "inference {got:?} vs candle {want:?}");
            }
        }
    }
}

#[test]
fn swap_validates_before_it_takes_effect() {
    let a = agent_with(None, false, 1);
    let mut b = agent_with(None, false, 1);
    b.steps = 10;
    let mut handle = PolicyHandle::new(InferencePolicy::from_agent(&a, 1).unwrap(), 0);
    let obs = [0.3, -0.1, 0.5, 0.2, 0.0];
    let mut before = [0f32; 3];
    handle
        .act(&obs, 0, None, ActMode::Deterministic, &mut before)
        .unwrap();

    // Wrong shape: refused, old weights still act.
    let other = agent_with(None, true, 2);
    let err = handle.swap(&policy_bytes(&other, 2).unwrap()).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    // Garbage bytes: refused.
    assert!(handle.swap(b"definitely not safetensors").is_err());
    // Non-finite weights: refused, naming the tensor.
    let w = b.policy_weights();
    let (name, t) = &w[0];
    let bad = (t.clone() * f64::NAN).unwrap();
    b.actor.mlp.layers[0].w.set(&bad).unwrap();
    let err = handle.swap(&policy_bytes(&b, 3).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("non-finite") && err.to_string().contains(name.as_str()),
        "{err}"
    );
    let mut same = [0f32; 3];
    assert_eq!(
        handle
            .act(&obs, 0, None, ActMode::Deterministic, &mut same)
            .unwrap(),
        1
    );
    assert_eq!(before, same);

    // A valid update from another thread takes effect for every clone.
    let c = seeded(None, false, 1, 9);
    let bytes = policy_bytes(&c, 4).unwrap();
    let clone = handle.clone();
    std::thread::spawn(move || clone.swap(&bytes).map(|v| (v, clone.version())))
        .join()
        .unwrap()
        .map(|(v, cv)| assert_eq!((v, cv), (4, 4)))
        .unwrap();
    let mut after = [0f32; 3];
    assert_eq!(
        handle
            .act(&obs, 0, None, ActMode::Deterministic, &mut after)
            .unwrap(),
        4
    );
    assert_ne!(before, after);
}

#[test]
fn stochastic_actions_stay_in_bounds_and_spread_around_the_mode() {
    let a = agent_with(None, false, 1);
    let mut h = PolicyHandle::new(InferencePolicy::from_agent(&a, 0).unwrap(), 5);
    let obs = [0.1; 5];
    let mut mode = [0f32; 3];
    h.act(&obs, 0, None, ActMode::Deterministic, &mut mode)
        .unwrap();
    let mut sum = [0f64; 3];
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..2000 {
        let mut out = [0f32; 3];
        h.act(&obs, 0, None, ActMode::Stochastic, &mut out).unwrap();
        assert!(out.iter().all(|v| v.abs() <= 1.0));
        distinct.insert(out[0].to_bits());
        for j in 0..3 {
            sum[j] += out[j] as f64;
        }
    }
    assert!(distinct.len() > 1900, "samples vary");
    // An untrained actor has σ ≈ e^{-1.5}; the sample mean is near tanh(μ).
    for j in 0..3 {
        assert!((sum[j] / 2000.0 - mode[j] as f64).abs() < 0.1);
    }
    let mut wrong = [0f32; 2];
    assert!(
        h.act(&obs, 0, None, ActMode::Deterministic, &mut wrong)
            .is_err()
    );
    assert!(
        h.act(&[0.0; 4], 0, None, ActMode::Deterministic, &mut mode)
            .is_err()
    );
}
