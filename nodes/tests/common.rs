//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every message of an MCAP file as (topic, schema name, data).
pub fn read_mcap(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    mcap::MessageStream::new(&bytes)
        .unwrap()
        .map(|m| {
            let m = m.unwrap();
            let schema = m
                .channel
                .schema
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            (m.channel.topic.clone(), schema, m.data.to_vec())
        })
        .collect()
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_child(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            panic!("child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pre-trained (here: freshly initialised) task-conditioned state policy and a CNN success
/// classifier that always fires (τ = 0), so that episodes switch every few frames.
pub struct Artifacts {
    pub _dir: tempfile::TempDir,
    pub init: std::path::PathBuf,
    pub classifier: std::path::PathBuf,
    pub learner_out: std::path::PathBuf,
}

pub fn artifacts() -> Artifacts {
    let dir = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    use rft_policies::{Agent, AgentConfig, Algorithm, checkpoint};
    use rft_rewards::{CnnClassifier, CnnConfig};
    let mut cfg = AgentConfig::preset(Algorithm::Sac, 14, 4);
    cfg.num_tasks = 2;
    cfg.hidden = vec![32, 32];
    cfg.batch_size = 32;
    let agent = Agent::new(cfg, &dev).unwrap();
    let init = dir.path().join("pretrain");
    checkpoint::save(&init, &agent, None, 0, 1, serde_json::json!({}), 2).unwrap();
    let classifier = dir.path().join("reward.safetensors");
    let mut clf = CnnClassifier::new(CnnConfig::default(), "push/forward", 3, &dev).unwrap();
    clf.set_threshold(0.0);
    clf.save(&classifier).unwrap();
    Artifacts {
        learner_out: dir.path().join("learner"),
        init,
        classifier,
        _dir: dir,
    }
}
