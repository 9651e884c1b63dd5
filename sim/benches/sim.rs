//! The simulator on one core: physics steps (state only, 1 kHz physics, the cube resting and
//! the arm moving; and while the arm pushes the cube), and camera frames at 128×128 and
//! 640×480 (scene visuals rebuilt each frame, as the driver does). A `MEM` line reports the
//! resident memory a running sim with a renderer and both frames adds to the process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rft_sim::expert::{ExpertObs, expert_for};
use rft_sim::*;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let before = rss_kib();
    let mut sim = Sim::new(SimConfig::default()).unwrap();
    let mut renderer = Renderer::new();
    let (mut small, mut large, mut vis) = (Frame::default(), Frame::default(), Vec::new());
    sim.visuals(&mut vis);
    renderer.render(&vis, &Camera::scene(128, 128), &mut small);
    renderer.render(&vis, &Camera::scene(640, 480), &mut large);
    sim.advance(1.0);
    println!(
        "MEM sim + renderer + 128x128 and 640x480 frames: {} KiB resident",
        rss_kib().saturating_sub(before)
    );

    let mut g = c.benchmark_group("sim");
    // State only: the arm sways, the cube rests on the table.
    sim.reset(0);
    let mut k = 0u64;
    g.bench_function("physics_step_1khz", |b| {
        b.iter(|| {
            k += 1;
            let v = 0.2 * ((k % 2000) as f64 / 2000.0 * std::f64::consts::TAU).sin();
            let _ = sim.set_joint_velocity(&[v, v, -v, v, v, -v, v]);
            sim.step();
            black_box(sim.q()[0])
        })
    });
    // The push expert in contact with the cube (the costliest physics: a live contact).
    let mut push = Sim::new(SimConfig::default()).unwrap();
    let mut ctrl = TwistController::for_sim(&push).unwrap();
    let mut e = expert_for(TaskKind::Push, Direction::Forward);
    while e.phase() != "push" && push.time_s() < 10.0 {
        let a = e.act(&ExpertObs::from_sim(&push));
        let qd = ctrl.joint_velocity(push.q(), &a.twist()).to_vec();
        let _ = push.set_joint_velocity(&qd);
        push.advance(0.01);
    }
    g.bench_function("physics_step_1khz_pushing", |b| {
        b.iter(|| {
            push.step();
            black_box(push.object_pose())
        })
    });
    for (w, h, frame) in [(128, 128, &mut small), (640, 480, &mut large)] {
        let cam = Camera::scene(w, h);
        g.bench_function(format!("render_rgbd_{w}x{h}"), |b| {
            b.iter(|| {
                sim.visuals(&mut vis);
                renderer.render(&vis, &cam, frame);
                black_box(frame.rgb[0])
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
