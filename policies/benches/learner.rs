//! Learner and policy-runner speed: SAC and RLPD-style update rounds, `PolicyHandle::act`
//! latency (MLP and CNN encoder at 128×128) with p50/p99 over many calls.
//!
//! `cargo bench -p rft-policies --bench learner` (the act latencies are meant for one core:
//! `taskset -c 0 cargo bench …`). The matching Stable-Baselines3 numbers come from
//! `python3 policies/benches/sb3_sac.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{SeedableRng, rngs::StdRng};
use rft_policies::dataset::buffer_from_episodes;
use rft_policies::handle::{ActMode, InferencePolicy, PolicyHandle};
use rft_policies::nets::EncoderConfig;
use rft_policies::pendulum::heuristic_episodes;
use rft_policies::train::sample_round;
use rft_policies::{Agent, AgentConfig, Algorithm, Batch, ReplayBuffer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn data() -> ReplayBuffer {
    buffer_from_episodes(&heuristic_episodes(50, 0.5, 0), 0.99, None, 0).unwrap()
}

fn update_round(c: &mut Criterion, name: &str, cfg: AgentConfig) {
    let buf = data();
    let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let mut batches: Vec<Batch> = Vec::new();
    let utd = agent.cfg.utd;
    let mut g = c.benchmark_group("learner");
    g.sample_size(20).measurement_time(Duration::from_secs(15));
    g.bench_function(name, |b| {
        b.iter(|| {
            sample_round(&agent, &buf, None, 0.0, &mut rng, &mut batches).unwrap();
            let refs: Vec<&Batch> = batches.iter().collect();
            black_box(agent.update(&refs).unwrap());
        })
    });
    g.finish();
    eprintln!("  ({name}: one round = {utd} critic steps + 1 actor step)");
}

fn learner(c: &mut Criterion) {
    // SB3-equal sizes: batch 256, 256x256 MLPs, 2 critics, UTD 1.
    let sac = AgentConfig::preset(Algorithm::Sac, 3, 1);
    update_round(c, "sac_round_b256_h256x2_c2", sac);
    // RLPD-style: 10 critics (min over 2), LayerNorm, UTD 20, batch 256.
    let rlpd = AgentConfig::preset(Algorithm::Rlpd, 3, 1);
    update_round(c, "rlpd_round_b256_h256x2_c10_ln_utd20", rlpd);
}

/// p50 / p99 of `n` timed calls after `warm` untimed ones.
fn percentiles(n: usize, warm: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..warm {
        f();
    }
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        f();
        t.push(s.elapsed());
    }
    t.sort();
    (t[n / 2], t[n * 99 / 100])
}

fn act(c: &mut Criterion) {
    // The state policy the robot runs: 256x256, LayerNorm, 2 tasks, 20-D observation, 4-D action.
    let mut cfg = AgentConfig::preset(Algorithm::Wsrl, 20, 4);
    cfg.num_tasks = 2;
    let agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let mut h = PolicyHandle::new(InferencePolicy::from_agent(&agent, 1).unwrap(), 0);
    let obs = [0.1f32; 20];
    let mut out = [0f32; 4];
    let mut g = c.benchmark_group("act");
    g.bench_function("mlp_256x256_ln_stochastic", |b| {
        b.iter(|| {
            h.act(black_box(&obs), 1, None, ActMode::Stochastic, &mut out)
                .unwrap()
        })
    });
    let (p50, p99) = percentiles(100_000, 1_000, || {
        h.act(&obs, 1, None, ActMode::Stochastic, &mut out).unwrap();
    });
    eprintln!("  act MLP: p50 {p50:?} p99 {p99:?} (100k calls)");

    let mut cfg = AgentConfig::preset(Algorithm::Wsrl, 20, 4);
    cfg.num_tasks = 2;
    cfg.encoder = Some(EncoderConfig::default()); // 3x128x128, stages 16/32/64, 64 features
    let agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let mut h = PolicyHandle::new(InferencePolicy::from_agent(&agent, 1).unwrap(), 0);
    let img: Vec<u8> = (0..3 * 128 * 128).map(|i| (i * 31 % 256) as u8).collect();
    g.sample_size(50);
    g.bench_function("cnn_128x128_stochastic", |b| {
        b.iter(|| {
            h.act(
                black_box(&obs),
                0,
                Some(&img),
                ActMode::Stochastic,
                &mut out,
            )
            .unwrap()
        })
    });
    g.finish();
    let (p50, p99) = percentiles(2_000, 50, || {
        h.act(&obs, 0, Some(&img), ActMode::Stochastic, &mut out)
            .unwrap();
    });
    eprintln!("  act CNN 128x128: p50 {p50:?} p99 {p99:?} (2k calls)");
}

criterion_group!(benches, learner, act);
criterion_main!(benches);
