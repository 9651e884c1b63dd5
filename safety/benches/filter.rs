//! One full safety-filter step (FK + Jacobians + QP) for the 7-DoF Panda with joint limits,
//! the workspace box, 8 obstacle spheres and 10 self-collision pairs.
//!
//! - typical: smooth random references; pruning leaves few rows (most steps are closed form);
//! - worst: pruning off, so every row goes to the QP, and references that drive the tool at
//!   walls and obstacles so the active-set solver works on most steps.
//!
//! Criterion measures the mean over recorded (q, u_prev, u_ref) states; a separate pass prints
//! `PCT` lines with p50/p99 and the heap allocations per step, counted by a global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::{DVector, Matrix6xX, Point3, Vector3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rft_safety::cbf::{CbfConfig, CbfFilter, SolvePath, self_collision_pairs};
use rft_safety::kinematics::Chain;

#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

const READY: [f64; 7] = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785];

fn filter(prune: bool) -> CbfFilter {
    let urdf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/panda.urdf");
    let chain = Chain::from_urdf_file(&urdf, "panda_link0", "panda_hand_tcp").unwrap();
    let mut pairs = self_collision_pairs(&chain, &READY, 3, 0.05);
    // Ten pairs, the hand's first (they are the ones a policy can actually bring together).
    pairs.sort_by_key(|&(a, b)| {
        std::cmp::Reverse(chain.spheres[a].joint.max(chain.spheres[b].joint))
    });
    pairs.truncate(10);
    let mut obstacles = Vec::new();
    for x in [0.35, 0.68] {
        for y in [-0.33, 0.33] {
            for z in [0.12, 0.62] {
                obstacles.push((Point3::new(x, y, z), 0.05));
            }
        }
    }
    let cfg = CbfConfig {
        joint_padding_rad: 0.05,
        alpha: 3.0,
        dt_s: 0.001,
        max_velocity_rad_s: chain.joints.iter().map(|j| j.max_velocity).collect(),
        max_accel_rad_s2: vec![15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0],
        workspace_min: Vector3::new(0.2, -0.4, 0.05),
        workspace_max: Vector3::new(0.75, 0.4, 0.7),
        obstacles,
        first_obstacle_joint: 2,
        self_pairs: pairs,
        weights: vec![1.0; 7],
        slack_weight: 1e4,
        cartesian_brake_m_s2: 2.0,
        orientation_cone: None,
        max_dynamic_obstacles: 0,
        soft_rows: true,
        accel_relax_factor: 3.0,
        prune_rows: prune,
    };
    CbfFilter::new(chain, cfg)
}

/// A recorded step: q, u_prev, u_ref.
type State = ([f64; 7], [f64; 7], [f64; 7]);

/// Closed-loop runs of the filter at 1 kHz, recording the states it saw.
fn record(f: &mut CbfFilter, adversarial: bool, steps: usize) -> Vec<State> {
    let mut rng = StdRng::seed_from_u64(7);
    let vmax: Vec<f64> = f.config().max_velocity_rad_s.clone();
    let mut out = Vec::with_capacity(steps);
    let mut frames = Vec::new();
    let mut jac = Matrix6xX::zeros(7);
    let mut hs = Vec::new();
    while out.len() < steps {
        let mut q = READY;
        f.barriers(&q, &mut hs);
        assert!(hs.iter().all(|(_, h)| *h > 0.0), "READY is safe");
        let mut u_prev = [0.0; 7];
        let mut u_ref = [0.0; 7];
        let target = Point3::new(
            rng.random_range(0.1..0.9),
            rng.random_range(-0.6..0.6),
            rng.random_range(-0.1..0.8),
        );
        for _ in 0..1000 {
            if adversarial {
                let chain = f.chain();
                chain.forward(&q, &mut frames);
                chain.jacobian(&frames, &mut jac);
                let e = target - Point3::from(frames[7].translation.vector);
                let qd = jac.transpose() * DVector::from_row_slice(&[e.x, e.y, e.z, 0., 0., 0.]);
                let scale = (0..7).map(|i| qd[i].abs() / vmax[i]).fold(1e-9, f64::max);
                for i in 0..7 {
                    u_ref[i] = qd[i] / scale;
                }
            } else {
                for i in 0..7 {
                    let step = rng.random_range(-0.02..0.02) * vmax[i];
                    u_ref[i] = (u_ref[i] + step).clamp(-0.3 * vmax[i], 0.3 * vmax[i]);
                }
            }
            let mut u = [0.0; 7];
            f.filter(&q, &u_prev, &u_ref, &mut u).unwrap();
            out.push((q, u_prev, u_ref));
            for i in 0..7 {
                q[i] += u[i] * f.config().dt_s;
            }
            u_prev = u;
        }
    }
    out.truncate(steps);
    out
}

fn percentiles(name: &str, f: &mut CbfFilter, states: &[State]) {
    let mut u = [0.0; 7];
    // Warm-up: every buffer reaches its size.
    for (q, up, ur) in states {
        f.filter(q, up, ur, &mut u).unwrap();
    }
    let mut samples = Vec::with_capacity(states.len());
    let (mut rows, mut closed, mut active) = (0usize, 0usize, 0usize);
    let mut allocated = 0;
    let mut reports = Vec::with_capacity(states.len());
    for (q, up, ur) in states {
        let before = allocs();
        let t = Instant::now();
        let r = f.filter(q, up, ur, &mut u).unwrap();
        let dt = t.elapsed();
        allocated += allocs() - before;
        samples.push(dt);
        reports.push(r);
    }
    let per_step = allocated as f64 / states.len() as f64;
    let clarabel = reports
        .iter()
        .filter(|r| r.path == SolvePath::Clarabel)
        .count();
    let relaxed = reports.iter().filter(|r| r.accel_relaxed).count();
    let slack = reports.iter().filter(|r| r.slack > 0.0).count();
    for r in &reports {
        rows += r.rows;
        closed += usize::from(r.path == SolvePath::ClosedForm);
        active += usize::from(r.path == SolvePath::ActiveSet);
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p / 100.0).round() as usize];
    println!(
        "PCT {name}: n={} p50={:.1}us p99={:.1}us max={:.1}us allocs/step={per_step} \
         rows/step={:.1} closed_form={:.1}% active_set={:.1}% clarabel={clarabel} \
         accel_relaxed={relaxed} slack={slack}",
        samples.len(),
        pct(50.0).as_secs_f64() * 1e6,
        pct(99.0).as_secs_f64() * 1e6,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        rows as f64 / states.len() as f64,
        100.0 * closed as f64 / states.len() as f64,
        100.0 * active as f64 / states.len() as f64,
    );
}

fn bench(c: &mut Criterion) {
    for (name, prune, adversarial) in [("typical", true, false), ("worst", false, true)] {
        let mut f = filter(prune);
        let states = record(&mut f, adversarial, 20_000);
        percentiles(name, &mut f, &states);
        let mut i = 0;
        let mut u = [0.0; 7];
        c.bench_function(&format!("safety filter step, {name}"), |b| {
            b.iter(|| {
                let (q, up, ur) = &states[i % states.len()];
                i += 1;
                black_box(f.filter(q, up, ur, &mut u).unwrap());
            })
        });
    }
}

/// For scale: clarabel alone on the worst case's QPs (the same rows, built once).
fn clarabel_reference(c: &mut Criterion) {
    let mut f = filter(false);
    let states = record(&mut f, true, 2_000);
    let mut u = [0.0; 7];
    let qps: Vec<_> = states
        .iter()
        .map(|(q, up, ur)| {
            f.filter(q, up, ur, &mut u).unwrap();
            f.last_qp()
        })
        .collect();
    let mut samples: Vec<_> = qps
        .iter()
        .filter_map(|qp| {
            let t = Instant::now();
            qp.solve().ok().map(|_| t.elapsed())
        })
        .collect();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p / 100.0).round() as usize];
    println!(
        "PCT clarabel, worst-case QP only: n={} p50={:.1}us p99={:.1}us rows={}",
        samples.len(),
        pct(50.0).as_secs_f64() * 1e6,
        pct(99.0).as_secs_f64() * 1e6,
        qps[0].rows.len(),
    );
    let mut i = 0;
    c.bench_function("clarabel, worst-case QP only", |b| {
        b.iter(|| {
            i += 1;
            black_box(qps[i % qps.len()].solve().ok());
        })
    });
}

criterion_group!(benches, bench, clarabel_reference);
criterion_main!(benches);
