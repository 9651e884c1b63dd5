//! Offline datasets: episodes in memory or read from an MCAP recording written by
//! `rft record`, turned into a replay buffer with Monte-Carlo returns as Cal-QL defines them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rft_msgs::{Reward, Time, Transition};

use crate::error::{Error, Result};
use crate::replay::{ImageShape, ReplayBuffer, TransitionIn};

/// One recorded episode: `obs[t]`, `actions[t]`, `rewards[t]` for t < T, plus the final
/// observation `obs[T]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Episode {
    pub task_id: u8,
    pub obs: Vec<Vec<f32>>,
    pub actions: Vec<Vec<f32>>,
    pub rewards: Vec<f32>,
    /// The episode ended in a true terminal state (else it was cut by a time limit).
    pub terminated: bool,
    pub interventions: Vec<bool>,
    pub safety_overrides: Vec<bool>,
    /// Optional u8 images, one per observation (`obs.len()` of them).
    pub images: Vec<Vec<u8>>,
}

impl Episode {
    pub fn len(&self) -> usize {
        self.actions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
    pub fn total_reward(&self) -> f32 {
        self.rewards.iter().sum()
    }
    fn check(&self, i: usize) -> Result<()> {
        let t = self.actions.len();
        if self.obs.len() != t + 1 || self.rewards.len() != t {
            return Err(Error::Spec(format!(
                "episode {i}: {} observations, {} actions and {} rewards (need T+1, T, T)",
                self.obs.len(),
                t,
                self.rewards.len()
            )));
        }
        if !self.images.is_empty() && self.images.len() != t + 1 {
            return Err(Error::Spec(format!(
                "episode {i}: {} images for {} observations",
                self.images.len(),
                t + 1
            )));
        }
        Ok(())
    }
}

/// Cal-QL's return-to-go: `G_t = r_t + γ (1 − done_t) G_{t+1}` backwards from 0 after the
/// last step. With `sparse_negative = Some(r_neg)`, an episode whose rewards all equal
/// `r_neg` (a sparse-reward failure) gets `r_neg / (1 − γ)` everywhere, as if it never ended.
pub fn mc_returns(
    rewards: &[f32],
    terminated: bool,
    gamma: f32,
    sparse_negative: Option<f32>,
) -> Vec<f32> {
    if let Some(neg) = sparse_negative
        && !rewards.is_empty()
        && rewards.iter().all(|r| *r == neg)
    {
        return vec![neg / (1.0 - gamma); rewards.len()];
    }
    let mut out = vec![0.0; rewards.len()];
    let mut g = 0.0f32;
    for t in (0..rewards.len()).rev() {
        let done = terminated && t + 1 == rewards.len();
        g = rewards[t] + if done { 0.0 } else { gamma * g };
        out[t] = g;
    }
    out
}

/// Builds a replay buffer holding every transition of `episodes`, with MC returns.
pub fn buffer_from_episodes(
    episodes: &[Episode],
    gamma: f32,
    sparse_negative: Option<f32>,
    extra_capacity: usize,
) -> Result<ReplayBuffer> {
    let Some(first) = episodes.iter().find(|e| !e.is_empty()) else {
        return Err(Error::Spec("no non-empty episodes".into()));
    };
    let obs_dim = first.obs[0].len();
    let act_dim = first.actions[0].len();
    let image = match first.images.first() {
        Some(_) => {
            return Err(Error::Spec(
                "image episodes need an explicit shape: use buffer_from_image_episodes".into(),
            ));
        }
        None => None,
    };
    fill(
        episodes,
        gamma,
        sparse_negative,
        extra_capacity,
        obs_dim,
        act_dim,
        image,
    )
}

/// Like [`buffer_from_episodes`] for episodes carrying images of `shape`.
pub fn buffer_from_image_episodes(
    episodes: &[Episode],
    shape: ImageShape,
    gamma: f32,
    sparse_negative: Option<f32>,
    extra_capacity: usize,
) -> Result<ReplayBuffer> {
    let Some(first) = episodes.iter().find(|e| !e.is_empty()) else {
        return Err(Error::Spec("no non-empty episodes".into()));
    };
    fill(
        episodes,
        gamma,
        sparse_negative,
        extra_capacity,
        first.obs[0].len(),
        first.actions[0].len(),
        Some(shape),
    )
}

fn fill(
    episodes: &[Episode],
    gamma: f32,
    sparse_negative: Option<f32>,
    extra_capacity: usize,
    obs_dim: usize,
    act_dim: usize,
    image: Option<ImageShape>,
) -> Result<ReplayBuffer> {
    let total: usize = episodes.iter().map(Episode::len).sum();
    let mut buf = ReplayBuffer::new(total + extra_capacity, obs_dim, act_dim, image);
    for (i, ep) in episodes.iter().enumerate() {
        ep.check(i)?;
        let g = mc_returns(&ep.rewards, ep.terminated, gamma, sparse_negative);
        for (t, &mc) in g.iter().enumerate() {
            let last = t + 1 == ep.len();
            buf.push(&TransitionIn {
                obs: &ep.obs[t],
                action: &ep.actions[t],
                reward: ep.rewards[t],
                next_obs: &ep.obs[t + 1],
                terminated: last && ep.terminated,
                episode_end: last,
                task_id: ep.task_id,
                intervention: ep.interventions.get(t).copied().unwrap_or(false),
                safety_override: ep.safety_overrides.get(t).copied().unwrap_or(false),
                mc_return: mc,
                image: ep.images.get(t).map(Vec::as_slice),
                next_image: ep.images.get(t + 1).map(Vec::as_slice),
            })
            .map_err(|e| Error::Spec(format!("episode {i}, step {t}: {e}")))?;
        }
    }
    Ok(buf)
}

/// What [`episodes_from_mcap`] found and dropped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct McapDatasetStats {
    pub transitions: usize,
    pub rewards: usize,
    /// Transitions with no valid `/rft/reward` for their next-observation stamp (dropped).
    pub unrewarded: usize,
    /// Messages that did not decode (counted and skipped).
    pub malformed: usize,
    /// Transitions of an episode after the step that reached the goal (dropped: the runner
    /// hears of a success a tick late, so it records one more step and marks that one done).
    pub after_success: usize,
    pub episodes: usize,
}

/// A frame's reward and whether it shows success.
type Scored = (f32, bool);

fn stamp_ns(t: &Time) -> i64 {
    t.sec as i64 * 1_000_000_000 + t.nanosec as i64
}

/// Reads `/rft/transition` and `/rft/reward` messages (rft_msgs, CDR) from an MCAP file.
///
/// A transition's reward is the valid reward for the same task whose stamp is the
/// transition's next-observation stamp (the frame reached by the action), or the newest one
/// no older than `max_reward_age_ns` before it. Transitions without one are dropped and
/// counted; invalid rewards (classifier unavailable) never count. Transitions are grouped into
/// episodes by `episode_id` and ordered by `step`. A transition is terminal when its reward
/// says the frame shows success (the step that reached the goal, as the learner node joins
/// them); the episode ends there and later steps of it are dropped and counted.
pub fn episodes_from_mcap(
    path: &Path,
    max_reward_age_ns: i64,
) -> Result<(Vec<Episode>, McapDatasetStats)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let stream = mcap::MessageStream::new(&bytes)
        .map_err(|e| Error::dataset(path, format!("not an MCAP file: {e}")))?;
    let mut stats = McapDatasetStats::default();
    let mut transitions: Vec<Transition> = Vec::new();
    let mut rewards: HashMap<u8, BTreeMap<i64, Scored>> = HashMap::new();
    for msg in stream {
        let msg = msg.map_err(|e| Error::dataset(path, format!("corrupt MCAP record: {e}")))?;
        let schema = msg
            .channel
            .schema
            .as_ref()
            .map(|s| s.name.as_str())
            .unwrap_or("");
        if schema.ends_with("Transition") {
            match rft_msgs::cdr::decode::<Transition>(&msg.data) {
                Ok(t) => transitions.push(t),
                Err(_) => stats.malformed += 1,
            }
        } else if schema.ends_with("msg/Reward") {
            match rft_msgs::cdr::decode::<Reward>(&msg.data) {
                Ok(r) if r.valid && r.reward.is_finite() => {
                    stats.rewards += 1;
                    rewards
                        .entry(r.task_id)
                        .or_default()
                        .insert(stamp_ns(&r.header.stamp), (r.reward, r.success));
                }
                Ok(_) => {}
                Err(_) => stats.malformed += 1,
            }
        }
    }
    stats.transitions = transitions.len();
    if transitions.is_empty() {
        return Err(Error::dataset(
            path,
            "no /rft/transition messages (rft_msgs/msg/Transition) in the recording",
        ));
    }
    let mut by_episode: BTreeMap<u64, Vec<(Transition, Scored)>> = BTreeMap::new();
    for t in transitions {
        let at = stamp_ns(&t.next_obs_stamp);
        let r = rewards
            .get(&t.task_id)
            .and_then(|m| m.range(at - max_reward_age_ns..=at).next_back())
            .map(|(_, r)| *r);
        match r {
            Some(r) => by_episode.entry(t.episode_id).or_default().push((t, r)),
            None => stats.unrewarded += 1,
        }
    }
    let mut episodes = Vec::new();
    for (id, mut steps) in by_episode {
        steps.sort_by_key(|(t, _)| t.step);
        let Some((first, _)) = steps.first() else {
            continue;
        };
        let (od, ad) = (first.obs.len(), first.action.len());
        // An image policy's steps carry its camera frames: one per observation.
        let (imaged, il) = (!first.image.is_empty(), first.image.len());
        let mut ep = Episode {
            task_id: first.task_id,
            ..Default::default()
        };
        for (k, (t, (r, success))) in steps.iter().enumerate() {
            let images_fit = if imaged {
                t.image.len() == il && t.next_image.len() == il
            } else {
                t.image.is_empty() && t.next_image.is_empty()
            };
            if t.obs.len() != od || t.next_obs.len() != od || t.action.len() != ad || !images_fit {
                return Err(Error::dataset(
                    path,
                    format!(
                        "episode {id} step {}: observation/action/image sizes change",
                        t.step
                    ),
                ));
            }
            let gap = k > 0 && ep.obs.last() != Some(&t.obs);
            if gap {
                // A gap (dropped transition): keep going, the next_obs of the previous step
                // stays the bootstrap target; record the break as an episode boundary.
                let prev = std::mem::take(&mut ep);
                episodes.push(prev);
                ep.task_id = t.task_id;
            }
            if k == 0 || gap {
                ep.obs.push(t.obs.clone());
                if imaged {
                    ep.images.push(t.image.clone());
                }
            }
            ep.actions.push(t.action.clone());
            ep.rewards.push(*r);
            ep.interventions.push(t.intervention);
            ep.safety_overrides.push(t.safety_override);
            ep.obs.push(t.next_obs.clone());
            if imaged {
                ep.images.push(t.next_image.clone());
            }
            if *success {
                ep.terminated = true;
                stats.after_success += steps.len() - k - 1;
                break;
            }
        }
        episodes.push(ep);
    }
    episodes.retain(|e| !e.is_empty());
    stats.episodes = episodes.len();
    if episodes.is_empty() {
        return Err(Error::dataset(
            path,
            format!(
                "none of the {} transitions has a valid /rft/reward for its next-observation \
                 stamp (rewards found: {})",
                stats.transitions, stats.rewards
            ),
        ));
    }
    Ok((episodes, stats))
}
