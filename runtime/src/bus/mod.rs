//! The message bus: one typed API over three transports (in-process, zenoh, ROS 2 via r2r).
//!
//! A [`Bus`] hands out [`NodeHandle`]s; a node handle declares the node in the graph and creates
//! typed [`Publisher`]s and [`Subscription`]s. Every subscription has a bounded queue with an
//! explicit [`DropPolicy`] and counts what it received, dropped and could not decode.

pub mod inproc;
#[cfg(feature = "ros2")]
pub mod ros2;
pub mod zenoh;

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rft_msgs::rmw_zenoh::{self, Attachment, Qos};
use rft_msgs::{Message, TypeInfo, cdr, registry};

use crate::error::{Error, Result};

/// A message shared between publishers and in-process subscribers without copying.
pub type AnyMsg = Arc<dyn Any + Send + Sync>;

/// What a transport hands to a subscription.
pub enum Delivery<'a> {
    /// An in-process message, shared by reference count.
    Local {
        topic: &'a str,
        info: &'static TypeInfo,
        msg: &'a AnyMsg,
    },
    /// Bytes from the wire: a CDR payload with its key expression and attachment.
    Wire {
        key: &'a str,
        payload: &'a [u8],
        attachment: Option<&'a [u8]>,
    },
}

/// A callback a transport calls for every message that matches a subscription.
pub type Sink = Arc<dyn Fn(Delivery<'_>) + Send + Sync>;

/// One transport (in-process, zenoh, ROS 2).
pub trait Transport: Send + Sync {
    /// Declares a node in the graph (a liveliness token on zenoh).
    fn node(&self, name: &str) -> Result<Box<dyn NodeLink>>;
    /// Short name for logs: `inproc`, `zenoh`, `ros2`.
    fn kind(&self) -> &'static str;
}

/// A node's connection to its transport.
pub trait NodeLink: Send + Sync {
    fn advertise(
        &self,
        topic: &str,
        info: &'static TypeInfo,
        qos: &Qos,
    ) -> Result<Box<dyn RawPublisher>>;
    /// Subscribes to `topic`. With `info` = `None`, messages of every type are delivered.
    /// The returned guard undeclares the subscription when dropped.
    fn subscribe(
        &self,
        topic: &str,
        info: Option<&'static TypeInfo>,
        qos: &Qos,
        sink: Sink,
    ) -> Result<Box<dyn Any + Send + Sync>>;
}

/// The transport side of a publisher.
pub trait RawPublisher: Send + Sync {
    fn publish(&self, msg: AnyMsg) -> Result<()>;
}

/// What a subscription does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest queued message to make room (the default).
    #[default]
    DropOldest,
    /// Keep only the newest message (a queue of one).
    LatestOnly,
}

/// Queue settings of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub capacity: usize,
    pub policy: DropPolicy,
}

impl QueueConfig {
    pub const fn drop_oldest(capacity: usize) -> Self {
        Self {
            capacity,
            policy: DropPolicy::DropOldest,
        }
    }
    pub const fn latest_only() -> Self {
        Self {
            capacity: 1,
            policy: DropPolicy::LatestOnly,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::drop_oldest(10)
    }
}

/// Counters of a subscription.
#[derive(Debug, Default)]
pub struct SubStats {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
}

/// A snapshot of [`SubStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubCounts {
    pub received: u64,
    pub dropped: u64,
    pub malformed: u64,
}

impl SubStats {
    pub fn snapshot(&self) -> SubCounts {
        SubCounts {
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// A wake-up flag a node's thread waits on; subscriptions and the runtime set it.
#[derive(Debug, Default)]
pub struct Signal {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    pub fn notify(&self) {
        let mut g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        *g = true;
        self.cv.notify_all();
    }

    /// Whether it was notified since the last wait or take; clears the flag without waiting.
    pub fn take(&self) -> bool {
        let mut g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *g, false)
    }

    /// Waits until notified or `timeout` passes; returns whether it was notified. Clears the flag.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *g, false)
    }
}

struct Queue<M> {
    items: Mutex<VecDeque<Arc<M>>>,
    cv: Condvar,
    config: QueueConfig,
    stats: Arc<SubStats>,
    wake: Option<Arc<Signal>>,
}

impl<M> Queue<M> {
    fn push(&self, msg: Arc<M>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        {
            let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
            let cap = match self.config.policy {
                DropPolicy::LatestOnly => 1,
                DropPolicy::DropOldest => self.config.capacity.max(1),
            };
            while q.len() >= cap {
                q.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(msg);
        }
        self.cv.notify_one();
        if let Some(w) = &self.wake {
            w.notify();
        }
    }
}

/// A typed subscription. Messages arrive as `Arc<M>` (zero copy in-process).
pub struct Subscription<M> {
    queue: Arc<Queue<M>>,
    topic: String,
    _guard: Box<dyn Any + Send + Sync>,
}

impl<M: Message> Subscription<M> {
    /// The next queued message, if any.
    pub fn try_recv(&self) -> Option<Arc<M>> {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Waits up to `timeout` for the next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Arc<M>> {
        let deadline = Instant::now() + timeout;
        let mut q = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(m) = q.pop_front() {
                return Some(m);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            q = self
                .queue
                .cv
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Drains the queue and returns the newest message, if any.
    pub fn latest(&self) -> Option<Arc<M>> {
        let mut q = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        let last = q.pop_back();
        q.clear();
        last
    }

    /// Drains every queued message, oldest first.
    pub fn drain(&self) -> Vec<Arc<M>> {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    pub fn stats(&self) -> SubCounts {
        self.queue.stats.snapshot()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// A typed publisher.
pub struct Publisher<M> {
    raw: Box<dyn RawPublisher>,
    topic: String,
    _m: PhantomData<fn(M)>,
}

impl<M: Message> Publisher<M> {
    pub fn publish(&self, msg: M) -> Result<()> {
        self.raw.publish(Arc::new(msg))
    }

    /// Publishes a message that is already shared (no copy in-process).
    pub fn publish_arc(&self, msg: Arc<M>) -> Result<()> {
        self.raw.publish(msg)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// A message of any type, as `rft echo`/`rft record` see it.
pub struct RawSample<'a> {
    pub topic: &'a str,
    /// `None` when the type is not one rft knows (the bytes are still delivered).
    pub info: Option<&'static TypeInfo>,
    /// The type name from the key expression (or the in-process type).
    pub type_name: &'a str,
    /// CDR bytes with the encapsulation header.
    pub payload: &'a [u8],
    pub attachment: Option<Attachment>,
}

/// The bus a process uses: one transport plus topic remapping.
#[derive(Clone)]
pub struct Bus {
    transport: Arc<dyn Transport>,
}

impl Bus {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self { transport }
    }

    /// An in-process bus.
    pub fn inproc() -> Self {
        Self::new(Arc::new(inproc::InprocTransport::default()))
    }

    pub fn kind(&self) -> &'static str {
        self.transport.kind()
    }

    /// Declares a node. `remap` maps topic names the node's code uses to the names on the bus.
    pub fn node(
        &self,
        name: &str,
        remap: BTreeMap<String, String>,
        wake: Arc<Signal>,
    ) -> Result<NodeHandle> {
        Ok(NodeHandle {
            name: name.to_string(),
            link: Arc::from(self.transport.node(name)?),
            remap: Arc::new(remap),
            wake,
        })
    }

    /// A node with no remapping and its own wake signal (tools, tests).
    pub fn simple_node(&self, name: &str) -> Result<NodeHandle> {
        self.node(name, BTreeMap::new(), Arc::new(Signal::default()))
    }
}

/// A node's view of the bus.
#[derive(Clone)]
pub struct NodeHandle {
    name: String,
    link: Arc<dyn NodeLink>,
    remap: Arc<BTreeMap<String, String>>,
    wake: Arc<Signal>,
}

impl NodeHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signal the runtime waits on for this node.
    pub fn wake_signal(&self) -> &Arc<Signal> {
        &self.wake
    }

    fn resolve(&self, topic: &str) -> Result<String> {
        let resolved = self
            .remap
            .get(topic)
            .cloned()
            .unwrap_or_else(|| topic.to_string());
        rmw_zenoh::validate_topic(&resolved).map_err(|reason| Error::Topic {
            topic: resolved.clone(),
            reason,
        })?;
        Ok(resolved)
    }

    pub fn publisher<M: Message>(&self, topic: &str) -> Result<Publisher<M>> {
        self.publisher_with_qos(topic, &Qos::default())
    }

    pub fn publisher_with_qos<M: Message>(&self, topic: &str, qos: &Qos) -> Result<Publisher<M>> {
        let topic = self.resolve(topic)?;
        let info = registry::of::<M>()?;
        let raw = self.link.advertise(&topic, info, qos)?;
        tracing::debug!(node = %self.name, %topic, r#type = info.name, "advertised");
        Ok(Publisher {
            raw,
            topic,
            _m: PhantomData,
        })
    }

    /// Subscribes with a bounded queue; each arrival wakes this node.
    pub fn subscribe<M: Message>(
        &self,
        topic: &str,
        queue: QueueConfig,
    ) -> Result<Subscription<M>> {
        self.subscribe_inner(topic, queue, Some(self.wake.clone()))
    }

    /// Subscribes without waking the node (for data only read on the node's own timer).
    pub fn subscribe_quiet<M: Message>(
        &self,
        topic: &str,
        queue: QueueConfig,
    ) -> Result<Subscription<M>> {
        self.subscribe_inner(topic, queue, None)
    }

    fn subscribe_inner<M: Message>(
        &self,
        topic: &str,
        queue: QueueConfig,
        wake: Option<Arc<Signal>>,
    ) -> Result<Subscription<M>> {
        let topic = self.resolve(topic)?;
        let info = registry::of::<M>()?;
        let q = Arc::new(Queue::<M> {
            items: Mutex::new(VecDeque::with_capacity(queue.capacity.min(1024))),
            cv: Condvar::new(),
            config: queue,
            stats: Arc::new(SubStats::default()),
            wake,
        });
        let sink_q = q.clone();
        let sink_topic = topic.clone();
        let sink: Sink = Arc::new(move |d: Delivery<'_>| match d {
            Delivery::Local { msg, .. } => match msg.clone().downcast::<M>() {
                Ok(m) => sink_q.push(m),
                Err(_) => {
                    sink_q.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            },
            Delivery::Wire {
                payload,
                attachment,
                ..
            } => {
                if let Err(reason) = attachment.map_or_else(
                    || Err("sample has no rmw_zenoh attachment".to_string()),
                    |a| Attachment::decode(a).map(|_| ()).map_err(|e| e.to_string()),
                ) {
                    sink_q.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(topic = %sink_topic, %reason, "dropped sample");
                    return;
                }
                match cdr::decode::<M>(payload) {
                    Ok(m) => sink_q.push(Arc::new(m)),
                    Err(e) => {
                        sink_q.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(topic = %sink_topic, error = %e, "malformed message dropped");
                    }
                }
            }
        });
        let guard = self
            .link
            .subscribe(&topic, Some(info), &Qos::default(), sink)?;
        tracing::debug!(node = %self.name, %topic, r#type = info.name, "subscribed");
        Ok(Subscription {
            queue: q,
            topic,
            _guard: guard,
        })
    }

    /// Subscribes to every message on `topic`, whatever its type, as CDR bytes. `on_sample`
    /// runs on the transport's thread. Returns a guard; drop it to unsubscribe.
    pub fn subscribe_raw(
        &self,
        topic: &str,
        on_sample: impl Fn(RawSample<'_>) + Send + Sync + 'static,
    ) -> Result<Box<dyn Any + Send + Sync>> {
        let topic = self.resolve(topic)?;
        self.link
            .subscribe(&topic, None, &Qos::default(), raw_sink(on_sample))
    }

    /// Like [`Self::subscribe_raw`], for every topic of the domain.
    pub fn subscribe_raw_all(
        &self,
        on_sample: impl Fn(RawSample<'_>) + Send + Sync + 'static,
    ) -> Result<Box<dyn Any + Send + Sync>> {
        self.link
            .subscribe(ALL_TOPICS, None, &Qos::default(), raw_sink(on_sample))
    }
}

/// The pseudo-topic a transport reads as "every topic".
pub const ALL_TOPICS: &str = "/**";

fn raw_sink(on_sample: impl Fn(RawSample<'_>) + Send + Sync + 'static) -> Sink {
    let buf = Mutex::new(Vec::new());
    let sink: Sink = Arc::new(move |d: Delivery<'_>| match d {
        Delivery::Local { topic, info, msg } => {
            let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
            if info.encode_any(msg.as_ref(), &mut b).is_ok() {
                on_sample(RawSample {
                    topic,
                    info: Some(info),
                    type_name: info.name,
                    payload: &b,
                    attachment: None,
                });
            }
        }
        Delivery::Wire {
            key,
            payload,
            attachment,
        } => {
            let Ok(parsed) = rmw_zenoh::parse_data_key(key) else {
                tracing::debug!(%key, "sample on a key that is not an rmw_zenoh data key");
                return;
            };
            // As rmw_zenoh does (and typed subscriptions here): a sample without a valid
            // attachment is not a ROS message and is dropped.
            let Some(attachment) = attachment.and_then(|a| Attachment::decode(a).ok()) else {
                tracing::debug!(%key, "dropped sample without a valid rmw_zenoh attachment");
                return;
            };
            on_sample(RawSample {
                topic: &parsed.topic,
                info: registry::by_name(&parsed.type_name).ok(),
                type_name: &parsed.type_name,
                payload,
                attachment: Some(attachment),
            });
        }
    });
    sink
}

#[cfg(test)]
mod tests {
    use super::*;
    use rft_msgs::{Float64MultiArray, JointState};

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts_drops() {
        let bus = Bus::inproc();
        let node = bus.simple_node("t").unwrap();
        let sub = node
            .subscribe::<Float64MultiArray>("/x", QueueConfig::drop_oldest(3))
            .unwrap();
        let publ = node.publisher::<Float64MultiArray>("/x").unwrap();
        for i in 0..5 {
            publ.publish(Float64MultiArray::from_data(vec![f64::from(i)]))
                .unwrap();
        }
        let got: Vec<f64> = sub.drain().iter().map(|m| m.data[0]).collect();
        assert_eq!(got, vec![2.0, 3.0, 4.0]);
        assert_eq!(
            sub.stats(),
            SubCounts {
                received: 5,
                dropped: 2,
                malformed: 0
            }
        );
    }

    #[test]
    fn latest_only_holds_one() {
        let bus = Bus::inproc();
        let node = bus.simple_node("t").unwrap();
        let sub = node
            .subscribe::<Float64MultiArray>("/x", QueueConfig::latest_only())
            .unwrap();
        let publ = node.publisher::<Float64MultiArray>("/x").unwrap();
        for i in 0..4 {
            publ.publish(Float64MultiArray::from_data(vec![f64::from(i)]))
                .unwrap();
        }
        assert_eq!(sub.try_recv().unwrap().data, vec![3.0]);
        assert!(sub.try_recv().is_none());
        assert_eq!(sub.stats().dropped, 3);
    }

    #[test]
    fn in_process_delivery_shares_the_message() {
        let bus = Bus::inproc();
        let node = bus.simple_node("t").unwrap();
        let sub = node
            .subscribe::<JointState>("/js", QueueConfig::default())
            .unwrap();
        let publ = node.publisher::<JointState>("/js").unwrap();
        let msg = Arc::new(JointState {
            position: vec![1.0; 7],
            ..Default::default()
        });
        publ.publish_arc(msg.clone()).unwrap();
        let got = sub.recv_timeout(Duration::from_secs(1)).unwrap();
        assert!(Arc::ptr_eq(&got, &msg), "in-process delivery must not copy");
    }

    #[test]
    fn remapping_and_bad_topics() {
        let bus = Bus::inproc();
        let mut remap = BTreeMap::new();
        remap.insert(
            "/joint_states".to_string(),
            "/robot1/joint_states".to_string(),
        );
        let node = bus.node("n", remap, Arc::new(Signal::default())).unwrap();
        let other = bus.simple_node("o").unwrap();
        let sub = other
            .subscribe::<JointState>("/robot1/joint_states", QueueConfig::default())
            .unwrap();
        node.publisher::<JointState>("/joint_states")
            .unwrap()
            .publish(JointState::default())
            .unwrap();
        assert!(sub.recv_timeout(Duration::from_secs(1)).is_some());
        let err = node.publisher::<JointState>("no_slash").err().unwrap();
        assert!(err.to_string().contains("must start with `/`"), "{err}");
    }

    #[test]
    fn a_subscription_of_another_type_on_the_same_topic_gets_nothing() {
        let bus = Bus::inproc();
        let node = bus.simple_node("t").unwrap();
        let sub = node
            .subscribe::<JointState>("/x", QueueConfig::default())
            .unwrap();
        node.publisher::<Float64MultiArray>("/x")
            .unwrap()
            .publish(Float64MultiArray::default())
            .unwrap();
        assert!(sub.try_recv().is_none());
    }

    #[test]
    fn raw_subscription_sees_cdr_bytes() {
        let bus = Bus::inproc();
        let node = bus.simple_node("t").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let _g = node
            .subscribe_raw("/x", move |s| {
                s2.lock()
                    .unwrap()
                    .push((s.type_name.to_string(), s.payload.to_vec()));
            })
            .unwrap();
        let msg = Float64MultiArray::from_data(vec![1.0, 2.0]);
        node.publisher::<Float64MultiArray>("/x")
            .unwrap()
            .publish(msg.clone())
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "std_msgs/msg/Float64MultiArray");
        assert_eq!(seen[0].1, cdr::encode(&msg).unwrap());
    }
}
