//! The wire conventions of ROS 2's rmw_zenoh, as pure functions: data key expressions, the
//! 33-byte attachment, liveliness tokens for graph discovery, and entity GIDs.
//! See `shared/ROS2_ZENOH_WIRE.md` for the facts these follow.

use crate::error::{Error, Result};

/// Root of every liveliness token.
pub const LIVELINESS_ROOT: &str = "@ros2_lv";
/// Length of the attachment carried by every sample.
pub const ATTACHMENT_LEN: usize = 33;

/// `sensor_msgs/msg/JointState` → `sensor_msgs::msg::dds_::JointState_`.
pub fn dds_type_name(type_name: &str) -> String {
    let mut parts = type_name.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(pkg), Some(kind), Some(name)) => format!("{pkg}::{kind}::dds_::{name}_"),
        (Some(pkg), Some(name), None) => format!("{pkg}::msg::dds_::{name}_"),
        _ => type_name.to_string(),
    }
}

/// `sensor_msgs::msg::dds_::JointState_` → `sensor_msgs/msg/JointState`.
pub fn ros_type_name(dds_name: &str) -> Option<String> {
    let mut parts = dds_name.split("::");
    let (Some(pkg), Some(kind), Some("dds_"), Some(name), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some(format!("{pkg}/{kind}/{}", name.strip_suffix('_')?))
}

/// Checks a fully qualified ROS 2 topic name (`/a/b_c`): leading `/`, segments of
/// `[A-Za-z0-9_]` not starting with a digit, no empty segment, no trailing `/`.
pub fn validate_topic(topic: &str) -> std::result::Result<(), String> {
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(format!("topic `{topic}` must start with `/`"));
    };
    if rest.is_empty() {
        return Err("topic `/` has no name".into());
    }
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err(format!(
                "topic `{topic}` has an empty segment (`//` or a trailing `/`)"
            ));
        }
        if seg.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "topic `{topic}`: segment `{seg}` starts with a digit"
            ));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(format!(
                "topic `{topic}`: character `{c}` is not allowed (use A-Z, a-z, 0-9, _)"
            ));
        }
    }
    Ok(())
}

/// The data key expression: `<domain>/<topic without leading />/<dds type>/<hash>`.
pub fn data_key(domain_id: u32, topic: &str, type_name: &str, type_hash: &str) -> String {
    format!(
        "{domain_id}/{}/{}/{type_hash}",
        topic.trim_start_matches('/'),
        dds_type_name(type_name)
    )
}

/// A key expression that matches every type published on `topic`.
pub fn topic_wildcard_key(domain_id: u32, topic: &str) -> String {
    format!("{domain_id}/{}/*/*", topic.trim_start_matches('/'))
}

/// A data key split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    pub domain_id: u32,
    /// With a leading `/`.
    pub topic: String,
    /// ROS 2 name, e.g. `sensor_msgs/msg/JointState`.
    pub type_name: String,
    pub type_hash: String,
}

/// Parses a data key expression produced by [`data_key`] (or by rmw_zenoh).
pub fn parse_data_key(key: &str) -> Result<DataKey> {
    let err = |reason: &str| Error::KeyExpr {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let segs: Vec<&str> = key.split('/').collect();
    let [domain, topic @ .., dds, hash] = segs.as_slice() else {
        return Err(err("expected <domain>/<topic>/<type>/<hash>"));
    };
    if topic.is_empty() {
        return Err(err("no topic segment"));
    }
    Ok(DataKey {
        domain_id: domain
            .parse()
            .map_err(|_| err("domain id is not a number"))?,
        topic: format!("/{}", topic.join("/")),
        type_name: ros_type_name(dds)
            .ok_or_else(|| err("type segment is not <pkg>::msg::dds_::<Name>_"))?,
        type_hash: (*hash).to_string(),
    })
}

/// The attachment rmw_zenoh puts on every sample (current layout, 33 bytes little endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// Starts at 1, +1 per message of a publisher.
    pub sequence_number: i64,
    /// Source timestamp, ns since the Unix epoch.
    pub source_timestamp_ns: i64,
    /// The publisher's GID.
    pub gid: [u8; 16],
}

impl Attachment {
    pub fn encode(&self) -> [u8; ATTACHMENT_LEN] {
        let mut out = [0u8; ATTACHMENT_LEN];
        out[0..8].copy_from_slice(&self.sequence_number.to_le_bytes());
        out[8..16].copy_from_slice(&self.source_timestamp_ns.to_le_bytes());
        out[16] = 16;
        out[17..33].copy_from_slice(&self.gid);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let Ok(arr) = <&[u8; ATTACHMENT_LEN]>::try_from(bytes) else {
            return Err(Error::Attachment(format!(
                "expected {ATTACHMENT_LEN} bytes, got {}",
                bytes.len()
            )));
        };
        if arr[16] != 16 {
            return Err(Error::Attachment(format!(
                "GID length is {}, expected 16",
                arr[16]
            )));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&arr[0..8]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&arr[8..16]);
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&arr[17..33]);
        Ok(Self {
            sequence_number: i64::from_le_bytes(seq),
            source_timestamp_ns: i64::from_le_bytes(ts),
            gid,
        })
    }
}

/// An entity's GID: XXH3-128 of its liveliness key expression (low 64 bits first, as the
/// `XXH128_hash_t` struct is laid out in memory).
pub fn gid_from_key(liveliness_key: &str) -> [u8; 16] {
    let h = xxhash_rust::xxh3::xxh3_128(liveliness_key.as_bytes());
    let mut gid = [0u8; 16];
    gid[..8].copy_from_slice(&(h as u64).to_le_bytes());
    gid[8..].copy_from_slice(&((h >> 64) as u64).to_le_bytes());
    gid
}

/// Reliability of a QoS profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reliability {
    #[default]
    Reliable,
    BestEffort,
}

/// Durability of a QoS profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    TransientLocal,
    #[default]
    Volatile,
}

/// The QoS fields rft sets; deadline, lifespan and liveliness stay at their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos {
    pub reliability: Reliability,
    pub durability: Durability,
    /// KEEP_LAST depth.
    pub depth: usize,
}

impl Default for Qos {
    fn default() -> Self {
        Self {
            reliability: Reliability::Reliable,
            durability: Durability::Volatile,
            depth: 10,
        }
    }
}

impl Qos {
    /// The compact form used in tokens: `rel:dur:hist,depth:dl:life:liveliness`, with fields
    /// equal to the default left empty (the default profile is `::,10:,:,:,,`).
    pub fn to_token(&self) -> String {
        let rel = match self.reliability {
            Reliability::Reliable => "",
            Reliability::BestEffort => "2",
        };
        let dur = match self.durability {
            Durability::Volatile => "",
            Durability::TransientLocal => "1",
        };
        format!("{rel}:{dur}:,{}:,:,:,,", self.depth)
    }
}

/// Kind of a graph entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Node,
    Publisher,
    Subscription,
    ServiceServer,
    ServiceClient,
}

impl EntityKind {
    pub fn code(self) -> &'static str {
        match self {
            EntityKind::Node => "NN",
            EntityKind::Publisher => "MP",
            EntityKind::Subscription => "MS",
            EntityKind::ServiceServer => "SS",
            EntityKind::ServiceClient => "SC",
        }
    }
    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "NN" => EntityKind::Node,
            "MP" => EntityKind::Publisher,
            "MS" => EntityKind::Subscription,
            "SS" => EntityKind::ServiceServer,
            "SC" => EntityKind::ServiceClient,
            _ => return None,
        })
    }
}

/// `/a/b` → `%a%b`; empty → `%`.
pub fn mangle(name: &str) -> String {
    if name.is_empty() || name == "/" {
        "%".to_string()
    } else {
        name.replace('/', "%")
    }
}

/// `%a%b` → `/a/b`; `%` → empty.
pub fn demangle(token: &str) -> String {
    if token == "%" {
        String::new()
    } else {
        token.replace('%', "/")
    }
}

/// Identity of a node in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub domain_id: u32,
    /// Zenoh session id, as zenoh prints it (lower-case hex).
    pub zid: String,
    pub node_id: u64,
    /// Empty for the default enclave.
    pub enclave: String,
    /// Empty or `/ns`.
    pub namespace: String,
    pub name: String,
}

impl NodeIdentity {
    fn prefix(&self, entity_id: u64, kind: EntityKind) -> String {
        format!(
            "{LIVELINESS_ROOT}/{}/{}/{}/{entity_id}/{}/{}/{}/{}",
            self.domain_id,
            self.zid,
            self.node_id,
            kind.code(),
            mangle(&self.enclave),
            mangle(&self.namespace),
            self.name
        )
    }

    /// The node's own token.
    pub fn node_token(&self) -> String {
        self.prefix(self.node_id, EntityKind::Node)
    }

    /// A publisher's or subscription's token.
    pub fn endpoint_token(
        &self,
        entity_id: u64,
        kind: EntityKind,
        topic: &str,
        type_name: &str,
        type_hash: &str,
        qos: &Qos,
    ) -> String {
        format!(
            "{}/{}/{}/{type_hash}/{}",
            self.prefix(entity_id, kind),
            mangle(topic),
            dds_type_name(type_name),
            qos.to_token()
        )
    }
}

/// A parsed liveliness token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub domain_id: u32,
    pub zid: String,
    pub node_id: u64,
    pub entity_id: u64,
    pub kind: EntityKind,
    pub enclave: String,
    pub namespace: String,
    pub node_name: String,
    /// For endpoints: topic (with leading `/`), ROS 2 type name, hash and QoS text.
    pub topic: Option<String>,
    pub type_name: Option<String>,
    pub type_hash: Option<String>,
    pub qos: Option<String>,
}

/// Parses a liveliness token key expression.
pub fn parse_token(key: &str) -> Result<Token> {
    let err = |reason: &str| Error::KeyExpr {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let segs: Vec<&str> = key.split('/').collect();
    let [
        root,
        domain,
        zid,
        nid,
        eid,
        kind,
        enclave,
        ns,
        node,
        rest @ ..,
    ] = segs.as_slice()
    else {
        return Err(err("too few segments for a liveliness token"));
    };
    if *root != LIVELINESS_ROOT {
        return Err(err("does not start with @ros2_lv"));
    }
    let kind = EntityKind::from_code(kind).ok_or_else(|| err("unknown entity kind"))?;
    let mut token = Token {
        domain_id: domain
            .parse()
            .map_err(|_| err("domain id is not a number"))?,
        zid: (*zid).to_string(),
        node_id: nid.parse().map_err(|_| err("node id is not a number"))?,
        entity_id: eid.parse().map_err(|_| err("entity id is not a number"))?,
        kind,
        enclave: demangle(enclave),
        namespace: demangle(ns),
        node_name: (*node).to_string(),
        topic: None,
        type_name: None,
        type_hash: None,
        qos: None,
    };
    match (kind, rest) {
        (EntityKind::Node, []) => {}
        (EntityKind::Node, _) => return Err(err("node token with extra segments")),
        (_, [topic, ty, hash, qos]) => {
            let topic = demangle(topic);
            token.topic = Some(if topic.starts_with('/') {
                topic
            } else {
                format!("/{topic}")
            });
            token.type_name = Some(ros_type_name(ty).ok_or_else(|| err("bad type segment"))?);
            token.type_hash = Some((*hash).to_string());
            token.qos = Some((*qos).to_string());
        }
        _ => return Err(err("endpoint token needs topic/type/hash/qos")),
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e";

    #[test]
    fn data_keys_follow_rmw_zenoh() {
        let key = data_key(
            0,
            "/robot1/joint_states",
            "sensor_msgs/msg/JointState",
            HASH,
        );
        assert_eq!(
            key,
            format!("0/robot1/joint_states/sensor_msgs::msg::dds_::JointState_/{HASH}")
        );
        let parsed = parse_data_key(&key).unwrap();
        assert_eq!(parsed.topic, "/robot1/joint_states");
        assert_eq!(parsed.type_name, "sensor_msgs/msg/JointState");
        assert_eq!(parsed.type_hash, HASH);
        assert!(parse_data_key("0/x").is_err());
        assert!(parse_data_key("zero/t/a::msg::dds_::B_/h").is_err());
    }

    #[test]
    fn attachment_round_trip_and_layout() {
        let a = Attachment {
            sequence_number: 1,
            source_timestamp_ns: 1_700_000_000_123_456_789,
            gid: [7; 16],
        };
        let bytes = a.encode();
        assert_eq!(&bytes[0..8], &1i64.to_le_bytes());
        assert_eq!(bytes[16], 16);
        assert_eq!(Attachment::decode(&bytes).unwrap(), a);
        assert!(Attachment::decode(&bytes[..32]).is_err());
        let mut bad = bytes;
        bad[16] = 8;
        assert!(Attachment::decode(&bad).is_err());
    }

    #[test]
    fn tokens_match_the_documented_shape() {
        let node = NodeIdentity {
            domain_id: 0,
            zid: "aac3178e146ba6f1fc6e6a4085e77f21".into(),
            node_id: 0,
            enclave: String::new(),
            namespace: String::new(),
            name: "talker".into(),
        };
        assert_eq!(
            node.node_token(),
            "@ros2_lv/0/aac3178e146ba6f1fc6e6a4085e77f21/0/0/NN/%/%/talker"
        );
        let tok = node.endpoint_token(
            10,
            EntityKind::Publisher,
            "/chatter",
            "std_msgs/msg/String",
            "RIHS01_x",
            &Qos::default(),
        );
        assert_eq!(
            tok,
            "@ros2_lv/0/aac3178e146ba6f1fc6e6a4085e77f21/0/10/MP/%/%/talker/%chatter/std_msgs::msg::dds_::String_/RIHS01_x/::,10:,:,:,,"
        );
        let parsed = parse_token(&tok).unwrap();
        assert_eq!(parsed.kind, EntityKind::Publisher);
        assert_eq!(parsed.topic.as_deref(), Some("/chatter"));
        assert_eq!(parsed.type_name.as_deref(), Some("std_msgs/msg/String"));
        assert_eq!(
            parse_token(&node.node_token()).unwrap().kind,
            EntityKind::Node
        );
        assert!(parse_token("@ros2_lv/0/z/0/0/XX/%/%/n").is_err());
        let be = Qos {
            reliability: Reliability::BestEffort,
            durability: Durability::Volatile,
            depth: 5,
        };
        assert_eq!(be.to_token(), "2::,5:,:,:,,");
    }

    #[test]
    fn topic_validation() {
        assert!(validate_topic("/joint_states").is_ok());
        assert!(validate_topic("/robot1/camera/image_raw").is_ok());
        for bad in ["joint_states", "/", "/a//b", "/a/", "/1abc", "/a-b", "/a b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gid_is_deterministic_and_distinct() {
        assert_eq!(gid_from_key("a"), gid_from_key("a"));
        assert_ne!(gid_from_key("a"), gid_from_key("b"));
    }
}
