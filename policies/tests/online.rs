//! The online learner's recipe, piece by piece: only whole successful episodes are promoted
//! into the demos, the critic warm-up leaves the actor alone, the published policy is the
//! moving average (not the actor), the learning rate follows the anneal, and a checkpoint
//! carries the round count that a resumed learner continues from.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use candle_core::Device;
use rand::{SeedableRng, rngs::StdRng};
use rft_policies::handle::parse_policy_bytes;
use rft_policies::online::{OnlineLearner, Recipe, prepare};
use rft_policies::{Agent, AgentConfig, Algorithm, ReplayBuffer, TransitionIn, checkpoint};

const OBS: usize = 3;
const ACT: usize = 2;

fn agent(seed: u64) -> Agent {
    let mut c = AgentConfig::preset(Algorithm::Sac, OBS, ACT);
    c.hidden = vec![16, 16];
    c.batch_size = 8;
    c.seed = seed;
    Agent::new(c, &Device::Cpu).unwrap()
}

fn demos(n: usize) -> ReplayBuffer {
    let mut b = ReplayBuffer::new(n, OBS, ACT, None);
    for i in 0..n {
        let o = [i as f32 * 0.01, 0.0, 1.0];
        b.push(&TransitionIn {
            obs: &o,
            action: &[0.1, -0.1],
            reward: 0.0,
            next_obs: &o,
            episode_end: i % 10 == 9,
            mc_return: f32::NEG_INFINITY,
            ..Default::default()
        })
        .unwrap();
    }
    b
}

/// Pushes an episode of `len` steps whose last step is (or is not) a success. Returns the
/// reward its steps carry (a marker to find them again).
fn episode(l: &mut OnlineLearner, len: usize, success: bool, marker: f32) {
    for k in 0..len {
        let o = [marker, k as f32, 0.0];
        let last = k + 1 == len;
        l.push(&TransitionIn {
            obs: &o,
            action: &[0.5, 0.5],
            reward: marker,
            next_obs: &o,
            terminated: last && success,
            episode_end: last,
            mc_return: f32::NEG_INFINITY,
            ..Default::default()
        })
        .unwrap();
    }
}

fn rewards(b: &ReplayBuffer) -> Vec<f32> {
    (0..b.len()).map(|i| b.reward_and_task(i).0).collect()
}

#[test]
fn only_whole_successful_episodes_are_promoted_into_the_demos() {
    let d = demos(20);
    let recipe = Recipe {
        promote_successes: true,
        ..Recipe::default()
    };
    let mut l = OnlineLearner::with_capacity(agent(0), recipe, 100, None, Some(&d), 1).unwrap();
    episode(&mut l, 5, false, 1.0);
    episode(&mut l, 7, true, 2.0);
    episode(&mut l, 4, false, 3.0);
    episode(&mut l, 3, true, 4.0);
    assert_eq!(l.promoted(), 2);
    let got = rewards(l.demos().unwrap());
    assert_eq!(
        got.len(),
        20 + 7 + 3,
        "the demos plus both successes, whole"
    );
    assert!(got[..20].iter().all(|r| *r == 0.0), "the demos come first");
    assert_eq!(&got[20..27], &[2.0; 7]);
    assert_eq!(&got[27..], &[4.0; 3]);
    // The promoted rows keep their flags: the success's last step is terminal.
    let flags = l.demos().unwrap().flags(26);
    assert_ne!(flags & rft_policies::replay::FLAG_TERMINATED, 0);

    // Without the recipe asking, nothing is promoted.
    let mut plain =
        OnlineLearner::with_capacity(agent(0), Recipe::default(), 100, None, Some(&d), 1).unwrap();
    episode(&mut plain, 7, true, 2.0);
    assert_eq!((plain.promoted(), plain.demos().unwrap().len()), (0, 20));
}

#[test]
fn an_episode_longer_than_the_buffer_is_not_promoted_in_part() {
    let d = demos(10);
    let recipe = Recipe {
        promote_successes: true,
        ..Recipe::default()
    };
    let mut l = OnlineLearner::with_capacity(agent(0), recipe, 6, None, Some(&d), 1).unwrap();
    episode(&mut l, 9, true, 5.0);
    assert_eq!(l.promoted(), 0, "its first steps were overwritten");
    episode(&mut l, 4, true, 6.0);
    assert_eq!(l.promoted(), 1);
    assert_eq!(&rewards(l.demos().unwrap())[10..], &[6.0; 4]);
}

fn filled(recipe: Recipe, seed: u64) -> OnlineLearner {
    let d = demos(50);
    let mut a = agent(seed);
    prepare(&mut a, &recipe).unwrap();
    let mut l = OnlineLearner::with_capacity(a, recipe, 200, None, Some(&d), 1).unwrap();
    for e in 0..10 {
        episode(&mut l, 10, e % 2 == 0, e as f32 * 0.1);
    }
    l
}

fn actor_bytes(l: &OnlineLearner) -> Vec<u8> {
    rft_policies::handle::policy_bytes(&l.agent, 0).unwrap()
}

/// The actor's tensors' bytes, by name (without the metadata, which counts gradient steps).
fn actor_tensors(l: &OnlineLearner) -> Vec<(String, Vec<u8>)> {
    let (_, t) = parse_policy_bytes(&actor_bytes(l), Path::new("actor")).unwrap();
    let mut v: Vec<_> = t.into_iter().map(|(k, t)| (k, t.data)).collect();
    v.sort();
    v
}

#[test]
fn the_critic_warm_up_updates_only_the_critics_then_the_actor_moves() {
    let recipe = Recipe {
        critic_warmup_rounds: 3,
        ..Recipe::default()
    };
    let mut l = filled(recipe, 1);
    let mut rng = StdRng::seed_from_u64(0);
    let actor0 = actor_tensors(&l);
    let steps0 = l.agent.steps;
    for _ in 0..3 {
        let r = l.round(&mut rng).unwrap();
        assert!(!r.actor);
    }
    assert!(
        actor_tensors(&l) == actor0,
        "the actor moved during the warm-up"
    );
    assert_eq!(l.agent.steps, steps0 + 3, "one critic step per round");
    let r = l.round(&mut rng).unwrap();
    assert!(r.actor);
    assert!(
        actor_tensors(&l) != actor0,
        "the actor did not move after it"
    );
}

#[test]
fn the_published_policy_is_the_moving_average_at_the_publish_cadence() {
    let recipe = Recipe {
        policy_ema: 0.9,
        publish_every: 4,
        ..Recipe::default()
    };
    let mut l = filled(recipe, 2);
    let mut rng = StdRng::seed_from_u64(0);
    let mut published = Vec::new();
    for round in 1..=12u64 {
        let r = l.round(&mut rng).unwrap();
        if let Some(v) = r.publish {
            published.push((round, v));
        }
    }
    assert_eq!(
        published,
        [(4, 2), (8, 3), (12, 4)],
        "every 4 rounds, from version 1"
    );
    let differing = |l: &OnlineLearner| {
        let (_, p) =
            parse_policy_bytes(&l.policy_bytes().unwrap(), Path::new("published")).unwrap();
        let (_, a) = parse_policy_bytes(&actor_bytes(l), Path::new("actor")).unwrap();
        assert_eq!(p.len(), a.len());
        p.iter().filter(|(k, t)| t.data != a[*k].data).count()
    };
    assert!(
        differing(&l) > 0,
        "the published weights are the actor's own"
    );
    // Without an average the actor itself is published.
    let mut plain = filled(Recipe::default(), 2);
    plain.round(&mut rng).unwrap();
    assert_eq!(differing(&plain), 0);
}

#[test]
fn the_learning_rate_follows_the_anneal_and_a_checkpoint_keeps_the_round_count() {
    let recipe = Recipe {
        critic_warmup_rounds: 2,
        lr_final: 0.5,
        total_rounds: 12,
        ..Recipe::default()
    };
    let mut l = filled(recipe.clone(), 3);
    let lr0 = l.agent.cfg.lr_actor;
    let mut rng = StdRng::seed_from_u64(0);
    for _ in 0..7 {
        l.round(&mut rng).unwrap();
    }
    // Round 7: half-way from the first actor update (2) to the end (12).
    let (actor, _) = l.agent.learning_rates();
    assert!((actor - lr0 * 0.75).abs() < 1e-12, "{actor} vs {lr0}");
    let dir = tempfile::tempdir().unwrap();
    l.checkpoint(dir.path(), 70, serde_json::json!({ "who": "test" }), 2)
        .unwrap();
    let r = checkpoint::load_latest(dir.path(), None, &Device::Cpu)
        .unwrap()
        .unwrap();
    assert_eq!(r.meta.extra["online_rounds"], 7);
    assert_eq!(r.meta.extra["who"], "test");
    assert_eq!(r.replay.unwrap().len(), 100);
}
