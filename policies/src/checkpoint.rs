//! Crash-safe, resumable checkpoints.
//!
//! A checkpoint is a directory `<root>/step-<N>/` holding `model.safetensors` (all network
//! weights), `optim.safetensors` (Adam moments), `policy.safetensors` (the actor as policy
//! bytes), optionally `replay.safetensors`, and `meta.json` (specs, configs, counters, version,
//! git sha and the SHA-256 of every other file). It is built under a temporary name, each file
//! fsynced, then renamed into place; `<root>/LATEST` names the newest complete one and is
//! replaced atomically last. A crash at any point leaves the previous checkpoint intact and
//! `LATEST` pointing at it. Loading verifies sizes and hashes and refuses anything that does not
//! match, naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent::{Agent, AgentConfig};
use crate::error::{Error, Result};
use crate::handle::policy_bytes;
use crate::normalize::ObsNorm;
use crate::optim::ScalarAdam;
use crate::replay::ReplayBuffer;
use crate::store::{atomic_write, from_bytes, named_to_candle, raw_from_named, to_bytes};

pub const CHECKPOINT_FORMAT: u32 = 1;
const LATEST: &str = "LATEST";

/// A file inside a checkpoint and its integrity data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// `meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    pub format: u32,
    pub rft_version: String,
    pub git_sha: String,
    pub created_unix_s: u64,
    pub agent: AgentConfig,
    pub norm: ObsNorm,
    pub grad_steps: u64,
    /// Environment / robot steps seen by the learner.
    pub env_steps: u64,
    /// Version of the last published policy.
    pub policy_version: u64,
    pub log_alpha: ScalarAdam,
    pub log_cql_alpha: ScalarAdam,
    pub optimizer_steps: (u64, u64),
    /// Anything else the trainer wants back on resume (its own config, counters).
    pub extra: serde_json::Value,
    pub files: std::collections::BTreeMap<String, FileEntry>,
}

/// What a loaded checkpoint gives back besides the agent.
pub struct Restored {
    pub agent: Agent,
    pub replay: Option<ReplayBuffer>,
    pub meta: CheckpointMeta,
    pub dir: PathBuf,
}

/// Lower-case hex SHA-256 (checkpoint manifests, `PolicyUpdate.sha256`).
pub fn sha256_hex(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes a checkpoint of `agent` (and `replay`) under `root` and points `LATEST` at it;
/// keeps the newest `keep` checkpoints. Returns the checkpoint directory.
pub fn save(
    root: &Path,
    agent: &Agent,
    replay: Option<&ReplayBuffer>,
    env_steps: u64,
    policy_version: u64,
    extra: serde_json::Value,
    keep: usize,
) -> Result<PathBuf> {
    let policy = policy_bytes(agent, policy_version)?;
    save_with_policy(
        root,
        agent,
        policy,
        replay,
        env_steps,
        policy_version,
        extra,
        keep,
    )
}

/// [`save`], with `policy` (policy bytes) as the checkpoint's `policy.safetensors` instead of
/// the agent's actor: the policy that acts when it is not the actor itself (a moving average).
#[allow(clippy::too_many_arguments)]
pub fn save_with_policy(
    root: &Path,
    agent: &Agent,
    policy: Vec<u8>,
    replay: Option<&ReplayBuffer>,
    env_steps: u64,
    policy_version: u64,
    extra: serde_json::Value,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let name = format!("step-{:010}", agent.steps);
    let dir = root.join(&name);
    if dir.exists() {
        return Err(Error::ckpt(
            &dir,
            "already exists (a checkpoint for this step was written before)",
        ));
    }
    let tmp = root.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| -> Result<()> {
        let mut files = std::collections::BTreeMap::new();
        let mut put = |fname: &str, bytes: Vec<u8>| -> Result<()> {
            files.insert(
                fname.to_string(),
                FileEntry {
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
            );
            atomic_write(&tmp.join(fname), &bytes)
        };
        put(
            "model.safetensors",
            to_bytes(&raw_from_named(&agent.weights())?, HashMap::new())?,
        )?;
        put(
            "optim.safetensors",
            to_bytes(&raw_from_named(&agent.optimizer_state()?)?, HashMap::new())?,
        )?;
        put("policy.safetensors", policy)?;
        if let Some(r) = replay {
            let p = tmp.join("replay.safetensors");
            r.save(&p)?;
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            files.insert(
                "replay.safetensors".into(),
                FileEntry {
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
            );
        }
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT,
            rft_version: env!("CARGO_PKG_VERSION").into(),
            git_sha: env!("RFT_GIT_SHA").into(),
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            agent: agent.cfg.clone(),
            norm: agent.norm.clone(),
            grad_steps: agent.steps,
            env_steps,
            policy_version,
            log_alpha: agent.log_alpha.clone(),
            log_cql_alpha: agent.log_cql_alpha.clone(),
            optimizer_steps: agent.optimizer_steps(),
            extra,
            files,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Spec(e.to_string()))?;
        atomic_write(&tmp.join("meta.json"), &json)?;
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        if let Ok(d) = std::fs::File::open(root) {
            d.sync_all().map_err(|e| Error::io(root, e))?;
        }
        atomic_write(&root.join(LATEST), name.as_bytes())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    prune(root, keep, &name);
    Ok(dir)
}

/// Removes all but the newest `keep` complete checkpoints (never `current`) and leftovers of
/// interrupted writes by other processes.
fn prune(root: &Path, keep: usize, current: &str) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let mut steps: Vec<String> = Vec::new();
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("step-") {
            steps.push(n);
        } else if n.starts_with(".step-") && n.contains(".partial-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for n in steps.into_iter().take(excess) {
        if n != current {
            let _ = std::fs::remove_dir_all(root.join(n));
        }
    }
}

/// The directory `LATEST` points at, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    let p = root.join(LATEST);
    match std::fs::read_to_string(&p) {
        Ok(s) => {
            let name = s.trim();
            if name.is_empty() || name.contains('/') || name.contains("..") {
                return Err(Error::ckpt(&p, format!("bad pointer {name:?}")));
            }
            Ok(Some(root.join(name)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// Reads and verifies `meta.json` and returns each listed file's verified bytes.
fn read_verified(dir: &Path) -> Result<(CheckpointMeta, HashMap<String, Vec<u8>>)> {
    let mp = dir.join("meta.json");
    let raw = std::fs::read(&mp).map_err(|e| Error::ckpt(&mp, format!("cannot read: {e}")))?;
    let meta: CheckpointMeta = serde_json::from_slice(&raw)
        .map_err(|e| Error::ckpt(&mp, format!("corrupt metadata: {e}")))?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(Error::ckpt(
            &mp,
            format!(
                "checkpoint format {} (this build reads {CHECKPOINT_FORMAT})",
                meta.format
            ),
        ));
    }
    let mut out = HashMap::new();
    for (name, entry) in &meta.files {
        let p = dir.join(name);
        let b = std::fs::read(&p).map_err(|e| Error::ckpt(&p, format!("cannot read: {e}")))?;
        if b.len() as u64 != entry.bytes || sha256_hex(&b) != entry.sha256 {
            return Err(Error::ckpt(
                &p,
                format!(
                    "corrupt: {} bytes, expected {} with sha256 {}…",
                    b.len(),
                    entry.bytes,
                    &entry.sha256[..12.min(entry.sha256.len())]
                ),
            ));
        }
        out.insert(name.clone(), b);
    }
    for required in [
        "model.safetensors",
        "optim.safetensors",
        "policy.safetensors",
    ] {
        if !out.contains_key(required) {
            return Err(Error::ckpt(
                dir,
                format!("{required} is not listed in meta.json"),
            ));
        }
    }
    Ok((meta, out))
}

/// Loads and verifies the checkpoint in `dir`. With `expect`, the checkpoint's network shape
/// (observation/action sizes, tasks, layers, ensemble, encoder) must match it.
pub fn load(
    dir: &Path,
    expect: Option<&AgentConfig>,
    dev: &candle_core::Device,
) -> Result<Restored> {
    let (meta, files) = read_verified(dir)?;
    if let Some(want) = expect {
        check_shape(dir, &meta.agent, want)?;
    }
    let mut agent = Agent::new(meta.agent.clone(), dev)?;
    let get = |n: &str| files.get(n).map(Vec::as_slice).unwrap_or_default();
    let model_path = dir.join("model.safetensors");
    let (w, _) = from_bytes(get("model.safetensors"), &model_path)?;
    agent
        .load_weights(&named_to_candle(&w, dev)?)
        .map_err(|e| Error::ckpt(&model_path, e.to_string()))?;
    let optim_path = dir.join("optim.safetensors");
    let (o, _) = from_bytes(get("optim.safetensors"), &optim_path)?;
    agent
        .load_optimizer_state(&named_to_candle(&o, dev)?, meta.optimizer_steps)
        .map_err(|e| Error::ckpt(&optim_path, e.to_string()))?;
    agent.norm = meta.norm.clone();
    agent.steps = meta.grad_steps;
    agent.log_alpha = meta.log_alpha.clone();
    agent.log_cql_alpha = meta.log_cql_alpha.clone();
    let replay = if files.contains_key("replay.safetensors") {
        Some(ReplayBuffer::load(&dir.join("replay.safetensors"))?)
    } else {
        None
    };
    Ok(Restored {
        agent,
        replay,
        meta,
        dir: dir.to_path_buf(),
    })
}

/// Loads the checkpoint `LATEST` points at under `root` (`Ok(None)` when there is none yet).
pub fn load_latest(
    root: &Path,
    expect: Option<&AgentConfig>,
    dev: &candle_core::Device,
) -> Result<Option<Restored>> {
    match latest(root)? {
        Some(dir) => load(&dir, expect, dev).map(Some),
        None => Ok(None),
    }
}

fn check_shape(dir: &Path, have: &AgentConfig, want: &AgentConfig) -> Result<()> {
    let mut diffs = Vec::new();
    macro_rules! cmp {
        ($f:ident) => {
            if have.$f != want.$f {
                diffs.push(format!(
                    "{} is {:?} in the checkpoint, {:?} in this run",
                    stringify!($f),
                    have.$f,
                    want.$f
                ));
            }
        };
    }
    cmp!(obs_dim);
    cmp!(act_dim);
    cmp!(num_tasks);
    cmp!(hidden);
    cmp!(actor_layer_norm);
    cmp!(critic_layer_norm);
    cmp!(n_critics);
    cmp!(encoder);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::ckpt(
            dir,
            format!("does not fit this run: {}", diffs.join("; ")),
        ))
    }
}
