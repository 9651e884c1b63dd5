//! `Agent::set_lr_scale`: a learning-rate schedule scales both optimisers' steps; at 0 an
//! update leaves the networks where they were, at 1 the configured rates come back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use rand::{SeedableRng, rngs::StdRng};
use rft_policies::train::sample_round;
use rft_policies::{Agent, AgentConfig, Algorithm, Batch, ReplayBuffer, TransitionIn};

fn agent() -> Agent {
    let mut c = AgentConfig::preset(Algorithm::Sac, 3, 2);
    c.hidden = vec![16, 16];
    c.batch_size = 32;
    c.seed = 3;
    Agent::new(c, &candle_core::Device::Cpu).unwrap()
}

fn weights(a: &Agent) -> Vec<f32> {
    let mut w = a.weights().into_iter().collect::<Vec<_>>();
    w.sort_by(|x, y| x.0.cmp(&y.0));
    w.into_iter()
        .filter(|(n, _)| !n.starts_with("target"))
        .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn a_zero_scale_freezes_the_networks_and_one_restores_the_configured_rates() {
    let mut buf = ReplayBuffer::new(64, 3, 2, None);
    for i in 0..64 {
        let o = [i as f32 * 0.01, 0.5, -0.2];
        buf.push(&TransitionIn {
            obs: &o,
            action: &[0.3, -0.3],
            reward: (i % 2) as f32,
            next_obs: &o,
            mc_return: f32::NEG_INFINITY,
            ..Default::default()
        })
        .unwrap();
    }
    let mut a = agent();
    let (lr_actor, lr_critic) = (a.cfg.lr_actor, a.cfg.lr_critic);
    let mut rng = StdRng::seed_from_u64(1);
    let mut batches: Vec<Batch> = Vec::new();
    sample_round(&a, &buf, None, 0.0, &mut rng, &mut batches).unwrap();
    let refs: Vec<&Batch> = batches.iter().collect();

    a.set_lr_scale(0.0);
    assert_eq!(a.learning_rates(), (0.0, 0.0));
    let before = weights(&a);
    a.update(&refs).unwrap();
    assert_eq!(
        weights(&a),
        before,
        "a zero learning rate moved the networks"
    );

    a.set_lr_scale(0.5);
    assert_eq!(a.learning_rates(), (lr_actor * 0.5, lr_critic * 0.5));
    a.set_lr_scale(1.0);
    assert_eq!(a.learning_rates(), (lr_actor, lr_critic));
    a.update(&refs).unwrap();
    let moved = weights(&a)
        .iter()
        .zip(&before)
        .filter(|(x, y)| x != y)
        .count();
    assert!(moved > 0, "an update at the configured rate moved nothing");
}
