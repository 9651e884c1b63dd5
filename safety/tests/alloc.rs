//! The filter step allocates nothing once warmed up, on every path: closed form, active set,
//! widened acceleration box and slack. Counted by a global allocator (per thread).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use nalgebra::{DVector, Matrix6xX, Point3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rft_safety::cbf::{BrakingRule, SolvePath};

mod common;
use common::{Extras, READY};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

#[test]
fn a_filter_step_allocates_nothing_on_any_path() {
    let mut f = common::filter(Extras {
        self_pairs: true,
        cone: true,
        prune: true,
    })
    .with_tuner(Box::new(BrakingRule {
        alpha_min: 0.5,
        alpha_max: 20.0,
        margin: 0.3,
        min_speed: 0.05,
    }));
    f.set_dynamic_obstacles(&[(Point3::new(0.6, 0.0, 0.3), 0.05)])
        .unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let vmax = f.config().max_velocity_rad_s.clone();
    let (mut frames, mut jac) = (Vec::new(), Matrix6xX::zeros(7));
    let mut paths = [0usize; 3];
    let (mut relaxed, mut allocating_steps, mut steps) = (0, 0, 0);
    for seq in 0..200 {
        let mut q = READY;
        let mut u_prev = [0.0; 7];
        let mut u = [0.0; 7];
        let target = Point3::new(
            rng.random_range(0.0..1.0),
            rng.random_range(-0.7..0.7),
            rng.random_range(-0.2..0.9),
        );
        for _ in 0..200 {
            f.chain().forward(&q, &mut frames);
            f.chain().jacobian(&frames, &mut jac);
            let e = target - Point3::from(frames[7].translation.vector);
            let qd = jac.transpose() * DVector::from_row_slice(&[e.x, e.y, e.z, 0.0, 0.0, 0.0]);
            let scale = (0..7).map(|i| qd[i].abs() / vmax[i]).fold(1e-9, f64::max);
            let u_ref: [f64; 7] = std::array::from_fn(|i| qd[i] / scale);
            let before = allocs();
            let r = f.filter(&q, &u_prev, &u_ref, &mut u).unwrap();
            // The first sequences warm the buffers up.
            if seq >= 20 {
                steps += 1;
                allocating_steps += usize::from(allocs() != before);
            }
            paths[r.path as usize] += 1;
            relaxed += usize::from(r.accel_relaxed);
            for i in 0..7 {
                q[i] += u[i] * f.config().dt_s;
            }
            u_prev = u;
        }
    }
    // The slack path: the tool 3 cm outside the workspace, still moving out at full speed. Not
    // even the widened acceleration box can turn it round in one step.
    let mut q = READY;
    let mut hs = Vec::new();
    // Lean forward and stretch until the tool is past workspace_max.x by 3 cm.
    for _ in 0..200 {
        f.barriers(&q, &mut hs);
        if hs.iter().any(|(_, h)| *h < -0.03) {
            break;
        }
        q[1] += 0.01;
        q[3] += 0.01;
    }
    let low: Vec<String> = hs
        .iter()
        .filter(|(_, h)| *h < 0.0)
        .map(|(b, h)| format!("{b}={h:.3}"))
        .collect();
    assert!(
        hs.iter().any(|(_, h)| *h < -0.03),
        "the start is outside the safe set: {low:?} q={q:?}"
    );
    f.chain().forward(&q, &mut frames);
    f.chain().jacobian(&frames, &mut jac);
    let out = jac.transpose() * DVector::from_row_slice(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let scale = (0..7).map(|i| out[i].abs() / vmax[i]).fold(1e-9, f64::max);
    let u_prev: [f64; 7] = std::array::from_fn(|i| out[i] / scale);
    let mut u = [0.0; 7];
    let mut slack_steps = 0;
    for round in 0..3 {
        let before = allocs();
        let r = f.filter(&q, &u_prev, &u_prev, &mut u).unwrap();
        assert!(r.slack > 0.0 && r.accel_relaxed, "{r:?}");
        slack_steps += 1;
        if round > 0 {
            steps += 1;
            allocating_steps += usize::from(allocs() != before);
        }
    }
    assert_eq!(slack_steps, 3);
    assert_eq!(
        allocating_steps, 0,
        "{allocating_steps} of {steps} steps allocated"
    );
    assert_eq!(paths[SolvePath::Clarabel as usize], 0);
    assert!(
        paths[SolvePath::ClosedForm as usize] > 0 && paths[SolvePath::ActiveSet as usize] > 0,
        "both paths ran: {paths:?}"
    );
    eprintln!("paths {paths:?}, accel box widened in {relaxed} steps");
}
