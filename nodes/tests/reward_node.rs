//! The reward node on the simulated robot: it scores each new camera frame once, stamps the
//! reward with the frame, debounces success, adds the dense keypoint term while there is no
//! success, marks rewards missing (and keeps running) when the VLM is down, and loads a saved
//! CNN classifier file (randomly initialised here: the test checks loading and that the node's
//! scores equal the library's, not what a trained classifier scores).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

#[path = "../../rewards/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rft_msgs::{Image, Reward};
use rft_nodes::{RewardNode, SimRobot};
use rft_rewards::{CnnClassifier, CnnConfig, ImageRef, SuccessClassifier};
use rft_runtime::bus::{Bus, NodeHandle, QueueConfig, Signal, Subscription};
use rft_runtime::launch;
use rft_runtime::{Clock, Node, Shutdown, SimClock, StepCtx};
use support::{Reply, completion, serve, serve_on};

fn launch_text(reward_params: &str) -> String {
    format!(
        r#"
name = "reward_test"
[clock]
kind = "sim"
[[nodes]]
name = "robot"
kind = "sim_robot"
rate_hz = 100
[nodes.params]
urdf = "../sim/assets/panda.urdf"
realtime_factor = 0.0
cameras = [{{ name = "camera", width = 64, height = 64, rate_hz = 10 }}]
[[nodes]]
name = "reward"
kind = "reward"
[nodes.params]
{reward_params}
"#
    )
}

fn parse(reward_params: &str) -> Result<launch::Launch, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/reward_test.toml");
    launch::parse(
        &rft_nodes::registry(),
        &path,
        &launch_text(reward_params),
        &[],
    )
    .map_err(|e| e.to_string())
}

struct Rig {
    robot: SimRobot,
    reward: RewardNode,
    clock: Clock,
    shutdown: Shutdown,
    rewards: Subscription<Reward>,
    images: Subscription<Image>,
    _test: NodeHandle,
}

impl Rig {
    fn new(reward_params: &str) -> Result<Self, String> {
        let l = parse(reward_params)?;
        let Some(rp) = l.nodes[0].params::<rft_nodes::SimRobotParams>() else {
            panic!()
        };
        let Some(wp) = l.nodes[1].params::<rft_nodes::RewardParams>() else {
            panic!()
        };
        let bus = Bus::inproc();
        let node = |n: &str| {
            bus.node(n, BTreeMap::new(), Arc::new(Signal::default()))
                .unwrap()
        };
        let test = node("test");
        let q = QueueConfig::drop_oldest(1000);
        let rewards = test.subscribe("/rft/reward", q).unwrap();
        let images = test.subscribe("/camera/color/image_raw", q).unwrap();
        let robot = SimRobot::new(
            "robot".into(),
            rp.clone(),
            Duration::from_millis(10),
            &node("robot"),
        )
        .unwrap();
        let reward = RewardNode::new(
            "reward".into(),
            wp.clone(),
            Duration::from_millis(100),
            &node("reward"),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            robot,
            reward,
            clock: Clock::Sim(Arc::new(SimClock::default())),
            shutdown: Shutdown::default(),
            rewards,
            images,
            _test: test,
        })
    }

    /// Runs `seconds` of simulated time, the reward node stepping after every robot step;
    /// returns the rewards and the frames published.
    fn run(&mut self, seconds: f64) -> (Vec<Reward>, Vec<Image>) {
        let steps = (seconds * 100.0).round() as usize;
        for _ in 0..steps {
            let ctx = StepCtx::new(self.clock.now(), &self.clock, &self.shutdown);
            self.robot.step(&ctx).unwrap();
            self.reward
                .step(&ctx)
                .expect("the reward node never fails a step");
        }
        (
            self.rewards.drain().iter().map(|r| (**r).clone()).collect(),
            self.images.drain().iter().map(|r| (**r).clone()).collect(),
        )
    }
}

fn urdf() -> String {
    "urdf = \"../sim/assets/panda.urdf\"".into()
}

#[test]
fn vlm_success_is_debounced_and_the_dense_term_counts_until_then() {
    let s = serve(vec![Reply::Json(completion(
        "yes",
        Some(&[("yes", -0.05), ("no", -3.0)]),
    ))]);
    let params = format!(
        "{}\nconsecutive = 3\nclassifiers = [{{ kind = \"vlm\", base_url = \"{}\", model = \"test-vlm\" }}]\nkeypoints = {{ source = \"sim\", task = \"push\" }}\nfusion = {{ success_reward = 1.0, dense_weight = 0.5 }}",
        urdf(),
        s.url
    );
    let mut rig = Rig::new(&params).unwrap();
    let (rewards, images) = rig.run(1.05);
    // One reward per frame, stamped with it.
    let frame_stamps: Vec<_> = images.iter().map(|i| i.header.stamp).collect();
    let reward_stamps: Vec<_> = rewards.iter().map(|r| r.header.stamp).collect();
    assert_eq!(reward_stamps, frame_stamps);
    assert!(rewards.len() >= 10, "{} rewards", rewards.len());
    let p = (-0.05f64).exp() / ((-0.05f64).exp() + (-3.0f64).exp());
    for (i, r) in rewards.iter().enumerate() {
        assert!(r.valid);
        assert!((f64::from(r.success_prob) - p).abs() < 1e-5);
        assert_eq!(r.source, "vlm:test-vlm");
        assert_eq!(r.success, i >= 2, "frame {i}");
        assert!((0.0..1.0).contains(&r.dense), "{}", r.dense);
        let want = if r.success { 1.0 } else { 0.5 * r.dense };
        assert!((r.reward - want).abs() < 1e-6, "{r:?}");
    }
    // The arm starts away from the cube: the tool waypoint is not reached, progress is small.
    assert!(rewards[0].dense < 0.5);
    assert_eq!(s.requests.lock().unwrap().len(), rewards.len());
}

#[test]
fn a_vlm_that_is_down_marks_rewards_missing_and_the_node_keeps_running() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let params = format!(
        "classifiers = [{{ kind = \"vlm\", base_url = \"http://127.0.0.1:{port}/v1\", model = \"m\", max_retries = 0, timeout_ms = 200 }}]"
    );
    let mut rig = Rig::new(&params).unwrap();
    let (rewards, images) = rig.run(0.55);
    assert_eq!(rewards.len(), images.len());
    assert!(rewards.len() >= 5);
    for r in &rewards {
        assert!(
            !r.valid && !r.success && r.success_prob.is_nan() && r.reward == 0.0,
            "{r:?}"
        );
    }
    assert_eq!(rig.reward.counts().invalid, rewards.len() as u64);
    // The endpoint comes up: rewards become valid without a restart.
    let _s = serve_on(port, vec![Reply::Json(completion("no", None))]);
    let (more, _) = rig.run(0.3);
    assert!(!more.is_empty());
    for r in &more {
        assert!(r.valid && r.success_prob == 0.0 && !r.success, "{r:?}");
    }
}

#[test]
fn a_saved_cnn_classifier_scores_frames_as_the_library_does() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("reward.safetensors");
    let mut clf = CnnClassifier::new(
        CnnConfig::default(),
        "push/forward",
        3,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    clf.set_threshold(0.99);
    clf.save(&weights).unwrap();
    let params = format!(
        "classifiers = [{{ kind = \"cnn\", weights = \"{}\" }}]",
        weights.display()
    );
    let mut rig = Rig::new(&params).unwrap();
    let (rewards, images) = rig.run(0.35);
    assert_eq!(rewards.len(), images.len());
    let mut lib = CnnClassifier::load(&weights, &candle_core::Device::Cpu).unwrap();
    for (r, img) in rewards.iter().zip(&images) {
        let want = lib
            .predict(
                &[ImageRef::new(img.width, img.height, &img.data).unwrap()],
                "",
            )
            .unwrap()[0];
        assert!(
            r.valid && (r.success_prob - want).abs() < 1e-6,
            "{} vs {want}",
            r.success_prob
        );
        assert!(!r.success, "τ 0.99 with 3 frames");
        assert_eq!(r.source, "cnn:push/forward");
        assert_eq!(r.dense, 0.0);
    }
}

#[test]
fn vlm_keypoints_are_proposed_once_per_phase_and_lifted_for_the_dense_term() {
    let clf = serve(vec![Reply::Json(completion("no", None))]);
    let kp = serve(vec![Reply::Json(completion(
        "```json\n{\"keypoints\": [1], \"waypoints\": [2, 1]}\n```",
        None,
    ))]);
    let params = format!(
        "{}\nclassifiers = [{{ kind = \"vlm\", base_url = \"{}\", model = \"m\" }}]\nkeypoints = {{ source = \"vlm\", vlm = {{ base_url = \"{}\", model = \"kp\" }} }}",
        urdf(),
        clf.url,
        kp.url
    );
    let mut rig = Rig::new(&params).unwrap();
    let bus_phase = rig
        ._test
        .publisher::<rft_msgs::EpisodePhase>("/rft/phase")
        .unwrap();
    let (rewards, _) = rig.run(0.55);
    assert!(rewards.len() >= 5);
    assert_eq!(
        kp.requests.lock().unwrap().len(),
        1,
        "one proposal per phase"
    );
    assert!(
        rewards
            .iter()
            .all(|r| r.valid && !r.success && (0.0..1.0).contains(&r.dense))
    );
    // Keypoint 1 for the tool, then marks 2 and 1 for the object, all lifted onto the scene
    // (the table is at z = 0, the workspace within a metre of the base).
    let wps = rig.reward.waypoints_now();
    assert_eq!(wps.len(), 3, "{wps:?}");
    assert_eq!(wps[0].point, wps[2].point);
    for w in &wps {
        assert!(
            w.point.z > -0.01 && w.point.z < 0.2 && w.point.coords.norm() < 1.2,
            "{w:?}"
        );
    }
    let body = kp.requests.lock().unwrap()[0].clone();
    assert!(
        body["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("1, 2")
    );
    bus_phase
        .publish(rft_msgs::EpisodePhase {
            episode_id: 1,
            task_id: 1,
            ..Default::default()
        })
        .unwrap();
    let (after, _) = rig.run(0.35);
    assert!(after.iter().all(|r| r.task_id == 1));
    assert_eq!(
        kp.requests.lock().unwrap().len(),
        2,
        "a new phase proposes again"
    );
    let task_text =
        clf.requests.lock().unwrap().last().unwrap()["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(
        task_text.contains("back onto the yellow square"),
        "{task_text}"
    );
}

#[test]
fn bad_reward_params_are_rejected_naming_the_key() {
    let e = parse("classifiers = []").unwrap_err();
    assert!(e.contains("classifiers"), "{e}");
    let e = parse("classifiers = [{ kind = \"vlm\", base_url = \"http://x/v1\", model = \"m\" }]\nfusion = { dense_weight = 2.0 }").unwrap_err();
    assert!(e.contains("dense_weight"), "{e}");
    let e = parse("classifiers = [{ kind = \"vlm\", base_url = \"http://x/v1\", model = \"m\" }]\nkeypoints = { source = \"sim\", task = \"push\" }").unwrap_err();
    assert!(e.contains("urdf"), "{e}");
    let e =
        parse("classifiers = [{ kind = \"vlm\", base_url = \"x\", model = \"m\" }]").unwrap_err();
    assert!(e.contains("base_url"), "{e}");
    let e = parse("classifiers = [{ kind = \"magic\" }]").unwrap_err();
    assert!(e.contains("magic"), "{e}");
    // A weights file that does not exist is refused when the node starts, naming the file.
    let e =
        Rig::new("classifiers = [{ kind = \"cnn\", weights = \"no/such/reward.safetensors\" }]")
            .err()
            .unwrap();
    assert!(e.contains("no/such/reward.safetensors"), "{e}");
}
