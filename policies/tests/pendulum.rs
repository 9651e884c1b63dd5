//! Pendulum-v1 against the published equations (Gymnasium classic_control/pendulum.py).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use rft_policies::env::{Env, make_env};
use rft_policies::pendulum::{Pendulum, angle_normalize};

/// Gymnasium's step, written out from the source independently of the crate's port.
fn gym_step(th: f64, thdot: f64, u: f64) -> (f64, f64, f64) {
    let (g, m, l, dt) = (10.0, 1.0, 1.0, 0.05);
    let u = u.clamp(-2.0, 2.0);
    let norm = ((th + std::f64::consts::PI) % (2.0 * std::f64::consts::PI)
        + 2.0 * std::f64::consts::PI)
        % (2.0 * std::f64::consts::PI)
        - std::f64::consts::PI;
    let costs = norm * norm + 0.1 * thdot * thdot + 0.001 * (u * u);
    let mut newthdot = thdot + (3.0 * g / (2.0 * l) * th.sin() + 3.0 / (m * l * l) * u) * dt;
    newthdot = newthdot.clamp(-8.0, 8.0);
    let newth = th + newthdot * dt;
    (newth, newthdot, -costs)
}

#[test]
fn trajectories_match_the_published_equations() {
    let mut rng = 12345u64;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    for start in 0..20 {
        let (mut th, mut thdot) = (next() * std::f64::consts::PI, next());
        let mut env = Pendulum::new(start);
        env.set_state(th, thdot);
        for step in 0..200 {
            // actions beyond the torque limit too, to check clipping
            let a = (next() * 1.5) as f32;
            let s = env.step(&[a]);
            let (nth, nthdot, r) = gym_step(th, thdot, a as f64 * 2.0);
            let (eth, ethdot) = env.state();
            assert!(
                (eth - nth).abs() < 1e-12 && (ethdot - nthdot).abs() < 1e-12,
                "state at {step}"
            );
            assert!((s.reward as f64 - r).abs() < 1e-5, "reward at {step}");
            assert!((s.obs[0] as f64 - nth.cos()).abs() < 1e-6);
            assert!((s.obs[1] as f64 - nth.sin()).abs() < 1e-6);
            assert!((s.obs[2] as f64 - nthdot).abs() < 1e-6);
            assert!(!s.terminated);
            assert_eq!(s.truncated, step == 199, "time limit at step {step}");
            (th, thdot) = (nth, nthdot);
        }
    }
}

#[test]
fn speed_is_clipped_and_angles_normalised() {
    let mut env = Pendulum::new(0);
    env.set_state(3.0, 7.9);
    for _ in 0..20 {
        let s = env.step(&[1.0]);
        assert!(s.obs[2].abs() <= 8.0);
    }
    assert!(
        (angle_normalize(3.0 * std::f64::consts::PI) - std::f64::consts::PI).abs() < 1e-9
            || (angle_normalize(3.0 * std::f64::consts::PI) + std::f64::consts::PI).abs() < 1e-9
    );
    assert!((angle_normalize(-0.5) + 0.5).abs() < 1e-12);
    assert!((angle_normalize(2.0 * std::f64::consts::PI + 0.25) - 0.25).abs() < 1e-12);
}

#[test]
fn resets_follow_the_published_distribution_and_seeds_repeat() {
    let mut env = make_env("pendulum", 7).unwrap();
    let mut min_th = f64::MAX;
    let mut max_th = f64::MIN;
    for _ in 0..2000 {
        let o = env.reset();
        let th = (o[1] as f64).atan2(o[0] as f64);
        min_th = min_th.min(th);
        max_th = max_th.max(th);
        assert!(o[2].abs() <= 1.0, "initial speed {} outside [-1, 1]", o[2]);
        assert!(((o[0] * o[0] + o[1] * o[1]) - 1.0).abs() < 1e-5);
    }
    assert!(
        min_th < -3.0 && max_th > 3.0,
        "angles cover [-pi, pi]: {min_th}..{max_th}"
    );
    let a: Vec<f32> = make_env("pendulum", 3).unwrap().reset();
    let b: Vec<f32> = make_env("pendulum", 3).unwrap().reset();
    let c: Vec<f32> = make_env("pendulum", 4).unwrap().reset();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(make_env("cartpole", 0).is_err());
}
