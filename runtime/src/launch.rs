//! Launch files: TOML with a typed schema. Everything is validated before any node starts, and
//! every error names the file, the key path and the reason.
//!
//! The runtime knows no node kind. Each kind implements [`NodeKind`] (its name, its parameters
//! type, default rate, the file paths it holds, validation and how to build the node) and is
//! registered in a [`Registry`]; [`parse`] reads every `[[nodes]]` entry through it.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rft_config::ConfigError;
use rft_msgs::rmw_zenoh::validate_topic;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bus::NodeHandle;
use crate::bus::zenoh::ZenohConfig;
use crate::error::{Error, Result};
use crate::executor::Node;

/// What a node may need from the launch beyond its own parameters.
#[derive(Debug, Clone)]
pub struct LaunchCtx {
    /// `runs/<time>-<name>`.
    pub run_dir: PathBuf,
}

/// A node kind: the parameters of its `[[nodes]]` entry, and how to build the node from them.
///
/// Implemented on the parameters type (a `serde` struct with `deny_unknown_fields`, each default
/// written once), registered with [`Registry::with`].
pub trait NodeKind: DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// The name launch files use: `kind = "safety_filter"`.
    const KIND: &'static str;
    /// Step rate when the entry gives no `rate_hz`.
    const DEFAULT_RATE_HZ: f64;
    /// Observers (recorders) stop after every other node, so they see the final commands.
    const OBSERVER: bool = false;

    /// Every file path in the parameters. The runtime resolves them, for every kind alike: a
    /// relative path from the launch file's directory when the file is loaded, and a path that
    /// starts with `{run_dir}` inside the run directory when the node is built.
    fn paths(&mut self) -> Vec<&mut PathBuf> {
        Vec::new()
    }

    /// Checks values the types alone cannot; keys are relative to `params`.
    fn validate(&self) -> rft_config::Result<()>;

    /// Builds the node; `period` comes from `rate_hz` or [`Self::DEFAULT_RATE_HZ`].
    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>>;
}

/// A node's parsed, validated parameters, of whichever kind ([`NodeSpec::params`]).
pub trait NodeConfig: Any + fmt::Debug + Send + Sync {
    fn kind(&self) -> &'static str;
    fn default_rate_hz(&self) -> f64;
    fn is_observer(&self) -> bool;
    fn clone_box(&self) -> Box<dyn NodeConfig>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Resolves `{run_dir}` in the paths, then builds the node.
    fn build_in(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>>;
}

impl<K: NodeKind> NodeConfig for K {
    fn kind(&self) -> &'static str {
        K::KIND
    }
    fn default_rate_hz(&self) -> f64 {
        K::DEFAULT_RATE_HZ
    }
    fn is_observer(&self) -> bool {
        K::OBSERVER
    }
    fn clone_box(&self) -> Box<dyn NodeConfig> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn build_in(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        let mut p = self.clone();
        for path in p.paths() {
            *path = in_run_dir(path, &ctx.run_dir);
        }
        p.build(name, period, bus, ctx)
    }
}

impl Clone for Box<dyn NodeConfig> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// `{run_dir}/x` → `<run_dir>/x`; anything else unchanged.
pub fn in_run_dir(p: &Path, run_dir: &Path) -> PathBuf {
    match p.strip_prefix("{run_dir}") {
        Ok(rest) => run_dir.join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// Makes `p` relative to `base` unless it is absolute or inside the run directory.
pub fn resolve_path(p: &mut PathBuf, base: &Path) {
    if p.is_relative() && !p.starts_with("{run_dir}") {
        *p = base.join(&*p);
    }
}

trait ErasedKind: Send + Sync {
    fn kind(&self) -> &'static str;
    fn parse(&self, params: &toml::Table, base: &Path) -> rft_config::Result<Box<dyn NodeConfig>>;
}

struct KindOf<K>(PhantomData<fn() -> K>);

impl<K: NodeKind> ErasedKind for KindOf<K> {
    fn kind(&self) -> &'static str {
        K::KIND
    }
    fn parse(&self, params: &toml::Table, base: &Path) -> rft_config::Result<Box<dyn NodeConfig>> {
        let mut p: K = rft_config::from_table(params).map_err(|e| {
            if e.key.is_empty() {
                ConfigError::new("(params)", e.reason)
            } else {
                e
            }
        })?;
        for path in p.paths() {
            resolve_path(path, base);
        }
        p.validate()?;
        Ok(Box::new(p))
    }
}

/// Completes and checks an extra top-level table of the launch file (the sim pipeline's
/// `[pipeline]`): fills in defaults, so the resolved launch file shows them, and validates.
pub type SectionHook = fn(&mut toml::Table) -> rft_config::Result<()>;

/// The node kinds a launch file may name.
#[derive(Default)]
pub struct Registry {
    kinds: Vec<Box<dyn ErasedKind>>,
    pipeline: Option<SectionHook>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the node kind `K`.
    #[must_use]
    pub fn with<K: NodeKind>(mut self) -> Self {
        self.kinds.push(Box::new(KindOf::<K>(PhantomData)));
        self
    }

    /// Sets the hook that completes and checks the `[pipeline]` table.
    #[must_use]
    pub fn with_pipeline(mut self, hook: SectionHook) -> Self {
        self.pipeline = Some(hook);
        self
    }

    /// The registered kinds' names, in registration order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.kind()).collect()
    }

    fn parse(
        &self,
        kind: &str,
        params: &toml::Table,
        base: &Path,
    ) -> rft_config::Result<Box<dyn NodeConfig>> {
        let Some(k) = self.kinds.iter().find(|k| k.kind() == kind) else {
            return Err(ConfigError::new(
                "",
                format!(
                    "unknown node kind `{kind}`; known kinds: {}",
                    self.kinds().join(", ")
                ),
            ));
        };
        k.parse(params, base)
    }
}

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
    /// evaluation) that `rft launch` runs before the nodes; completed and checked by the
    /// registry's pipeline hook (`rft_autonomy::pipeline::PipelineConfig` reads it).
    #[serde(default)]
    pub pipeline: Option<toml::Table>,
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

/// How the nodes are run.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// One thread per node, timers on the clock (what a robot runs).
    #[default]
    Threads,
    /// One thread, nodes stepped in launch-file order, simulated time moved only when every
    /// node has answered: as fast as the CPU allows, and the same seed gives the same run.
    /// Needs `kind = "sim"` and the in-process bus.
    Lockstep,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    #[serde(default)]
    pub kind: ClockKind,
    #[serde(default)]
    pub executor: ExecutorKind,
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
    pub params: Box<dyn NodeConfig>,
}

impl NodeSpec {
    /// The parameters as their kind's type (`None` for another kind).
    pub fn params<K: NodeKind>(&self) -> Option<&K> {
        self.params.as_any().downcast_ref()
    }

    /// The parameters as their kind's type, to change before the node is built.
    pub fn params_mut<K: NodeKind>(&mut self) -> Option<&mut K> {
        self.params.as_any_mut().downcast_mut()
    }

    /// The step period: `rate_hz`, or the kind's default rate.
    pub fn period(&self) -> Duration {
        let rate = self
            .entry
            .rate_hz
            .unwrap_or_else(|| self.params.default_rate_hz());
        Duration::from_secs_f64(1.0 / rate)
    }
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

fn config_err(path: &Path, e: ConfigError) -> Error {
    launch_err(path, e.key, e.reason)
}

/// Reads, overrides and validates a launch file.
pub fn load(registry: &Registry, path: &Path, overrides: &[String]) -> Result<Launch> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| launch_err(path, "(file)", format!("cannot read launch file: {e}")))?;
    parse(registry, path, &text, overrides)
}

/// Validates launch-file text; `path` is used in error messages.
pub fn parse(registry: &Registry, path: &Path, text: &str, overrides: &[String]) -> Result<Launch> {
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
    if let (Some(toml::Value::Table(p)), Some(hook)) =
        (table.get_mut("pipeline"), registry.pipeline)
    {
        hook(p).map_err(|e| config_err(path, e.under("pipeline")))?;
    }
    let resolved = toml::to_string_pretty(&table).unwrap_or_default();
    let file: LaunchFile = rft_config::from_table(&table).map_err(|e| {
        let key = if e.key.is_empty() {
            "(root)".into()
        } else {
            e.key
        };
        launch_err(path, key, e.reason)
    })?;
    let nodes = validate(registry, path, &file)?;
    Ok(Launch {
        path: path.to_path_buf(),
        file,
        nodes,
        resolved,
    })
}

fn validate(registry: &Registry, path: &Path, f: &LaunchFile) -> Result<Vec<NodeSpec>> {
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
    if !(f.progress_s.is_finite() && f.progress_s > 0.0) {
        return Err(err(
            "progress_s",
            format!("must be positive, got {}", f.progress_s),
        ));
    }
    if f.clock.executor == ExecutorKind::Lockstep {
        if f.clock.kind != ClockKind::Sim {
            return Err(err(
                "clock.executor",
                "`lockstep` needs simulated time: set clock.kind = \"sim\"".into(),
            ));
        }
        if f.bus.kind != BusKind::Inproc {
            return Err(err(
                "clock.executor",
                "`lockstep` runs every node in this process on one thread: set bus.kind = \"inproc\" (or executor = \"threads\" for other buses)".into(),
            ));
        }
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
        let base = path.parent().unwrap_or(Path::new("."));
        let params = registry.parse(&n.kind, &n.params, base).map_err(|e| {
            if e.key.is_empty() {
                err(&k("kind"), e.reason)
            } else {
                err(&k(&format!("params.{}", e.key)), e.reason)
            }
        })?;
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
    rft_config::apply_override(table, o).map_err(|e| config_err(path, e))
}
