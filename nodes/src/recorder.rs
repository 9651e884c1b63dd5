//! Records topics to MCAP. Messages are copied out of the transport's thread into a bounded
//! channel and written on the recorder's own thread, so recording never slows a publisher.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rft_msgs::TypeInfo;
use serde::Deserialize;

use rft_config::ConfigError;
use rft_config::check;
use rft_runtime::Result;
use rft_runtime::bus::NodeHandle;
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::record::McapSink;
use rft_runtime::{Node, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderParams {
    /// Output file; default `<run dir>/events.mcap`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Topics to record.
    pub topics: Vec<String>,
    /// Messages buffered between the transport and the file before new ones are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    1024
}

impl RecorderParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check(!self.topics.is_empty(), "topics", || {
            "list at least one topic".into()
        })?;
        for (i, t) in self.topics.iter().enumerate() {
            rft_msgs::rmw_zenoh::validate_topic(t)
                .map_err(|r| ConfigError::new(format!("topics[{i}]"), r))?;
        }
        check(self.queue > 0, "queue", || "must be positive".into())
    }
}

struct Item {
    topic: String,
    info: &'static TypeInfo,
    payload: Vec<u8>,
    log_ns: u64,
    publish_ns: u64,
}

pub struct Recorder {
    name: String,
    period: Duration,
    sink: McapSink,
    rx: Receiver<Item>,
    _guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    pub fn new(
        name: String,
        p: RecorderParams,
        period: Duration,
        bus: &NodeHandle,
        ctx: &LaunchCtx,
    ) -> Result<Self> {
        let path = p
            .path
            .clone()
            .unwrap_or_else(|| ctx.run_dir.join("events.mcap"));
        let sink = McapSink::create(&path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Item>(p.queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut guards = Vec::new();
        for t in &p.topics {
            let tx: SyncSender<Item> = tx.clone();
            let dropped = dropped.clone();
            let wake = bus.wake_signal().clone();
            let g = bus.subscribe_raw(t, move |s| {
                let Some(info) = s.info else { return };
                let log_ns = rft_runtime::Clock::Wall.now_ns() as u64;
                let publish_ns = s
                    .attachment
                    .map_or(log_ns, |a| a.source_timestamp_ns as u64);
                let item = Item {
                    topic: s.topic.to_string(),
                    info,
                    payload: s.payload.to_vec(),
                    log_ns,
                    publish_ns,
                };
                if let Err(TrySendError::Full(_)) = tx.try_send(item) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                wake.notify();
            })?;
            guards.push(g);
        }
        tracing::info!(node = %name, path = %path.display(), topics = ?p.topics, "recording");
        Ok(Self {
            name,
            period,
            sink,
            rx,
            _guards: guards,
            dropped,
        })
    }

    fn drain(&mut self) -> Result<()> {
        while let Ok(m) = self.rx.try_recv() {
            self.sink
                .write(&m.topic, m.info, &m.payload, m.log_ns, m.publish_ns)?;
        }
        Ok(())
    }
}

impl Node for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
    fn step(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        self.drain()
    }
    fn on_wake(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        self.drain()
    }
    fn shutdown(&mut self, _ctx: &StepCtx<'_>) -> Result<()> {
        self._guards.clear();
        self.drain()?;
        let n = self.sink.finish()?;
        tracing::info!(node = %self.name, messages = n, dropped = self.dropped.load(Ordering::Relaxed),
            path = %self.sink.path().display(), "recording closed");
        Ok(())
    }
}

impl NodeKind for RecorderParams {
    const KIND: &'static str = "recorder";
    const DEFAULT_RATE_HZ: f64 = 20.0;
    const OBSERVER: bool = true;

    fn validate(&self) -> rft_config::Result<()> {
        RecorderParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(Recorder::new(
            name,
            self.clone(),
            period,
            bus,
            ctx,
        )?))
    }
}
