//! The node runtime: it owns threads, timers, the clock and shutdown. A node is a plain struct
//! with `step` (on its timer) and `on_wake` (when a subscription delivered); it never spawns
//! threads or sleeps to pace itself.
//!
//! Two executors run the same nodes:
//! - threads (the default, and what a robot runs): one thread per node, timers on the clock;
//! - lockstep ([`Runtime::lockstep`], sim clock and in-process bus only): one thread steps every
//!   due node in the order they were added, delivers messages until no node has anything
//!   pending, and only then moves simulated time to the next due step. Nothing waits on the
//!   wall clock, so a run is as fast as the CPU allows and the same inputs give the same run.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rft_msgs::Time;

use crate::bus::{NodeHandle, Signal};
use crate::error::{Error, Result};

/// Longest a node thread sleeps before it looks at the shutdown flag again.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Simulated time, advanced by whoever owns the simulation: the simulator node on the threaded
/// executor, the executor itself in lockstep.
#[derive(Debug, Default)]
pub struct SimClock {
    ns: AtomicI64,
    waiters: Mutex<Vec<Weak<Signal>>>,
    lockstep: AtomicBool,
}

impl SimClock {
    /// Whether the lockstep executor owns this clock: a simulator node then steps physics
    /// between its own steps instead of moving time or waiting for commands.
    pub fn is_lockstep(&self) -> bool {
        self.lockstep.load(Ordering::Acquire)
    }

    pub fn now_ns(&self) -> i64 {
        self.ns.load(Ordering::Acquire)
    }

    /// Moves simulated time forward (never backwards) and wakes every waiting node.
    pub fn advance_to(&self, ns: i64) {
        self.ns.fetch_max(ns, Ordering::AcqRel);
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        w.retain(|s| match s.upgrade() {
            Some(s) => {
                s.notify();
                true
            }
            None => false,
        });
    }

    fn register(&self, s: &Arc<Signal>) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(s));
    }
}

/// The clock every node's stamps follow.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall time (Unix epoch).
    Wall,
    /// Simulated time, advanced by the simulator.
    Sim(Arc<SimClock>),
}

impl Clock {
    pub fn now_ns(&self) -> i64 {
        match self {
            Clock::Wall => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Clock::Sim(s) => s.now_ns(),
        }
    }

    pub fn now(&self) -> Time {
        Time::from_nanos(self.now_ns())
    }
}

/// Shared shutdown flag. Triggering it wakes every node.
#[derive(Debug, Default)]
pub struct Shutdown {
    flag: AtomicBool,
    reason: Mutex<Option<String>>,
    signals: Mutex<Vec<Arc<Signal>>>,
}

impl Shutdown {
    pub fn trigger(&self, reason: &str) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_none() {
                *r = Some(reason.to_string());
            }
        }
        self.flag.store(true, Ordering::Release);
        for s in self
            .signals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            s.notify();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn register(&self, s: Arc<Signal>) {
        self.signals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }
}

/// What a node sees at each call.
pub struct StepCtx<'a> {
    /// Current time on the runtime's clock.
    pub now: Time,
    pub clock: &'a Clock,
    shutdown: &'a Shutdown,
}

impl<'a> StepCtx<'a> {
    /// A context for driving a node by hand (tests, tools); the runtime makes its own.
    pub fn new(now: Time, clock: &'a Clock, shutdown: &'a Shutdown) -> Self {
        Self {
            now,
            clock,
            shutdown,
        }
    }

    /// Whether the runtime is stopping (for a node that waits inside its step).
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Asks the whole runtime to stop (e.g. a node finished its job).
    pub fn request_shutdown(&self, reason: &str) {
        self.shutdown.trigger(reason);
    }
}

/// A node.
pub trait Node: Send {
    fn name(&self) -> &str;
    /// Period of `step`; `None` for nodes that only react to messages.
    fn period(&self) -> Option<Duration>;
    /// Called once per period.
    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()>;
    /// Called when one of the node's subscriptions delivered.
    fn on_wake(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        Ok(())
    }
    /// Called once when the runtime stops; robot-facing nodes send their final zero command here.
    fn shutdown(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        Ok(())
    }
}

/// Counters of one node.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub steps: AtomicU64,
    pub overruns: AtomicU64,
    pub wakes: AtomicU64,
}

/// Per-node result of a run.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub name: String,
    pub steps: u64,
    pub overruns: u64,
    pub wakes: u64,
    pub error: Option<String>,
}

/// Result of [`Runtime::run`].
#[derive(Debug, Clone)]
pub struct RunReport {
    pub nodes: Vec<NodeReport>,
    pub reason: String,
    /// From the shutdown request to the last node thread joined.
    pub stop_latency: Duration,
}

/// When a node stops relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Stops first (drivers, controllers: their final commands go out now).
    Normal,
    /// Stops after every `Normal` node (recorders see the final commands).
    Observer,
}

struct Entry {
    node: Box<dyn Node>,
    wake: Arc<Signal>,
    stage: Stage,
    /// The node's place in the bus graph (its liveliness token over zenoh), kept as long as
    /// the node runs: a node that keeps only its publishers would otherwise vanish from
    /// `ros2 node list` while its topics stay.
    handle: Option<NodeHandle>,
}

/// Runs nodes, one thread each.
pub struct Runtime {
    clock: Clock,
    shutdown: Arc<Shutdown>,
    entries: Vec<Entry>,
    progress_every: Option<Duration>,
    lockstep: bool,
}

impl Runtime {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            shutdown: Arc::new(Shutdown::default()),
            entries: Vec::new(),
            progress_every: None,
            lockstep: false,
        }
    }

    /// Runs the nodes in lockstep on one thread (see the module docs). Needs a sim clock.
    pub fn lockstep(mut self) -> Result<Self> {
        let Clock::Sim(s) = &self.clock else {
            return Err(Error::Runtime(
                "the lockstep executor needs a sim clock ([clock] kind = \"sim\")".into(),
            ));
        };
        s.lockstep.store(true, Ordering::Release);
        self.lockstep = true;
        Ok(self)
    }

    /// Logs a progress line (steps and overruns per node) this often.
    pub fn with_progress(mut self, every: Duration) -> Self {
        self.progress_every = Some(every);
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The handle that stops the runtime (Ctrl-C handlers, tests).
    pub fn shutdown_handle(&self) -> Arc<Shutdown> {
        self.shutdown.clone()
    }

    /// Adds a node woken by `wake` (tools and tests; a launch uses [`Self::add_with_handle`]).
    pub fn add(&mut self, node: Box<dyn Node>, wake: Arc<Signal>) {
        self.entries.push(Entry {
            node,
            wake,
            stage: Stage::Normal,
            handle: None,
        });
    }

    /// Adds a node built on `handle`: the runtime wakes it on the handle's signal and keeps the
    /// handle (the node's declaration in the graph) until the node has stopped.
    pub fn add_with_handle(&mut self, node: Box<dyn Node>, handle: NodeHandle, stage: Stage) {
        self.entries.push(Entry {
            node,
            wake: handle.wake_signal().clone(),
            stage,
            handle: Some(handle),
        });
    }

    /// Runs until `duration` passes (on the runtime's clock) or shutdown is triggered.
    pub fn run(self, duration: Option<Duration>) -> Result<RunReport> {
        if self.lockstep {
            return self.run_lockstep(duration);
        }
        let Runtime {
            clock,
            shutdown,
            entries,
            progress_every,
            lockstep: _,
        } = self;
        let main_signal = Arc::new(Signal::default());
        shutdown.register(main_signal.clone());
        // On a sim clock, look at the duration whenever simulated time moves.
        if let Clock::Sim(s) = &clock {
            s.register(&main_signal);
        }
        let mut threads: Vec<Running> = Vec::new();
        let stage_stop = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        for Entry {
            node,
            wake,
            stage,
            handle,
        } in entries
        {
            let name = node.name().to_string();
            shutdown.register(wake.clone());
            if let Clock::Sim(s) = &clock {
                s.register(&wake);
            }
            let stats = Arc::new(NodeStats::default());
            let stop = stage_stop[stage as usize].clone();
            let (c, sd, st) = (clock.clone(), shutdown.clone(), stats.clone());
            let w = wake.clone();
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let error = run_node(node, w, c, sd, stop, st);
                    // The node leaves the graph only once it has stopped.
                    drop(handle);
                    error
                })
                .map_err(|e| Error::Io {
                    context: format!("spawning thread for node {name}"),
                    source: e,
                })?;
            threads.push(Running {
                name,
                stats,
                handle,
                stage,
                wake,
            });
        }
        tracing::info!(nodes = threads.len(), "runtime started");

        let start_ns = clock.now_ns();
        let mut progress = ProgressLog::new(progress_every);
        while !shutdown.is_triggered() {
            if let Some(d) = duration {
                let elapsed_ns = clock.now_ns().saturating_sub(start_ns);
                if elapsed_ns >= i64::try_from(d.as_nanos()).unwrap_or(i64::MAX) {
                    shutdown.trigger("duration reached");
                    break;
                }
            }
            main_signal.wait_timeout(MAX_WAIT);
            progress.tick(|| {
                threads
                    .iter()
                    .map(|r| {
                        format!(
                            "{}: {} steps, {} overruns",
                            r.name,
                            r.stats.steps.load(Ordering::Relaxed),
                            r.stats.overruns.load(Ordering::Relaxed)
                        )
                    })
                    .collect()
            });
        }
        let stop_requested = Instant::now();
        let reason = shutdown.reason().unwrap_or_else(|| "stopped".into());
        tracing::info!(%reason, "stopping nodes");
        let mut nodes = Vec::new();
        for stage in [Stage::Normal, Stage::Observer] {
            stage_stop[stage as usize].store(true, Ordering::Release);
            let (now, later): (Vec<Running>, Vec<Running>) =
                threads.into_iter().partition(|r| r.stage == stage);
            threads = later;
            for r in &now {
                r.wake.notify();
            }
            for r in now {
                let error = match r.handle.join() {
                    Ok(e) => e,
                    Err(_) => Some("node thread panicked".into()),
                };
                nodes.push(NodeReport {
                    name: r.name,
                    steps: r.stats.steps.load(Ordering::Relaxed),
                    overruns: r.stats.overruns.load(Ordering::Relaxed),
                    wakes: r.stats.wakes.load(Ordering::Relaxed),
                    error,
                });
            }
        }
        let stop_latency = stop_requested.elapsed();
        tracing::info!(
            stop_ms = stop_latency.as_millis() as u64,
            "all nodes stopped"
        );
        Ok(RunReport {
            nodes,
            reason,
            stop_latency,
        })
    }

    fn run_lockstep(self, duration: Option<Duration>) -> Result<RunReport> {
        let Runtime {
            clock,
            shutdown,
            entries,
            progress_every,
            lockstep: _,
        } = self;
        let Clock::Sim(sim) = &clock else {
            return Err(Error::Runtime(
                "the lockstep executor needs a sim clock".into(),
            ));
        };
        struct Stepped {
            entry: Entry,
            period_ns: Option<i64>,
            next_ns: i64,
            stats: NodeStats,
            error: Option<String>,
        }
        let start_ns = sim.now_ns();
        let mut nodes: Vec<Stepped> = entries
            .into_iter()
            .map(|entry| {
                let period_ns = entry
                    .node
                    .period()
                    .map(|p| i64::try_from(p.as_nanos()).unwrap_or(i64::MAX).max(1));
                Stepped {
                    entry,
                    period_ns,
                    next_ns: start_ns,
                    stats: NodeStats::default(),
                    error: None,
                }
            })
            .collect();
        tracing::info!(nodes = nodes.len(), "runtime started (lockstep)");
        let end_ns = duration
            .map(|d| start_ns.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)));
        let mut progress = ProgressLog::new(progress_every);
        let mut now_ns = start_ns;
        // A node that keeps waking others forever would never let time move; past this many
        // delivery rounds in one tick the run stops with that reason.
        const MAX_ROUNDS: usize = 10_000;
        'ticks: while !shutdown.is_triggered() {
            if end_ns.is_some_and(|e| now_ns >= e) {
                shutdown.trigger("duration reached");
                break;
            }
            let now = Time::from_nanos(now_ns);
            let ctx = StepCtx {
                now,
                clock: &clock,
                shutdown: &shutdown,
            };
            for n in nodes.iter_mut() {
                let Some(p) = n.period_ns else { continue };
                if n.next_ns > now_ns {
                    continue;
                }
                if let Err(e) = n.entry.node.step(&ctx) {
                    let name = n.entry.node.name().to_string();
                    tracing::error!(node = %name, error = %e, "step failed; stopping");
                    shutdown.trigger(&format!("node {name} failed: {e}"));
                    n.error = Some(e.to_string());
                    break 'ticks;
                }
                n.stats.steps.fetch_add(1, Ordering::Relaxed);
                n.next_ns += p;
            }
            let mut rounds = 0;
            loop {
                let mut any = false;
                for n in nodes.iter_mut() {
                    if !n.entry.wake.take() {
                        continue;
                    }
                    any = true;
                    n.stats.wakes.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = n.entry.node.on_wake(&ctx) {
                        let name = n.entry.node.name().to_string();
                        tracing::error!(node = %name, error = %e, "message handling failed; stopping");
                        shutdown.trigger(&format!("node {name} failed: {e}"));
                        n.error = Some(e.to_string());
                        break 'ticks;
                    }
                }
                rounds += 1;
                if !any {
                    break;
                }
                if rounds >= MAX_ROUNDS {
                    shutdown.trigger("messages kept waking nodes without end in one tick");
                    break 'ticks;
                }
            }
            // Time moves to the next due step, only now that every node has answered.
            let Some(next) = nodes
                .iter()
                .filter(|n| n.period_ns.is_some())
                .map(|n| n.next_ns)
                .min()
            else {
                shutdown.trigger("no node has a timer: nothing moves simulated time");
                break;
            };
            now_ns = next.max(now_ns);
            sim.advance_to(now_ns);
            progress.tick(|| {
                let mut parts = vec![format!("sim {:.1} s", (now_ns - start_ns) as f64 / 1e9)];
                parts.extend(nodes.iter().map(|n| {
                    format!(
                        "{}: {} steps",
                        n.entry.node.name(),
                        n.stats.steps.load(Ordering::Relaxed)
                    )
                }));
                parts
            });
        }
        let stop_requested = Instant::now();
        let reason = shutdown.reason().unwrap_or_else(|| "stopped".into());
        tracing::info!(%reason, "stopping nodes");
        let ctx = StepCtx {
            now: Time::from_nanos(now_ns),
            clock: &clock,
            shutdown: &shutdown,
        };
        // Shutdown hooks in stage order (observers last), in the order the nodes were added.
        nodes.sort_by_key(|n| n.entry.stage);
        let mut reports = Vec::new();
        for mut n in nodes {
            // What the stage before sent (final commands) reaches this node first.
            if n.entry.wake.take()
                && let Err(e) = n.entry.node.on_wake(&ctx)
            {
                n.error.get_or_insert(e.to_string());
            }
            if let Err(e) = n.entry.node.shutdown(&ctx) {
                tracing::warn!(node = %n.entry.node.name(), error = %e, "shutdown hook failed");
                n.error.get_or_insert(e.to_string());
            }
            reports.push(NodeReport {
                name: n.entry.node.name().to_string(),
                steps: n.stats.steps.load(Ordering::Relaxed),
                overruns: 0,
                wakes: n.stats.wakes.load(Ordering::Relaxed),
                error: n.error,
            });
            drop(n.entry.handle);
        }
        let stop_latency = stop_requested.elapsed();
        tracing::info!(
            stop_ms = stop_latency.as_millis() as u64,
            "all nodes stopped"
        );
        Ok(RunReport {
            nodes: reports,
            reason,
            stop_latency,
        })
    }
}

/// The progress line both executors log every `every` of wall time: steps per node.
struct ProgressLog {
    every: Option<Duration>,
    start: Instant,
    last: Instant,
}

impl ProgressLog {
    fn new(every: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            every,
            start: now,
            last: now,
        }
    }

    fn tick(&mut self, summary: impl FnOnce() -> Vec<String>) {
        if let Some(every) = self.every
            && self.last.elapsed() >= every
        {
            self.last = Instant::now();
            tracing::info!(
                elapsed_s = format!("{:.1}", self.start.elapsed().as_secs_f64()),
                "{}",
                summary().join(" | ")
            );
        }
    }
}

struct Running {
    name: String,
    stats: Arc<NodeStats>,
    handle: JoinHandle<Option<String>>,
    stage: Stage,
    wake: Arc<Signal>,
}

fn run_node(
    mut node: Box<dyn Node>,
    wake: Arc<Signal>,
    clock: Clock,
    shutdown: Arc<Shutdown>,
    stop: Arc<AtomicBool>,
    stats: Arc<NodeStats>,
) -> Option<String> {
    let name = node.name().to_string();
    let period_ns = node
        .period()
        .map(|p| i64::try_from(p.as_nanos()).unwrap_or(i64::MAX).max(1));
    // The first step runs at start, then one per period.
    let mut next = period_ns.map(|_| clock.now_ns());
    let mut error = None;
    let ctx = || StepCtx {
        now: clock.now(),
        clock: &clock,
        shutdown: &shutdown,
    };
    // A failing step or message handler stops the whole runtime with the reason.
    let fail = |what: &str, e: &Error| {
        tracing::error!(node = %name, error = %e, "{what} failed; stopping");
        shutdown.trigger(&format!("node {name} failed: {e}"));
        Some(e.to_string())
    };
    while !stop.load(Ordering::Acquire) {
        let now = clock.now_ns();
        if let (Some(p), Some(deadline)) = (period_ns, next)
            && now >= deadline
        {
            let span = tracing::debug_span!("step", node = %name);
            let _g = span.enter();
            if let Err(e) = node.step(&ctx()) {
                error = fail("step", &e);
                break;
            }
            stats.steps.fetch_add(1, Ordering::Relaxed);
            let mut nd = deadline + p;
            let after = clock.now_ns();
            // A node that owns a sim clock advances it by exactly one period in its step.
            if after > nd {
                let missed = (after - nd) / p + 1;
                stats.overruns.fetch_add(missed as u64, Ordering::Relaxed);
                nd += missed * p;
            }
            next = Some(nd);
            continue;
        }
        let wait = match (next, &clock) {
            (Some(d), Clock::Wall) => {
                Duration::from_nanos(u64::try_from(d - now).unwrap_or(0)).min(MAX_WAIT)
            }
            _ => MAX_WAIT,
        };
        if wake.wait_timeout(wait) && !stop.load(Ordering::Acquire) {
            stats.wakes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = node.on_wake(&ctx()) {
                error = fail("message handling", &e);
                break;
            }
        }
    }
    if let Err(e) = node.shutdown(&ctx()) {
        tracing::warn!(node = %name, error = %e, "shutdown hook failed");
        error.get_or_insert(e.to_string());
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        period: Duration,
        steps: Arc<AtomicU64>,
        work: Duration,
        shut: Arc<AtomicBool>,
    }

    impl Node for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn period(&self) -> Option<Duration> {
            Some(self.period)
        }
        fn step(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
            self.steps.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(self.work); // simulated work, to provoke overruns
            Ok(())
        }
        fn shutdown(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
            self.shut.store(true, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn sim_clock_paces_timers_and_shutdown_runs_hooks() {
        let sim = Arc::new(SimClock::default());
        let mut rt = Runtime::new(Clock::Sim(sim.clone()));
        let steps = Arc::new(AtomicU64::new(0));
        let shut = Arc::new(AtomicBool::new(false));
        rt.add(
            Box::new(Counter {
                period: Duration::from_millis(10),
                steps: steps.clone(),
                work: Duration::ZERO,
                shut: shut.clone(),
            }),
            Arc::new(Signal::default()),
        );
        let stop = rt.shutdown_handle();
        let h = std::thread::spawn(move || rt.run(None));
        let wait_steps = |n: u64| {
            let t0 = Instant::now();
            while steps.load(Ordering::Relaxed) < n {
                assert!(t0.elapsed() < Duration::from_secs(10), "step {n} never ran");
                std::thread::yield_now();
            }
        };
        wait_steps(1); // the first step runs at start, at simulated time 0
        // Advance simulated time by 10 periods, one at a time, waiting for each step.
        for i in 1..=10 {
            sim.advance_to(i * 10_000_000);
            wait_steps(i as u64 + 1);
        }
        assert_eq!(
            steps.load(Ordering::Relaxed),
            11,
            "no extra steps without sim time"
        );
        stop.trigger("test");
        let report = h.join().unwrap().unwrap();
        assert!(shut.load(Ordering::Relaxed), "shutdown hook ran");
        assert_eq!(report.reason, "test");
        assert!(report.stop_latency < Duration::from_secs(1));
    }

    #[test]
    fn lockstep_steps_each_node_on_its_period_and_moves_time_itself() {
        let sim = Arc::new(SimClock::default());
        let mut rt = Runtime::new(Clock::Sim(sim.clone())).lockstep().unwrap();
        assert!(sim.is_lockstep());
        let counters: Vec<(Arc<AtomicU64>, Arc<AtomicBool>)> = [10, 25]
            .iter()
            .map(|ms| {
                let (steps, shut) = (
                    Arc::new(AtomicU64::new(0)),
                    Arc::new(AtomicBool::new(false)),
                );
                rt.add(
                    Box::new(Counter {
                        period: Duration::from_millis(*ms),
                        steps: steps.clone(),
                        work: Duration::ZERO,
                        shut: shut.clone(),
                    }),
                    Arc::new(Signal::default()),
                );
                (steps, shut)
            })
            .collect();
        let report = rt.run(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(report.reason, "duration reached");
        // Steps at 0, 10, ..., 90 ms and at 0, 25, 50, 75 ms: exactly, with no wall-clock
        // pacing and no missed tick.
        assert_eq!(counters[0].0.load(Ordering::Relaxed), 10);
        assert_eq!(counters[1].0.load(Ordering::Relaxed), 4);
        assert!(
            counters
                .iter()
                .all(|(_, shut)| shut.load(Ordering::Relaxed))
        );
        assert_eq!(sim.now_ns(), 100_000_000);
        assert!(
            report
                .nodes
                .iter()
                .all(|n| n.overruns == 0 && n.error.is_none())
        );
    }

    #[test]
    fn lockstep_refuses_a_wall_clock() {
        assert!(Runtime::new(Clock::Wall).lockstep().is_err());
    }

    #[test]
    fn slow_steps_count_overruns() {
        let mut rt = Runtime::new(Clock::Wall);
        let steps = Arc::new(AtomicU64::new(0));
        rt.add(
            Box::new(Counter {
                period: Duration::from_millis(2),
                steps: steps.clone(),
                work: Duration::from_millis(7),
                shut: Arc::new(AtomicBool::new(false)),
            }),
            Arc::new(Signal::default()),
        );
        let report = rt.run(Some(Duration::from_millis(200))).unwrap();
        let n = &report.nodes[0];
        assert!(n.steps >= 5, "{n:?}");
        // Each 7 ms step spans at least 3 periods of 2 ms, so at least 2 ticks are missed.
        assert!(n.overruns >= 2 * (n.steps - 1), "{n:?}");
    }
}
