//! In-process transport: subscribers' callbacks run on the publisher's thread and receive the
//! publisher's `Arc` (zero copy).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rft_msgs::TypeInfo;
use rft_msgs::rmw_zenoh::Qos;

use super::{AnyMsg, Delivery, NodeLink, RawPublisher, Sink, Transport};
use crate::error::Result;

struct Entry {
    id: u64,
    type_id: Option<TypeId>,
    sink: Sink,
}

#[derive(Default)]
struct Topics {
    by_topic: RwLock<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
}

/// The in-process transport.
#[derive(Default, Clone)]
pub struct InprocTransport {
    topics: Arc<Topics>,
}

impl Transport for InprocTransport {
    fn node(&self, _name: &str) -> Result<Box<dyn NodeLink>> {
        Ok(Box::new(self.clone()))
    }
    fn kind(&self) -> &'static str {
        "inproc"
    }
}

struct Pub {
    topics: Arc<Topics>,
    topic: String,
    info: &'static TypeInfo,
}

impl RawPublisher for Pub {
    fn publish(&self, msg: AnyMsg) -> Result<()> {
        let map = self
            .topics
            .by_topic
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let exact = map.get(&self.topic).into_iter().flatten();
        let all = map.get(super::ALL_TOPICS).into_iter().flatten();
        {
            for e in exact.chain(all) {
                if e.type_id.is_none_or(|t| t == self.info.type_id) {
                    (e.sink)(Delivery::Local {
                        topic: &self.topic,
                        info: self.info,
                        msg: &msg,
                    });
                }
            }
        }
        Ok(())
    }
}

struct Guard {
    topics: Arc<Topics>,
    topic: String,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut map = self
            .topics
            .by_topic
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(&self.topic) {
            v.retain(|e| e.id != self.id);
        }
    }
}

impl NodeLink for InprocTransport {
    fn advertise(
        &self,
        topic: &str,
        info: &'static TypeInfo,
        _qos: &Qos,
    ) -> Result<Box<dyn RawPublisher>> {
        Ok(Box::new(Pub {
            topics: self.topics.clone(),
            topic: topic.to_string(),
            info,
        }))
    }

    fn subscribe(
        &self,
        topic: &str,
        info: Option<&'static TypeInfo>,
        _qos: &Qos,
        sink: Sink,
    ) -> Result<Box<dyn Any + Send + Sync>> {
        let id = self.topics.next_id.fetch_add(1, Ordering::Relaxed);
        self.topics
            .by_topic
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_string())
            .or_default()
            .push(Entry {
                id,
                type_id: info.map(|i| i.type_id),
                sink,
            });
        Ok(Box::new(Guard {
            topics: self.topics.clone(),
            topic: topic.to_string(),
            id,
        }))
    }
}
