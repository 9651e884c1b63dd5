//! RLPD mixing with a behaviour-cloning term: `sample_round` marks the rows drawn from the
//! demonstrations, and the BC term clones those rows only, never the policy's own online
//! actions.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use rand::{SeedableRng, rngs::StdRng};
use rft_policies::train::sample_round;
use rft_policies::{Agent, AgentConfig, Algorithm, Batch, ReplayBuffer, TransitionIn};

fn buffer(n: usize, action: f32) -> ReplayBuffer {
    let mut b = ReplayBuffer::new(n, 3, 2, None);
    for i in 0..n {
        let o = [i as f32 * 0.01, 0.5, -0.2];
        b.push(&TransitionIn {
            obs: &o,
            action: &[action, -action],
            reward: 0.0,
            next_obs: &o,
            mc_return: f32::NEG_INFINITY,
            ..Default::default()
        })
        .unwrap();
    }
    b
}

fn agent() -> Agent {
    let mut c = AgentConfig::preset(Algorithm::Sac, 3, 2);
    c.hidden = vec![16, 16];
    c.batch_size = 32;
    c.bc_weight = 1.0;
    c.seed = 7;
    Agent::new(c, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn bc_clones_the_demo_rows_of_a_mixed_batch_only() {
    let demos = buffer(64, 0.1);
    // Online actions the demonstrations never took.
    let online = buffer(64, 0.99);
    let mut rng = StdRng::seed_from_u64(1);
    let mut batches: Vec<Batch> = Vec::new();
    let a = agent();
    sample_round(&a, &online, Some(&demos), 0.25, &mut rng, &mut batches).unwrap();
    let mixed = batches[0].clone();
    assert_eq!((mixed.size, mixed.demo_rows), (32, 8));
    assert!(mixed.act[..16].iter().all(|x| x.abs() == 0.1));
    assert!(mixed.act[16..].iter().all(|x| x.abs() == 0.99));
    // The same eight demo rows alone, as an offline batch.
    let mut demo_only = mixed.clone();
    demo_only.size = 8;
    for v in [&mut demo_only.obs, &mut demo_only.next_obs] {
        v.truncate(8 * mixed.obs.len() / 32);
    }
    demo_only.act.truncate(16);
    demo_only.reward.truncate(8);
    demo_only.discount.truncate(8);
    demo_only.mc_return.truncate(8);
    demo_only.flags.truncate(8);
    demo_only.demo_rows = 0;
    let nll_mixed = agent().update(&[&mixed]).unwrap().bc_nll;
    let nll_demos = agent().update(&[&demo_only]).unwrap().bc_nll;
    assert!(
        (nll_mixed - nll_demos).abs() < 1e-4,
        "BC over the mixed batch {nll_mixed}, over its demo rows {nll_demos}"
    );
    // Cloning every row would have counted the far-off online actions.
    let mut all_rows = mixed.clone();
    all_rows.demo_rows = 0;
    let nll_all = agent().update(&[&all_rows]).unwrap().bc_nll;
    assert!(nll_all > nll_demos + 0.5, "{nll_all} vs {nll_demos}");
}
