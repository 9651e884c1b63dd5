//! Run-time information about every message type: names, hashes, schemas, and type-erased
//! codecs for tools that meet a type only at run time (`rft echo`, `rft record`, `rft pub`).

use std::any::{Any, TypeId};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::types::Message;
use crate::{cdr, msgdef, rmw_zenoh};

type EncodeAny = fn(&(dyn Any + Send + Sync), &mut Vec<u8>) -> Result<()>;
type CdrToJson = fn(&[u8]) -> Result<serde_json::Value>;
type JsonToCdr = fn(serde_json::Value, &mut Vec<u8>) -> Result<()>;

/// Everything known about one message type.
pub struct TypeInfo {
    /// `sensor_msgs/msg/JointState`.
    pub name: &'static str,
    /// `sensor_msgs::msg::dds_::JointState_`.
    pub dds_name: String,
    /// `RIHS01_<64 hex>`.
    pub hash: String,
    /// `ros2msg` schema text with dependencies, for MCAP.
    pub schema: String,
    pub type_id: TypeId,
    encode_any: EncodeAny,
    cdr_to_json: CdrToJson,
    json_to_cdr: JsonToCdr,
}

impl std::fmt::Debug for TypeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeInfo")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .finish()
    }
}

impl TypeInfo {
    fn of<M: Message>() -> Self {
        let hash =
            msgdef::rihs01(M::TYPE_NAME).unwrap_or_else(|e| format!("RIHS01_unavailable({e})"));
        let schema = msgdef::ros2msg_schema(M::TYPE_NAME).unwrap_or_default();
        Self {
            name: M::TYPE_NAME,
            dds_name: rmw_zenoh::dds_type_name(M::TYPE_NAME),
            hash,
            schema,
            type_id: TypeId::of::<M>(),
            encode_any: |msg, out| match msg.downcast_ref::<M>() {
                Some(m) => cdr::encode_into(m, out),
                None => Err(Error::Custom(format!("value is not a {}", M::TYPE_NAME))),
            },
            cdr_to_json: |bytes| {
                let m: M = cdr::decode(bytes)?;
                serde_json::to_value(&m).map_err(|e| Error::Json {
                    type_name: M::TYPE_NAME.into(),
                    reason: e.to_string(),
                })
            },
            json_to_cdr: |value, out| {
                let m: M = serde_json::from_value(value).map_err(|e| Error::Json {
                    type_name: M::TYPE_NAME.into(),
                    reason: e.to_string(),
                })?;
                cdr::encode_into(&m, out)
            },
        }
    }

    /// Encodes a message given as `&dyn Any` (it must be of this type).
    pub fn encode_any(&self, msg: &(dyn Any + Send + Sync), out: &mut Vec<u8>) -> Result<()> {
        (self.encode_any)(msg, out)
    }

    /// Decodes CDR bytes into a JSON value with the message's field names.
    pub fn cdr_to_json(&self, bytes: &[u8]) -> Result<serde_json::Value> {
        (self.cdr_to_json)(bytes)
    }

    /// Builds a message from JSON (missing fields are errors) and encodes it.
    pub fn json_to_cdr(&self, value: serde_json::Value, out: &mut Vec<u8>) -> Result<()> {
        (self.json_to_cdr)(value, out)
    }
}

/// All known message types.
pub fn all() -> &'static [TypeInfo] {
    static REGISTRY: OnceLock<Vec<TypeInfo>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut v = Vec::new();
        macro_rules! add {
            ($t:ty) => {
                v.push(TypeInfo::of::<$t>());
            };
        }
        crate::for_each_message!(add);
        v
    })
}

/// Looks a type up by its ROS 2 name (`sensor_msgs/msg/JointState`; `sensor_msgs/JointState`
/// is accepted too) or by its DDS name (`sensor_msgs::msg::dds_::JointState_`).
pub fn by_name(name: &str) -> Result<&'static TypeInfo> {
    let normalized = match name.split('/').collect::<Vec<_>>().as_slice() {
        [pkg, ty] => format!("{pkg}/msg/{ty}"),
        _ => name.to_string(),
    };
    all()
        .iter()
        .find(|t| t.name == normalized || t.dds_name == name)
        .ok_or_else(|| Error::UnknownType(name.to_string()))
}

/// The information of a statically known message type.
pub fn of<M: Message>() -> Result<&'static TypeInfo> {
    by_name(M::TYPE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_hash_and_a_schema() {
        assert_eq!(all().len(), 28);
        for t in all() {
            assert!(
                t.hash.starts_with("RIHS01_") && t.hash.len() == 71,
                "{} {}",
                t.name,
                t.hash
            );
            assert!(!t.schema.is_empty(), "{}", t.name);
        }
        assert_eq!(
            by_name("sensor_msgs/JointState").unwrap().name,
            "sensor_msgs/msg/JointState"
        );
        assert_eq!(
            by_name("rft_msgs::msg::dds_::Action_").unwrap().name,
            "rft_msgs/msg/Action"
        );
        assert!(by_name("nope/msg/Nope").is_err());
    }

    #[test]
    fn json_round_trip_through_cdr() {
        let t = by_name("sensor_msgs/msg/JointState").unwrap();
        let json = serde_json::json!({"header": {"stamp": {"sec": 1, "nanosec": 2}, "frame_id": "base"},
            "name": ["j1"], "position": [0.5], "velocity": [], "effort": []});
        let mut bytes = Vec::new();
        t.json_to_cdr(json.clone(), &mut bytes).unwrap();
        assert_eq!(t.cdr_to_json(&bytes).unwrap(), json);
        assert!(
            t.json_to_cdr(serde_json::json!({"name": []}), &mut bytes)
                .is_err()
        );
    }
}
