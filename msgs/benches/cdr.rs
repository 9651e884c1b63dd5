//! CDR encode+decode of a 7-joint JointState and a 640×480 rgb8 Image.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rft_msgs::{Header, Image, JointState, Time, cdr};
use std::hint::black_box;

fn joint_state() -> JointState {
    JointState {
        header: Header {
            stamp: Time { sec: 1, nanosec: 2 },
            frame_id: "base".into(),
        },
        name: (1..=7).map(|i| format!("panda_joint{i}")).collect(),
        position: vec![0.1; 7],
        velocity: vec![0.2; 7],
        effort: vec![0.3; 7],
    }
}

fn image() -> Image {
    Image {
        header: Header::default(),
        height: 480,
        width: 640,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 1920,
        data: (0..640 * 480 * 3).map(|i| (i % 251) as u8).collect(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cdr");
    let js = joint_state();
    let mut buf = Vec::new();
    g.bench_function("joint_state_7/encode+decode", |b| {
        b.iter(|| {
            cdr::encode_into(black_box(&js), &mut buf).unwrap();
            black_box(cdr::decode::<JointState>(&buf).unwrap())
        })
    });
    let img = image();
    g.throughput(Throughput::Bytes(img.data.len() as u64));
    g.bench_function("image_640x480_rgb8/encode+decode", |b| {
        b.iter(|| {
            cdr::encode_into(black_box(&img), &mut buf).unwrap();
            black_box(cdr::decode::<Image>(&buf).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
