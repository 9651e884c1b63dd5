//! `.msg` definitions: a parser, REP-2016 (RIHS01) type hashes and `ros2msg` schema text.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Every definition rft knows, as `(full type name, .msg text)`.
pub const DEFINITIONS: &[(&str, &str)] = &[
    (
        "builtin_interfaces/msg/Time",
        include_str!("../defs/builtin_interfaces/msg/Time.msg"),
    ),
    (
        "std_msgs/msg/Header",
        include_str!("../defs/std_msgs/msg/Header.msg"),
    ),
    (
        "std_msgs/msg/Bool",
        include_str!("../defs/std_msgs/msg/Bool.msg"),
    ),
    (
        "std_msgs/msg/String",
        include_str!("../defs/std_msgs/msg/String.msg"),
    ),
    (
        "std_msgs/msg/MultiArrayDimension",
        include_str!("../defs/std_msgs/msg/MultiArrayDimension.msg"),
    ),
    (
        "std_msgs/msg/MultiArrayLayout",
        include_str!("../defs/std_msgs/msg/MultiArrayLayout.msg"),
    ),
    (
        "std_msgs/msg/Float64MultiArray",
        include_str!("../defs/std_msgs/msg/Float64MultiArray.msg"),
    ),
    (
        "sensor_msgs/msg/JointState",
        include_str!("../defs/sensor_msgs/msg/JointState.msg"),
    ),
    (
        "sensor_msgs/msg/Image",
        include_str!("../defs/sensor_msgs/msg/Image.msg"),
    ),
    (
        "sensor_msgs/msg/CompressedImage",
        include_str!("../defs/sensor_msgs/msg/CompressedImage.msg"),
    ),
    (
        "sensor_msgs/msg/RegionOfInterest",
        include_str!("../defs/sensor_msgs/msg/RegionOfInterest.msg"),
    ),
    (
        "sensor_msgs/msg/CameraInfo",
        include_str!("../defs/sensor_msgs/msg/CameraInfo.msg"),
    ),
    (
        "geometry_msgs/msg/Vector3",
        include_str!("../defs/geometry_msgs/msg/Vector3.msg"),
    ),
    (
        "geometry_msgs/msg/Point",
        include_str!("../defs/geometry_msgs/msg/Point.msg"),
    ),
    (
        "geometry_msgs/msg/Quaternion",
        include_str!("../defs/geometry_msgs/msg/Quaternion.msg"),
    ),
    (
        "geometry_msgs/msg/Twist",
        include_str!("../defs/geometry_msgs/msg/Twist.msg"),
    ),
    (
        "geometry_msgs/msg/TwistStamped",
        include_str!("../defs/geometry_msgs/msg/TwistStamped.msg"),
    ),
    (
        "geometry_msgs/msg/Pose",
        include_str!("../defs/geometry_msgs/msg/Pose.msg"),
    ),
    (
        "geometry_msgs/msg/PoseStamped",
        include_str!("../defs/geometry_msgs/msg/PoseStamped.msg"),
    ),
    ("rft_msgs/msg/Action", include_str!("../msg/Action.msg")),
    (
        "rft_msgs/msg/Transition",
        include_str!("../msg/Transition.msg"),
    ),
    ("rft_msgs/msg/Reward", include_str!("../msg/Reward.msg")),
    (
        "rft_msgs/msg/PolicyUpdate",
        include_str!("../msg/PolicyUpdate.msg"),
    ),
    (
        "rft_msgs/msg/EpisodePhase",
        include_str!("../msg/EpisodePhase.msg"),
    ),
    (
        "rft_msgs/msg/SafetyStatus",
        include_str!("../msg/SafetyStatus.msg"),
    ),
    ("rft_msgs/msg/Metric", include_str!("../msg/Metric.msg")),
    (
        "rft_msgs/msg/Obstacles",
        include_str!("../msg/Obstacles.msg"),
    ),
    (
        "rft_msgs/msg/SceneReset",
        include_str!("../msg/SceneReset.msg"),
    ),
];

/// How many elements a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arity {
    Single,
    Fixed(usize),
    Bounded(usize),
    Unbounded,
}

/// The element type of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// A primitive such as `float64`, or `string`, with a string bound (0 = unbounded).
    Primitive { name: String, string_bound: usize },
    /// A nested message, by full name (`pkg/msg/Name`).
    Nested(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
    pub arity: Arity,
}

const PRIMITIVES: &[(&str, u8)] = &[
    ("int8", 2),
    ("uint8", 3),
    ("int16", 4),
    ("uint16", 5),
    ("int32", 6),
    ("uint32", 7),
    ("int64", 8),
    ("uint64", 9),
    ("float32", 10),
    ("float64", 11),
    ("char", 13),
    ("bool", 15),
    ("byte", 16),
    ("string", 17),
];

/// Parses the fields of a `.msg` text (constants and comments are skipped; they are not part of
/// the wire format or of the type hash).
pub fn parse(type_name: &str, text: &str) -> Result<Vec<Field>> {
    let package = type_name.split('/').next().unwrap_or_default();
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |reason: String| Error::Definition {
            type_name: type_name.to_string(),
            line: i + 1,
            reason,
        };
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(ty), Some(name)) = (parts.next(), parts.next()) else {
            return Err(err(format!("expected `type name`, found `{line}`")));
        };
        if name.contains('=') || parts.clone().next().is_some_and(|p| p.starts_with('=')) {
            continue; // constant
        }
        let (base, arity) = match ty.find('[') {
            None => (ty, Arity::Single),
            Some(open) => {
                let inner = ty[open + 1..]
                    .strip_suffix(']')
                    .ok_or_else(|| err(format!("unclosed array brackets in `{ty}`")))?;
                let arity = if inner.is_empty() {
                    Arity::Unbounded
                } else if let Some(n) = inner.strip_prefix("<=") {
                    Arity::Bounded(n.parse().map_err(|_| err(format!("bad bound `{inner}`")))?)
                } else {
                    Arity::Fixed(
                        inner
                            .parse()
                            .map_err(|_| err(format!("bad array size `{inner}`")))?,
                    )
                };
                (&ty[..open], arity)
            }
        };
        let kind = if let Some(bound) = base.strip_prefix("string<=") {
            FieldKind::Primitive {
                name: "string".into(),
                string_bound: bound
                    .parse()
                    .map_err(|_| err(format!("bad string bound `{base}`")))?,
            }
        } else if PRIMITIVES.iter().any(|(p, _)| *p == base) {
            FieldKind::Primitive {
                name: base.into(),
                string_bound: 0,
            }
        } else {
            FieldKind::Nested(match base.split('/').collect::<Vec<_>>().as_slice() {
                [name] if *name == "Header" => "std_msgs/msg/Header".to_string(),
                [name] => format!("{package}/msg/{name}"),
                [pkg, name] => format!("{pkg}/msg/{name}"),
                [pkg, "msg", name] => format!("{pkg}/msg/{name}"),
                _ => return Err(err(format!("bad type name `{base}`"))),
            })
        };
        fields.push(Field {
            name: name.to_string(),
            kind,
            arity,
        });
    }
    Ok(fields)
}

/// Looks up the `.msg` text of a type by its full name.
pub fn definition(type_name: &str) -> Option<&'static str> {
    DEFINITIONS
        .iter()
        .find(|(n, _)| *n == type_name)
        .map(|(_, t)| *t)
}

/// The type and all types it references (recursively), sorted by name, the type itself included.
pub fn closure(type_name: &str) -> Result<BTreeMap<String, Vec<Field>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![type_name.to_string()];
    while let Some(t) = todo.pop() {
        if out.contains_key(&t) {
            continue;
        }
        let text = definition(&t).ok_or_else(|| Error::UnknownType(t.clone()))?;
        let fields = parse(&t, text)?;
        for f in &fields {
            if let FieldKind::Nested(n) = &f.kind {
                todo.push(n.clone());
            }
        }
        out.insert(t, fields);
    }
    Ok(out)
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn describe(out: &mut String, type_name: &str, fields: &[Field]) {
    out.push_str("{\"type_name\": ");
    json_str(out, type_name);
    out.push_str(", \"fields\": [");
    let dummy = [Field {
        name: "structure_needs_at_least_one_member".into(),
        kind: FieldKind::Primitive {
            name: "uint8".into(),
            string_bound: 0,
        },
        arity: Arity::Single,
    }];
    let fields = if fields.is_empty() {
        &dummy[..]
    } else {
        fields
    };
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let (increment, capacity) = match f.arity {
            Arity::Single => (0, 0),
            Arity::Fixed(n) => (48, n),
            Arity::Bounded(n) => (96, n),
            Arity::Unbounded => (144, 0),
        };
        let (base_id, string_capacity, nested) = match &f.kind {
            FieldKind::Nested(n) => (1, 0, n.as_str()),
            FieldKind::Primitive { string_bound, .. } if *string_bound > 0 => {
                (21, *string_bound, "")
            }
            FieldKind::Primitive { name, .. } => {
                let id = PRIMITIVES
                    .iter()
                    .find(|(p, _)| p == name)
                    .map_or(0, |(_, id)| *id);
                (id, 0, "")
            }
        };
        out.push_str("{\"name\": ");
        json_str(out, &f.name);
        out.push_str(&format!(
            ", \"type\": {{\"type_id\": {}, \"capacity\": {capacity}, \"string_capacity\": {string_capacity}, \"nested_type_name\": ",
            u32::from(base_id) + increment
        ));
        json_str(out, nested);
        out.push_str("}}");
    }
    out.push_str("]}");
}

/// The REP-2016 type description of `type_name` as the JSON text that is hashed.
pub fn type_description_json(type_name: &str) -> Result<String> {
    let all = closure(type_name)?;
    let mut out = String::from("{\"type_description\": ");
    let main = all
        .get(type_name)
        .ok_or_else(|| Error::UnknownType(type_name.into()))?;
    describe(&mut out, type_name, main);
    out.push_str(", \"referenced_type_descriptions\": [");
    let mut first = true;
    for (name, fields) in all.iter().filter(|(n, _)| n.as_str() != type_name) {
        if !first {
            out.push_str(", ");
        }
        first = false;
        describe(&mut out, name, fields);
    }
    out.push_str("]}");
    Ok(out)
}

/// The RIHS01 type hash, e.g. `RIHS01_a13e…` for `sensor_msgs/msg/JointState`.
pub fn rihs01(type_name: &str) -> Result<String> {
    let json = type_description_json(type_name)?;
    let digest = Sha256::digest(json.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("RIHS01_");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

/// The `ros2msg` schema text (as rosbag2 writes into MCAP): the type's definition followed by
/// every referenced definition under a `MSG: pkg/Name` separator.
pub fn ros2msg_schema(type_name: &str) -> Result<String> {
    let all = closure(type_name)?;
    let mut out = definition(type_name)
        .ok_or_else(|| Error::UnknownType(type_name.into()))?
        .to_string();
    for name in all.keys().filter(|n| n.as_str() != type_name) {
        let short = name.replace("/msg/", "/");
        out.push_str(&format!("\n{}\nMSG: {short}\n", "=".repeat(80)));
        out.push_str(definition(name).unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_hashes_match() {
        let vectors = [
            (
                "sensor_msgs/msg/JointState",
                "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
            ),
            (
                "sensor_msgs/msg/Image",
                "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
            ),
            (
                "std_msgs/msg/Float64MultiArray",
                "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f",
            ),
            (
                "geometry_msgs/msg/Twist",
                "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a",
            ),
        ];
        for (ty, hash) in vectors {
            assert_eq!(rihs01(ty).unwrap(), hash, "{ty}");
        }
    }

    #[test]
    fn parser_handles_arrays_bounds_constants_and_defaults() {
        let text =
            "uint8 A=1\nfloat64[9] k # comment\nstring<=5[<=3] names\nfloat64 w 1\nHeader h\n";
        let f = parse("x/msg/Y", text).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].arity, Arity::Fixed(9));
        assert_eq!(f[1].arity, Arity::Bounded(3));
        assert_eq!(
            f[1].kind,
            FieldKind::Primitive {
                name: "string".into(),
                string_bound: 5
            }
        );
        assert_eq!(f[3].kind, FieldKind::Nested("std_msgs/msg/Header".into()));
        assert!(parse("x/msg/Y", "float64[9 k").is_err());
        assert!(parse("x/msg/Y", "lonely").is_err());
    }

    #[test]
    fn schema_lists_every_dependency_once() {
        let s = ros2msg_schema("sensor_msgs/msg/CameraInfo").unwrap();
        for dep in [
            "MSG: std_msgs/Header",
            "MSG: builtin_interfaces/Time",
            "MSG: sensor_msgs/RegionOfInterest",
        ] {
            assert_eq!(s.matches(dep).count(), 1, "{dep} in\n{s}");
        }
    }
}
