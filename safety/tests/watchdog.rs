//! Fault handling: each fail-safe cause stops the arm within one control period with the right
//! reason, and motion resumes only under the stated conditions.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use rft_safety::watchdog::{Mode, StopReason, Watchdog, WatchdogConfig};

const PERIOD_NS: i64 = 2_000_000; // 500 Hz
const MS: i64 = 1_000_000;

fn dog() -> Watchdog {
    Watchdog::new(WatchdogConfig {
        stale_state_ms: 50.0,
        stale_command_ms: 300.0,
        stop_decel_rad_s2: vec![10.0; 7],
    })
}

/// Feeds fresh state every period and a command every `cmd_every` periods up to `t_end`.
fn run_fresh(w: &mut Watchdog, t0: i64, t_end: i64) -> i64 {
    let mut t = t0;
    while t < t_end {
        w.on_state(t, &[0.0; 7], &[0.0; 7]);
        w.on_command(t, &[0.1; 7]);
        assert_eq!(w.mode(t), Mode::Run, "at {t}");
        t += PERIOD_NS;
    }
    t
}

/// The first period at which the mode is a stop, stepping by one period from `t`.
fn first_stop(w: &mut Watchdog, mut t: i64, feed_state: bool, feed_cmd: bool) -> (i64, StopReason) {
    for _ in 0..10_000 {
        if feed_state {
            w.on_state(t, &[0.0; 7], &[0.0; 7]);
        }
        if feed_cmd {
            w.on_command(t, &[0.1; 7]);
        }
        if let Mode::Stop(r) = w.mode(t) {
            return (t, r);
        }
        t += PERIOD_NS;
    }
    panic!("never stopped");
}

#[test]
fn stale_joint_state_stops_within_one_period() {
    let mut w = dog();
    let t = run_fresh(&mut w, 0, 100 * MS);
    let last_state = t - PERIOD_NS;
    let (at, reason) = first_stop(&mut w, t, false, true);
    assert_eq!(reason, StopReason::StaleJointState);
    let deadline = last_state + 50 * MS;
    assert!(
        at > deadline - PERIOD_NS && at <= deadline + PERIOD_NS,
        "stopped at {at}, timeout at {deadline}"
    );
}

#[test]
fn stale_command_stops_within_one_period_and_resumes_on_a_fresh_one() {
    let mut w = dog();
    let t = run_fresh(&mut w, 0, 100 * MS);
    let last_cmd = t - PERIOD_NS;
    let (at, reason) = first_stop(&mut w, t, true, false);
    assert_eq!(reason, StopReason::StaleCommand);
    let deadline = last_cmd + 300 * MS;
    assert!(at > deadline - PERIOD_NS && at <= deadline + PERIOD_NS);
    // A command stamped before the stop does not resume motion.
    w.on_state(at + PERIOD_NS, &[0.0; 7], &[0.0; 7]);
    w.on_command(at - 10 * MS, &[0.1; 7]);
    assert_eq!(w.mode(at + PERIOD_NS), Mode::Stop(StopReason::StaleCommand));
    // A fresh one does.
    w.on_state(at + 2 * PERIOD_NS, &[0.0; 7], &[0.0; 7]);
    w.on_command(at + 2 * PERIOD_NS, &[0.1; 7]);
    assert_eq!(w.mode(at + 2 * PERIOD_NS), Mode::Run);
}

#[test]
fn non_finite_inputs_and_qp_failures_stop_at_the_next_period() {
    let cases: [(&str, StopReason); 4] = [
        ("state", StopReason::NonFiniteState),
        ("command", StopReason::NonFiniteCommand),
        ("infeasible", StopReason::QpInfeasible),
        ("solver", StopReason::SolverError),
    ];
    for (what, expected) in cases {
        let mut w = dog();
        let t = run_fresh(&mut w, 0, 20 * MS);
        match what {
            "state" => w.on_state(t, &[0.0, f64::NAN, 0.0, 0.0, 0.0, 0.0, 0.0], &[0.0; 7]),
            "command" => w.on_command(t, &[0.0, 0.0, f64::INFINITY, 0.0, 0.0, 0.0, 0.0]),
            "infeasible" => w.on_qp_failure(t, true),
            _ => w.on_qp_failure(t, false),
        }
        assert_eq!(w.mode(t), Mode::Stop(expected), "{what}");
        // Clean inputs alone do not resume: it needs a command after the stop.
        w.on_state(t, &[0.0; 7], &[0.0; 7]);
        assert_eq!(w.mode(t), Mode::Stop(expected), "{what}");
        w.on_state(t + PERIOD_NS, &[0.0; 7], &[0.0; 7]);
        w.on_command(t + PERIOD_NS, &[0.1; 7]);
        assert_eq!(w.mode(t + PERIOD_NS), Mode::Run, "{what}");
    }
}

#[test]
fn estop_latches_until_released_and_a_new_command_arrives() {
    let mut w = dog();
    let mut t = run_fresh(&mut w, 0, 20 * MS);
    w.on_estop(t, true);
    assert_eq!(w.mode(t), Mode::Stop(StopReason::EStop));
    // Fresh commands do not clear a latched e-stop.
    for _ in 0..100 {
        t += PERIOD_NS;
        w.on_state(t, &[0.0; 7], &[0.0; 7]);
        w.on_command(t, &[0.1; 7]);
        assert_eq!(w.mode(t), Mode::Stop(StopReason::EStop));
    }
    // Other faults while latched keep reporting the e-stop.
    w.on_qp_failure(t, true);
    assert_eq!(w.mode(t), Mode::Stop(StopReason::EStop));
    // Release: still stopped until a command newer than the release.
    t += PERIOD_NS;
    w.on_estop(t, false);
    w.on_state(t, &[0.0; 7], &[0.0; 7]);
    assert_eq!(w.mode(t), Mode::Stop(StopReason::EStop));
    t += PERIOD_NS;
    w.on_state(t, &[0.0; 7], &[0.0; 7]);
    w.on_command(t, &[0.1; 7]);
    assert_eq!(w.mode(t), Mode::Run);
}

#[test]
fn deceleration_is_bounded_and_reaches_zero_without_overshoot() {
    let w = dog();
    let mut u = vec![2.0, -2.0, 0.5, -0.01, 0.0, 1.0, f64::NAN];
    let mut out = vec![0.0; 7];
    let dt = PERIOD_NS as f64 * 1e-9;
    for step in 0..200 {
        w.decelerate(&u, dt, &mut out);
        for i in 0..7 {
            if u[i].is_finite() {
                assert!(
                    (out[i] - u[i]).abs() <= 10.0 * dt + 1e-12,
                    "step {step} joint {i}"
                );
                assert!(out[i] * u[i] >= 0.0, "no sign flip");
            } else {
                assert_eq!(out[i], 0.0);
            }
        }
        u.copy_from_slice(&out);
    }
    // 2 rad/s at 10 rad/s² stops in 0.2 s = 100 periods.
    assert!(u.iter().all(|v| *v == 0.0), "{u:?}");
}
