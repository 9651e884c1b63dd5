//! Zenoh transport, wire-compatible with ROS 2's rmw_zenoh: data keys
//! `<domain>/<topic>/<type>/<hash>`, CDR payloads, the 33-byte attachment, and liveliness tokens
//! for nodes, publishers and subscriptions, so `ros2 topic list` on an rmw_zenoh system lists
//! rft's topics and ROS 2 nodes exchange messages with rft with no bridge.

use std::any::Any;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rft_msgs::TypeInfo;
use rft_msgs::rmw_zenoh::{self, Attachment, EntityKind, NodeIdentity, Qos};
use serde::Deserialize;
use zenoh::Wait;

use super::{AnyMsg, Delivery, NodeLink, RawPublisher, Sink, Transport};
use crate::error::{Error, Result};

/// Zenoh session settings (the launch file's `[bus.zenoh]` table).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZenohConfig {
    /// `peer` (default, as rmw_zenoh nodes) or `client`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Endpoints to listen on. The default, `["tcp/127.0.0.1:0"]` (any free port, as rmw_zenoh
    /// nodes do), lets peers that learn of this one through gossip connect to it directly.
    /// Listen on a routable address (or `tcp/0.0.0.0:PORT`) to reach other machines.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Endpoints to connect to, e.g. a `zenohd`/`rmw_zenohd` router at `tcp/127.0.0.1:7447`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// UDP multicast scouting. Off unless you ask for it.
    #[serde(default)]
    pub multicast_scouting: bool,
    /// Publish with zenoh's express flag (no batching): lower latency for small messages.
    #[serde(default = "default_true")]
    pub express: bool,
    /// Optional zenoh JSON5 config file; the fields above are applied on top of it.
    #[serde(default)]
    pub config_file: Option<std::path::PathBuf>,
}

fn default_listen() -> Vec<String> {
    vec!["tcp/127.0.0.1:0".to_string()]
}

fn default_mode() -> String {
    "peer".to_string()
}
fn default_true() -> bool {
    true
}

impl Default for ZenohConfig {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            listen: default_listen(),
            connect: vec!["tcp/127.0.0.1:7447".to_string()],
            multicast_scouting: false,
            express: true,
            config_file: None,
        }
    }
}

impl ZenohConfig {
    /// Builds the zenoh configuration: the optional file, then our fields on top.
    pub fn to_zenoh(&self) -> Result<zenoh::Config> {
        let mut c = match &self.config_file {
            Some(p) => zenoh::Config::from_file(p)
                .map_err(|e| Error::Zenoh(format!("{}: {e}", p.display())))?,
            None => zenoh::Config::default(),
        };
        let set = |c: &mut zenoh::Config, key: &str, value: String| {
            c.insert_json5(key, &value)
                .map_err(|e| Error::Zenoh(format!("config {key} = {value}: {e}")))
        };
        if !matches!(self.mode.as_str(), "peer" | "client" | "router") {
            return Err(Error::Zenoh(format!(
                "mode `{}` is not one of peer, client, router",
                self.mode
            )));
        }
        set(&mut c, "mode", json(&self.mode))?;
        set(&mut c, "listen/endpoints", json(&self.listen))?;
        set(&mut c, "connect/endpoints", json(&self.connect))?;
        set(
            &mut c,
            "scouting/multicast/enabled",
            json(&self.multicast_scouting),
        )?;
        // Keep trying to reach the router in the background instead of failing at start-up,
        // like rmw_zenoh does.
        set(&mut c, "connect/exit_on_failure", "false".to_string())?;
        Ok(c)
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The zenoh transport: one zenoh session per process.
pub struct ZenohTransport {
    inner: Arc<Inner>,
}

struct Inner {
    session: zenoh::Session,
    domain_id: u32,
    zid: String,
    next_entity: AtomicU64,
    express: bool,
}

impl Inner {
    /// Node and entity ids share one counter per session, as in rmw_zenoh.
    fn next_id(&self) -> u64 {
        self.next_entity.fetch_add(1, Ordering::Relaxed)
    }

    fn declare_token(&self, key: String) -> Result<zenoh::liveliness::LivelinessToken> {
        self.session
            .liveliness()
            .declare_token(key.clone())
            .wait()
            .map_err(|e| Error::Zenoh(format!("liveliness token {key}: {e}")))
    }
}

impl ZenohTransport {
    pub fn open(config: &ZenohConfig, domain_id: u32) -> Result<Self> {
        let session = zenoh::open(config.to_zenoh()?)
            .wait()
            .map_err(|e| Error::Zenoh(format!("cannot open session: {e}")))?;
        let zid = session.zid().to_string();
        tracing::info!(%zid, listen = ?config.listen, connect = ?config.connect, "zenoh session open");
        Ok(Self {
            inner: Arc::new(Inner {
                session,
                domain_id,
                zid,
                next_entity: AtomicU64::new(0),
                express: config.express,
            }),
        })
    }

    pub fn session(&self) -> &zenoh::Session {
        &self.inner.session
    }

    pub fn domain_id(&self) -> u32 {
        self.inner.domain_id
    }

    /// Reads every liveliness token of this domain currently alive (rmw_zenoh peers included).
    pub fn graph_tokens(&self, timeout: Duration) -> Result<Vec<String>> {
        let replies = self
            .inner
            .session
            .liveliness()
            .get(format!(
                "{}/{}/**",
                rmw_zenoh::LIVELINESS_ROOT,
                self.inner.domain_id
            ))
            .timeout(timeout)
            .wait()
            .map_err(|e| Error::Zenoh(format!("liveliness query: {e}")))?;
        let mut keys = Vec::new();
        while let Ok(reply) = replies.recv() {
            if let Ok(sample) = reply.result() {
                keys.push(sample.key_expr().as_str().to_string());
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

impl Transport for ZenohTransport {
    fn node(&self, name: &str) -> Result<Box<dyn NodeLink>> {
        let node_id = self.inner.next_id();
        let identity = NodeIdentity {
            domain_id: self.inner.domain_id,
            zid: self.inner.zid.clone(),
            node_id,
            enclave: String::new(),
            namespace: String::new(),
            name: name.to_string(),
        };
        let token = self.inner.declare_token(identity.node_token())?;
        Ok(Box::new(ZenohNode {
            inner: self.inner.clone(),
            identity,
            _token: token,
        }))
    }

    fn kind(&self) -> &'static str {
        "zenoh"
    }
}

struct ZenohNode {
    inner: Arc<Inner>,
    identity: NodeIdentity,
    _token: zenoh::liveliness::LivelinessToken,
}

struct ZenohPub {
    publisher: zenoh::pubsub::Publisher<'static>,
    _token: zenoh::liveliness::LivelinessToken,
    info: &'static TypeInfo,
    gid: [u8; 16],
    seq: AtomicI64,
    /// Size of the last message, to allocate the next buffer in one go.
    last_len: AtomicU64,
    topic: String,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl RawPublisher for ZenohPub {
    fn publish(&self, msg: AnyMsg) -> Result<()> {
        let mut buf = Vec::with_capacity(self.last_len.load(Ordering::Relaxed) as usize);
        self.info.encode_any(msg.as_ref(), &mut buf)?;
        self.last_len.store(buf.len() as u64, Ordering::Relaxed);
        let attachment = Attachment {
            sequence_number: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            source_timestamp_ns: now_ns(),
            gid: self.gid,
        };
        self.publisher
            .put(buf)
            .attachment(attachment.encode().to_vec())
            .wait()
            .map_err(|e| Error::Zenoh(format!("put on {}: {e}", self.topic)))
    }
}

struct SubGuard {
    _sub: zenoh::pubsub::Subscriber<()>,
    _token: Option<zenoh::liveliness::LivelinessToken>,
}

impl NodeLink for ZenohNode {
    fn advertise(
        &self,
        topic: &str,
        info: &'static TypeInfo,
        qos: &Qos,
    ) -> Result<Box<dyn RawPublisher>> {
        let key = rmw_zenoh::data_key(self.inner.domain_id, topic, info.name, &info.hash);
        let eid = self.inner.next_id();
        let token_key = self.identity.endpoint_token(
            eid,
            EntityKind::Publisher,
            topic,
            info.name,
            &info.hash,
            qos,
        );
        let publisher = self
            .inner
            .session
            .declare_publisher(key.clone())
            .express(self.inner.express)
            .wait()
            .map_err(|e| Error::Zenoh(format!("publisher on {key}: {e}")))?;
        let token = self.inner.declare_token(token_key.clone())?;
        Ok(Box::new(ZenohPub {
            publisher,
            _token: token,
            info,
            gid: rmw_zenoh::gid_from_key(&token_key),
            seq: AtomicI64::new(0),
            last_len: AtomicU64::new(0),
            topic: topic.to_string(),
        }))
    }

    fn subscribe(
        &self,
        topic: &str,
        info: Option<&'static TypeInfo>,
        qos: &Qos,
        sink: Sink,
    ) -> Result<Box<dyn Any + Send + Sync>> {
        let (key, token) = match info {
            Some(info) => {
                let eid = self.inner.next_id();
                let token_key = self.identity.endpoint_token(
                    eid,
                    EntityKind::Subscription,
                    topic,
                    info.name,
                    &info.hash,
                    qos,
                );
                let token = self.inner.declare_token(token_key)?;
                (
                    rmw_zenoh::data_key(self.inner.domain_id, topic, info.name, &info.hash),
                    Some(token),
                )
            }
            None if topic == super::ALL_TOPICS => (format!("{}/**", self.inner.domain_id), None),
            None => (
                rmw_zenoh::topic_wildcard_key(self.inner.domain_id, topic),
                None,
            ),
        };
        let scratch = Mutex::new(Vec::<u8>::new());
        let sub = self
            .inner
            .session
            .declare_subscriber(key.clone())
            .callback(move |sample| {
                let att = sample.attachment().map(|a| a.to_bytes());
                let payload = sample.payload();
                // Contiguous payloads are read in place; fragmented ones are gathered once.
                if let Some(slice) = payload.slices().next().filter(|s| s.len() == payload.len()) {
                    sink(Delivery::Wire {
                        key: sample.key_expr().as_str(),
                        payload: slice,
                        attachment: att.as_deref(),
                    });
                } else {
                    let mut buf = scratch.lock().unwrap_or_else(|p| p.into_inner());
                    buf.clear();
                    for s in payload.slices() {
                        buf.extend_from_slice(s);
                    }
                    sink(Delivery::Wire {
                        key: sample.key_expr().as_str(),
                        payload: &buf,
                        attachment: att.as_deref(),
                    });
                }
            })
            .wait()
            .map_err(|e| Error::Zenoh(format!("subscriber on {key}: {e}")))?;
        Ok(Box::new(SubGuard {
            _sub: sub,
            _token: token,
        }))
    }
}
