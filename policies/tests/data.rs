//! Replay buffer, MC returns and datasets from MCAP recordings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use rand::{SeedableRng, rngs::StdRng};
use rft_msgs::{Header, Reward, Time, Transition};
use rft_policies::dataset::{Episode, buffer_from_episodes, episodes_from_mcap, mc_returns};
use rft_policies::replay::{FLAG_INTERVENTION, FLAG_SAFETY_OVERRIDE, ImageShape};
use rft_policies::{Batch, ObsNorm, ReplayBuffer, SampleSpec, TransitionIn};

fn spec(n_step: usize) -> SampleSpec {
    SampleSpec {
        norm: ObsNorm::identity(),
        num_tasks: 1,
        gamma: 0.5,
        n_step,
        crop_pad: 0,
    }
}

/// A buffer whose transition i has obs [i], reward i+1, and episodes of 4 steps (the second
/// one ends terminally).
fn numbered(cap: usize, n: usize) -> ReplayBuffer {
    let mut b = ReplayBuffer::new(cap, 1, 1, None);
    for i in 0..n {
        let o = [i as f32];
        let no = [i as f32 + 0.5];
        b.push(&TransitionIn {
            obs: &o,
            action: &[0.0],
            reward: (i + 1) as f32,
            next_obs: &no,
            terminated: i == 7,
            episode_end: i % 4 == 3,
            intervention: i == 2,
            safety_override: i == 5,
            mc_return: -(i as f32),
            ..Default::default()
        })
        .unwrap();
    }
    b
}

/// Samples until every stored transition was seen; returns obs → (reward, discount, next_obs).
fn by_obs(b: &ReplayBuffer, s: &SampleSpec) -> BTreeMap<i64, (f32, f32, f32, u8, f32)> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut out = BTreeMap::new();
    let mut batch = Batch::default();
    for _ in 0..200 {
        batch.clear();
        b.sample_into(&mut rng, 16, s, &mut batch).unwrap();
        assert_eq!(batch.size, 16);
        for k in 0..batch.size {
            out.insert(
                batch.obs[k] as i64,
                (
                    batch.reward[k],
                    batch.discount[k],
                    batch.next_obs[k],
                    batch.flags[k],
                    batch.mc_return[k],
                ),
            );
        }
    }
    out
}

#[test]
fn one_step_samples_carry_each_transition_and_its_flags() {
    let b = numbered(100, 12);
    let seen = by_obs(&b, &spec(1));
    assert_eq!(seen.len(), 12, "uniform sampling reaches every transition");
    for (i, (r, d, no, f, mc)) in &seen {
        assert_eq!(*r, (*i + 1) as f32);
        assert_eq!(*no, *i as f32 + 0.5);
        assert_eq!(*d, if *i == 7 { 0.0 } else { 0.5 }, "discount at {i}");
        assert_eq!(f & FLAG_INTERVENTION != 0, *i == 2);
        assert_eq!(f & FLAG_SAFETY_OVERRIDE != 0, *i == 5);
        assert_eq!(*mc, -(*i as f32));
    }
    assert_eq!(b.interventions(), 1);
}

#[test]
fn n_step_returns_stop_at_episode_ends_and_terminals() {
    let b = numbered(100, 12);
    let seen = by_obs(&b, &spec(3));
    // i = 0: r1 + .5 r2 + .25 r3 = 1 + 1 + .75, bootstraps from next_obs of 2 with γ³.
    assert_eq!(seen[&0], (2.75, 0.125, 2.5, 0, 0.0));
    // i = 2: steps 2, 3 then the episode ends (truncated at 3): γ² discount, next_obs of 3.
    assert_eq!(seen[&2].0, 3.0 + 0.5 * 4.0);
    assert_eq!(seen[&2].1, 0.25);
    assert_eq!(seen[&2].2, 3.5);
    // i = 6: steps 6, 7, terminal at 7: no bootstrap.
    assert_eq!(seen[&6].0, 7.0 + 0.5 * 8.0);
    assert_eq!(seen[&6].1, 0.0);
    // i = 11: the newest transition: only itself.
    assert_eq!(seen[&11].0, 12.0);
    assert_eq!(seen[&11].1, 0.5);
}

#[test]
fn ring_overwrites_oldest_and_save_load_round_trips() {
    let b = numbered(8, 12); // holds 4..12
    assert_eq!(b.len(), 8);
    assert_eq!(b.total_added, 12);
    let seen = by_obs(&b, &spec(1));
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (4..12).collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("replay.safetensors");
    b.save(&p).unwrap();
    let l = ReplayBuffer::load(&p).unwrap();
    assert_eq!((l.len(), l.capacity, l.total_added), (8, 8, 12));
    assert_eq!(by_obs(&l, &spec(3)), by_obs(&b, &spec(3)));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&p, &bytes).unwrap();
    let err = ReplayBuffer::load(&p).unwrap_err().to_string();
    assert!(err.contains("replay.safetensors"), "{err}");
}

#[test]
fn bad_transitions_are_refused() {
    let mut b = ReplayBuffer::new(4, 2, 1, None);
    let e = b
        .push(&TransitionIn {
            obs: &[0.0],
            action: &[0.0],
            next_obs: &[0.0, 0.0],
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("observation"), "{e}");
    let mut bi = ReplayBuffer::new(
        4,
        1,
        1,
        Some(ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        }),
    );
    assert!(
        bi.push(&TransitionIn {
            obs: &[0.0],
            action: &[0.0],
            next_obs: &[0.0],
            ..Default::default()
        })
        .is_err()
    );
    assert!(b.is_empty() && bi.is_empty());
    let mut rng = StdRng::seed_from_u64(0);
    assert!(
        b.sample_into(&mut rng, 1, &spec(1), &mut Batch::default())
            .is_err()
    );
}

#[test]
fn images_are_stored_as_u8_and_shifted_with_edge_replication() {
    let shape = ImageShape {
        channels: 1,
        height: 4,
        width: 4,
    };
    let mut b = ReplayBuffer::new(2, 1, 1, Some(shape));
    let img: Vec<u8> = (0..16).collect();
    b.push(&TransitionIn {
        obs: &[0.0],
        action: &[0.0],
        next_obs: &[0.0],
        image: Some(&img),
        next_image: Some(&img),
        ..Default::default()
    })
    .unwrap();
    let mut s = spec(1);
    s.crop_pad = 1;
    let mut rng = StdRng::seed_from_u64(3);
    let mut variants = std::collections::HashSet::new();
    for _ in 0..100 {
        let mut batch = Batch::default();
        b.sample_into(&mut rng, 1, &s, &mut batch).unwrap();
        assert_eq!(batch.images.len(), 16);
        assert_eq!(
            batch.images, batch.next_images,
            "same shift for both frames"
        );
        // Every pixel comes from within one pixel of its place.
        for y in 0..4i32 {
            for x in 0..4i32 {
                let v = batch.images[(y * 4 + x) as usize] as i32;
                let (sy, sx) = (v / 4, v % 4);
                assert!((sy - y).abs() <= 1 && (sx - x).abs() <= 1);
            }
        }
        variants.insert(batch.images.clone());
    }
    assert_eq!(variants.len(), 9, "all 3x3 shifts occur");
}

#[test]
fn mc_returns_follow_calql() {
    let g = mc_returns(&[1.0, 0.0, 2.0], true, 0.5, None);
    assert_eq!(g, vec![1.0 + 0.5 * 0.0 + 0.25 * 2.0, 0.0 + 0.5 * 2.0, 2.0]);
    // Truncated episodes also stop at their end (no value beyond the data).
    assert_eq!(mc_returns(&[1.0, 1.0], false, 0.5, None), vec![1.5, 1.0]);
    // All-failure sparse episodes get r_neg / (1 − γ).
    assert!(
        mc_returns(&[-1.0; 3], false, 0.9, Some(-1.0))
            .iter()
            .all(|g| (g + 10.0).abs() < 1e-4)
    );
    assert_eq!(
        mc_returns(&[-1.0, 0.0], true, 0.5, Some(-1.0)),
        vec![-1.0, 0.0]
    );
}

#[test]
fn episodes_become_a_buffer_with_mc_returns() {
    let ep = Episode {
        task_id: 1,
        obs: vec![vec![0.0], vec![1.0], vec![2.0]],
        actions: vec![vec![0.1], vec![0.2]],
        rewards: vec![1.0, 2.0],
        terminated: true,
        ..Default::default()
    };
    let b = buffer_from_episodes(&[ep.clone(), ep.clone()], 0.5, None, 10).unwrap();
    assert_eq!((b.len(), b.capacity), (4, 14));
    let seen = by_obs(&b, &spec(1));
    assert_eq!(seen[&0].4, 2.0);
    assert_eq!(seen[&1].4, 2.0);
    assert_eq!(seen[&1].1, 0.0, "terminal");
    let mut bad = ep;
    bad.rewards.pop();
    let e = buffer_from_episodes(&[bad], 0.5, None, 0).unwrap_err();
    assert!(e.to_string().contains("episode 0"), "{e}");
}

fn stamp(ns: i64) -> Time {
    Time {
        sec: (ns / 1_000_000_000) as i32,
        nanosec: (ns % 1_000_000_000) as u32,
    }
}

/// Writes an MCAP like `rft record` does: ROS 2 profile, CDR messages.
fn write_mcap(path: &std::path::Path, transitions: &[Transition], rewards: &[Reward], junk: bool) {
    let mut w = mcap::WriteOptions::new()
        .profile("ros2")
        .create(std::io::BufWriter::new(
            std::fs::File::create(path).unwrap(),
        ))
        .unwrap();
    let ts = w
        .add_schema("rft_msgs/msg/Transition", "ros2msg", b"")
        .unwrap();
    let rs = w.add_schema("rft_msgs/msg/Reward", "ros2msg", b"").unwrap();
    let tc = w
        .add_channel(ts, "/rft/transition", "cdr", &BTreeMap::new())
        .unwrap();
    let rc = w
        .add_channel(rs, "/rft/reward", "cdr", &BTreeMap::new())
        .unwrap();
    let mut seq = 0;
    let mut put = |w: &mut mcap::Writer<_>, ch: u16, data: Vec<u8>| {
        seq += 1;
        w.write_to_known_channel(
            &mcap::records::MessageHeader {
                channel_id: ch,
                sequence: seq,
                log_time: seq as u64,
                publish_time: seq as u64,
            },
            &data,
        )
        .unwrap();
    };
    for r in rewards {
        put(&mut w, rc, rft_msgs::cdr::encode(r).unwrap());
    }
    for t in transitions {
        put(&mut w, tc, rft_msgs::cdr::encode(t).unwrap());
    }
    if junk {
        put(&mut w, tc, vec![0, 1, 0, 0, 7]);
    }
    w.finish().unwrap();
}

#[test]
fn a_recording_becomes_episodes_joined_with_rewards_by_stamp() {
    let mut ts = Vec::new();
    let mut rs = Vec::new();
    for ep in 0..2u64 {
        // Episode 0 reaches the goal at step 4 (its reward says success); the runner, hearing
        // of it a tick late, records step 5 and marks that one done.
        for k in 0..(5 + u32::from(ep == 0)) {
            let t0 = (ep as i64 * 100 + k as i64) * 100_000_000;
            let t1 = t0 + 100_000_000;
            ts.push(Transition {
                header: Header {
                    stamp: stamp(t0),
                    frame_id: String::new(),
                },
                episode_id: ep,
                task_id: ep as u8,
                step: k,
                obs: vec![k as f32, ep as f32],
                action: vec![0.5],
                next_obs: vec![k as f32 + 1.0, ep as f32],
                next_obs_stamp: stamp(t1),
                done: k == 5 && ep == 0,
                // An image policy's frames ride along, one per observation.
                image: vec![k as u8, ep as u8],
                next_image: vec![k as u8 + 1, ep as u8],
                ..Default::default()
            });
            // One reward is missing (ep 1, step 2) and one is marked invalid (ep 1, step 3).
            if !(ep == 1 && k == 2) {
                rs.push(Reward {
                    header: Header {
                        stamp: stamp(t1),
                        frame_id: String::new(),
                    },
                    task_id: ep as u8,
                    reward: if k == 4 { 1.0 } else { 0.0 },
                    success: k == 4 && ep == 0,
                    valid: !(ep == 1 && k == 3),
                    ..Default::default()
                });
            }
        }
    }
    // Transitions arrive out of order in the file.
    ts.reverse();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.mcap");
    write_mcap(&p, &ts, &rs, true);
    let (eps, stats) = episodes_from_mcap(&p, 0).unwrap();
    assert_eq!(stats.transitions, 11);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.unrewarded, 2, "the missing and the invalid reward");
    assert_eq!(stats.after_success, 1, "the step after the goal");
    // Episode 0 up to the step that reached the goal, terminal there; episode 1 split around
    // its two unrewarded steps, never terminal.
    assert_eq!(eps.len(), 3);
    assert_eq!(eps[0].len(), 5);
    assert!(eps[0].terminated);
    assert!(!eps[1].terminated && !eps[2].terminated);
    assert_eq!(eps[0].rewards, vec![0.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(
        eps[0].obs.iter().map(|o| o[0]).collect::<Vec<_>>(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(
        eps[0].images,
        (0..6u8).map(|k| vec![k, 0]).collect::<Vec<_>>(),
        "one frame per observation, in step order"
    );
    assert_eq!((eps[1].len(), eps[2].len()), (2, 1));
    assert_eq!(eps[2].task_id, 1);
    assert_eq!(eps[2].images.len(), eps[2].obs.len());
    // A reward a little older than the next frame is accepted within the allowed age.
    let (eps, stats) = episodes_from_mcap(&p, 1_000).unwrap();
    assert_eq!((eps.len(), stats.unrewarded), (3, 2));

    let empty = dir.path().join("empty.mcap");
    write_mcap(&empty, &[], &rs, false);
    let e = episodes_from_mcap(&empty, 0).unwrap_err().to_string();
    assert!(
        e.contains("no /rft/transition") && e.contains("empty.mcap"),
        "{e}"
    );
    std::fs::write(dir.path().join("bad.mcap"), b"nope").unwrap();
    assert!(episodes_from_mcap(&dir.path().join("bad.mcap"), 0).is_err());
}

#[test]
fn copied_rows_keep_rewards_flags_returns_and_order_even_after_the_ring_wrapped() {
    // 12 pushed into 10 slots: rows 0..10 are transitions 2..12, oldest first.
    let src = numbered(10, 12);
    let mut dst = numbered(100, 0);
    src.copy_into(3, 7, &mut dst).unwrap();
    assert_eq!(dst.len(), 4);
    let seen = by_obs(&dst, &spec(1));
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![5, 6, 7, 8]);
    for (i, (r, d, no, f, mc)) in &seen {
        assert_eq!(*r, (*i + 1) as f32);
        assert_eq!(*no, *i as f32 + 0.5);
        assert_eq!(*d, if *i == 7 { 0.0 } else { 0.5 }, "terminal kept at {i}");
        assert_eq!(f & FLAG_SAFETY_OVERRIDE != 0, *i == 5);
        assert_eq!(*mc, -(*i as f32));
    }
    // Out of range: refused, nothing added.
    assert!(src.copy_into(8, 11, &mut dst).is_err());
    assert!(src.copy_into(5, 4, &mut dst).is_err());
    assert_eq!(dst.len(), 4);
}
