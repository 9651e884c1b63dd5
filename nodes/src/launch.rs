//! Launch files: TOML with a typed schema. Everything is validated before any node starts, and
//! every error names the file, the key and the reason.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rft_msgs::rmw_zenoh::validate_topic;
use serde::{Deserialize, Serialize};

use crate::bus::zenoh::ZenohConfig;
use crate::error::{Error, Result};
use crate::nodes::NodeParams;

/// The root of a launch file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchFile {
    /// Name of the launch; the run directory is `runs/<time>-<name>`.
    pub name: String,
    /// Stop after this many seconds (on the launch's clock). Absent: run until Ctrl-C.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Where run directories go.
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// Seconds between progress lines.
    #[serde(default = "default_progress_s")]
    pub progress_s: f64,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// The sim pipeline (demos, reward classifiers, pre-training, reset-free fine-tuning,
    /// evaluation) that `rft launch` runs before the nodes.
    #[serde(default)]
    pub pipeline: Option<crate::autonomy::pipeline::PipelineConfig>,
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_progress_s() -> f64 {
    5.0
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// One process, zero-copy channels.
    #[default]
    Inproc,
    /// Zenoh, wire-compatible with rmw_zenoh.
    Zenoh,
    /// Native ROS 2 over r2r (needs the `ros2` cargo feature).
    Ros2,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    #[serde(default)]
    pub kind: BusKind,
    /// ROS_DOMAIN_ID.
    #[serde(default)]
    pub domain_id: u32,
    #[serde(default)]
    pub zenoh: ZenohConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    #[default]
    Wall,
    Sim,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    #[serde(default)]
    pub kind: ClockKind,
}

/// One `[[nodes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub kind: String,
    /// Step rate; each kind has a default.
    #[serde(default)]
    pub rate_hz: Option<f64>,
    /// Topic remapping: name in the node's code → name on the bus.
    #[serde(default)]
    pub remap: BTreeMap<String, String>,
    /// Kind-specific parameters.
    #[serde(default)]
    pub params: toml::Table,
    /// A disabled node is checked like the others but not started (`--set nodes.N.enabled=false`).
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

/// A node entry with its parameters parsed.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub entry: NodeEntry,
    pub params: NodeParams,
}

/// A validated launch file.
#[derive(Debug, Clone)]
pub struct Launch {
    pub path: PathBuf,
    pub file: LaunchFile,
    pub nodes: Vec<NodeSpec>,
    /// The launch file with every `--set` applied, as TOML text.
    pub resolved: String,
}

fn launch_err(path: &Path, key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Launch {
        path: path.to_path_buf(),
        key: key.into(),
        reason: reason.into(),
    }
}

/// Reads, overrides and validates a launch file.
pub fn load(path: &Path, overrides: &[String]) -> Result<Launch> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| launch_err(path, "(file)", format!("cannot read launch file: {e}")))?;
    parse(path, &text, overrides)
}

/// Validates launch-file text; `path` is used in error messages.
pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<Launch> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        let loc = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        launch_err(path, "(syntax)", format!("{msg}{loc}"))
    })?;
    for o in overrides {
        apply_override(path, &mut table, o)?;
    }
    if let Some(toml::Value::Table(p)) = table.get_mut("pipeline") {
        *p = crate::autonomy::pipeline::with_defaults(std::mem::take(p));
    }
    let resolved = toml::to_string_pretty(&table).unwrap_or_default();
    let file: LaunchFile =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            launch_err(
                path,
                if key == "." { "(root)".into() } else { key },
                e.into_inner().to_string(),
            )
        })?;
    let nodes = validate(path, &file)?;
    Ok(Launch {
        path: path.to_path_buf(),
        file,
        nodes,
        resolved,
    })
}

fn validate(path: &Path, f: &LaunchFile) -> Result<Vec<NodeSpec>> {
    let err = |k: &str, r: String| launch_err(path, k, r);
    if f.name.trim().is_empty() || f.name.contains(['/', '\\']) {
        return Err(err(
            "name",
            format!("`{}` must be a non-empty name without slashes", f.name),
        ));
    }
    if let Some(d) = f.duration_s
        && !(d.is_finite() && d > 0.0)
    {
        return Err(err(
            "duration_s",
            format!("must be a positive number of seconds, got {d}"),
        ));
    }
    if let Some(p) = &f.pipeline
        && p.enabled
    {
        p.validate().map_err(|e| {
            let e = e.under("pipeline");
            err(&e.key, e.reason)
        })?;
    }
    if !(f.progress_s.is_finite() && f.progress_s > 0.0) {
        return Err(err(
            "progress_s",
            format!("must be positive, got {}", f.progress_s),
        ));
    }
    if f.bus.kind == BusKind::Ros2 && !cfg!(feature = "ros2") {
        return Err(err(
            "bus.kind",
            "`ros2` needs rft built with `--features ros2` and a sourced ROS 2; use `zenoh` to talk to ROS 2 over rmw_zenoh".into(),
        ));
    }
    let z = &f.bus.zenoh;
    if !matches!(z.mode.as_str(), "peer" | "client" | "router") {
        return Err(err(
            "bus.zenoh.mode",
            format!("`{}` is not one of peer, client, router", z.mode),
        ));
    }
    for (k, eps) in [
        ("bus.zenoh.listen", &z.listen),
        ("bus.zenoh.connect", &z.connect),
    ] {
        for (i, ep) in eps.iter().enumerate() {
            let ok = ep
                .split_once('/')
                .is_some_and(|(proto, addr)| !proto.is_empty() && !addr.is_empty());
            if !ok {
                return Err(err(
                    &format!("{k}[{i}]"),
                    format!("`{ep}` is not an endpoint like tcp/127.0.0.1:7447"),
                ));
            }
        }
    }
    if let Some(cf) = &z.config_file
        && !cf.is_file()
    {
        return Err(err(
            "bus.zenoh.config_file",
            format!("file `{}` does not exist", cf.display()),
        ));
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    for (i, n) in f.nodes.iter().enumerate() {
        let k = |field: &str| format!("nodes[{i}].{field}");
        if n.name.is_empty()
            || !n
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err(
                &k("name"),
                format!(
                    "`{}` must be non-empty and use only A-Z, a-z, 0-9, _",
                    n.name
                ),
            ));
        }
        if !seen.insert(n.name.as_str()) {
            return Err(err(&k("name"), format!("duplicate node name `{}`", n.name)));
        }
        if let Some(r) = n.rate_hz
            && !(r.is_finite() && r > 0.0)
        {
            return Err(err(
                &k("rate_hz"),
                format!("must be a positive rate, got {r}"),
            ));
        }
        for (from, to) in &n.remap {
            for t in [from, to] {
                validate_topic(t)
                    .map_err(|reason| err(&k(&format!("remap.\"{from}\"")), reason))?;
            }
        }
        let mut params = NodeParams::parse(&n.kind, &n.params).map_err(|e| {
            if e.key.is_empty() {
                err(&k("kind"), e.reason)
            } else {
                err(&k(&format!("params.{}", e.key)), e.reason)
            }
        })?;
        params.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        params
            .validate()
            .map_err(|e| err(&k(&format!("params.{}", e.key)), e.reason))?;
        if n.enabled {
            specs.push(NodeSpec {
                entry: n.clone(),
                params,
            });
        }
    }
    Ok(specs)
}

/// Applies `a.b.c=value` (value parsed as TOML, else taken as a string). Numeric segments index
/// arrays: `nodes.0.rate_hz=20`.
pub fn apply_override(path: &Path, table: &mut toml::Table, o: &str) -> Result<()> {
    let Some((key, raw)) = o.split_once('=') else {
        return Err(launch_err(path, o, "--set needs KEY=VALUE"));
    };
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let segs: Vec<&str> = key.split('.').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(launch_err(path, key, "empty key segment in --set"));
    }
    let mut root = toml::Value::Table(std::mem::take(table));
    let res = set_path(&mut root, &segs, value).map_err(|reason| launch_err(path, key, reason));
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
