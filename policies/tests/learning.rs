//! Learning on small budgets: SAC, WSRL and RLPD improve, Cal-QL is conservative and calibrated, BC imitates,
//! WSRL warms up without updates, RLPD mixes its batches half and half. (The full-budget runs
//! are benchmarks: see BENCHMARKS.md.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use candle_core::{Device, Tensor};
use rand::{SeedableRng, rngs::StdRng};
use rft_policies::dataset::buffer_from_episodes;
use rft_policies::env::make_env;
use rft_policies::pendulum::heuristic_episodes;
use rft_policies::train::{OnlineConfig, evaluate, sample_round, train_offline, train_online};
use rft_policies::{Agent, AgentConfig, Algorithm, Batch};

fn small(algo: Algorithm, seed: u64) -> AgentConfig {
    let mut c = AgentConfig::preset(algo, 3, 1);
    c.hidden = vec![64, 64];
    c.batch_size = 128;
    c.seed = seed;
    c
}

fn eval(agent: &mut Agent, seed: u64) -> f64 {
    let mut env = make_env("pendulum", 1000 + seed).unwrap();
    evaluate(agent, env.as_mut(), 5).unwrap()
}

#[test]
fn sac_returns_improve_on_a_small_budget() {
    let mut cfg = small(Algorithm::Sac, 0);
    cfg.lr_actor = 1e-3;
    cfg.lr_critic = 1e-3;
    cfg.lr_alpha = 1e-3;
    let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let before = eval(&mut agent, 0);
    let oc = OnlineConfig {
        total_steps: 3000,
        eval_every: 0,
        seed: 0,
        ..Default::default()
    };
    let (log, mut agent) = train_online(agent, "pendulum", &oc, None, None, &mut |_| {}).unwrap();
    let after = eval(&mut agent, 0);
    eprintln!(
        "SAC 3k steps: eval {before:.0} -> {after:.0}, {:.1} s",
        log.wall_s
    );
    assert_eq!(
        log.grad_steps,
        3000 - 100,
        "one gradient step per env step after learning_starts"
    );
    assert_eq!(log.episodes.len(), 15);
    assert!(
        after > before + 300.0,
        "eval return {before:.0} -> {after:.0}"
    );
    let first: f64 = log.episodes[..3].iter().map(|e| e.1).sum::<f64>() / 3.0;
    let last: f64 = log.episodes[12..].iter().map(|e| e.1).sum::<f64>() / 3.0;
    assert!(
        last > first + 300.0,
        "training returns {first:.0} -> {last:.0}"
    );
}

#[test]
fn wsrl_returns_improve_on_a_small_budget() {
    // WSRL: the policy itself fills the buffer during the warm-up (no random actions, no
    // offline data kept), then SAC updates with the critic ensemble.
    let mut cfg = small(Algorithm::Wsrl, 1);
    cfg.n_critics = 4;
    cfg.lr_actor = 1e-3;
    cfg.lr_critic = 1e-3;
    cfg.lr_alpha = 1e-3;
    cfg.utd = 1;
    let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let before = eval(&mut agent, 1);
    let oc = OnlineConfig {
        total_steps: 3000,
        learning_starts: 200,
        random_before_learning: false,
        eval_every: 0,
        seed: 1,
        ..Default::default()
    };
    let (log, mut agent) = train_online(agent, "pendulum", &oc, None, None, &mut |_| {}).unwrap();
    let after = eval(&mut agent, 1);
    eprintln!(
        "WSRL 3k steps: eval {before:.0} -> {after:.0}, {:.1} s",
        log.wall_s
    );
    assert_eq!(log.grad_steps, 3000 - 200);
    assert!(
        after > before + 300.0,
        "eval return {before:.0} -> {after:.0}"
    );
}

#[test]
fn rlpd_returns_improve_on_a_small_budget_with_demos_in_every_batch() {
    // RLPD: half of each batch from noisy demonstrations, half online; UTD 2 here to keep
    // the test short (the preset's 20 is for sample efficiency, not for a test).
    let offline = buffer_from_episodes(&heuristic_episodes(10, 0.5, 7), 0.99, None, 0).unwrap();
    let mut cfg = small(Algorithm::Rlpd, 2);
    cfg.utd = 2;
    cfg.lr_actor = 1e-3;
    cfg.lr_critic = 1e-3;
    cfg.lr_alpha = 1e-3;
    let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let before = eval(&mut agent, 2);
    let oc = OnlineConfig {
        total_steps: 1500,
        learning_starts: 100,
        offline_ratio: 0.5,
        eval_every: 0,
        seed: 2,
        ..Default::default()
    };
    let (log, mut agent) =
        train_online(agent, "pendulum", &oc, Some(&offline), None, &mut |_| {}).unwrap();
    let after = eval(&mut agent, 2);
    eprintln!(
        "RLPD 1.5k steps: eval {before:.0} -> {after:.0}, {:.1} s",
        log.wall_s
    );
    assert_eq!(log.grad_steps, (1500 - 100) * 2);
    assert!(
        after > before + 300.0,
        "eval return {before:.0} -> {after:.0}"
    );
}

/// Mean Q over critics for the given (normalised) observations and actions.
fn q_of(agent: &Agent, obs: &[f32], act: &[f32]) -> f32 {
    let n = act.len();
    let x = Tensor::from_slice(obs, (n, 3), &agent.dev).unwrap();
    let a = Tensor::from_slice(act, (n, 1), &agent.dev).unwrap();
    let xa = Tensor::cat(&[&x, &a], 1).unwrap();
    agent
        .critic
        .forward(&xa, true)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn calql_pretraining_is_conservative_bounded_and_improves_the_policy() {
    let episodes = heuristic_episodes(20, 0.5, 1);
    let data_return: f64 = episodes
        .iter()
        .map(|e| e.total_reward() as f64)
        .sum::<f64>()
        / 20.0;
    let data = buffer_from_episodes(&episodes, 0.99, None, 0).unwrap();
    let mut cfg = small(Algorithm::Calql, 1);
    if let Some(c) = cfg.cql.as_mut() {
        c.n_actions = 4;
    }
    let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let before = eval(&mut agent, 1);
    let mut bound_rate = Vec::new();
    let log = train_offline(&mut agent, &data, 1000, None, 0, None, &mut |p| {
        bound_rate.push(p.info.calql_bound_rate)
    })
    .unwrap();
    let after = eval(&mut agent, 1);
    eprintln!(
        "Cal-QL 1k steps on data of return {data_return:.0}: eval {before:.0} -> {after:.0}, \
         bound rate {:.2} -> {:.2}, {:.1} s",
        bound_rate[0],
        bound_rate[bound_rate.len() - 1],
        log.wall_s
    );
    assert!(
        after > before + 150.0,
        "pre-training: {before:.0} -> {after:.0}"
    );
    // The MC lower bound is active at the start (an untrained Q sits far above returns of
    // about -50, then CQL pushes policy actions down onto it).
    assert!(
        bound_rate.iter().any(|r| *r > 0.05),
        "Cal-QL bound never active"
    );

    // Conservative: the gap between Q of data actions and Q of random actions at the data's
    // states is wider than the same critic architecture trained by plain SAC on the same data
    // for the same steps.
    let mut sac_cfg = small(Algorithm::Sac, 1);
    sac_cfg.backup_entropy = false;
    let mut sac = Agent::new(sac_cfg, &Device::Cpu).unwrap();
    train_offline(&mut sac, &data, 1000, None, 0, None, &mut |_| {}).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let mut b = Batch::default();
    data.sample_into(&mut rng, 512, &agent.sample_spec(), &mut b)
        .unwrap();
    let random: Vec<f32> = (0..512)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let gap = |a: &Agent| q_of(a, &b.obs, &b.act) - q_of(a, &b.obs, &random);
    let (gap_calql, gap_sac) = (gap(&agent), gap(&sac));
    eprintln!("Q(data) - Q(random): Cal-QL {gap_calql:.3}, SAC {gap_sac:.3}");
    assert!(
        gap_calql > gap_sac + 0.1,
        "Cal-QL gap {gap_calql:.3} vs SAC gap {gap_sac:.3}"
    );
}

#[test]
fn behaviour_cloning_imitates_the_demonstrator() {
    let episodes = heuristic_episodes(20, 0.0, 2);
    let data = buffer_from_episodes(&episodes, 0.99, None, 0).unwrap();
    let mut cfg = small(Algorithm::Bc, 2);
    cfg.lr_actor = 1e-3;
    let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
    // Imitation error on states of held-out demonstrations.
    let held_out = heuristic_episodes(5, 0.0, 99);
    let err = |agent: &mut Agent| -> f64 {
        let mut total = 0.0;
        let mut n = 0.0;
        for e in &held_out {
            for (o, a) in e.obs.iter().zip(&e.actions) {
                total += (agent.act(o, 0, None, true).unwrap()[0] - a[0]).abs() as f64;
                n += 1.0;
            }
        }
        total / n
    };
    let (before, err_before) = (eval(&mut agent, 2), err(&mut agent));
    let log = train_offline(&mut agent, &data, 3000, None, 0, None, &mut |p| {
        assert!(p.info.bc_nll.is_finite());
    })
    .unwrap();
    let (after, err_after) = (eval(&mut agent, 2), err(&mut agent));
    eprintln!(
        "BC: eval {before:.0} -> {after:.0} (demonstrator about -160), mean |a - a_demo| \
         {err_before:.3} -> {err_after:.3}, {:.1} s",
        log.wall_s
    );
    assert!(
        err_after < 0.5 * err_before,
        "imitation error {err_before:.3} -> {err_after:.3}"
    );
    assert!(
        after > before + 200.0,
        "BC policy returns {before:.0} -> {after:.0}"
    );
}

#[test]
fn wsrl_warms_up_with_the_policy_without_updates_then_fine_tunes() {
    let mut cfg = small(Algorithm::Wsrl, 3);
    cfg.n_critics = 4;
    cfg.utd = 2;
    let agent = Agent::new(cfg, &Device::Cpu).unwrap();
    let oc = OnlineConfig {
        total_steps: 400,
        learning_starts: 300,
        random_before_learning: false,
        eval_every: 0,
        seed: 3,
        ..Default::default()
    };
    let mut steps_at_300 = None;
    let (log, _agent) = train_online(agent, "pendulum", &oc, None, None, &mut |p| {
        if p.step == 300 {
            steps_at_300 = Some(p.grad_steps);
        }
    })
    .unwrap();
    assert_eq!(
        steps_at_300,
        Some(0),
        "no gradient steps during the warm-up"
    );
    assert_eq!(log.grad_steps, 100 * 2, "UTD 2 after the warm-up");
}

#[test]
fn rlpd_batches_are_half_offline() {
    let mut demos = heuristic_episodes(2, 0.0, 4);
    for e in &mut demos {
        e.interventions = vec![true; e.len()];
    }
    let offline = buffer_from_episodes(&demos, 0.99, None, 0).unwrap();
    let online = buffer_from_episodes(&heuristic_episodes(2, 1.0, 5), 0.99, None, 0).unwrap();
    let agent = Agent::new(small(Algorithm::Rlpd, 4), &Device::Cpu).unwrap();
    assert_eq!(agent.cfg.utd, 20);
    let mut rng = StdRng::seed_from_u64(0);
    let mut batches = Vec::new();
    sample_round(&agent, &online, Some(&offline), 0.5, &mut rng, &mut batches).unwrap();
    assert_eq!(batches.len(), 20);
    for b in &batches {
        assert_eq!(b.size, 128);
        let demo = b
            .flags
            .iter()
            .filter(|f| **f & rft_policies::replay::FLAG_INTERVENTION != 0)
            .count();
        assert_eq!(demo, 64);
    }
}

/// Image observations: a trainable encoder learns through the critic loss (and its target
/// follows), a frozen one stays as it was; the actor never moves the encoder.
#[test]
fn image_encoder_trains_through_the_critic_or_stays_frozen() {
    use rft_policies::nets::EncoderConfig;
    use rft_policies::replay::ImageShape;
    use rft_policies::{ReplayBuffer, TransitionIn};
    for trainable in [true, false] {
        let enc = EncoderConfig {
            channels: 3,
            height: 16,
            width: 16,
            stages: vec![4, 8],
            feature_dim: 8,
            trainable,
            crop_pad: 2,
        };
        let mut cfg = small(Algorithm::Sac, 6);
        cfg.hidden = vec![32];
        cfg.batch_size = 16;
        cfg.encoder = Some(enc.clone());
        let mut agent = Agent::new(cfg, &Device::Cpu).unwrap();
        let mut buf = ReplayBuffer::new(64, 3, 1, Some(ImageShape::from(&enc)));
        for i in 0..64u32 {
            let img: Vec<u8> = (0..enc.image_len())
                .map(|k| ((k as u32 * 7 + i * 13) % 256) as u8)
                .collect();
            let o = [(i as f32).sin(), (i as f32).cos(), 0.1];
            buf.push(&TransitionIn {
                obs: &o,
                action: &[0.2],
                reward: -(i as f32 % 5.0),
                next_obs: &o,
                image: Some(&img),
                next_image: Some(&img),
                ..Default::default()
            })
            .unwrap();
        }
        let snapshot = |a: &Agent, prefix: &str| -> Vec<f32> {
            let mut w: Vec<_> = a
                .weights()
                .into_iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .collect();
            w.sort_by(|x, y| x.0.cmp(&y.0));
            w.iter()
                .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
        };
        let (enc0, tgt0) = (
            snapshot(&agent, "encoder."),
            snapshot(&agent, "target_encoder."),
        );
        assert_eq!(enc0, tgt0, "the target starts as a copy");
        let mut rng = StdRng::seed_from_u64(0);
        let mut batches = Vec::new();
        for _ in 0..5 {
            sample_round(&agent, &buf, None, 0.0, &mut rng, &mut batches).unwrap();
            let refs: Vec<&Batch> = batches.iter().collect();
            let info = agent.update(&refs).unwrap();
            assert!(info.critic_loss.is_finite() && info.actor_loss.is_finite());
        }
        let (enc1, tgt1) = (
            snapshot(&agent, "encoder."),
            snapshot(&agent, "target_encoder."),
        );
        let moved = enc0.iter().zip(&enc1).filter(|(a, b)| a != b).count();
        if trainable {
            assert!(
                moved > enc0.len() / 2,
                "trainable encoder: {moved} of {} weights moved",
                enc0.len()
            );
            assert_ne!(tgt0, tgt1, "target encoder follows");
        } else {
            assert_eq!(moved, 0, "frozen encoder moved");
        }
        // Acting with an image works through both paths.
        let img = vec![100u8; enc.image_len()];
        assert!(agent.act(&[0.0, 1.0, 0.0], 0, Some(&img), true).unwrap()[0].abs() <= 1.0);
        assert!(agent.act(&[0.0, 1.0, 0.0], 0, None, true).is_err());
    }
}
