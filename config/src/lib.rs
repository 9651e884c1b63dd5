//! Configuration errors that carry the key path, and the TOML helpers every configuration in
//! rft goes through.
//!
//! A crate that owns a configuration type validates it into [`ConfigError`]s keyed relative to
//! that type (`workspace_min`, `gains.alpha_min`); whoever embeds it adds the prefix
//! ([`ConfigError::under`]), so a launch-file error reads
//! `nodes[1].params.workspace_min: [2]: 0.9 must be below workspace_max[2] = 0.8`.

use serde::de::DeserializeOwned;

/// A value that is wrong, with the dotted key path that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted path from the configuration's root (`nodes[1].params.urdf`); empty when the
    /// whole value is wrong.
    pub key: String,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, ConfigError>;

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same error one level down: `under("pipeline")` turns `steps` into `pipeline.steps`.
    #[must_use]
    pub fn under(self, prefix: &str) -> Self {
        let key = match (prefix.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => prefix.to_string(),
            (false, false) if self.key.starts_with('[') => format!("{prefix}{}", self.key),
            (false, false) => format!("{prefix}.{}", self.key),
        };
        Self { key, ..self }
    }
}

/// `Ok(())` when `ok`, else the error for `key` with the reason `reason()` builds.
pub fn check(ok: bool, key: &str, reason: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, reason()))
    }
}

/// Deserialises a TOML table into `T`; an error names the key path inside the table
/// (`(root)` for the table itself).
pub fn from_table<T: DeserializeOwned>(t: &toml::Table) -> Result<T> {
    from_value(toml::Value::Table(t.clone()))
}

/// Deserialises a TOML value into `T` (see [`from_table`]).
pub fn from_value<T: DeserializeOwned>(v: toml::Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { String::new() } else { path };
        ConfigError::new(key, e.into_inner().to_string())
    })
}

/// Applies one `--set KEY=VALUE` to a TOML table: the value is parsed as TOML (a bare word that
/// is not TOML is taken as a string); numeric segments index arrays (`nodes.0.rate_hz=20`);
/// missing tables on the way are created.
pub fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let Some((key, raw)) = o.split_once('=') else {
        return Err(ConfigError::new(o, "--set needs KEY=VALUE"));
    };
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let segs: Vec<&str> = key.split('.').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::new(key, "empty key segment in --set"));
    }
    let mut root = toml::Value::Table(std::mem::take(table));
    let res = set_path(&mut root, &segs, value).map_err(|reason| ConfigError::new(key, reason));
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    res
}

fn set_path(
    cur: &mut toml::Value,
    segs: &[&str],
    value: toml::Value,
) -> std::result::Result<(), String> {
    let Some((first, rest)) = segs.split_first() else {
        *cur = value;
        return Ok(());
    };
    let next = match cur {
        toml::Value::Table(t) => t
            .entry(first.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(a) => {
            let idx: usize = first
                .parse()
                .map_err(|_| format!("`{first}` indexes an array; use a number"))?;
            let len = a.len();
            a.get_mut(idx)
                .ok_or_else(|| format!("index {idx} is past the {len} entries"))?
        }
        _ => return Err(format!("cannot set `{first}`: its parent is not a table")),
    };
    set_path(next, rest, value)
}

/// Merges `over` into `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_builds_dotted_and_indexed_paths() {
        let e = ConfigError::new("gains.alpha_min", "bad");
        assert_eq!(e.clone().under("params").key, "params.gains.alpha_min");
        assert_eq!(
            e.under("params").under("nodes[1]").to_string(),
            "nodes[1].params.gains.alpha_min: bad"
        );
        assert_eq!(
            ConfigError::new("[2]", "x").under("cameras").key,
            "cameras[2]"
        );
        assert_eq!(ConfigError::new("", "x").under("params").key, "params");
        assert_eq!(ConfigError::new("k", "x").under("").key, "k");
    }

    #[test]
    fn overrides_parse_toml_values_index_arrays_and_name_bad_keys() {
        let mut t: toml::Table =
            toml::from_str("[[nodes]]\nname = \"a\"\n[nodes.params]\nx = 1\n").unwrap();
        apply_override(&mut t, "nodes.0.params.x=2.5").unwrap();
        apply_override(&mut t, "nodes.0.params.s=word").unwrap();
        apply_override(&mut t, "new.table.k=[1, 2]").unwrap();
        assert_eq!(t["nodes"][0]["params"]["x"].as_float(), Some(2.5));
        assert_eq!(t["nodes"][0]["params"]["s"].as_str(), Some("word"));
        assert_eq!(t["new"]["table"]["k"].as_array().map(Vec::len), Some(2));
        let e = apply_override(&mut t, "nodes.3.name=b").unwrap_err();
        assert_eq!(e.key, "nodes.3.name");
        assert!(e.reason.contains("past the 1 entries"), "{e}");
        assert_eq!(
            apply_override(&mut t, "novalue").unwrap_err().key,
            "novalue"
        );
        assert!(apply_override(&mut t, "a..b=1").is_err());
    }

    #[test]
    fn deserialisation_errors_name_the_key() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[allow(dead_code)]
            rate_hz: f64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            #[allow(dead_code)]
            inner: Inner,
        }
        let t: toml::Table = toml::from_str("[inner]\nrate_hz = \"fast\"\n").unwrap();
        let e = from_table::<Outer>(&t).unwrap_err();
        assert_eq!(e.key, "inner.rate_hz");
        let t: toml::Table = toml::from_str("other = 1\n").unwrap();
        assert!(
            from_table::<Outer>(&t)
                .unwrap_err()
                .reason
                .contains("unknown field")
        );
    }

    #[test]
    fn merge_keeps_base_keys_and_replaces_leaves() {
        let mut base: toml::Table = toml::from_str("[a]\nx = 1\ny = 2\n").unwrap();
        merge(
            &mut base,
            toml::from_str("[a]\ny = 3\n[b]\nz = 4\n").unwrap(),
        );
        assert_eq!(base["a"]["x"].as_integer(), Some(1));
        assert_eq!(base["a"]["y"].as_integer(), Some(3));
        assert_eq!(base["b"]["z"].as_integer(), Some(4));
    }
}
