//! The autonomous loop as nodes on the bus: simulated robot → safety filter ← policy runner,
//! reward node, episode manager and learner. One test runs the launch-file graph on the
//! runtime; the kill tests drive the same nodes step by step on a simulated clock so that one
//! of them can be stopped mid-run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Artifacts, artifacts};
use rft_msgs::{
    Action, EpisodePhase, JointState, PHASE_PAUSED_FOR_HUMAN, PHASE_RUNNING, PolicyUpdate,
    SAFETY_STOPPED, SafetyStatus, Time, Transition,
};
use rft_nodes::{EpisodeManager, Learner, PolicyRunner, RewardNode, SafetyFilter, SimRobot};
use rft_policies::{Agent, checkpoint};
use rft_runtime::app;
use rft_runtime::bus::{Bus, NodeHandle, QueueConfig, Signal, Subscription};
use rft_runtime::launch;
use rft_runtime::{Clock, Node, Shutdown, SimClock, StepCtx};

fn launch_text(a: &Artifacts, duration_s: f64) -> String {
    format!(
        r#"
name = "loop_test"
duration_s = {duration_s}
[clock]
kind = "sim"
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
realtime_factor = 0.0
lockstep_timeout_ms = 0
cameras = [{{ name = "camera", width = 64, height = 64, rate_hz = 10 }}]
[[nodes]]
name = "safety"
kind = "safety_filter"
[nodes.params]
urdf = "../sim/assets/panda.urdf"
joint_state_rate_hz = 100
workspace_min = [0.2, -0.5, 0.01]
workspace_max = [0.8, 0.5, 0.8]
max_linear_m_s = 0.25
stale_command_ms = 200
[[nodes]]
name = "policy"
kind = "policy_runner"
rate_hz = 10
[nodes.params]
policy = "{init}"
[[nodes]]
name = "reward"
kind = "reward"
rate_hz = 10
[nodes.params]
consecutive = 3
classifiers = [{{ kind = "cnn", weights = "{clf}", threshold = 0.0 }}]
[[nodes]]
name = "episodes"
kind = "episode_manager"
rate_hz = 10
[[nodes]]
name = "learner"
kind = "learner"
rate_hz = 50
[nodes.params]
init = "{init}"
out = "{out}"
warmup_transitions = 10
checkpoint_every = 20
recipe = {{ publish_every = 2, offline_ratio = 0.0 }}
"#,
        init = a.init.display(),
        clf = a.classifier.display(),
        out = a.learner_out.display(),
    )
}

fn parse(a: &Artifacts, duration_s: f64) -> launch::Launch {
    parse_with(a, duration_s, &[])
}

/// The test launch with `--set KEY=VALUE` overrides (nodes: 0 robot, 1 safety, 2 policy,
/// 3 reward, 4 episodes, 5 learner).
fn parse_with(a: &Artifacts, duration_s: f64, sets: &[&str]) -> launch::Launch {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/loop_test.toml");
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    launch::parse(
        &rft_nodes::registry(),
        &path,
        &launch_text(a, duration_s),
        &sets,
    )
    .unwrap()
}

#[test]
fn the_loop_runs_reset_free_on_the_bus_and_the_runner_picks_up_new_weights() {
    let a = artifacts();
    // Real time: on a sim clock running as fast as it can, nothing would make the robot wait
    // for a starved runner thread (a busy CI machine) and control ticks would be skipped.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/loop_test.toml");
    let l = launch::parse(
        &rft_nodes::registry(),
        &path,
        &launch_text(&a, 5.0),
        &["nodes.0.params.realtime_factor=1.0".to_string()],
    )
    .unwrap();
    let runs = tempfile::tempdir().unwrap();
    let prepared = app::prepare_in(&l, None, Some(runs.path().to_path_buf())).unwrap();
    let test = prepared.bus.simple_node("observer").unwrap();
    let q = QueueConfig::drop_oldest(100_000);
    let policies: Subscription<PolicyUpdate> = test.subscribe("/rft/policy", q).unwrap();
    let actions: Subscription<Action> = test.subscribe("/rft/action", q).unwrap();
    let transitions: Subscription<Transition> = test.subscribe("/rft/transition", q).unwrap();
    let phases: Subscription<EpisodePhase> = test.subscribe("/rft/phase", q).unwrap();
    let report = app::run(prepared, |_| {}).unwrap();
    for n in &report.nodes {
        assert!(n.error.is_none(), "{}: {:?}", n.name, n.error);
    }

    // Versioned weights, checksummed, in order.
    let updates = policies.drain();
    assert!(updates.len() >= 2, "{} policy updates", updates.len());
    for w in updates.windows(2) {
        assert!(w[1].version > w[0].version);
    }
    for u in &updates {
        assert_eq!(checkpoint::sha256_hex(&u.data), u.sha256);
    }
    // The runner acted on them without a restart.
    let acts = actions.drain();
    assert!(
        acts.len() >= 40,
        "{} actions in 50 control ticks",
        acts.len()
    );
    let last_version = acts.last().unwrap().policy_version;
    assert!(last_version > 1, "the runner never swapped weights");
    assert!(
        acts.windows(2)
            .all(|w| w[1].policy_version >= w[0].policy_version)
    );

    // Reset-free: forward and backward alternate on the classifier's success, no human reset.
    let phases: Vec<EpisodePhase> = phases.drain().iter().map(|p| (**p).clone()).collect();
    let mut episodes: Vec<(u64, u8)> = phases.iter().map(|p| (p.episode_id, p.task_id)).collect();
    episodes.dedup();
    assert!(episodes.len() >= 4, "episodes {episodes:?}");
    for w in episodes.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
        assert_ne!(w[1].1, w[0].1, "the task alternates");
    }
    assert!(
        phases
            .iter()
            .all(|p| p.phase == PHASE_RUNNING || p.phase == rft_msgs::PHASE_STOPPED)
    );
    assert!(phases.iter().skip(1).any(|p| p.reason == "success"));

    // Transitions: both tasks, episodes ending in the classifier's success.
    let ts = transitions.drain();
    assert!(ts.iter().any(|t| t.task_id == 0) && ts.iter().any(|t| t.task_id == 1));
    assert!(
        ts.iter().any(|t| t.done),
        "no transition ended an episode in success"
    );
    for t in ts.iter() {
        assert_eq!(t.obs.len(), 14);
        assert_eq!(t.action.len(), 4);
        assert!(t.next_obs_stamp.as_nanos() > t.header.stamp.as_nanos());
    }

    // The learner's checkpoint holds the joined transitions, rewards from the classifier.
    let restored = checkpoint::load_latest(
        &a.learner_out.join("checkpoints"),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .expect("a learner checkpoint");
    let replay = restored.replay.expect("the replay buffer is checkpointed");
    assert!(
        replay.len() >= 20,
        "{} transitions in the buffer",
        replay.len()
    );
    assert!(replay.len() <= ts.len());
    assert!(restored.meta.policy_version >= updates.last().unwrap().version);
}

/// The nodes of the loop stepped by hand on a simulated clock: 100 Hz robot and filter,
/// 10 Hz runner, reward and episode manager, 50 Hz learner.
struct Rig {
    robot: SimRobot,
    safety: SafetyFilter,
    runner: Option<PolicyRunner>,
    reward: Option<RewardNode>,
    episodes: EpisodeManager,
    learner: Option<Learner>,
    clock: Clock,
    shutdown: Shutdown,
    tick: u64,
    actions: Subscription<Action>,
    states: Subscription<JointState>,
    safety_status: Subscription<SafetyStatus>,
    policies: Subscription<PolicyUpdate>,
    bus: Bus,
    _test: NodeHandle,
}

impl Rig {
    fn new(a: &Artifacts) -> Self {
        Self::with(a, &[])
    }

    fn with(a: &Artifacts, sets: &[&str]) -> Self {
        let l = parse_with(a, 1.0, sets);
        let bus = Bus::inproc();
        let node = |n: &str| {
            bus.node(n, BTreeMap::new(), Arc::new(Signal::default()))
                .unwrap()
        };
        let ms = Duration::from_millis;
        let mut robot = None;
        let mut safety = None;
        let mut runner = None;
        let mut reward = None;
        let mut episodes = None;
        let mut learner = None;
        for spec in &l.nodes {
            match spec.params.kind() {
                "sim_robot" => {
                    let p = spec.params::<rft_nodes::SimRobotParams>().unwrap();
                    robot = Some(
                        SimRobot::new("robot".into(), p.clone(), ms(10), &node("robot")).unwrap(),
                    )
                }
                "safety_filter" => {
                    let p = &spec.params::<rft_nodes::SafetyFilterParams>().unwrap().0;
                    safety = Some(
                        SafetyFilter::new("safety".into(), p.clone(), ms(10), &node("safety"))
                            .unwrap(),
                    )
                }
                "policy_runner" => {
                    let p = spec.params::<rft_nodes::PolicyRunnerParams>().unwrap();
                    runner = Some(
                        PolicyRunner::new("policy".into(), p.clone(), ms(100), &node("policy"))
                            .unwrap(),
                    )
                }
                "reward" => {
                    let p = spec.params::<rft_nodes::RewardParams>().unwrap();
                    reward = Some(
                        RewardNode::new("reward".into(), p.clone(), ms(100), &node("reward"))
                            .unwrap(),
                    )
                }
                "episode_manager" => {
                    let p = spec.params::<rft_nodes::EpisodeManagerParams>().unwrap();
                    episodes = Some(
                        EpisodeManager::new(
                            "episodes".into(),
                            p.clone(),
                            ms(100),
                            &node("episodes"),
                        )
                        .unwrap(),
                    )
                }
                "learner" => {
                    let p = spec.params::<rft_nodes::LearnerParams>().unwrap();
                    learner = Some(
                        Learner::new("learner".into(), p.clone(), ms(20), &node("learner"))
                            .unwrap(),
                    )
                }
                _ => unreachable!(),
            }
        }
        let test = node("test");
        let q = QueueConfig::drop_oldest(100_000);
        Self {
            robot: robot.unwrap(),
            safety: safety.unwrap(),
            runner,
            reward: Some(reward.unwrap()),
            episodes: episodes.unwrap(),
            learner,
            clock: Clock::Sim(Arc::new(SimClock::default())),
            shutdown: Shutdown::default(),
            tick: 0,
            actions: test.subscribe("/rft/action", q).unwrap(),
            states: test.subscribe("/joint_states", q).unwrap(),
            safety_status: test.subscribe("/rft/safety", q).unwrap(),
            policies: test.subscribe("/rft/policy", q).unwrap(),
            bus,
            _test: test,
        }
    }

    /// One 10 ms robot period.
    fn step(&mut self) {
        self.step_with(|_| {});
    }

    /// One 10 ms robot period; `inject` runs right after the robot's step (what it publishes
    /// then arrives after the robot's own messages of that period).
    fn step_with(&mut self, inject: impl FnOnce(Time)) {
        let ctx = StepCtx::new(self.clock.now(), &self.clock, &self.shutdown);
        self.robot.step(&ctx).unwrap();
        inject(self.clock.now());
        let ctx = StepCtx::new(self.clock.now(), &self.clock, &self.shutdown);
        self.safety.on_wake(&ctx).unwrap();
        self.safety.step(&ctx).unwrap();
        if self.tick.is_multiple_of(10) {
            if let Some(r) = &mut self.runner {
                r.step(&ctx).unwrap();
            }
            if let Some(r) = &mut self.reward {
                r.step(&ctx).unwrap();
            }
            self.episodes.step(&ctx).unwrap();
        }
        if self.tick.is_multiple_of(2)
            && let Some(l) = &mut self.learner
        {
            l.step(&ctx).unwrap();
        }
        self.tick += 1;
    }

    fn run_until(&mut self, max_s: f64, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let steps = (max_s * 100.0) as usize;
        for _ in 0..steps {
            self.step();
            if done(self) {
                return;
            }
        }
        panic!("{what}: not within {max_s} s of simulated time");
    }
}

#[test]
fn stopping_the_learner_leaves_the_runner_acting_on_its_last_weights() {
    let a = artifacts();
    let mut rig = Rig::new(&a);
    let stats = rig.runner.as_ref().unwrap().stats();
    let mut published = Vec::new();
    rig.run_until(30.0, "three policy versions reach the runner", |r| {
        published.extend(r.policies.drain().iter().map(|u| u.version));
        stats.lock().unwrap().version >= 3
    });
    // Stop the learner mid-run (its thread is gone: no more updates, no goodbye).
    let learner = rig.learner.take().unwrap();
    let last = learner.stats().lock().unwrap().version;
    drop(learner);
    published.extend(rig.policies.drain().iter().map(|u| u.version));
    assert_eq!(published.last(), Some(&last));
    rig.actions.drain();
    let before = stats.lock().unwrap().clone();
    for _ in 0..300 {
        rig.step();
    }
    let after = stats.lock().unwrap().clone();
    let acts = rig.actions.drain();
    // Three more seconds at 10 Hz: every tick acted, on the last weights it received.
    assert!(
        acts.len() >= 29,
        "{} actions after the learner stopped",
        acts.len()
    );
    assert!(acts.iter().all(|x| x.policy_version == before.version));
    assert_eq!(after.actions - before.actions, acts.len() as u64);
    assert_eq!(after.stale_obs, before.stale_obs);
    assert_eq!(after.rejected_updates, 0);
    assert!(before.version <= last);
}

#[test]
fn stopping_the_runner_makes_the_safety_filter_stop_the_arm_within_its_timeout() {
    let a = artifacts();
    let mut rig = Rig::new(&a);
    rig.learner = None;
    // The untrained policy moves the arm.
    rig.run_until(5.0, "the arm moves", |r| {
        r.states
            .drain()
            .last()
            .is_some_and(|s| s.velocity.iter().take(7).map(|v| v * v).sum::<f64>().sqrt() > 0.02)
    });
    let last_action = rig
        .actions
        .drain()
        .last()
        .map(|x| x.header.stamp.as_nanos())
        .unwrap();
    // Stop the runner.
    rig.runner = None;
    rig.safety_status.drain();
    let stopped_at = {
        let mut at = None;
        for _ in 0..200 {
            rig.step();
            let s = rig.safety_status.drain();
            if let Some(x) = s.iter().find(|x| x.state == SAFETY_STOPPED) {
                at = Some((x.header.stamp.as_nanos(), x.reason.clone()));
                break;
            }
        }
        at.expect("the filter stops the arm")
    };
    // stale_command_ms = 200, then braking at the joints' acceleration limits.
    let since_ms = (stopped_at.0 - last_action) as f64 * 1e-6;
    assert!(
        since_ms > 200.0,
        "stopped after {since_ms} ms, before the command went stale"
    );
    assert!(
        since_ms < 200.0 + 300.0,
        "stopped {since_ms} ms after the last action"
    );
    assert_eq!(stopped_at.1, "stale command");
    // The arm is at rest.
    for _ in 0..10 {
        rig.step();
    }
    let s = rig.states.drain();
    let v = s
        .last()
        .unwrap()
        .velocity
        .iter()
        .take(7)
        .map(|v| v.abs())
        .fold(0.0, f64::max);
    assert!(v < 1e-3, "joint speed {v} rad/s after the stop");
}

#[test]
fn a_restarted_learner_resumes_from_its_checkpoint_with_the_replay_buffer() {
    let a = artifacts();
    let mut rig = Rig::new(&a);
    let stats = rig.learner.as_ref().unwrap().stats();
    rig.run_until(40.0, "two learner checkpoints", |_| {
        stats.lock().unwrap().checkpoints >= 2
    });
    // Stop it: the shutdown hook writes a final checkpoint (nothing new since the last one
    // here, so none is written).
    let mut learner = rig.learner.take().unwrap();
    let ctx = StepCtx::new(rig.clock.now(), &rig.clock, &rig.shutdown);
    learner.shutdown(&ctx).unwrap();
    let s = stats.lock().unwrap().clone();
    let steps = learner.agent().steps;
    drop(learner);
    let ckpt = checkpoint::load_latest(
        &a.learner_out.join("checkpoints"),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .unwrap();
    let saved = ckpt.replay.unwrap();
    assert_eq!(ckpt.agent.steps, steps);
    // Restart it on the same launch parameters.
    let l = parse(&a, 1.0);
    let p = l
        .nodes
        .iter()
        .find_map(|n| n.params::<rft_nodes::LearnerParams>().cloned())
        .unwrap();
    let h = rig
        .bus
        .node("learner2", BTreeMap::new(), Arc::new(Signal::default()))
        .unwrap();
    let restarted = Learner::new("learner".into(), p, Duration::from_millis(20), &h).unwrap();
    let rs = restarted.stats().lock().unwrap().clone();
    assert!(rs.resumed);
    assert_eq!(rs.buffer_len, saved.len());
    assert!(
        saved.len() as u64 >= s.rewarded.min(20),
        "{} saved of {} rewarded",
        saved.len(),
        s.rewarded
    );
    assert_eq!(rs.version, ckpt.meta.policy_version);
    assert_eq!(restarted.agent().steps, steps);
    // Same weights: the same observation gets the same deterministic action.
    let obs: Vec<f32> = saved.observations().next().unwrap().to_vec();
    let act = |agent: &Agent| {
        let h = rft_policies::handle::InferencePolicy::from_agent(agent, 0).unwrap();
        let mut ph = rft_policies::handle::PolicyHandle::new(h, 0);
        let mut out = [0.0f32; 4];
        ph.act(
            &obs,
            0,
            None,
            rft_policies::handle::ActMode::Deterministic,
            &mut out,
        )
        .unwrap();
        out
    };
    assert_eq!(act(restarted.agent()), act(&ckpt.agent));
    // It keeps learning from there: new rounds continue the step count.
    rig.learner = Some(restarted);
    let stats2 = rig.learner.as_ref().unwrap().stats();
    rig.run_until(20.0, "the restarted learner publishes", |_| {
        stats2.lock().unwrap().version > rs.version
    });
    assert!(rig.learner.as_ref().unwrap().agent().steps > steps);
}

#[test]
fn a_corrupt_policy_update_is_counted_and_dropped_and_the_runner_keeps_acting() {
    let a = artifacts();
    let mut rig = Rig::new(&a);
    rig.learner = None;
    let stats = rig.runner.as_ref().unwrap().stats();
    rig.run_until(2.0, "the runner acts", |_| {
        stats.lock().unwrap().actions >= 5
    });
    let test = rig
        .bus
        .node("operator", BTreeMap::new(), Arc::new(Signal::default()))
        .unwrap();
    let updates = test.publisher::<PolicyUpdate>("/rft/policy").unwrap();
    // Bytes that do not match their checksum, then bytes that are not a policy at all.
    updates
        .publish(PolicyUpdate {
            version: 7,
            data: vec![1, 2, 3],
            sha256: "00".repeat(32),
            ..Default::default()
        })
        .unwrap();
    for _ in 0..10 {
        rig.step();
    }
    updates
        .publish(PolicyUpdate {
            version: 8,
            data: vec![1, 2, 3],
            sha256: checkpoint::sha256_hex(&[1, 2, 3]),
            ..Default::default()
        })
        .unwrap();
    rig.actions.drain();
    let before = stats.lock().unwrap().actions;
    for _ in 0..100 {
        rig.step();
    }
    let s = stats.lock().unwrap().clone();
    assert_eq!(s.rejected_updates, 2);
    assert_eq!(s.swaps, 0);
    assert_eq!(s.version, 1);
    assert!(
        s.actions >= before + 9,
        "{} actions after the bad updates",
        s.actions - before
    );
    assert!(rig.actions.drain().iter().all(|x| x.policy_version == 1));
}

#[test]
fn bad_loop_settings_are_rejected_with_the_key_before_anything_runs() {
    let a = artifacts();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/loop_test.toml");
    for (set, key) in [
        ("nodes.2.params.mode=\"greedy\"", "nodes[2].params.mode"),
        (
            "nodes.2.params.explore_std=2.0",
            "nodes[2].params.explore_std",
        ),
        (
            "nodes.2.params.action.max_linear_m_s=-1.0",
            "nodes[2].params.action.max_linear_m_s",
        ),
        (
            "nodes.4.params.schedule.timeout_s=0.0",
            "nodes[4].params.schedule.timeout_s",
        ),
        ("nodes.5.params.recipe.utd=0", "nodes[5].params.recipe.utd"),
        (
            "nodes.5.params.recipe.offline_ratio=1.5",
            "nodes[5].params.recipe.offline_ratio",
        ),
        ("nodes.5.params.learning_rate=1.0", "nodes[5].params"),
    ] {
        let e = launch::parse(
            &rft_nodes::registry(),
            &path,
            &launch_text(&a, 1.0),
            &[set.to_string()],
        )
        .err()
        .unwrap_or_else(|| panic!("{set} was accepted"))
        .to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    // A missing policy file is named when the runner starts.
    let mut l = parse(&a, 1.0);
    let Some(p) = l.nodes[2].params_mut::<rft_nodes::PolicyRunnerParams>() else {
        panic!()
    };
    p.policy = Some(a.init.join("nope.safetensors"));
    let e = app::prepare_in(&l, None, Some(a.init.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("params.policy") && e.contains("nope.safetensors"),
        "{e}"
    );
}

/// Everything one lockstep run of the loop published on the topics that carry its decisions,
/// as CDR bytes (so equality is byte equality).
#[derive(Debug, PartialEq)]
struct Published {
    actions: Vec<Vec<u8>>,
    transitions: Vec<Vec<u8>>,
    rewards: Vec<Vec<u8>>,
    phases: Vec<Vec<u8>>,
    policies: Vec<Vec<u8>>,
    joint_states: Vec<Vec<u8>>,
}

fn lockstep_run(a: &Artifacts, learner_out: &Path, seconds: f64) -> Published {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/loop_test.toml");
    let l = launch::parse(
        &rft_nodes::registry(),
        &path,
        &launch_text(a, seconds),
        &[
            "clock.executor=\"lockstep\"".into(),
            format!("nodes.5.params.out=\"{}\"", learner_out.display()),
        ],
    )
    .unwrap();
    let runs = tempfile::tempdir().unwrap();
    let prepared = app::prepare_in(&l, None, Some(runs.path().to_path_buf())).unwrap();
    let test = prepared.bus.simple_node("observer").unwrap();
    let q = QueueConfig::drop_oldest(100_000);
    let actions: Subscription<Action> = test.subscribe("/rft/action", q).unwrap();
    let transitions: Subscription<Transition> = test.subscribe("/rft/transition", q).unwrap();
    let rewards: Subscription<rft_msgs::Reward> = test.subscribe("/rft/reward", q).unwrap();
    let phases: Subscription<EpisodePhase> = test.subscribe("/rft/phase", q).unwrap();
    let policies: Subscription<PolicyUpdate> = test.subscribe("/rft/policy", q).unwrap();
    let states: Subscription<JointState> = test.subscribe("/joint_states", q).unwrap();
    let report = app::run(prepared, |_| {}).unwrap();
    for n in &report.nodes {
        assert!(n.error.is_none(), "{}: {:?}", n.name, n.error);
    }
    fn bytes<M: rft_msgs::Message>(s: &Subscription<M>) -> Vec<Vec<u8>> {
        s.drain()
            .iter()
            .map(|m| rft_msgs::cdr::encode(&**m).unwrap())
            .collect()
    }
    Published {
        actions: bytes(&actions),
        transitions: bytes(&transitions),
        rewards: bytes(&rewards),
        phases: bytes(&phases),
        policies: bytes(&policies),
        joint_states: bytes(&states),
    }
}

#[test]
fn the_lockstep_executor_gives_the_same_run_twice() {
    // The whole loop on one thread: sim robot, safety filter, runner (sampling its exploration
    // noise from its seed), reward node, episode manager and learner (training and publishing
    // new weights that the runner swaps in). Time moves only when every node has answered, so
    // the same seed gives the same messages, byte for byte, however loaded the machine is.
    let a = artifacts();
    let dirs = tempfile::tempdir().unwrap();
    let first = lockstep_run(&a, &dirs.path().join("one"), 3.0);
    let second = lockstep_run(&a, &dirs.path().join("two"), 3.0);
    // Exact counts: a joint state every 10 ms from t = 0 through the last tick before 3 s (and
    // the final one at stop), an action every 100 ms, one reward per 10 Hz camera frame.
    assert_eq!(first.joint_states.len(), 301, "joint states");
    assert_eq!(first.actions.len(), 30, "actions");
    assert!(first.rewards.len() >= 29, "{} rewards", first.rewards.len());
    assert!(!first.transitions.is_empty() && !first.phases.is_empty());
    assert!(
        first.policies.len() >= 2,
        "{} policy updates: the learner must train for the runner to have new weights",
        first.policies.len()
    );
    for (what, x, y) in [
        ("joint states", &first.joint_states, &second.joint_states),
        ("actions", &first.actions, &second.actions),
        ("transitions", &first.transitions, &second.transitions),
        ("rewards", &first.rewards, &second.rewards),
        ("phases", &first.phases, &second.phases),
        ("policy updates", &first.policies, &second.policies),
    ] {
        assert_eq!(x.len(), y.len(), "{what}: counts differ");
        if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
            panic!("{what}: message {i} differs between two runs of the same seed");
        }
    }
}

#[test]
fn the_learner_buffer_holds_each_transition_with_the_reward_of_its_next_frame() {
    // On the lockstep executor the whole exchange is reproducible, so the learner's buffer can
    // be checked entry by entry against the messages that were published: each transition
    // joined with the reward stamped at its next observation (within the 60 ms tolerance) for
    // the same task, dropped when no valid reward matches, in arrival order; the reward value
    // and task as published, terminal exactly when that reward reports the success.
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("learner");
    let run = lockstep_run(&a, &out, 3.0);
    let transitions: Vec<Transition> = run
        .transitions
        .iter()
        .map(|b| rft_msgs::cdr::decode(b).unwrap())
        .collect();
    let rewards: Vec<rft_msgs::Reward> = run
        .rewards
        .iter()
        .map(|b| rft_msgs::cdr::decode(b).unwrap())
        .collect();
    let tol = 60_000_000i64;
    let mut expected: Vec<(f32, u8, bool)> = Vec::new();
    let mut dropped = 0;
    for t in &transitions {
        let at = t.next_obs_stamp.as_nanos();
        let best = rewards
            .iter()
            .filter(|r| (r.header.stamp.as_nanos() - at).abs() <= tol)
            .min_by_key(|r| (r.header.stamp.as_nanos() - at).abs());
        match best {
            Some(r) if r.valid && r.task_id == t.task_id => {
                expected.push((r.reward, t.task_id, r.success))
            }
            _ => dropped += 1,
        }
    }
    let ckpt = checkpoint::load_latest(&out.join("checkpoints"), None, &candle_core::Device::Cpu)
        .unwrap()
        .expect("the learner checkpoints at shutdown");
    let buffer = ckpt.replay.expect("with its replay buffer");
    let got: Vec<(f32, u8, bool)> = (0..buffer.len())
        .map(|i| {
            let (r, task) = buffer.reward_and_task(i);
            let done = buffer.flags(i) & rft_policies::replay::FLAG_TERMINATED != 0;
            (r, task, done)
        })
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "{} transitions, {dropped} without a valid reward",
        transitions.len()
    );
    assert_eq!(got, expected);
    // The classifier's rewards: 1 for a success frame, 0 otherwise (no dense term here), and
    // both tasks are in the buffer.
    assert!(
        got.iter().all(|(r, _, _)| *r == 0.0 || *r == 1.0),
        "{got:?}"
    );
    assert!(
        got.iter().any(|(r, _, _)| *r == 1.0),
        "no rewarded transition"
    );
    // A reward only on the terminal step of a classifier success: the step whose next frame
    // the classifier calls a success (not the step after, when the runner hears of it).
    assert!(
        got.iter().all(|(r, _, done)| (*r == 1.0) == *done),
        "{got:?}"
    );
    assert!(got.iter().any(|(_, t, _)| *t == 0) && got.iter().any(|(_, t, _)| *t == 1));
    for r in &rewards {
        assert_eq!(r.source, "cnn:push/forward", "{r:?}");
        assert_eq!(r.reward, if r.success { 1.0 } else { 0.0 }, "{r:?}");
    }
}

#[test]
fn an_object_off_the_table_pauses_for_a_human_and_the_runner_commands_zero_until_reset() {
    let a = artifacts();
    let mut rig = Rig::new(&a);
    rig.learner = None;
    let test = rig.bus.simple_node("operator").unwrap();
    let pose = test
        .publisher::<rft_msgs::PoseStamped>("/rft/object_pose")
        .unwrap();
    let reset = test
        .publisher::<rft_msgs::Bool>("/rft/human_reset")
        .unwrap();
    let phases: Subscription<EpisodePhase> = test
        .subscribe("/rft/phase", QueueConfig::drop_oldest(10_000))
        .unwrap();
    // The loop runs: the untrained policy acts (non-zero actions).
    rig.run_until(3.0, "the runner acts", |r| {
        r.actions
            .drain()
            .iter()
            .any(|x| x.twist.linear.x != 0.0 || x.twist.linear.y != 0.0)
    });
    // The object falls off the table (the pose estimate says 0.5 m below it): every tick the
    // operator's pose arrives after the robot's, so the nodes see it as the newest.
    let off = |now: Time| {
        let mut p = rft_msgs::PoseStamped {
            header: rft_msgs::Header::at(now),
            ..Default::default()
        };
        p.pose.position.x = 0.5;
        p.pose.position.z = -0.5;
        p.pose.orientation.w = 1.0;
        pose.publish(p).unwrap();
    };
    let mut paused_at = None;
    for _ in 0..300 {
        rig.step_with(off);
        if let Some(p) = phases
            .drain()
            .iter()
            .find(|p| p.phase == PHASE_PAUSED_FOR_HUMAN)
        {
            paused_at = Some(p.header.stamp);
            assert_eq!(p.reason, "object_off_table", "{p:?}");
            break;
        }
    }
    assert!(paused_at.is_some(), "the episode manager never paused");
    // While paused the runner commands zero, tick after tick, and publishes no transition.
    rig.actions.drain();
    for _ in 0..100 {
        rig.step_with(off);
    }
    let held = rig.actions.drain();
    assert!(held.len() >= 9, "{} actions in 1 s", held.len());
    for x in held.iter() {
        let t = &x.twist;
        assert_eq!(
            (t.linear.x, t.linear.y, t.linear.z, t.angular.z),
            (0.0, 0.0, 0.0, 0.0),
            "{x:?}"
        );
    }
    assert!(rig.episodes.log().lock().unwrap().paused);
    // A human puts the object back and says so: the episode manager resumes.
    reset.publish(rft_msgs::Bool { data: true }).unwrap();
    rig.run_until(2.0, "running again after the human reset", |_| {
        phases.drain().iter().any(|p| p.phase == PHASE_RUNNING)
    });
    let log = rig.episodes.log().lock().unwrap().clone();
    assert!(!log.paused);
    assert_eq!(log.human_resets, 1);
}

#[test]
fn the_runner_refuses_an_object_pose_out_of_sync_with_the_joint_state() {
    // The object pose and the joint state must be within max_obs_age_ms (150 ms) of each
    // other: a pose estimator that lags by a second gives no action (counted), never an
    // action computed from where the object was.
    let a = artifacts();
    let mut rig = Rig::new(&a);
    rig.learner = None;
    let stats = rig.runner.as_ref().unwrap().stats();
    let test = rig.bus.simple_node("estimator").unwrap();
    let pose = test
        .publisher::<rft_msgs::PoseStamped>("/rft/object_pose")
        .unwrap();
    rig.run_until(3.0, "the runner acts", |r| !r.actions.drain().is_empty());
    let (acted, stale) = {
        let s = stats.lock().unwrap();
        (s.actions, s.stale_obs)
    };
    let lagging = |now: Time| {
        let mut p = rft_msgs::PoseStamped {
            header: rft_msgs::Header::at(Time::from_nanos(now.as_nanos() - 1_000_000_000)),
            ..Default::default()
        };
        p.pose.position.x = 0.5;
        p.pose.orientation.w = 1.0;
        pose.publish(p).unwrap();
    };
    rig.actions.drain();
    for _ in 0..100 {
        rig.step_with(lagging);
    }
    assert!(
        rig.actions.drain().is_empty(),
        "the runner acted on a pose 1 s older than the joint state"
    );
    {
        let s = stats.lock().unwrap();
        assert_eq!(s.actions, acted, "no action in that second");
        assert!(
            s.stale_obs >= stale + 9,
            "{} stale ticks",
            s.stale_obs - stale
        );
    }
    // With fresh poses again it acts again.
    rig.run_until(2.0, "the runner acts on fresh poses", |r| {
        !r.actions.drain().is_empty()
    });
}

#[test]
fn the_learner_counts_and_drops_what_it_cannot_use() {
    // The learner alone, fed by hand: each kind of unusable input is dropped and counted in
    // its own counter; the usable transition goes to the buffer.
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let l = parse(&a, 1.0);
    let mut p = l
        .nodes
        .iter()
        .find_map(|n| n.params::<rft_nodes::LearnerParams>().cloned())
        .unwrap();
    p.out = dir.path().join("learner");
    p.warmup_transitions = 1_000; // no training: only the join is under test
    let bus = Bus::inproc();
    let h = bus
        .node("learner", BTreeMap::new(), Arc::new(Signal::default()))
        .unwrap();
    let mut learner =
        Learner::new("learner".into(), p.clone(), Duration::from_millis(20), &h).unwrap();
    let stats = learner.stats();
    let test = bus.simple_node("test").unwrap();
    let tx = test.publisher::<Transition>("/rft/transition").unwrap();
    let rx = test.publisher::<rft_msgs::Reward>("/rft/reward").unwrap();
    let sim = Arc::new(SimClock::default());
    let clock = Clock::Sim(sim.clone());
    let shutdown = Shutdown::default();
    let ms = |m: i64| Time::from_nanos(m * 1_000_000);
    let transition = |step: u32, obs_len: usize, next_ms: i64, task: u8| Transition {
        header: rft_msgs::Header::at(ms(next_ms - 100)),
        episode_id: 1,
        task_id: task,
        step,
        obs: vec![0.1; obs_len],
        action: vec![0.0; 4],
        next_obs: vec![0.2; obs_len],
        next_obs_stamp: ms(next_ms),
        ..Default::default()
    };
    let reward = |at_ms: i64, valid: bool, task: u8| rft_msgs::Reward {
        header: rft_msgs::Header::at(ms(at_ms)),
        task_id: task,
        success_prob: 0.2,
        success: false,
        reward: 0.0,
        source: "test".into(),
        valid,
        ..Default::default()
    };
    // 1: usable. 2: its reward is marked invalid. 3: malformed (13 observation values for a
    // policy of 14). 4: its frame was scored for the other task. 5: no reward ever comes.
    tx.publish(transition(1, 14, 1_000, 0)).unwrap();
    rx.publish(reward(1_000, true, 0)).unwrap();
    tx.publish(transition(2, 14, 1_100, 0)).unwrap();
    rx.publish(reward(1_100, false, 0)).unwrap();
    tx.publish(transition(3, 13, 1_200, 0)).unwrap();
    rx.publish(reward(1_200, true, 0)).unwrap();
    tx.publish(transition(4, 14, 1_300, 0)).unwrap();
    rx.publish(reward(1_300, true, 1)).unwrap();
    tx.publish(transition(5, 14, 1_400, 0)).unwrap();
    let step_at = |learner: &mut Learner, t_ms: i64| {
        sim.advance_to(t_ms * 1_000_000);
        learner
            .step(&StepCtx::new(ms(t_ms), &clock, &shutdown))
            .unwrap();
    };
    step_at(&mut learner, 1_450);
    {
        let s = stats.lock().unwrap();
        assert_eq!(
            (s.transitions, s.rewarded, s.buffer_len),
            (5, 1, 1),
            "{s:?}"
        );
        assert_eq!((s.invalid_rewards, s.malformed), (1, 1), "{s:?}");
        // The invalid one and the one scored for the other task; the fifth still waits.
        assert_eq!(s.unrewarded, 2, "{s:?}");
    }
    // 2 s of the node's clock later the fifth is given up on.
    step_at(&mut learner, 1_450 + p.reward_wait_ms as i64 + 10);
    let s = stats.lock().unwrap().clone();
    assert_eq!((s.rewarded, s.unrewarded, s.buffer_len), (1, 3, 1), "{s:?}");
}

/// The override that makes the reward node's classifier never report a success.
fn never_succeeds(a: &Artifacts) -> String {
    format!(
        "nodes.3.params.classifiers=[{{ kind = \"cnn\", weights = \"{}\", threshold = 1.0 }}]",
        a.classifier.display()
    )
}

/// The arm joints of a joint state, by name.
fn arm_q(js: &JointState) -> Vec<f64> {
    (1..=7)
        .map(|i| {
            let k = js
                .name
                .iter()
                .position(|n| *n == format!("panda_joint{i}"))
                .unwrap();
            js.position[k]
        })
        .collect()
}

#[test]
fn between_episodes_the_arm_goes_home_with_its_posture_while_the_runner_waits() {
    // Homing in the node graph: the episode manager's `switching` phase, the safety filter
    // driving the arm home (its posture too), the runner silent and the episode's last step
    // published once the next episode starts, with the observation at the episode's end.
    let a = artifacts();
    let never = never_succeeds(&a);
    let mut rig = Rig::with(
        &a,
        &[
            "nodes.4.params.schedule={ consecutive = 1, timeout_s = 1.5, stuck_s = 0.0, home_s = 8.0, home_posture = true }",
            &never,
        ],
    );
    rig.learner = None;
    let test = rig.bus.simple_node("observer").unwrap();
    let q = QueueConfig::drop_oldest(100_000);
    let phases: Subscription<EpisodePhase> = test.subscribe("/rft/phase", q).unwrap();
    let transitions: Subscription<Transition> = test.subscribe("/rft/transition", q).unwrap();
    let teleop = test.publisher::<Action>("/rft/teleop").unwrap();
    rig.step();
    let q0 = arm_q(rig.states.drain().last().unwrap());
    // A person moves the arm away (sideways, the wrist turning) for the first second.
    for _ in 0..100 {
        rig.step_with(|_| {
            let mut t = Action::default();
            t.twist.linear.y = 0.1;
            t.twist.angular.z = 0.8;
            teleop.publish(t).unwrap();
        });
    }
    let mut seen: Vec<EpisodePhase> = Vec::new();
    let collect = |seen: &mut Vec<EpisodePhase>| {
        seen.extend(phases.drain().iter().map(|p| (**p).clone()));
    };
    rig.run_until(2.0, "the episode times out", |_| {
        collect(&mut seen);
        seen.iter().any(|p| p.phase == rft_msgs::PHASE_SWITCHING)
    });
    let sw = seen
        .iter()
        .find(|p| p.phase == rft_msgs::PHASE_SWITCHING)
        .unwrap()
        .clone();
    assert_eq!(
        (
            sw.episode_id,
            sw.task_id,
            sw.reason.as_str(),
            sw.home_posture
        ),
        (0, 0, "timeout", true),
        "{sw:?}"
    );
    let away = arm_q(rig.states.drain().last().unwrap());
    let moved = away
        .iter()
        .zip(&q0)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 0.3, "the arm moved away: {away:?} from {q0:?}");
    assert!(
        !transitions.drain().iter().any(|t| t.truncated || t.done),
        "the episode's last step waits for the episode's outcome"
    );
    rig.actions.drain();
    rig.run_until(8.0, "the next episode starts", |_| {
        collect(&mut seen);
        seen.iter()
            .any(|p| p.phase == PHASE_RUNNING && p.episode_id == 1)
    });
    let next = seen
        .iter()
        .find(|p| p.phase == PHASE_RUNNING && p.episode_id == 1)
        .unwrap()
        .clone();
    assert_eq!((next.task_id, next.reason.as_str()), (1, "timeout"));
    let took = (next.header.stamp.as_nanos() - sw.header.stamp.as_nanos()) as f64 * 1e-9;
    assert!(
        took < 7.9,
        "home reached in {took:.1} s, before home_s ran out"
    );
    assert!(
        rig.actions.drain().is_empty(),
        "the runner commands nothing while the filter brings the arm home"
    );
    let home = arm_q(rig.states.drain().last().unwrap());
    for (i, (q, h)) in home.iter().zip(&q0).enumerate() {
        assert!((q - h).abs() < 0.03, "joint {i} at {q}, start {h}");
    }
    // The episode's last step: once episode 1 runs, truncated, observed at the episode's end.
    let mut last = None;
    rig.run_until(0.5, "episode 0's last step", |_| {
        last = transitions
            .drain()
            .iter()
            .find(|t| t.episode_id == 0)
            .map(|t| (**t).clone());
        last.is_some()
    });
    let last = last.unwrap();
    assert!(last.truncated && !last.done, "{last:?}");
    let end = sw.header.stamp.as_nanos();
    assert!(
        (last.next_obs_stamp.as_nanos() - end).abs() <= 100_000_000,
        "observed at {:?}, the episode ended at {:?}",
        last.next_obs_stamp,
        sw.header.stamp
    );
    let log = rig.episodes.log().lock().unwrap().clone();
    assert_eq!(log.ended, vec![(0, "forward".into(), "timeout".into())]);
}

#[test]
fn a_timeout_the_classifier_confirms_with_the_arm_home_is_a_terminal_success() {
    // `confirm_at_home`: the episode timed out, but with the arm home the classifier sees the
    // goal reached. The episode ends as `success_at_home`, the runner marks its last step
    // done, and the learner stores that step terminal with the success reward; no other step
    // of the episode is terminal. The reward node's place is taken by the test, which answers
    // each frame as a classifier would: no success until the arm is home.
    let a = artifacts();
    let mut rig = Rig::with(
        &a,
        &[
            "nodes.4.params.schedule={ consecutive = 1, timeout_s = 1.5, stuck_s = 0.0, home_s = 4.0, confirm_at_home = true }",
        ],
    );
    rig.reward = None;
    let test = rig.bus.simple_node("classifier").unwrap();
    let q = QueueConfig::drop_oldest(100_000);
    let phases: Subscription<EpisodePhase> = test.subscribe("/rft/phase", q).unwrap();
    let at_home: Subscription<rft_msgs::Bool> = test.subscribe("/rft/at_home", q).unwrap();
    let transitions: Subscription<Transition> = test.subscribe("/rft/transition", q).unwrap();
    let rewards = test.publisher::<rft_msgs::Reward>("/rft/reward").unwrap();
    let (mut task, mut switching, mut home) = (0u8, false, false);
    let mut seen: Vec<EpisodePhase> = Vec::new();
    for _ in 0..1000 {
        for p in phases.drain().iter() {
            task = p.task_id;
            switching = p.phase == rft_msgs::PHASE_SWITCHING;
            home &= switching;
            seen.push((**p).clone());
        }
        home |= switching && at_home.drain().iter().any(|b| b.data);
        let success = home;
        rig.step_with(|now| {
            rewards
                .publish(rft_msgs::Reward {
                    header: rft_msgs::Header::at(now),
                    task_id: task,
                    success_prob: if success { 0.99 } else { 0.01 },
                    success,
                    reward: if success { 1.0 } else { 0.0 },
                    source: "test".into(),
                    valid: true,
                    ..Default::default()
                })
                .unwrap();
        });
        if seen
            .iter()
            .any(|p| p.phase == PHASE_RUNNING && p.episode_id == 1)
        {
            break;
        }
    }
    let next = seen
        .iter()
        .find(|p| p.phase == PHASE_RUNNING && p.episode_id == 1)
        .expect("episode 1 starts")
        .clone();
    assert_eq!((next.task_id, next.reason.as_str()), (1, "success_at_home"));
    let log = rig.episodes.log().lock().unwrap().clone();
    assert_eq!(
        log.ended,
        vec![(0, "forward".into(), "success_at_home".into())]
    );
    // Episode 0's steps: the last one done, none before it.
    for _ in 0..30 {
        rig.step();
    }
    let steps: Vec<Transition> = transitions
        .drain()
        .iter()
        .filter(|t| t.episode_id == 0)
        .map(|t| (**t).clone())
        .collect();
    assert!(steps.len() >= 10, "{} steps", steps.len());
    let (last, rest) = steps.split_last().unwrap();
    assert!(last.done && !last.truncated, "{last:?}");
    assert!(rest.iter().all(|t| !t.done && !t.truncated));
    // The learner's buffer: that step alone terminal, rewarded as a success.
    let mut learner = rig.learner.take().unwrap();
    let ctx = StepCtx::new(rig.clock.now(), &rig.clock, &rig.shutdown);
    learner.step(&ctx).unwrap();
    learner.shutdown(&ctx).unwrap();
    let ckpt = checkpoint::load_latest(
        &a.learner_out.join("checkpoints"),
        None,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .unwrap();
    let buffer = ckpt.replay.unwrap();
    let terminal: Vec<(f32, u8)> = (0..buffer.len())
        .filter(|&i| buffer.flags(i) & rft_policies::replay::FLAG_TERMINATED != 0)
        .map(|i| buffer.reward_and_task(i))
        .collect();
    assert_eq!(terminal, vec![(1.0, 0)], "{} stored", buffer.len());
}

#[test]
fn the_episode_manager_unwinds_an_overridden_episode_and_escapes_a_stalled_scene() {
    // The episode manager alone, its inputs played by the test: the arm still, the object
    // where the test puts it, the safety filter's override counts on /rft/metrics.
    let dir = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/em_test.toml");
    let text = format!(
        r#"
name = "em_test"
[[nodes]]
name = "episodes"
kind = "episode_manager"
[nodes.params]
episodes_csv = "{}"
schedule = {{ consecutive = 1, timeout_s = 1.0, stuck_s = 0.0, home_s = 2.0, stall_escape = 2, stall_explore_std = 0.4, posture_reset_overridden = 0.5 }}
"#,
        dir.path().join("episodes.csv").display()
    );
    let l = launch::parse(&rft_nodes::registry(), &path, &text, &[]).unwrap();
    let p = l.nodes[0]
        .params::<rft_nodes::EpisodeManagerParams>()
        .unwrap()
        .clone();
    let bus = Bus::inproc();
    let h = bus
        .node("episodes", BTreeMap::new(), Arc::new(Signal::default()))
        .unwrap();
    let mut em = EpisodeManager::new("episodes".into(), p, Duration::from_millis(100), &h).unwrap();
    let test = bus.simple_node("test").unwrap();
    let q = QueueConfig::drop_oldest(10_000);
    let phases: Subscription<EpisodePhase> = test.subscribe("/rft/phase", q).unwrap();
    let js = test.publisher::<JointState>("/joint_states").unwrap();
    let pose = test
        .publisher::<rft_msgs::PoseStamped>("/rft/object_pose")
        .unwrap();
    let metric = test.publisher::<rft_msgs::Metric>("/rft/metrics").unwrap();
    let at_home = test.publisher::<rft_msgs::Bool>("/rft/at_home").unwrap();
    let sim = Arc::new(SimClock::default());
    let clock = Clock::Sim(sim.clone());
    let shutdown = Shutdown::default();
    let mut t_ns = 0i64;
    let mut object_x = 0.5;
    // (control steps, overridden steps) so far, as the filter counts them.
    let mut counts = (0u64, 0u64);
    let mut all: Vec<EpisodePhase> = Vec::new();
    // Runs until the phase `(phase, episode)` is published; the filter says home only when
    // `home` is set. Each 100 ms the filter ran 10 control steps, `share` of them overridden.
    // `push`: the object moves 5 mm a tick (someone pushes it).
    let mut run = |want: (u8, u64), share: f64, home: bool, push: bool| -> EpisodePhase {
        for _ in 0..200 {
            if push {
                object_x += 0.005;
            }
            t_ns += 100_000_000;
            sim.advance_to(t_ns);
            let now = Time::from_nanos(t_ns);
            js.publish(JointState {
                header: rft_msgs::Header::at(now),
                name: (1..=7).map(|i| format!("panda_joint{i}")).collect(),
                position: vec![0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785],
                ..Default::default()
            })
            .unwrap();
            let mut p = rft_msgs::PoseStamped {
                header: rft_msgs::Header::at(now),
                ..Default::default()
            };
            p.pose.position.x = object_x;
            p.pose.position.z = 0.02;
            p.pose.orientation.w = 1.0;
            pose.publish(p).unwrap();
            counts.0 += 10;
            counts.1 += (10.0 * share) as u64;
            for (name, v) in [("control_steps", counts.0), ("overridden_steps", counts.1)] {
                metric
                    .publish(rft_msgs::Metric {
                        header: rft_msgs::Header::at(now),
                        source: "safety".into(),
                        name: name.into(),
                        value: v as f64,
                    })
                    .unwrap();
            }
            if home {
                at_home.publish(rft_msgs::Bool { data: true }).unwrap();
            }
            em.step(&StepCtx::new(now, &clock, &shutdown)).unwrap();
            let new = phases.drain();
            all.extend(new.iter().map(|p| (**p).clone()));
            if let Some(p) = new.iter().find(|p| (p.phase, p.episode_id) == want) {
                return (**p).clone();
            }
        }
        panic!("no phase {want:?}");
    };
    use rft_msgs::PHASE_SWITCHING as SW;
    // Episode 0: the filter overrode 80 % of its steps: home with the posture.
    let s0 = run((SW, 0), 0.8, true, false);
    assert!(s0.home_posture, "{s0:?}");
    let r1 = run((PHASE_RUNNING, 1), 0.8, true, false);
    assert_eq!(r1.explore_std, 0.0, "one stalled episode is no stall yet");
    // Episode 1: 20 % overridden: the tool alone goes home. The filter never says home, so
    // the next episode starts when home_s (2 s) has passed.
    let s1 = run((SW, 1), 0.2, false, false);
    assert!(!s1.home_posture, "{s1:?}");
    let r2 = run((PHASE_RUNNING, 2), 0.0, false, false);
    let waited = (r2.header.stamp.as_nanos() - s1.header.stamp.as_nanos()) as f64 * 1e-9;
    assert!((2.0..2.25).contains(&waited), "waited {waited} s for home");
    // Two episodes in a row left the object where it began: episode 2 escapes with noise.
    assert_eq!(r2.explore_std, 0.4, "{r2:?}");
    // Episode 2 moves the object: episode 3 acts with the runner's own noise again.
    run((SW, 2), 0.0, true, true);
    let r3 = run((PHASE_RUNNING, 3), 0.0, true, false);
    assert_eq!(r3.explore_std, 0.0, "{r3:?}");
    // Only the running phases carry the noise; switching phases name the episode that ended.
    assert!(
        all.iter()
            .filter(|p| p.phase == SW)
            .all(|p| p.explore_std == 0.0 && p.episode_id <= 2)
    );
    let log = em.log().lock().unwrap().clone();
    assert_eq!((log.posture_resets, log.stall_escape_episodes), (1, 1));
    let csv = std::fs::read_to_string(dir.path().join("episodes.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let cols: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[3], r[5], r[6])).collect();
    assert_eq!(
        cols,
        vec![
            ("timeout", "1", "0"),
            ("timeout", "0", "0"),
            ("timeout", "0", "1")
        ],
        "{csv}"
    );
}

#[test]
fn a_phase_that_asks_for_exploration_noise_overrides_the_runners_own() {
    // The runner acts deterministically (mean action) unless the phase asks for noise (the
    // episode manager's stall escape): the same seed gives the same actions with a phase that
    // asks for none, other ones with a phase that asks for some.
    let a = artifacts();
    // No success and no timeout: the episode manager's phase stays episode 0, forward.
    let never = never_succeeds(&a);
    let actions = |std: Option<f64>| -> Vec<[f64; 3]> {
        let mut rig = Rig::with(&a, &["nodes.2.params.mode=\"deterministic\"", &never]);
        rig.learner = None;
        let test = rig.bus.simple_node("phase").unwrap();
        let phase = test.publisher::<EpisodePhase>("/rft/phase").unwrap();
        let mut out = Vec::new();
        for _ in 0..100 {
            rig.step_with(|now| {
                if let Some(explore_std) = std {
                    phase
                        .publish(EpisodePhase {
                            header: rft_msgs::Header::at(now),
                            explore_std,
                            ..Default::default()
                        })
                        .unwrap();
                }
            });
            out.extend(rig.actions.drain().iter().map(|x| {
                let l = &x.twist.linear;
                [l.x, l.y, l.z]
            }));
        }
        assert!(out.len() >= 9, "{} actions", out.len());
        out
    };
    let own = actions(None);
    assert_eq!(
        actions(Some(0.0)),
        own,
        "a phase without noise changes nothing"
    );
    let noisy = actions(Some(0.5));
    let differ = own.iter().zip(&noisy).filter(|(x, y)| x != y).count();
    assert!(
        differ >= own.len() - 1,
        "{differ} of {} actions differ",
        own.len()
    );
}

#[test]
fn an_image_policy_acts_on_its_camera_and_the_learner_trains_on_the_frames() {
    // A policy with an image encoder (the pipeline's `plant.observation = "image"`): the runner
    // observes the tool pose and gripper (6 values) and the newest frame of the policy's camera
    // (a second simulated camera, 32×32), and each transition carries the frames at its
    // observation and next observation, channel-first, byte for byte as the camera sent them.
    // The learner's buffer holds those frames with each rewarded transition, and it trains.
    let a = artifacts();
    let dev = candle_core::Device::Cpu;
    let mut cfg = rft_policies::AgentConfig::preset(rft_policies::Algorithm::Sac, 6, 4);
    cfg.num_tasks = 2;
    cfg.hidden = vec![32, 32];
    cfg.batch_size = 16;
    cfg.encoder = Some(rft_policies::nets::EncoderConfig {
        height: 32,
        width: 32,
        stages: vec![8, 16],
        feature_dim: 16,
        ..Default::default()
    });
    let agent = Agent::new(cfg, &dev).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let init = dirs.path().join("image-init");
    checkpoint::save(&init, &agent, None, 0, 1, serde_json::json!({}), 2).unwrap();
    let out = dirs.path().join("learner");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/loop_test.toml");
    let l = launch::parse(
        &rft_nodes::registry(),
        &path,
        &launch_text(&a, 4.0),
        &[
            "clock.executor=\"lockstep\"".into(),
            "nodes.0.params.cameras=[{ name = \"camera\", width = 64, height = 64, rate_hz = 10 }, { name = \"policy_camera\", width = 32, height = 32, rate_hz = 10, depth = false }]".into(),
            format!("nodes.2.params.policy=\"{}\"", init.display()),
            format!("nodes.5.params.init=\"{}\"", init.display()),
            format!("nodes.5.params.out=\"{}\"", out.display()),
        ],
    )
    .unwrap();
    let runs = tempfile::tempdir().unwrap();
    let prepared = app::prepare_in(&l, None, Some(runs.path().to_path_buf())).unwrap();
    let test = prepared.bus.simple_node("observer").unwrap();
    let q = QueueConfig::drop_oldest(100_000);
    let frames: Subscription<rft_msgs::Image> =
        test.subscribe("/policy_camera/color/image_raw", q).unwrap();
    let transitions: Subscription<Transition> = test.subscribe("/rft/transition", q).unwrap();
    let report = app::run(prepared, |_| {}).unwrap();
    for n in &report.nodes {
        assert!(n.error.is_none(), "{}: {:?}", n.name, n.error);
    }
    let frames: BTreeMap<i64, Vec<u8>> = frames
        .drain()
        .iter()
        .map(|f| {
            assert_eq!((f.width, f.height, f.encoding.as_str()), (32, 32, "rgb8"));
            // Channel-first, as the policy's encoder takes it.
            let n = 32 * 32;
            let mut chw = vec![0u8; 3 * n];
            for (i, px) in f.data.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    chw[c * n + i] = px[c];
                }
            }
            (f.header.stamp.as_nanos(), chw)
        })
        .collect();
    let nearest = |at: i64| -> &Vec<u8> {
        frames
            .iter()
            .filter(|(k, _)| (**k - at).abs() <= 150_000_000)
            .min_by_key(|(k, _)| (**k - at).abs())
            .map(|(_, v)| v)
            .expect("a policy camera frame within 150 ms of the observation")
    };
    let transitions = transitions.drain();
    assert!(transitions.len() >= 20, "{} transitions", transitions.len());
    let mut distinct = std::collections::BTreeSet::new();
    for t in transitions.iter() {
        assert_eq!(
            (t.obs.len(), t.next_obs.len()),
            (6, 6),
            "proprioception only"
        );
        assert_eq!(
            &t.image,
            nearest(t.header.stamp.as_nanos()),
            "step {}",
            t.step
        );
        assert_eq!(
            &t.next_image,
            nearest(t.next_obs_stamp.as_nanos()),
            "step {}",
            t.step
        );
        distinct.insert(t.image.clone());
    }
    assert!(
        distinct.len() > 5,
        "the frames do not change as the arm moves"
    );
    let ckpt = checkpoint::load_latest(&out.join("checkpoints"), None, &dev)
        .unwrap()
        .expect("the learner checkpoints at shutdown");
    let buffer = ckpt.replay.expect("with its replay buffer");
    let shape = buffer.image.expect("the buffer holds images");
    assert_eq!((shape.channels, shape.height, shape.width), (3, 32, 32));
    assert!(buffer.len() >= 10, "{} rewarded transitions", buffer.len());
    // Every row's frames are those of a published transition with the same observation.
    for row in 0..buffer.len() {
        let (img, next) = buffer.images_of(row).unwrap();
        assert!(
            transitions
                .iter()
                .any(|t| t.image == img && t.next_image == next),
            "buffer row {row} holds frames no transition carried"
        );
    }
    assert!(ckpt.agent.steps > 0, "the learner trained on the frames");
}
