//! Native ROS 2 transport over r2r (rcl/DDS), for robots whose drivers run on a DDS-based
//! ROS 2 (Humble, Jazzy) rather than rmw_zenoh.
//!
//! A thin adapter: rft already has CDR bytes, so it uses r2r's untyped publishers
//! (`publish_raw`) and raw subscriptions (`subscribe_raw`), which carry the same CDR (with the
//! encapsulation header) that rmw serializes. Each rft node gets one r2r node, owned and spun by
//! its own thread, because an r2r node must stay on the thread that created it.
//!
//! r2r generates its bindings from a sourced ROS 2 at build time, which CI cannot provide, so
//! this feature is never built there.

#[cfg(rft_ros2_not_sourced)]
compile_error!(
    "the `ros2` feature needs a sourced ROS 2 (Humble or Jazzy): run `source /opt/ros/<distro>/setup.bash` \
     before `cargo build --features ros2`. Without ROS 2, use bus.kind = \"zenoh\": it speaks rmw_zenoh's \
     wire format, so ROS 2 nodes running rmw_zenoh_cpp talk to rft with no bridge."
);

use std::any::Any;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use rft_msgs::TypeInfo;
use rft_msgs::rmw_zenoh::{self, Attachment, Qos, Reliability};

use super::{AnyMsg, Delivery, NodeLink, RawPublisher, Sink, Transport};
use crate::error::{Error, Result};

/// The r2r transport.
pub struct Ros2Transport {
    domain_id: u32,
}

impl Ros2Transport {
    /// rcl takes the domain from `ROS_DOMAIN_ID`, so the launch file's `bus.domain_id` must
    /// agree with it.
    pub fn open(domain_id: u32) -> Result<Self> {
        let env = std::env::var("ROS_DOMAIN_ID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if env != domain_id {
            return Err(r2r_err(
                "domain",
                format!(
                    "bus.domain_id is {domain_id} but ROS_DOMAIN_ID is {env}; export ROS_DOMAIN_ID={domain_id}"
                ),
            ));
        }
        Ok(Self { domain_id })
    }
}

enum Cmd {
    Advertise {
        topic: String,
        info: &'static TypeInfo,
        qos: Qos,
        reply: mpsc::Sender<Result<r2r::PublisherUntyped>>,
    },
    Subscribe {
        topic: String,
        info: &'static TypeInfo,
        qos: Qos,
        sink: Sink,
        reply: mpsc::Sender<Result<()>>,
    },
}

fn qos_profile(q: &Qos) -> r2r::QosProfile {
    let p = r2r::QosProfile::default().keep_last(q.depth);
    match q.reliability {
        Reliability::Reliable => p.reliable(),
        Reliability::BestEffort => p.best_effort(),
    }
}

fn r2r_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Zenoh(format!("ros2 (r2r): {what}: {e}"))
}

impl Transport for Ros2Transport {
    fn node(&self, name: &str) -> Result<Box<dyn NodeLink>> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let node_name = name.to_string();
        let domain_id = self.domain_id;
        std::thread::Builder::new()
            .name(format!("r2r-{name}"))
            .spawn(move || {
                let node = r2r::Context::create()
                    .map_err(|e| r2r_err("context", e))
                    .and_then(|ctx| {
                        r2r::Node::create(ctx, &node_name, "").map_err(|e| r2r_err("node", e))
                    });
                let mut node = match node {
                    Ok(n) => {
                        let _ = ready_tx.send(Ok(()));
                        n
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut pool = LocalPool::new();
                let spawner = pool.spawner();
                loop {
                    match rx.try_recv() {
                        Ok(Cmd::Advertise {
                            topic,
                            info,
                            qos,
                            reply,
                        }) => {
                            let r = node
                                .create_publisher_untyped(&topic, info.name, qos_profile(&qos))
                                .map_err(|e| r2r_err(&format!("publisher on {topic}"), e));
                            let _ = reply.send(r);
                        }
                        Ok(Cmd::Subscribe {
                            topic,
                            info,
                            qos,
                            sink,
                            reply,
                        }) => {
                            match node.subscribe_raw(&topic, info.name, qos_profile(&qos)) {
                                Ok(mut stream) => {
                                    let key = rmw_zenoh::data_key(
                                        domain_id, &topic, info.name, &info.hash,
                                    );
                                    let task = async move {
                                        let mut seq = 0;
                                        while let Some(bytes) = stream.next().await {
                                            seq += 1;
                                            // DDS has no rmw_zenoh attachment; give the sample one.
                                            let att = Attachment {
                                                sequence_number: seq,
                                                source_timestamp_ns: 0,
                                                gid: [0; 16],
                                            }
                                            .encode();
                                            sink(Delivery::Wire {
                                                key: &key,
                                                payload: &bytes,
                                                attachment: Some(&att),
                                            });
                                        }
                                    };
                                    let r =
                                        spawner.spawn_local(task).map_err(|e| r2r_err("spawn", e));
                                    let _ = reply.send(r);
                                }
                                Err(e) => {
                                    let _ = reply
                                        .send(Err(r2r_err(&format!("subscription on {topic}"), e)));
                                }
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => {}
                        Err(mpsc::TryRecvError::Disconnected) => break,
                    }
                    node.spin_once(Duration::from_millis(5));
                    pool.run_until_stalled();
                }
            })
            .map_err(|e| Error::Io {
                context: format!("spawning the r2r thread of node {name}"),
                source: e,
            })?;
        ready_rx
            .recv()
            .map_err(|_| r2r_err("node thread", "exited during start-up"))??;
        Ok(Box::new(Ros2Node {
            cmd: Mutex::new(tx),
        }))
    }

    fn kind(&self) -> &'static str {
        "ros2"
    }
}

struct Ros2Node {
    cmd: Mutex<mpsc::Sender<Cmd>>,
}

impl Ros2Node {
    fn send(&self, c: Cmd) -> Result<()> {
        self.cmd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(c)
            .map_err(|_| r2r_err("node thread", "has stopped"))
    }
}

struct Ros2Pub {
    publisher: r2r::PublisherUntyped,
    info: &'static TypeInfo,
    buf: Mutex<Vec<u8>>,
}

impl RawPublisher for Ros2Pub {
    fn publish(&self, msg: AnyMsg) -> Result<()> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        self.info.encode_any(msg.as_ref(), &mut buf)?;
        self.publisher
            .publish_raw(&buf)
            .map_err(|e| r2r_err("publish", e))
    }
}

impl NodeLink for Ros2Node {
    fn advertise(
        &self,
        topic: &str,
        info: &'static TypeInfo,
        qos: &Qos,
    ) -> Result<Box<dyn RawPublisher>> {
        let (reply, rx) = mpsc::channel();
        self.send(Cmd::Advertise {
            topic: topic.to_string(),
            info,
            qos: *qos,
            reply,
        })?;
        let publisher = rx
            .recv()
            .map_err(|_| r2r_err("node thread", "has stopped"))??;
        Ok(Box::new(Ros2Pub {
            publisher,
            info,
            buf: Mutex::new(Vec::new()),
        }))
    }

    fn subscribe(
        &self,
        topic: &str,
        info: Option<&'static TypeInfo>,
        qos: &Qos,
        sink: Sink,
    ) -> Result<Box<dyn Any + Send + Sync>> {
        let Some(info) = info else {
            return Err(r2r_err(
                topic,
                "subscriptions to every type are only supported on zenoh",
            ));
        };
        let (reply, rx) = mpsc::channel();
        self.send(Cmd::Subscribe {
            topic: topic.to_string(),
            info,
            qos: *qos,
            sink,
            reply,
        })?;
        rx.recv()
            .map_err(|_| r2r_err("node thread", "has stopped"))??;
        // The subscription lives as long as the node's thread.
        Ok(Box::new(Arc::new(())))
    }
}
