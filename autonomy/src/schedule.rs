//! The reset-free schedule: the forward task runs until the success classifier has reported
//! success for `consecutive` frames in a row, or until a timeout, or until nothing has moved
//! for `stuck_s`; then the backward (reset) task runs likewise, and so on. An object that left
//! the table, or the area the robot can still push it back from (`reach`), pauses everything
//! until a human puts it back.

use nalgebra::Vector3;
use serde::{Deserialize, Serialize};

use rft_config::ConfigError;
use rft_sim::Direction;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Frames in a row the classifier must report success (p > τ).
    pub consecutive: u32,
    /// Longest episode, seconds.
    pub timeout_s: f64,
    /// No progress for this long switches the task (0 disables).
    pub stuck_s: f64,
    /// Progress: the object or the tool moved at least this far since the last progress.
    pub stuck_distance_m: f64,
    /// The object below this height (base frame) is off the table.
    pub off_table_z: f64,
    /// Between episodes the arm goes back to its home pose (the object stays where it is): a
    /// policy that stalled somewhere gets a fresh approach, and the classifier can take a look
    /// with the arm out of the way. Seconds allowed for the move (0: the arm stays where it
    /// is). The pipeline's sim loop does it (its default is 4 s); the node graph does not yet.
    pub home_s: f64,
    /// Homing also brings the joints back to the reset posture, undoing the wrist turn and the
    /// redundant arm's drift an episode leaves behind (every episode then starts as an
    /// evaluation does); otherwise only the tool's position goes home. Needs `home_s` > 0.
    pub home_posture: bool,
    /// An episode in which the safety filter overrode more than this share of the policy's
    /// commands ends with the joints going back to the reset posture as well (as
    /// `home_posture` does after every episode; needs `home_s` > 0; 0 disables). A wrist
    /// wound to its joint limit traps the loop: the policy keeps commanding the yaw the
    /// filter refuses, and the observation (the yaw modulo 90°/180°) cannot show why
    /// (measured: one run spent 15,000 steps so). Posture homing takes ~5.5 s, so this homing
    /// gets `max(home_s, 8)` seconds.
    pub posture_reset_overridden: f64,
    /// A backward (reset) episode that did not succeed is run again, up to this many times in
    /// a row, before the forward task gets the scene: forward practice from a scene that was
    /// not reset teaches little and pushes the object further astray.
    pub reset_retries: u32,
    /// The table area (base frame, xy) the robot can still bring the object back from: a pusher
    /// cannot get behind an object pushed to the edge of its workspace box. An object outside
    /// it pauses the loop for a human reset, counted like one off the table. None: only the
    /// table's edge counts.
    pub reach: Option<AreaXy>,
    /// An episode that brings the object within this distance (metres) of `reach`'s edge, and
    /// closer to it than the object was when the episode began, ends there (`near_edge`, a
    /// failure): the next episode is a reset from a scene the robot can still recover,
    /// instead of a human reset after the object crossed the edge. 0 disables; needs `reach`.
    pub edge_guard_m: f64,
    /// This many episodes in a row that each left the object within `stuck_distance_m` of
    /// where it began (whatever the classifier said) pause the loop for a human reset, counted:
    /// a scene no policy changes any more traps the loop for good (a forward policy that
    /// cannot reach the cube, a reset that "succeeds" at once). 0 disables.
    pub stalled_episodes: u32,
    /// A robot-side way out of a stalled scene: once this many episodes in a row have each
    /// left the object where it began, the policy acts with `stall_explore_std` of
    /// exploration noise (instead of the policy runner's `explore_std`) until an episode moves the
    /// object again. A policy that has settled beside the object it no longer touches, with
    /// a reset that then "succeeds" at once, otherwise repeats the same two episodes (one run
    /// spent its last ~14,800 steps so). Must be below `stalled_episodes` when that is on
    /// (the pause would come first). 0 disables.
    pub stall_escape: u32,
    /// Standard deviation of the exploration noise while escaping a stall (action units,
    /// (0, 1]).
    pub stall_explore_std: f64,
    /// An episode that timed out or got stuck gets a second look once the arm is home (needs
    /// `home_s` > 0): the classifier sees the scene without the arm touching or hiding the
    /// object, and a success there ends the episode as one (`success_at_home`). A pushing
    /// policy stops next to the object it just pushed into the goal, in the classifier's
    /// blind spot.
    pub confirm_at_home: bool,
}

/// An axis-aligned area on the table, base frame, metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaXy {
    pub min: [f64; 2],
    pub max: [f64; 2],
}

impl AreaXy {
    pub fn contains(&self, p: &Vector3<f64>) -> bool {
        (self.min[0]..=self.max[0]).contains(&p.x) && (self.min[1]..=self.max[1]).contains(&p.y)
    }

    /// Distance from `p` (xy) to the nearest edge: positive inside, negative outside.
    pub fn edge_distance(&self, p: &Vector3<f64>) -> f64 {
        (p.x - self.min[0])
            .min(self.max[0] - p.x)
            .min(p.y - self.min[1])
            .min(self.max[1] - p.y)
    }
}

/// How much closer to `reach`'s edge than at the episode's start the object must get before
/// `edge_guard_m` ends the episode (so an episode that starts inside the guard band can still
/// push the object away from the edge).
const EDGE_APPROACH_M: f64 = 0.005;

/// Why the loop paused for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause {
    OffTable,
    OutOfReach,
    /// `stalled_episodes` episodes in a row left the object where it was.
    Stalled,
}

impl PauseCause {
    pub fn name(self) -> &'static str {
        match self {
            PauseCause::OffTable => "object_off_table",
            PauseCause::OutOfReach => "object_out_of_reach",
            PauseCause::Stalled => "scene_stalled",
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            consecutive: 3,
            timeout_s: 20.0,
            stuck_s: 8.0,
            stuck_distance_m: 0.01,
            off_table_z: -0.05,
            home_s: 0.0,
            reset_retries: 2,
            confirm_at_home: false,
            home_posture: false,
            posture_reset_overridden: 0.0,
            reach: None,
            edge_guard_m: 0.0,
            stalled_episodes: 0,
            stall_escape: 0,
            stall_explore_std: 0.5,
        }
    }
}

impl ScheduleConfig {
    pub fn validate(&self) -> rft_config::Result<()> {
        if self.consecutive == 0 {
            return Err(ConfigError::new("consecutive", "must be at least 1"));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(ConfigError::new(
                "timeout_s",
                format!("{} must be > 0", self.timeout_s),
            ));
        }
        for (k, v) in [
            ("stuck_s", self.stuck_s),
            ("stuck_distance_m", self.stuck_distance_m),
            ("edge_guard_m", self.edge_guard_m),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::new(k, format!("{v} must be ≥ 0")));
            }
        }
        if !(0.0..1.0).contains(&self.posture_reset_overridden) {
            return Err(ConfigError::new(
                "posture_reset_overridden",
                format!(
                    "{} must be in [0, 1) (a share of an episode's steps; 0 disables)",
                    self.posture_reset_overridden
                ),
            ));
        }
        if !(self.home_s.is_finite() && self.home_s >= 0.0) {
            return Err(ConfigError::new(
                "home_s",
                format!("{} must be ≥ 0", self.home_s),
            ));
        }
        for (k, on) in [
            ("confirm_at_home", self.confirm_at_home),
            ("home_posture", self.home_posture),
            (
                "posture_reset_overridden",
                self.posture_reset_overridden > 0.0,
            ),
        ] {
            if on && self.home_s <= 0.0 {
                return Err(ConfigError::new(
                    k,
                    "needs the arm to go home between episodes (home_s > 0)",
                ));
            }
        }
        if !(self.stall_explore_std.is_finite()
            && self.stall_explore_std > 0.0
            && self.stall_explore_std <= 1.0)
        {
            return Err(ConfigError::new(
                "stall_explore_std",
                format!("{} must be in (0, 1]", self.stall_explore_std),
            ));
        }
        if self.stall_escape > 0
            && self.stalled_episodes > 0
            && self.stall_escape >= self.stalled_episodes
        {
            return Err(ConfigError::new(
                "stall_escape",
                format!(
                    "{} must be below stalled_episodes ({}): the pause for a human would come first",
                    self.stall_escape, self.stalled_episodes
                ),
            ));
        }
        if self.edge_guard_m > 0.0 && self.reach.is_none() {
            return Err(ConfigError::new(
                "edge_guard_m",
                "needs the `reach` area whose edge it guards",
            ));
        }
        if !self.off_table_z.is_finite() {
            return Err(ConfigError::new("off_table_z", "must be finite"));
        }
        if let Some(a) = &self.reach
            && !(a.min.iter().chain(&a.max).all(|v| v.is_finite())
                && a.min[0] < a.max[0]
                && a.min[1] < a.max[1])
        {
            return Err(ConfigError::new(
                "reach",
                format!(
                    "min {:?} must be finite and below max {:?} on both axes",
                    a.min, a.max
                ),
            ));
        }
        Ok(())
    }
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The classifier reported success for `consecutive` frames: a true terminal state.
    Success,
    Timeout,
    Stuck,
    /// The object left the table; the next episode starts after a human reset.
    HumanReset,
    /// Timed out or stuck, but the classifier reported success once the arm was home
    /// (`confirm_at_home`): a true terminal state, like `Success`.
    SuccessAtHome,
    /// The episode brought the object close to `reach`'s edge (`edge_guard_m`): a failure,
    /// stopped before the object needs a human.
    NearEdge,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Success => "success",
            EndReason::Timeout => "timeout",
            EndReason::Stuck => "stuck",
            EndReason::HumanReset => "human_reset",
            EndReason::SuccessAtHome => "success_at_home",
            EndReason::NearEdge => "near_edge",
        }
    }

    /// The classifier ended the episode as a success (the reward's terminal state).
    pub fn is_success(self) -> bool {
        matches!(self, EndReason::Success | EndReason::SuccessAtHome)
    }
}

/// What the schedule decided at one control tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// The episode ended; the next one runs `next` (the reverse task, or after a human reset
    /// the forward one).
    End {
        reason: EndReason,
        next: Direction,
    },
    /// The object is off the table: wait for a human (call [`Schedule::human_reset_done`]).
    Paused,
}

/// The schedule's state.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: ScheduleConfig,
    dir: Direction,
    episode: u64,
    started_s: f64,
    run: u32,
    anchor: Option<(f64, Vector3<f64>, Vector3<f64>)>,
    /// Where the object was when the episode began.
    object_at_start: Option<Vector3<f64>>,
    /// Episodes in a row that left the object where it began.
    stalled: u32,
    paused: Option<PauseCause>,
    human_resets: u64,
    retries: u32,
    /// Whether the last episode's end switched the task (false: a reset retry).
    last_end_switched: bool,
}

impl Schedule {
    pub fn new(cfg: ScheduleConfig, first: Direction, now_s: f64) -> Self {
        Self {
            cfg,
            dir: first,
            episode: 0,
            started_s: now_s,
            run: 0,
            anchor: None,
            object_at_start: None,
            stalled: 0,
            paused: None,
            human_resets: 0,
            retries: 0,
            last_end_switched: false,
        }
    }

    pub fn direction(&self) -> Direction {
        self.dir
    }
    pub fn episode(&self) -> u64 {
        self.episode
    }
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }
    /// Why the loop is paused, while it is.
    pub fn pause_cause(&self) -> Option<PauseCause> {
        self.paused
    }
    pub fn human_resets(&self) -> u64 {
        self.human_resets
    }
    pub fn config(&self) -> &ScheduleConfig {
        &self.cfg
    }
    /// Episodes in a row, up to the last one, that each left the object where it began.
    pub fn stalled(&self) -> u32 {
        self.stalled
    }
    /// Whether the current episode should act with the stall-escape noise (`stall_escape`).
    pub fn escaping(&self) -> bool {
        self.cfg.stall_escape > 0 && self.stalled >= self.cfg.stall_escape
    }

    /// One control tick at `now_s`: `success` is this frame's thresholded classifier answer
    /// (`None` when the classifier could not answer: it neither counts nor breaks the run).
    pub fn tick(
        &mut self,
        now_s: f64,
        success: Option<bool>,
        object: &Vector3<f64>,
        tool: &Vector3<f64>,
    ) -> Decision {
        if self.paused.is_some() {
            return Decision::Paused;
        }
        let start = *self.object_at_start.get_or_insert(*object);
        if object.z < self.cfg.off_table_z {
            self.paused = Some(PauseCause::OffTable);
            return Decision::Paused;
        }
        if let Some(area) = &self.cfg.reach {
            if !area.contains(object) {
                self.paused = Some(PauseCause::OutOfReach);
                return Decision::Paused;
            }
            let d = area.edge_distance(object);
            let d0 = area.edge_distance(&start);
            if d < self.cfg.edge_guard_m && d < d0 - EDGE_APPROACH_M {
                return self.end(now_s, EndReason::NearEdge, object - start);
            }
        }
        match success {
            Some(true) => self.run += 1,
            Some(false) => self.run = 0,
            None => {}
        }
        if self.run >= self.cfg.consecutive {
            return self.end(now_s, EndReason::Success, object - start);
        }
        if now_s - self.started_s >= self.cfg.timeout_s {
            return self.end(now_s, EndReason::Timeout, object - start);
        }
        match self.anchor {
            Some((t, o, p))
                if (object - o).norm() < self.cfg.stuck_distance_m
                    && (tool - p).norm() < self.cfg.stuck_distance_m =>
            {
                if self.cfg.stuck_s > 0.0 && now_s - t >= self.cfg.stuck_s {
                    return self.end(now_s, EndReason::Stuck, object - start);
                }
            }
            _ => self.anchor = Some((now_s, *object, *tool)),
        }
        Decision::Continue
    }

    fn end(&mut self, now_s: f64, reason: EndReason, moved: Vector3<f64>) -> Decision {
        if moved.norm() < self.cfg.stuck_distance_m {
            self.stalled += 1;
            if self.cfg.stalled_episodes > 0 && self.stalled >= self.cfg.stalled_episodes {
                // The episode ends as decided; the next tick asks for a human.
                self.paused = Some(PauseCause::Stalled);
            }
        } else {
            self.stalled = 0;
        }
        if self.dir == Direction::Backward
            && reason != EndReason::Success
            && self.retries < self.cfg.reset_retries
        {
            self.retries += 1;
            self.last_end_switched = false;
        } else {
            self.retries = 0;
            self.dir = self.dir.reverse();
            self.last_end_switched = true;
        }
        self.begin(now_s);
        Decision::End {
            reason,
            next: self.dir,
        }
    }

    /// The episode that just ended (timeout or stuck) was confirmed a success afterwards, with
    /// the arm home: the schedule goes on as after a success (a reset that would have been
    /// retried is not). Returns the task that runs next.
    pub fn confirm_success(&mut self) -> Direction {
        if !self.last_end_switched {
            self.retries = 0;
            self.dir = self.dir.reverse();
            self.last_end_switched = true;
        }
        self.dir
    }

    /// Starts the current episode's clocks (timeout, stuck) again at `now_s`, as after the
    /// arm went home between two episodes; neither a new episode nor a decision.
    pub fn restart_clock(&mut self, now_s: f64) {
        self.started_s = now_s;
        self.run = 0;
        self.anchor = None;
        self.object_at_start = None;
    }

    fn begin(&mut self, now_s: f64) {
        self.episode += 1;
        self.started_s = now_s;
        self.run = 0;
        self.anchor = None;
        self.object_at_start = None;
    }

    /// A human put the scene back for the forward task: the next episode starts now.
    pub fn human_reset_done(&mut self, now_s: f64) -> Decision {
        self.paused = None;
        self.stalled = 0;
        self.human_resets += 1;
        self.dir = Direction::Forward;
        self.begin(now_s);
        Decision::End {
            reason: EndReason::HumanReset,
            next: self.dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f64) -> Vector3<f64> {
        Vector3::new(x, 0.0, 0.02)
    }

    #[test]
    fn switches_on_k_successes_timeout_and_stuck() {
        let cfg = ScheduleConfig {
            consecutive: 3,
            timeout_s: 10.0,
            stuck_s: 2.0,
            reset_retries: 0,
            ..Default::default()
        };
        let mut s = Schedule::new(cfg, Direction::Forward, 0.0);
        let mut t = 0.0;
        let mut tick = |s: &mut Schedule, ok: Option<bool>, x: f64| {
            t += 0.1;
            s.tick(t, ok, &v(x), &v(x))
        };
        // Two successes, a miss, then an unanswered frame in a run of three: k counts runs.
        for (i, ok) in [
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(true),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(tick(&mut s, ok, i as f64 * 0.02), Decision::Continue, "{i}");
        }
        assert_eq!(
            tick(&mut s, Some(true), 0.2),
            Decision::End {
                reason: EndReason::Success,
                next: Direction::Backward
            }
        );
        // Moving but never succeeding: timeout after 10 s.
        let mut d = Decision::Continue;
        for i in 0..105 {
            d = tick(&mut s, Some(false), i as f64 * 0.02);
            if d != Decision::Continue {
                assert!(i >= 98, "ended early at {i}");
                break;
            }
        }
        assert_eq!(
            d,
            Decision::End {
                reason: EndReason::Timeout,
                next: Direction::Forward
            }
        );
        // Still: stuck after 2 s.
        let mut n = 0;
        while tick(&mut s, Some(false), 0.0) == Decision::Continue {
            n += 1;
            assert!(n < 30, "never declared stuck");
        }
        assert!(n >= 19, "stuck after {n} ticks");
        assert_eq!(s.episode(), 3);
        assert_eq!(s.direction(), Direction::Backward);
    }

    #[test]
    fn a_failed_reset_is_retried_before_forward_gets_the_scene() {
        let cfg = ScheduleConfig {
            consecutive: 1,
            timeout_s: 1.0,
            stuck_s: 0.0,
            reset_retries: 2,
            ..Default::default()
        };
        let mut s = Schedule::new(cfg, Direction::Backward, 0.0);
        let mut t = 0.0;
        let mut next = |s: &mut Schedule, ok: bool| loop {
            t += 0.1;
            if let Decision::End { reason, next } = s.tick(t, Some(ok), &v(0.0), &v(0.0)) {
                return (reason, next);
            }
        };
        // Two failed resets are retried, the third failure hands over to forward.
        assert_eq!(
            next(&mut s, false),
            (EndReason::Timeout, Direction::Backward)
        );
        assert_eq!(
            next(&mut s, false),
            (EndReason::Timeout, Direction::Backward)
        );
        assert_eq!(
            next(&mut s, false),
            (EndReason::Timeout, Direction::Forward)
        );
        // A failed forward episode is not retried.
        assert_eq!(
            next(&mut s, false),
            (EndReason::Timeout, Direction::Backward)
        );
        // A successful reset hands over at once, and the retry count starts again.
        assert_eq!(next(&mut s, true), (EndReason::Success, Direction::Forward));
        assert_eq!(
            next(&mut s, true),
            (EndReason::Success, Direction::Backward)
        );
        assert_eq!(
            next(&mut s, false),
            (EndReason::Timeout, Direction::Backward)
        );
        assert_eq!(s.episode(), 7);
    }

    #[test]
    fn a_success_confirmed_at_home_goes_on_as_a_success() {
        let cfg = ScheduleConfig {
            consecutive: 1,
            timeout_s: 1.0,
            stuck_s: 0.0,
            reset_retries: 2,
            home_s: 4.0,
            confirm_at_home: true,
            ..Default::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
        let mut s = Schedule::new(cfg.clone(), Direction::Backward, 0.0);
        let mut t = 0.0;
        let mut timeout = |s: &mut Schedule| loop {
            t += 0.1;
            if let Decision::End { reason, next } = s.tick(t, Some(false), &v(0.0), &v(0.0)) {
                return (reason, next);
            }
        };
        // A reset that timed out would be retried; confirmed at home, forward gets the scene.
        assert_eq!(timeout(&mut s), (EndReason::Timeout, Direction::Backward));
        assert_eq!(s.confirm_success(), Direction::Forward);
        assert_eq!(s.direction(), Direction::Forward);
        // A forward timeout already hands over; confirming changes nothing, nor does a second
        // confirmation of the same episode.
        assert_eq!(timeout(&mut s), (EndReason::Timeout, Direction::Backward));
        assert_eq!(s.confirm_success(), Direction::Backward);
        assert_eq!(s.confirm_success(), Direction::Backward);
        // The retry count starts again after a confirmed reset: two more retries follow.
        assert_eq!(timeout(&mut s), (EndReason::Timeout, Direction::Backward));
        assert_eq!(timeout(&mut s), (EndReason::Timeout, Direction::Backward));
        assert_eq!(timeout(&mut s), (EndReason::Timeout, Direction::Forward));
        assert!(EndReason::SuccessAtHome.is_success() && !EndReason::Timeout.is_success());
        // Without the arm going home there is nothing to look at.
        let bad = ScheduleConfig { home_s: 0.0, ..cfg };
        assert_eq!(bad.validate().unwrap_err().key, "confirm_at_home");
    }

    #[test]
    fn posture_reset_overridden_is_a_share_and_needs_homing() {
        let with = |share: f64, home_s: f64| ScheduleConfig {
            posture_reset_overridden: share,
            home_s,
            ..Default::default()
        };
        assert_eq!(with(0.5, 4.0).validate(), Ok(()));
        assert_eq!(with(0.0, 0.0).validate(), Ok(()));
        for bad in [
            with(1.0, 4.0),
            with(-0.1, 4.0),
            with(f64::NAN, 4.0),
            with(0.5, 0.0),
        ] {
            let rft_config::ConfigError {
                key: k,
                reason: why,
            } = bad.validate().unwrap_err();
            assert_eq!(k, "posture_reset_overridden", "{why}");
        }
    }

    #[test]
    fn homing_options_need_the_arm_to_go_home() {
        for (k, bad) in [
            (
                "confirm_at_home",
                ScheduleConfig {
                    confirm_at_home: true,
                    ..Default::default()
                },
            ),
            (
                "home_posture",
                ScheduleConfig {
                    home_posture: true,
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().key, k);
            let ok = ScheduleConfig { home_s: 4.0, ..bad };
            assert_eq!(ok.validate(), Ok(()));
        }
    }

    #[test]
    fn object_off_the_table_pauses_until_a_human_reset() {
        let mut s = Schedule::new(ScheduleConfig::default(), Direction::Backward, 0.0);
        assert_eq!(
            s.tick(0.1, Some(true), &Vector3::new(0.5, 0.0, -0.6), &v(0.0)),
            Decision::Paused
        );
        assert_eq!(
            s.tick(0.2, Some(true), &v(0.5), &v(0.0)),
            Decision::Paused,
            "latched"
        );
        assert!(s.is_paused());
        assert_eq!(
            s.human_reset_done(5.0),
            Decision::End {
                reason: EndReason::HumanReset,
                next: Direction::Forward
            }
        );
        assert_eq!(s.human_resets(), 1);
        assert_eq!(
            s.tick(5.1, Some(false), &v(0.5), &v(0.0)),
            Decision::Continue
        );
    }

    #[test]
    fn an_object_out_of_reach_pauses_like_one_off_the_table() {
        let cfg = ScheduleConfig {
            reach: Some(AreaXy {
                min: [0.3, -0.3],
                max: [0.7, 0.3],
            }),
            ..Default::default()
        };
        let mut s = Schedule::new(cfg.clone(), Direction::Forward, 0.0);
        let at = |x: f64, y: f64| Vector3::new(x, y, 0.025);
        assert_eq!(
            s.tick(0.1, Some(false), &at(0.5, 0.29), &v(0.0)),
            Decision::Continue
        );
        assert_eq!(
            s.tick(0.2, Some(false), &at(0.5, 0.31), &v(0.0)),
            Decision::Paused
        );
        assert_eq!(s.pause_cause(), Some(PauseCause::OutOfReach));
        assert_eq!(
            s.tick(0.3, Some(false), &at(0.5, 0.0), &v(0.0)),
            Decision::Paused,
            "latched until the reset"
        );
        s.human_reset_done(1.0);
        assert_eq!(s.human_resets(), 1);
        assert_eq!(s.pause_cause(), None);
        assert_eq!(
            s.tick(1.1, Some(false), &at(0.25, 0.0), &v(0.0)),
            Decision::Paused
        );
        let bad = ScheduleConfig {
            reach: Some(AreaXy {
                min: [0.7, -0.3],
                max: [0.3, 0.3],
            }),
            ..cfg
        };
        assert_eq!(bad.validate().unwrap_err().key, "reach");
    }

    #[test]
    fn an_episode_pushing_the_object_to_the_edge_ends_before_a_human_is_needed() {
        let reach = AreaXy {
            min: [0.3, -0.3],
            max: [0.7, 0.3],
        };
        let cfg = ScheduleConfig {
            reach: Some(reach),
            edge_guard_m: 0.03,
            reset_retries: 1,
            ..Default::default()
        };
        cfg.validate().unwrap();
        let at = |x: f64| Vector3::new(x, 0.0, 0.025);
        let mut s = Schedule::new(cfg.clone(), Direction::Forward, 0.0);
        // The forward policy pushes the object towards the base, 1 cm per tick.
        let mut t = 0.0;
        let mut x = 0.40;
        let d = loop {
            t += 0.1;
            x -= 0.01;
            let d = s.tick(t, Some(false), &at(x), &v(0.0));
            if d != Decision::Continue {
                break d;
            }
            assert!(x > 0.3, "never stopped");
        };
        assert_eq!(
            d,
            Decision::End {
                reason: EndReason::NearEdge,
                next: Direction::Backward
            }
        );
        assert!((0.32..0.33).contains(&x), "stopped at x = {x}");
        assert_eq!(s.human_resets(), 0);
        // The reset episode starts inside the band: holding the object there or pushing it
        // away is fine; pushing it further towards the edge ends it too (a failed reset, so it
        // is retried).
        for i in 0..20 {
            t += 0.1;
            let d = s.tick(
                t,
                Some(false),
                &at(x + 0.002 * (i % 2) as f64),
                &v(0.01 * i as f64),
            );
            assert_eq!(d, Decision::Continue, "tick {i}");
        }
        t += 0.1;
        assert_eq!(
            s.tick(t, Some(false), &at(x - 0.006), &v(0.0)),
            Decision::End {
                reason: EndReason::NearEdge,
                next: Direction::Backward
            }
        );
        // Off by default, and it guards only a `reach` area.
        let mut off = Schedule::new(
            ScheduleConfig {
                reach: Some(reach),
                ..Default::default()
            },
            Direction::Forward,
            0.0,
        );
        assert_eq!(
            off.tick(0.1, Some(false), &at(0.4), &v(0.0)),
            Decision::Continue
        );
        assert_eq!(
            off.tick(0.2, Some(false), &at(0.301), &v(0.0)),
            Decision::Continue
        );
        let bad = ScheduleConfig { reach: None, ..cfg };
        assert_eq!(bad.validate().unwrap_err().key, "edge_guard_m");
    }

    #[test]
    fn a_scene_no_episode_changes_asks_for_a_human() {
        let cfg = ScheduleConfig {
            timeout_s: 1.0,
            stuck_s: 0.0,
            reset_retries: 0,
            stalled_episodes: 4,
            ..Default::default()
        };
        let mut s = Schedule::new(cfg, Direction::Forward, 0.0);
        let t = std::cell::Cell::new(0.0);
        // Runs one episode to its end with the object at `x` throughout (`push`: the object
        // moves 5 cm during it) and the classifier answering `ok`.
        let episode = |s: &mut Schedule, x: f64, push: bool, ok: bool| {
            for i in 0..20 {
                t.set(t.get() + 0.1);
                let at = if push && i >= 5 { x + 0.05 } else { x };
                match s.tick(t.get(), Some(ok), &v(at), &v(0.0)) {
                    Decision::Continue => {}
                    d => return d,
                }
            }
            panic!("the episode did not end");
        };
        // A forward timeout that never touches the object, a reset that "succeeds" at once, ...
        let mut reasons = Vec::new();
        for k in 0..3 {
            let ok = k % 2 == 1;
            match episode(&mut s, 0.5, false, ok) {
                Decision::End { reason, .. } => reasons.push(reason),
                d => panic!("{d:?}"),
            }
            assert!(!s.is_paused(), "paused after {} episodes", k + 1);
        }
        assert_eq!(
            reasons,
            [EndReason::Timeout, EndReason::Success, EndReason::Timeout]
        );
        // ... the fourth unchanged scene in a row: that episode ends, then the loop waits.
        assert!(matches!(
            episode(&mut s, 0.5, false, true),
            Decision::End {
                reason: EndReason::Success,
                ..
            }
        ));
        assert_eq!(s.pause_cause(), Some(PauseCause::Stalled));
        assert_eq!(PauseCause::Stalled.name(), "scene_stalled");
        assert_eq!(
            s.tick(t.get() + 0.1, Some(false), &v(0.5), &v(0.0)),
            Decision::Paused
        );
        s.human_reset_done(t.get() + 0.2);
        assert_eq!(s.human_resets(), 1);
        // An episode that moves the object starts the count again.
        for _ in 0..3 {
            episode(&mut s, 0.5, false, false);
        }
        episode(&mut s, 0.5, true, false);
        for _ in 0..3 {
            episode(&mut s, 0.55, false, false);
        }
        assert!(!s.is_paused());
    }

    #[test]
    fn a_stalled_scene_turns_on_the_escape_noise_until_the_object_moves() {
        let cfg = ScheduleConfig {
            timeout_s: 1.0,
            stuck_s: 0.0,
            reset_retries: 0,
            stall_escape: 2,
            stalled_episodes: 5,
            ..Default::default()
        };
        cfg.validate().unwrap();
        let mut s = Schedule::new(cfg.clone(), Direction::Forward, 0.0);
        let mut t = 0.0;
        // One episode to its end, the object at `x` (moved 5 cm during it when `push`).
        let mut episode = |s: &mut Schedule, x: f64, push: bool| {
            for i in 0.. {
                t += 0.1;
                let at = if push && i >= 3 { x + 0.05 } else { x };
                if let Decision::End { .. } = s.tick(t, Some(false), &v(at), &v(0.0)) {
                    return;
                }
            }
        };
        let mut escaping = Vec::new();
        for push in [false, false, false, false, true, false] {
            escaping.push(s.escaping());
            episode(&mut s, 0.5, push);
        }
        escaping.push(s.escaping());
        // Two unchanged scenes in a row turn it on; the episode that moved the object (the
        // fifth) turns it off again; nobody was asked for.
        assert_eq!(escaping, [false, false, true, true, true, false, false]);
        assert_eq!(s.stalled(), 1);
        assert!(!s.is_paused());
        // Off by default; the noise must be a standard deviation in (0, 1]; the escape must
        // come before the pause for a human.
        assert!(!Schedule::new(ScheduleConfig::default(), Direction::Forward, 0.0).escaping());
        for (bad, key) in [
            (
                ScheduleConfig {
                    stall_explore_std: 0.0,
                    ..cfg.clone()
                },
                "stall_explore_std",
            ),
            (
                ScheduleConfig {
                    stall_explore_std: 1.5,
                    ..cfg.clone()
                },
                "stall_explore_std",
            ),
            (
                ScheduleConfig {
                    stall_escape: 5,
                    ..cfg.clone()
                },
                "stall_escape",
            ),
        ] {
            let rft_config::ConfigError {
                key: k,
                reason: why,
            } = bad.validate().unwrap_err();
            assert_eq!(k, key, "{why}");
        }
        ScheduleConfig {
            stall_escape: 5,
            stalled_episodes: 0,
            ..cfg
        }
        .validate()
        .unwrap();
    }
}
