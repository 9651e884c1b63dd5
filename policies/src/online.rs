//! The online learner every loop that learns from its own experience shares: the learner node,
//! the sim pipeline's fine-tuning and `rft train`. It owns the agent, the replay buffer and the
//! demos, and runs one update round at a time with the whole recipe:
//!
//! - RLPD-style mixing of the demos into each batch (`offline_ratio`);
//! - a critic warm-up: the first `critic_warmup_rounds` rounds update only the critics, so
//!   critics that never saw this reward do not steer the actor;
//! - a moving average of the actor (`policy_ema`), which is what gets published;
//! - a linear learning-rate anneal from the first actor update to `lr_final` at `total_rounds`;
//! - successful episodes promoted into the demos (`promote_successes`);
//! - publish and checkpoint cadence in rounds.
//!
//! The caller owns the loop (which transitions arrive when, when a round may run) and the
//! random generator, so that a loop which also draws exploration noise stays reproducible from
//! one seed.

use candle_core::Tensor;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Algorithm, UpdateInfo};
use crate::error::{Error, Result};
use crate::handle::{policy_bytes, policy_bytes_from};
use crate::replay::{Batch, ImageShape, ReplayBuffer, TransitionIn};
use crate::train::sample_round;

/// The online recipe, one type for every loop that learns online. Each default is the plain
/// SAC/RLPD update (no warm-up, no average, no anneal, no promotion).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Critic updates per round (update-to-data ratio).
    pub utd: usize,
    /// Share of each batch drawn from the demos (RLPD-style mixing; 0 keeps none).
    pub offline_ratio: f64,
    /// Keep the pre-training's CQL regulariser online (Cal-QL fine-tuning); false drops it
    /// and fine-tunes with plain SAC updates (as WSRL and RLPD do).
    pub keep_cql: bool,
    /// Behaviour-cloning weight on the actor (0: none).
    pub bc_weight: f64,
    /// Entropy temperature at the start (unset: the pre-trained one).
    pub init_alpha: Option<f64>,
    /// Rounds that update only the critics (the actor waits until the critics have seen the
    /// classifier's rewards); needed after behaviour-cloning pre-training.
    pub critic_warmup_rounds: u64,
    /// The policy that acts, is published and is saved is an exponential moving average of
    /// the actor's weights with this decay per actor update (0: the actor itself). Averaging
    /// smooths the swings of a policy fitted to a changing buffer (0.999: about the last
    /// 1,000 updates).
    pub policy_ema: f64,
    /// Learning-rate anneal: the actor's and critics' step sizes fall linearly from the
    /// configured ones (at the first actor update) to this fraction of them at `total_rounds`
    /// (1: constant). A policy still moving at full step size late in a run can lose what it
    /// learnt.
    pub lr_final: f64,
    /// Rounds the anneal spans. 0: the run's length where the loop knows it (the pipeline's
    /// fine-tuning: its steps after the warm-up); a learner node with no set length does not
    /// anneal.
    pub total_rounds: u64,
    /// Self-imitation: an episode that ends as a success (a terminal transition) is copied
    /// into the demo buffer, so the behaviour-cloning term and the demo share of each batch
    /// learn from the policy's own successes as well as the demonstrations.
    pub promote_successes: bool,
    /// Update rounds between published policy versions.
    pub publish_every: u64,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            utd: 1,
            offline_ratio: 0.5,
            keep_cql: false,
            bc_weight: 0.0,
            init_alpha: None,
            critic_warmup_rounds: 0,
            policy_ema: 0.0,
            lr_final: 1.0,
            total_rounds: 0,
            promote_successes: false,
            publish_every: 50,
        }
    }
}

impl Recipe {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> rft_config::Result<()> {
        use rft_config::check;
        check(self.utd >= 1, "utd", || "must be at least 1".into())?;
        check(
            (0.0..=1.0).contains(&self.offline_ratio),
            "offline_ratio",
            || format!("{} must be in [0, 1]", self.offline_ratio),
        )?;
        check(
            self.bc_weight.is_finite() && self.bc_weight >= 0.0,
            "bc_weight",
            || format!("{} must be ≥ 0", self.bc_weight),
        )?;
        check(
            self.init_alpha.is_none_or(|a| a.is_finite() && a > 0.0),
            "init_alpha",
            || "must be positive".into(),
        )?;
        check(
            self.policy_ema.is_finite() && (0.0..1.0).contains(&self.policy_ema),
            "policy_ema",
            || format!("{} must be in [0, 1)", self.policy_ema),
        )?;
        check(
            self.lr_final.is_finite() && (0.0..=1.0).contains(&self.lr_final),
            "lr_final",
            || format!("{} must be in [0, 1]", self.lr_final),
        )?;
        check(self.publish_every >= 1, "publish_every", || {
            "must be at least 1".into()
        })
    }

    /// The learning-rate multiplier for round `round` (1-based): 1 through the critic warm-up,
    /// then linear to `lr_final` at `total_rounds`.
    pub fn lr_scale(&self, round: u64) -> f64 {
        let first = self.critic_warmup_rounds;
        if self.lr_final >= 1.0 || round <= first || self.total_rounds <= first {
            return 1.0;
        }
        let frac = ((round - first) as f64 / (self.total_rounds - first) as f64).min(1.0);
        1.0 - (1.0 - self.lr_final) * frac
    }
}

/// What one round did.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub info: UpdateInfo,
    /// Whether it updated the actor (false during the critic warm-up).
    pub actor: bool,
    /// The version to publish, when this round is due to publish.
    pub publish: Option<u64>,
}

pub struct OnlineLearner {
    pub agent: Agent,
    pub buffer: ReplayBuffer,
    cfg: Recipe,
    /// The demos, with room for promoted episodes.
    demos: Option<ReplayBuffer>,
    /// The averaged actor (deep copies: the actor's variables are updated in place).
    ema: Option<Vec<(String, Tensor)>>,
    batches: Vec<Batch>,
    rounds: u64,
    version: u64,
    /// `buffer.total_added` when the current episode started.
    episode_start: u64,
    promoted: u64,
}

/// Sets the agent up for online updates (UTD, CQL off unless kept, BC weight, temperature).
pub fn prepare(agent: &mut Agent, cfg: &Recipe) -> Result<()> {
    cfg.validate().map_err(|e| Error::Config(e.to_string()))?;
    agent.cfg.utd = cfg.utd;
    if !cfg.keep_cql {
        agent.cfg.cql = None;
        agent.cfg.algorithm = Algorithm::Sac;
    }
    agent.cfg.bc_weight = cfg.bc_weight;
    if let Some(a) = cfg.init_alpha {
        agent.log_alpha.value = a.ln();
    }
    Ok(())
}

impl OnlineLearner {
    /// A learner for `agent` (already [`prepare`]d when it starts online learning; a resumed
    /// agent is taken as it is) with an empty buffer of `capacity` transitions, or `buffer`
    /// when resuming. `version` is the version of the policy acting now.
    pub fn new(
        agent: Agent,
        cfg: Recipe,
        buffer: ReplayBuffer,
        demos: Option<&ReplayBuffer>,
        version: u64,
    ) -> Result<Self> {
        cfg.validate().map_err(|e| Error::Config(e.to_string()))?;
        if buffer.obs_dim != agent.cfg.obs_dim || buffer.act_dim != agent.cfg.act_dim {
            return Err(Error::Spec(format!(
                "the replay buffer holds observation {} / action {}, the agent needs {} / {}",
                buffer.obs_dim, buffer.act_dim, agent.cfg.obs_dim, agent.cfg.act_dim
            )));
        }
        let demos = match demos {
            Some(o) if cfg.promote_successes => {
                // Room for every episode the buffer can hold.
                let mut d =
                    ReplayBuffer::new(o.len() + buffer.capacity, o.obs_dim, o.act_dim, o.image);
                o.copy_into(0, o.len(), &mut d)?;
                Some(d)
            }
            Some(o) => Some(o.clone()),
            None => None,
        };
        if let Some(d) = &demos
            && (d.obs_dim != agent.cfg.obs_dim || d.act_dim != agent.cfg.act_dim)
        {
            return Err(Error::Spec(format!(
                "the demos hold observation {} / action {}, the agent needs {} / {}",
                d.obs_dim, d.act_dim, agent.cfg.obs_dim, agent.cfg.act_dim
            )));
        }
        let ema = if cfg.policy_ema > 0.0 {
            let copies: candle_core::Result<Vec<_>> = agent
                .policy_weights()
                .into_iter()
                .map(|(n, t)| Ok((n, t.detach().copy()?)))
                .collect();
            Some(copies?)
        } else {
            None
        };
        Ok(Self {
            episode_start: buffer.total_added,
            agent,
            buffer,
            cfg,
            demos,
            ema,
            batches: Vec::new(),
            rounds: 0,
            version,
            promoted: 0,
        })
    }

    /// A learner with a fresh buffer of `capacity` transitions.
    pub fn with_capacity(
        agent: Agent,
        cfg: Recipe,
        capacity: usize,
        image: Option<ImageShape>,
        demos: Option<&ReplayBuffer>,
        version: u64,
    ) -> Result<Self> {
        let buffer = ReplayBuffer::new(capacity, agent.cfg.obs_dim, agent.cfg.act_dim, image);
        Self::new(agent, cfg, buffer, demos, version)
    }

    pub fn config(&self) -> &Recipe {
        &self.cfg
    }
    pub fn rounds(&self) -> u64 {
        self.rounds
    }
    /// Continues the round count (and with it the anneal) of a resumed run.
    pub fn set_rounds(&mut self, rounds: u64) {
        self.rounds = rounds;
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Episodes copied into the demos so far.
    pub fn promoted(&self) -> u64 {
        self.promoted
    }
    pub fn demos(&self) -> Option<&ReplayBuffer> {
        self.demos.as_ref()
    }

    /// Stores a transition. At an episode's end, a successful episode (its last transition
    /// `terminated`) is promoted into the demos when the recipe says so and the whole episode
    /// is still in the buffer.
    pub fn push(&mut self, t: &TransitionIn) -> Result<()> {
        self.buffer.push(t)?;
        if t.episode_end || t.terminated {
            let rows = (self.buffer.total_added - self.episode_start) as usize;
            if let Some(d) = self.demos.as_mut()
                && self.cfg.promote_successes
                && t.terminated
                && rows <= self.buffer.len()
            {
                let n = self.buffer.len();
                self.buffer.copy_into(n - rows, n, d)?;
                self.promoted += 1;
            }
            self.episode_start = self.buffer.total_added;
        }
        Ok(())
    }

    /// One update round: batches drawn with `rng`, critics only during the warm-up, the
    /// learning rate on its schedule, the average after each actor update.
    pub fn round(&mut self, rng: &mut StdRng) -> Result<Round> {
        let offline = self.demos.as_ref().filter(|_| self.cfg.offline_ratio > 0.0);
        sample_round(
            &self.agent,
            &self.buffer,
            offline,
            self.cfg.offline_ratio,
            rng,
            &mut self.batches,
        )?;
        let refs: Vec<&Batch> = self.batches.iter().collect();
        self.rounds += 1;
        if self.cfg.lr_final < 1.0 {
            self.agent.set_lr_scale(self.cfg.lr_scale(self.rounds));
        }
        let actor = self.rounds > self.cfg.critic_warmup_rounds;
        let info = if actor {
            let info = self.agent.update(&refs)?;
            if let Some(ema) = self.ema.as_mut() {
                average_into(ema, &self.agent.policy_weights(), self.cfg.policy_ema)?;
            }
            info
        } else {
            self.agent.update_critics(&refs)?
        };
        let publish = self.rounds.is_multiple_of(self.cfg.publish_every).then(|| {
            self.version += 1;
            self.version
        });
        Ok(Round {
            info,
            actor,
            publish,
        })
    }

    /// The acting policy as bytes (the moving average when there is one), at the current
    /// version.
    pub fn policy_bytes(&self) -> Result<Vec<u8>> {
        match &self.ema {
            Some(w) => policy_bytes_from(&self.agent, w, self.version),
            None => policy_bytes(&self.agent, self.version),
        }
    }

    /// Writes a checkpoint (agent, buffer, the acting policy, the round count) under `root`.
    pub fn checkpoint(
        &self,
        root: &std::path::Path,
        env_steps: u64,
        extra: serde_json::Value,
        keep: usize,
    ) -> Result<std::path::PathBuf> {
        let extra = match extra {
            serde_json::Value::Object(mut m) => {
                m.insert("online_rounds".into(), self.rounds.into());
                serde_json::Value::Object(m)
            }
            other => serde_json::json!({ "online_rounds": self.rounds, "extra": other }),
        };
        crate::checkpoint::save_with_policy(
            root,
            &self.agent,
            self.policy_bytes()?,
            Some(&self.buffer),
            env_steps,
            self.version,
            extra,
            keep,
        )
    }
}

/// `avg ← decay · avg + (1 − decay) · w`, tensor by tensor (the same names in the same order).
pub fn average_into(
    avg: &mut [(String, Tensor)],
    w: &[(String, Tensor)],
    decay: f64,
) -> Result<()> {
    if avg.len() != w.len() {
        return Err(Error::Spec(format!(
            "{} averaged tensors for {} policy tensors",
            avg.len(),
            w.len()
        )));
    }
    for ((an, a), (wn, x)) in avg.iter_mut().zip(w) {
        if an != wn {
            return Err(Error::Spec(format!(
                "policy weights {an} and {wn} out of order"
            )));
        }
        // Detached: the average must not record the actor's graph (it would keep every past
        // update alive).
        *a = ((&*a * decay)? + (x.detach() * (1.0 - decay))?)?.detach();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_learning_rate_falls_linearly_from_the_first_actor_update_to_lr_final() {
        let cfg = Recipe {
            total_rounds: 1_050,
            critic_warmup_rounds: 50,
            lr_final: 0.1,
            ..Recipe::default()
        };
        // Full step size through the critic warm-up.
        assert_eq!(cfg.lr_scale(1), 1.0);
        assert_eq!(cfg.lr_scale(50), 1.0);
        // Half-way from the first actor update (50) to the end (1,050): half-way to 0.1.
        assert!((cfg.lr_scale(550) - 0.55).abs() < 1e-12);
        assert!((cfg.lr_scale(1_050) - 0.1).abs() < 1e-12);
        assert!((cfg.lr_scale(5_000) - 0.1).abs() < 1e-12);
        let constant = Recipe {
            lr_final: 1.0,
            ..cfg.clone()
        };
        assert_eq!(constant.lr_scale(1_050), 1.0);
    }

    #[test]
    fn the_moving_average_moves_by_one_minus_decay_per_update() {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::new(v, &dev).unwrap();
        let mut avg = vec![("a".to_string(), t(&[1.0, 2.0])), ("b".into(), t(&[0.0]))];
        let w = vec![("a".to_string(), t(&[5.0, 6.0])), ("b".into(), t(&[-4.0]))];
        average_into(&mut avg, &w, 0.75).unwrap();
        assert_eq!(avg[0].1.to_vec1::<f32>().unwrap(), [2.0, 3.0]);
        assert_eq!(avg[1].1.to_vec1::<f32>().unwrap(), [-1.0]);
        // The same weights again: the average closes a quarter of the remaining gap.
        average_into(&mut avg, &w, 0.75).unwrap();
        assert_eq!(avg[0].1.to_vec1::<f32>().unwrap(), [2.75, 3.75]);
        // Averaging the actor's variables records no graph: an average that tracked them
        // would keep every past update alive (it ran a 20k-step run out of memory).
        let var = candle_core::Var::new(&[1.0f32, 1.0], &dev).unwrap();
        let live = vec![("a".to_string(), var.as_tensor().clone()), w[1].clone()];
        average_into(&mut avg, &live, 0.5).unwrap();
        assert!(!avg[0].1.track_op());
        assert_eq!(avg[0].1.to_vec1::<f32>().unwrap(), [1.875, 2.375]);
        let swapped = vec![w[1].clone(), w[0].clone()];
        let e = average_into(&mut avg, &swapped, 0.5).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
    }
}
