//! The CNN success classifier on the simulator's push task: trained on frames from fewer than
//! 50 scripted demos per direction, checked against ground truth on held-out episodes (near
//! misses and partial attempts included).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use candle_core::Device;
use rft_rewards::metrics::Confusion;
use rft_rewards::*;
use rft_sim::{DemoFramesConfig, DemoKind, Direction, TaskKind, demo_frames};

fn frames(dir: Direction, episodes: usize, seed: u64) -> LabelledFrames {
    let cfg = DemoFramesConfig::new(TaskKind::Push, dir, episodes, seed);
    let d = demo_frames(&cfg, |_, _| {}).unwrap();
    let mut out = LabelledFrames::new(d.width, d.height, format!("push/{}", dir.name()));
    for i in 0..d.len() {
        out.push(d.frame(i), d.success[i], d.episode[i]).unwrap();
    }
    assert!(d.kinds.contains(&DemoKind::NearMiss));
    out
}

fn check_direction(dir: Direction) {
    // 45 demos: 30 successes, 8 near misses, 7 partial attempts.
    let train = frames(dir, 45, 1_000);
    let test = frames(dir, 30, 50_000);
    let dev = Device::Cpu;
    let mut clf = CnnClassifier::new(CnnConfig::default(), train.task.clone(), 0, &dev).unwrap();
    let t0 = std::time::Instant::now();
    let report = clf
        .train(&train, &CnnTrainConfig::default(), |s, n, l| {
            eprintln!(
                "{} step {s}/{n} loss {l:.4} ({:.0} s)",
                train.task,
                t0.elapsed().as_secs_f64()
            )
        })
        .unwrap();
    eprintln!("{}: validation {}", train.task, report.val);
    let imgs: Vec<ImageRef<'_>> = (0..test.len()).map(|i| test.image(i)).collect();
    let p = clf.predict(&imgs, &test.task).unwrap();
    let c = Confusion::at(&p, &test.label, clf.threshold());
    eprintln!("{}: held-out {c}\n{}", test.task, c.table());
    // Episode level, as the episode manager uses it: success once 3 frames in a row pass τ.
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for e in test.episodes() {
        let mut deb = Debouncer::new(clf.threshold(), 3);
        let idx: Vec<usize> = (0..test.len()).filter(|&i| test.episode[i] == e).collect();
        let fired = idx.iter().any(|&i| deb.push(p[i]));
        let truth = idx.iter().any(|&i| test.label[i]);
        match (fired, truth) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    eprintln!(
        "{}: episodes, debounced k=3: tp {tp} fp {fp} tn {tn} fn {fn_}",
        test.task
    );
    assert!(
        c.precision >= 0.95 && c.recall >= 0.80,
        "{}: {c}",
        test.task
    );
}

#[test]
fn push_backward_classifier_reaches_95_precision_80_recall() {
    check_direction(Direction::Backward);
}

#[test]
fn push_forward_classifier_reaches_95_precision_80_recall() {
    check_direction(Direction::Forward);
}
