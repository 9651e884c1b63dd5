//! The command-line tools ROS users reach for first: topics, echo, hz, record, pub, and a
//! ping/pong pair for latency measurements.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rft_msgs::rmw_zenoh::{self, EntityKind};
use rft_msgs::{Header, Image, JointState, Message, TypeInfo, registry};

use crate::bus::zenoh::ZenohTransport;
use crate::bus::{Bus, NodeHandle, QueueConfig};
use crate::error::{Error, Result};
use crate::executor::Clock;
use crate::record::McapSink;

/// Set by Ctrl-C; every tool loop checks it.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// One topic in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub topic: String,
    pub type_name: String,
    pub publishers: Vec<String>,
    pub subscribers: Vec<String>,
}

/// Topics from liveliness tokens (rmw_zenoh peers included), sorted by name.
pub fn list_topics(zenoh: &ZenohTransport, timeout: Duration) -> Result<Vec<TopicInfo>> {
    let mut map: BTreeMap<(String, String), TopicInfo> = BTreeMap::new();
    for key in zenoh.graph_tokens(timeout)? {
        let Ok(tok) = rmw_zenoh::parse_token(&key) else {
            tracing::debug!(%key, "ignoring unparsable liveliness token");
            continue;
        };
        let (Some(topic), Some(ty)) = (tok.topic.clone(), tok.type_name.clone()) else {
            continue;
        };
        let node = format!("{}/{}", tok.namespace, tok.node_name);
        let e = map
            .entry((topic.clone(), ty.clone()))
            .or_insert_with(|| TopicInfo {
                topic,
                type_name: ty,
                publishers: Vec::new(),
                subscribers: Vec::new(),
            });
        match tok.kind {
            EntityKind::Publisher => e.publishers.push(node),
            EntityKind::Subscription => e.subscribers.push(node),
            _ => {}
        }
    }
    Ok(map.into_values().collect())
}

/// Writes a JSON value as YAML, the way `ros2 topic echo` prints. Arrays longer than
/// `max_array` (when given) are summarised.
pub fn write_yaml(
    out: &mut String,
    v: &serde_json::Value,
    indent: usize,
    max_array: Option<usize>,
) {
    use serde_json::Value;
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(out, val, indent + 1, max_array);
                    }
                    Value::Array(a) if max_array.is_some_and(|m| a.len() > m) => {
                        out.push_str(&format!("{pad}{k}: '<sequence of length {}>'\n", a.len()));
                    }
                    Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
                        let items: Vec<String> = a.iter().map(scalar).collect();
                        out.push_str(&format!("{pad}{k}: [{}]\n", items.join(", ")));
                    }
                    Value::Array(a) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for item in a {
                            out.push_str(&format!("{pad}- \n"));
                            write_yaml(out, item, indent + 1, max_array);
                        }
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        serde_json::Value::Number(n) => {
            // ROS prints floats with a decimal point.
            n.to_string()
        }
        other => other.to_string(),
    }
}

/// `rft echo`: prints `count` messages (or until `timeout`/Ctrl-C). Returns how many printed.
pub fn echo(
    handle: &NodeHandle,
    topic: &str,
    count: Option<u64>,
    timeout: Option<Duration>,
    full: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    let (tx, rx) = mpsc::sync_channel::<(String, Vec<u8>)>(256);
    let _guard = handle.subscribe_raw(topic, move |s| {
        let _ = tx.try_send((s.type_name.to_string(), s.payload.to_vec()));
    })?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut printed = 0;
    while count.is_none_or(|c| printed < c) && !interrupted() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Ok((type_name, payload)) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        let text = match registry::by_name(&type_name).and_then(|t| t.cdr_to_json(&payload)) {
            Ok(json) => {
                let mut s = String::new();
                write_yaml(&mut s, &json, 0, if full { None } else { Some(64) });
                s
            }
            Err(e) => format!(
                "# cannot decode {type_name} ({} bytes): {e}\n",
                payload.len()
            ),
        };
        writeln!(out, "{text}---").map_err(|e| Error::Io {
            context: "writing to stdout".into(),
            source: e,
        })?;
        printed += 1;
    }
    Ok(printed)
}

/// Rate statistics over a window of arrival times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateStats {
    pub rate_hz: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub std_dev_s: f64,
    pub window: usize,
}

/// Computes rate and jitter from arrival times (seconds), as `ros2 topic hz` does.
pub fn rate_stats(arrivals: &[f64]) -> Option<RateStats> {
    if arrivals.len() < 2 {
        return None;
    }
    let d: Vec<f64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    if mean <= 0.0 {
        return None;
    }
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64;
    Some(RateStats {
        rate_hz: 1.0 / mean,
        min_s: d.iter().copied().fold(f64::INFINITY, f64::min),
        max_s: d.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        std_dev_s: var.sqrt(),
        window: d.len(),
    })
}

/// `rft hz`: prints rate and jitter every second until `duration` or Ctrl-C.
pub fn hz(
    handle: &NodeHandle,
    topic: &str,
    window: usize,
    duration: Option<Duration>,
    out: &mut dyn Write,
) -> Result<Option<RateStats>> {
    let arrivals = Arc::new(Mutex::new(std::collections::VecDeque::<f64>::new()));
    let t0 = Instant::now();
    let a2 = arrivals.clone();
    let window = window.max(2);
    let _guard = handle.subscribe_raw(topic, move |_| {
        let mut a = a2.lock().unwrap_or_else(|p| p.into_inner());
        a.push_back(t0.elapsed().as_secs_f64());
        while a.len() > window {
            a.pop_front();
        }
    })?;
    let mut last = None;
    let mut next_print = Instant::now() + Duration::from_secs(1);
    loop {
        if interrupted() || duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        std::thread::sleep(
            Duration::from_millis(20).min(next_print.saturating_duration_since(Instant::now())),
        );
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(1);
            let snapshot: Vec<f64> = arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            let line = match rate_stats(&snapshot) {
                Some(s) => {
                    last = Some(s);
                    format!(
                        "average rate: {:.3}\n\tmin: {:.6}s max: {:.6}s std dev: {:.6}s window: {}",
                        s.rate_hz, s.min_s, s.max_s, s.std_dev_s, s.window
                    )
                }
                None => format!("no new messages on {topic}"),
            };
            writeln!(out, "{line}").map_err(|e| Error::Io {
                context: "writing to stdout".into(),
                source: e,
            })?;
        }
    }
    Ok(last)
}

/// `rft record`: writes the given topics (all topics when empty) to MCAP until `count`
/// messages, `duration`, or Ctrl-C. Returns the number of messages written.
pub fn record(
    handle: &NodeHandle,
    path: &Path,
    topics: &[String],
    count: Option<u64>,
    duration: Option<Duration>,
) -> Result<u64> {
    let mut sink = McapSink::create(path)?;
    type Item = (String, &'static TypeInfo, Vec<u8>, u64, u64);
    let (tx, rx) = mpsc::sync_channel::<Item>(4096);
    let unknown = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
    let mut guards = Vec::new();
    let all = ["/**".to_string()];
    let topics = if topics.is_empty() { &all[..] } else { topics };
    for t in topics {
        let tx = tx.clone();
        let unknown = unknown.clone();
        let on_sample = move |s: crate::bus::RawSample<'_>| {
            let Some(info) = s.info else {
                let mut u = unknown.lock().unwrap_or_else(|p| p.into_inner());
                if u.insert(s.type_name.to_string()) {
                    tracing::warn!(
                        topic = s.topic,
                        r#type = s.type_name,
                        "type unknown to rft; not recorded"
                    );
                }
                return;
            };
            let log_ns = Clock::Wall.now_ns() as u64;
            let pub_ns = s
                .attachment
                .map_or(log_ns, |a| a.source_timestamp_ns as u64);
            let _ = tx.try_send((
                s.topic.to_string(),
                info,
                s.payload.to_vec(),
                log_ns,
                pub_ns,
            ));
        };
        guards.push(if t == "/**" {
            handle.subscribe_raw_all(on_sample)?
        } else {
            handle.subscribe_raw(t, on_sample)?
        });
    }
    drop(tx);
    let t0 = Instant::now();
    while count.is_none_or(|c| sink.messages() < c) && !interrupted() {
        if duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        if let Ok((topic, info, payload, log_ns, pub_ns)) =
            rx.recv_timeout(Duration::from_millis(50))
        {
            sink.write(&topic, info, &payload, log_ns, pub_ns)?;
        }
    }
    drop(guards);
    sink.finish()
}

/// `rft pub`: publishes a message given as JSON, `count` times at `rate_hz`. Waits up to
/// `wait_for_subscribers` first, so short-lived publishers are not lost.
pub fn publish_json(
    handle: &NodeHandle,
    topic: &str,
    type_name: &str,
    json: &str,
    rate_hz: f64,
    count: Option<u64>,
    wait: Duration,
) -> Result<u64> {
    let info = registry::by_name(type_name)?;
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        Error::Msgs(rft_msgs::Error::Json {
            type_name: info.name.into(),
            reason: e.to_string(),
        })
    })?;
    let mut sent = None;
    macro_rules! try_type {
        ($t:ty) => {
            if sent.is_none() && <$t as Message>::TYPE_NAME == info.name {
                sent = Some(publish_typed::<$t>(
                    handle,
                    topic,
                    value.clone(),
                    rate_hz,
                    count,
                    wait,
                ));
            }
        };
    }
    rft_msgs::for_each_message!(try_type);
    sent.unwrap_or_else(|| Err(Error::Msgs(rft_msgs::Error::UnknownType(type_name.into()))))
}

fn publish_typed<M: Message>(
    handle: &NodeHandle,
    topic: &str,
    value: serde_json::Value,
    rate_hz: f64,
    count: Option<u64>,
    wait: Duration,
) -> Result<u64> {
    let msg: M = serde_json::from_value(value).map_err(|e| {
        Error::Msgs(rft_msgs::Error::Json {
            type_name: M::TYPE_NAME.into(),
            reason: e.to_string(),
        })
    })?;
    let publisher = handle.publisher::<M>(topic)?;
    std::thread::sleep(wait); // discovery time for remote subscribers
    let period = Duration::from_secs_f64(1.0 / rate_hz.max(1e-3));
    let mut n = 0;
    let mut next = Instant::now();
    while count.is_none_or(|c| n < c) && !interrupted() {
        publisher.publish(msg.clone())?;
        n += 1;
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(n)
}

/// Payload used by ping/pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// A 7-joint `sensor_msgs/JointState`.
    JointState,
    /// A `sensor_msgs/Image` whose data has `size` bytes.
    Bytes,
}

/// Echoes `/rft/ping` back on `/rft/pong` until Ctrl-C (or `max` messages).
pub fn pong(handle: &NodeHandle, max: Option<u64>) -> Result<u64> {
    let js_in =
        handle.subscribe::<JointState>("/rft/ping/joint_state", QueueConfig::drop_oldest(64))?;
    let img_in = handle.subscribe::<Image>("/rft/ping/bytes", QueueConfig::drop_oldest(64))?;
    let js_out = handle.publisher::<JointState>("/rft/pong/joint_state")?;
    let img_out = handle.publisher::<Image>("/rft/pong/bytes")?;
    let wake = handle.wake_signal().clone();
    let mut n = 0;
    while max.is_none_or(|m| n < m) && !interrupted() {
        wake.wait_timeout(Duration::from_millis(50));
        while let Some(m) = js_in.try_recv() {
            js_out.publish_arc(m)?;
            n += 1;
        }
        while let Some(m) = img_in.try_recv() {
            img_out.publish_arc(m)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The ping side: sends and waits for each echo. Returns round-trip times.
pub struct Pinger {
    kind: PingKind,
    js_out: crate::bus::Publisher<JointState>,
    img_out: crate::bus::Publisher<Image>,
    js_in: crate::bus::Subscription<JointState>,
    img_in: crate::bus::Subscription<Image>,
    js: Arc<JointState>,
    img: Arc<Image>,
}

impl Pinger {
    pub fn new(handle: &NodeHandle, kind: PingKind, size: usize) -> Result<Self> {
        Ok(Self {
            kind,
            js_out: handle.publisher("/rft/ping/joint_state")?,
            img_out: handle.publisher("/rft/ping/bytes")?,
            js_in: handle.subscribe("/rft/pong/joint_state", QueueConfig::drop_oldest(64))?,
            img_in: handle.subscribe("/rft/pong/bytes", QueueConfig::drop_oldest(64))?,
            js: Arc::new(JointState {
                header: Header::default(),
                name: (1..=7).map(|i| format!("panda_joint{i}")).collect(),
                position: vec![0.1; 7],
                velocity: vec![0.2; 7],
                effort: vec![0.3; 7],
            }),
            img: Arc::new(Image {
                encoding: "mono8".into(),
                height: 1,
                width: size as u32,
                step: size as u32,
                data: vec![7; size],
                ..Default::default()
            }),
        })
    }

    /// One round trip; `None` if no echo came within `timeout`.
    pub fn round_trip(&self, timeout: Duration) -> Result<Option<Duration>> {
        let t0 = Instant::now();
        let got = match self.kind {
            PingKind::JointState => {
                self.js_out.publish_arc(self.js.clone())?;
                self.js_in.recv_timeout(timeout).is_some()
            }
            PingKind::Bytes => {
                self.img_out.publish_arc(self.img.clone())?;
                self.img_in.recv_timeout(timeout).is_some()
            }
        };
        Ok(got.then(|| t0.elapsed()))
    }

    /// Sends until an echo comes back (the pong side may still be starting).
    pub fn wait_ready(&self, timeout: Duration) -> Result<bool> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.round_trip(Duration::from_millis(200))?.is_some() {
                // Drain late echoes of earlier tries.
                while self.js_in.try_recv().is_some() || self.img_in.try_recv().is_some() {}
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Opens a tool's zenoh session and node.
pub fn zenoh_node(transport: Arc<ZenohTransport>, name: &str) -> Result<(Bus, NodeHandle)> {
    let bus = Bus::new(transport);
    let node = bus.simple_node(name)?;
    Ok((bus, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_stats_of_a_regular_stream() {
        let t: Vec<f64> = (0..11).map(|i| f64::from(i) * 0.1).collect();
        let s = rate_stats(&t).unwrap();
        assert!((s.rate_hz - 10.0).abs() < 1e-9);
        assert!(s.std_dev_s < 1e-9);
        assert_eq!(s.window, 10);
        assert!(rate_stats(&[1.0]).is_none());
    }

    #[test]
    fn yaml_summarises_long_arrays() {
        let v =
            serde_json::json!({"header": {"frame_id": "a"}, "data": vec![1; 100], "name": ["j1"]});
        let mut s = String::new();
        write_yaml(&mut s, &v, 0, Some(64));
        assert!(s.contains("data: '<sequence of length 100>'"), "{s}");
        assert!(s.contains("header:\n  frame_id: 'a'"), "{s}");
        assert!(s.contains("name: ['j1']"), "{s}");
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_micros(51));
        assert_eq!(percentile(&v, 99.0), Duration::from_micros(99));
    }
}
