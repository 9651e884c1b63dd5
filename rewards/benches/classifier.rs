//! Success-classifier latency: the CNN on one 128×128 frame (box-filtered to its 64×64 input),
//! with p50/p99 over many calls; the dense keypoint scorer and depth lifting per call.
//! Run on one core: `taskset -c 0 cargo bench -p rft-rewards --bench classifier`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::{Isometry3, Point3};
use rft_rewards::keypoints::{DenseScorer, DepthRef, Intrinsics, Tracked, Waypoint, lift};
use rft_rewards::{CnnClassifier, CnnConfig, ImageRef, SuccessClassifier};

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

fn classifier(c: &mut Criterion) {
    let mut clf =
        CnnClassifier::new(CnnConfig::default(), "push/forward", 0, &Device::Cpu).unwrap();
    let rgb: Vec<u8> = (0..3 * 128 * 128).map(|i| (i * 31 % 256) as u8).collect();
    let img = ImageRef::new(128, 128, &rgb).unwrap();
    let mut g = c.benchmark_group("reward");
    g.bench_function("cnn_classifier_128x128", |b| {
        b.iter(|| clf.predict(black_box(&[img]), "push").unwrap())
    });
    let (p50, p99) = percentiles(5_000, 100, || {
        clf.predict(&[img], "push").unwrap();
    });
    eprintln!("  CNN classifier 128x128: p50 {p50:?} p99 {p99:?} (5k calls)");

    let wp = vec![
        Waypoint {
            point: Point3::new(0.5, -0.2, 0.03),
            track: Tracked::Tool,
        },
        Waypoint {
            point: Point3::new(0.5, 0.15, 0.025),
            track: Tracked::Object,
        },
    ];
    let mut s = DenseScorer::new(wp, 0.02).unwrap();
    g.bench_function("dense_scorer", |b| {
        b.iter(|| {
            s.score(
                black_box(&Point3::new(0.4, 0.0, 0.2)),
                black_box(&Point3::new(0.5, 0.0, 0.025)),
            )
        })
    });
    let depth = vec![1.2f32; 128 * 128];
    let d = DepthRef {
        width: 128,
        height: 128,
        depth: &depth,
    };
    let k = Intrinsics {
        fx: 110.0,
        fy: 110.0,
        cx: 63.5,
        cy: 63.5,
    };
    let pose = Isometry3::identity();
    g.bench_function("lift_keypoint", |b| {
        b.iter(|| lift(black_box(40.3), black_box(70.8), &d, &k, &pose).unwrap())
    });
    g.finish();
}

criterion_group!(benches, classifier);
criterion_main!(benches);
