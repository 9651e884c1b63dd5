//! Fail-safe logic of the safety filter: stale inputs, non-finite values, QP failures and the
//! e-stop each bring the arm to rest with a bounded deceleration, with the reason; motion
//! resumes only under the stated conditions.
//!
//! - stale joint state, stale command, NaN/Inf, infeasible QP, solver error: stop; resume when
//!   a fresh, finite command arrives *after* the fault has cleared (the state is fresh again);
//! - e-stop: latches; resume only after an explicit release *and* a fresh command after it.
//!
//! Pure logic on timestamps (ns on the runtime's clock): no threads, no I/O, no allocation.

/// Why the arm is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    StaleJointState,
    StaleCommand,
    NonFiniteState,
    NonFiniteCommand,
    QpInfeasible,
    SolverError,
    EStop,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::StaleJointState => "stale joint state",
            StopReason::StaleCommand => "stale command",
            StopReason::NonFiniteState => "NaN or Inf in the joint state",
            StopReason::NonFiniteCommand => "NaN or Inf in the command",
            StopReason::QpInfeasible => "infeasible QP",
            StopReason::SolverError => "QP solver error",
            StopReason::EStop => "e-stop",
        }
    }
}

/// What the filter should do this period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Filter the command normally.
    Run,
    /// Decelerate to zero (then hold zero) for this reason.
    Stop(StopReason),
}

#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    pub stale_state_ms: f64,
    pub stale_command_ms: f64,
    /// Deceleration used when stopping, per joint (rad/s²).
    pub stop_decel_rad_s2: Vec<f64>,
}

/// The watchdog. Feed it every input, ask it for the mode each period.
#[derive(Debug, Clone)]
pub struct Watchdog {
    cfg: WatchdogConfig,
    last_state_ns: Option<i64>,
    last_command_ns: Option<i64>,
    /// The stop in force and when it began.
    stop: Option<(StopReason, i64)>,
    estop_engaged: bool,
    /// When the e-stop was last released (a resume needs a command after it).
    estop_released_ns: Option<i64>,
}

fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl Watchdog {
    pub fn new(cfg: WatchdogConfig) -> Self {
        Self {
            cfg,
            last_state_ns: None,
            last_command_ns: None,
            stop: None,
            estop_engaged: false,
            estop_released_ns: None,
        }
    }

    fn trip(&mut self, reason: StopReason, now_ns: i64) {
        // A new reason replaces an old one only if the old one has cleared; the e-stop wins.
        match self.stop {
            Some((StopReason::EStop, _)) => {}
            _ if reason == StopReason::EStop => self.stop = Some((reason, now_ns)),
            None => self.stop = Some((reason, now_ns)),
            Some(_) => {}
        }
    }

    /// A joint state arrived (stamped `t_ns`). Non-finite states trip the watchdog and are not
    /// counted as fresh.
    pub fn on_state(&mut self, t_ns: i64, position: &[f64], velocity: &[f64]) {
        if finite(position) && finite(velocity) {
            self.last_state_ns = Some(t_ns);
        } else {
            self.trip(StopReason::NonFiniteState, t_ns);
        }
    }

    /// A command arrived. Non-finite commands trip the watchdog and are not counted as fresh.
    pub fn on_command(&mut self, t_ns: i64, command: &[f64]) {
        if finite(command) {
            self.last_command_ns = Some(t_ns);
        } else {
            self.trip(StopReason::NonFiniteCommand, t_ns);
        }
    }

    /// The QP failed this period.
    pub fn on_qp_failure(&mut self, now_ns: i64, infeasible: bool) {
        self.trip(
            if infeasible {
                StopReason::QpInfeasible
            } else {
                StopReason::SolverError
            },
            now_ns,
        );
    }

    /// `/rft/estop`: `true` engages (latching), `false` releases.
    pub fn on_estop(&mut self, now_ns: i64, engaged: bool) {
        if engaged {
            self.estop_engaged = true;
            self.trip(StopReason::EStop, now_ns);
        } else if self.estop_engaged {
            self.estop_engaged = false;
            self.estop_released_ns = Some(now_ns);
        }
    }

    /// The mode for the period starting at `now_ns`.
    pub fn mode(&mut self, now_ns: i64) -> Mode {
        let ms = |t: Option<i64>| t.map_or(f64::INFINITY, |t| (now_ns - t) as f64 * 1e-6);
        let state_fresh = ms(self.last_state_ns) <= self.cfg.stale_state_ms;
        let command_fresh = ms(self.last_command_ns) <= self.cfg.stale_command_ms;
        if !state_fresh {
            self.trip(StopReason::StaleJointState, now_ns);
        } else if !command_fresh {
            self.trip(StopReason::StaleCommand, now_ns);
        }
        if let Some((reason, since)) = self.stop {
            // Resume needs fresh inputs and a command newer than the stop (and than the
            // e-stop's release).
            let after = |t: Option<i64>, mark: i64| t.is_some_and(|t| t > mark);
            let cleared = match reason {
                StopReason::EStop => {
                    !self.estop_engaged
                        && self
                            .estop_released_ns
                            .is_some_and(|r| after(self.last_command_ns, r))
                }
                _ => after(self.last_command_ns, since),
            };
            if cleared && state_fresh && command_fresh {
                self.stop = None;
            } else {
                return Mode::Stop(reason);
            }
        }
        Mode::Run
    }

    /// Bounded deceleration towards zero: each joint's velocity moves to 0 by at most
    /// `stop_decel · dt`.
    pub fn decelerate(&self, u_prev: &[f64], dt_s: f64, out: &mut [f64]) {
        for (i, (o, u)) in out.iter_mut().zip(u_prev).enumerate() {
            let step = self.cfg.stop_decel_rad_s2.get(i).copied().unwrap_or(0.0) * dt_s;
            *o = if u.is_finite() {
                u.signum() * (u.abs() - step).max(0.0)
            } else {
                0.0
            };
        }
    }
}
