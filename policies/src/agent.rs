//! One SAC core with the variants the product needs: SAC, CQL / Cal-QL offline pre-training,
//! behaviour cloning, and the online recipes WSRL and RLPD (which differ from SAC only in
//! configuration and in what the trainer feeds them).

use std::collections::HashMap;

use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nets::{Actor, Encoder, EncoderConfig, Mlp, Params, TensorRng, images_to_tensor};
use crate::normalize::ObsNorm;
use crate::optim::{Adam, ScalarAdam, polyak_var};
use crate::replay::{Batch, SampleSpec, push_obs};

/// The learning algorithm; picks the defaults of [`AgentConfig::preset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Soft actor-critic.
    Sac,
    /// Conservative Q-learning (offline).
    Cql,
    /// Calibrated Q-learning: CQL whose policy-action Q-values are bounded below by MC returns.
    Calql,
    /// Behaviour cloning (maximum likelihood of the data's actions).
    Bc,
    /// WSRL fine-tuning: SAC with a LayerNorm critic ensemble and UTD > 1, started from a
    /// pre-trained agent after a warm-up with its policy; no offline data kept.
    Wsrl,
    /// RLPD: SAC with a LayerNorm ensemble, UTD 20 and 50/50 offline/online batches.
    Rlpd,
}

impl std::str::FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(
            match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
                "sac" => Algorithm::Sac,
                "cql" => Algorithm::Cql,
                "calql" => Algorithm::Calql,
                "bc" => Algorithm::Bc,
                "wsrl" => Algorithm::Wsrl,
                "rlpd" => Algorithm::Rlpd,
                _ => {
                    return Err(Error::Config(format!(
                        "unknown algorithm {s:?}; expected sac, cql, calql, bc, wsrl or rlpd"
                    )));
                }
            },
        )
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Algorithm::Sac => "sac",
            Algorithm::Cql => "cql",
            Algorithm::Calql => "calql",
            Algorithm::Bc => "bc",
            Algorithm::Wsrl => "wsrl",
            Algorithm::Rlpd => "rlpd",
        };
        f.write_str(s)
    }
}

/// How the actor's loss reduces the critic ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QReduce {
    Min,
    Mean,
}

/// The CQL regulariser (and Cal-QL's calibration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqlConfig {
    /// Weight of the regulariser (multiplies the Lagrange multiplier when that is on).
    pub alpha: f64,
    /// Actions sampled per state from each of uniform, π(s) and π(s').
    pub n_actions: usize,
    pub temperature: f64,
    /// Tune the weight with a Lagrange multiplier so the Q gap stays near this value.
    pub lagrange_gap: Option<f64>,
    /// Cal-QL: bound Q-values of policy actions below by the Monte-Carlo return.
    pub calql: bool,
    /// Importance-sampled log-sum-exp (subtract each sample's log-density).
    pub importance_sample: bool,
}

impl Default for CqlConfig {
    fn default() -> Self {
        CqlConfig {
            alpha: 5.0,
            n_actions: 10,
            temperature: 1.0,
            lagrange_gap: None,
            calql: true,
            importance_sample: true,
        }
    }
}

/// Everything that shapes the networks and the updates. Defaults come from
/// [`AgentConfig::preset`]; every field can be overridden (launch file, CLI).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub algorithm: Algorithm,
    pub obs_dim: usize,
    pub act_dim: usize,
    /// Number of tasks; more than one appends a one-hot task id to the observation
    /// (one policy for the forward and the backward task).
    pub num_tasks: usize,
    pub hidden: Vec<usize>,
    pub actor_layer_norm: bool,
    pub critic_layer_norm: bool,
    /// Size of the critic ensemble (N).
    pub n_critics: usize,
    /// Critics sampled for the target minimum (M ≤ N).
    pub critic_subsample: usize,
    pub actor_q: QReduce,
    pub gamma: f64,
    pub tau: f64,
    pub lr_actor: f64,
    pub lr_critic: f64,
    pub lr_alpha: f64,
    pub init_alpha: f64,
    pub auto_alpha: bool,
    /// Entropy target; `None` means −|A| (SAC) or −|A|/2 (RLPD).
    pub target_entropy: Option<f64>,
    /// Subtract α log π(a'|s') in the TD target.
    pub backup_entropy: bool,
    pub batch_size: usize,
    /// Critic updates per environment step; the actor is updated once per UTD round.
    pub utd: usize,
    /// n-step returns from the replay buffer (1 = one-step TD).
    pub n_step: usize,
    pub cql: Option<CqlConfig>,
    /// Weight of a behaviour-cloning term added to the actor loss (0 = none).
    pub bc_weight: f64,
    /// Inside the behaviour-cloning term: weight of the squared error between the policy's
    /// mode `tanh(μ)` and the demonstrated action, added to the negative log-likelihood. The
    /// likelihood alone fits the mean poorly where the data are noisy or the policy's σ is
    /// large (measured on the push task: forward 15–70 % with the likelihood alone, 90–100 %
    /// with this term at 100).
    #[serde(default)]
    pub bc_mode_weight: f64,
    /// An image encoder whose features are appended to the state observation.
    pub encoder: Option<EncoderConfig>,
    pub seed: u64,
}

impl AgentConfig {
    /// The reference defaults of each algorithm (REFERENCE_NUMBERS.md).
    pub fn preset(algorithm: Algorithm, obs_dim: usize, act_dim: usize) -> Self {
        let mut c = AgentConfig {
            algorithm,
            obs_dim,
            act_dim,
            num_tasks: 1,
            hidden: vec![256, 256],
            actor_layer_norm: false,
            critic_layer_norm: false,
            n_critics: 2,
            critic_subsample: 2,
            actor_q: QReduce::Min,
            gamma: 0.99,
            tau: 0.005,
            lr_actor: 3e-4,
            lr_critic: 3e-4,
            lr_alpha: 3e-4,
            init_alpha: 1.0,
            auto_alpha: true,
            target_entropy: None,
            backup_entropy: true,
            batch_size: 256,
            utd: 1,
            n_step: 1,
            cql: None,
            bc_weight: 0.0,
            bc_mode_weight: 100.0,
            encoder: None,
            seed: 0,
        };
        match algorithm {
            Algorithm::Sac | Algorithm::Bc => {}
            Algorithm::Cql | Algorithm::Calql => {
                c.lr_actor = 1e-4;
                c.backup_entropy = false;
                c.cql = Some(CqlConfig {
                    calql: algorithm == Algorithm::Calql,
                    ..CqlConfig::default()
                });
            }
            Algorithm::Wsrl => {
                c.n_critics = 10;
                c.actor_layer_norm = true;
                c.critic_layer_norm = true;
                c.utd = 4;
                c.batch_size = 1024;
                c.backup_entropy = false;
            }
            Algorithm::Rlpd => {
                c.n_critics = 10;
                c.critic_layer_norm = true;
                c.utd = 20;
                c.actor_q = QReduce::Mean;
                c.target_entropy = Some(-(act_dim as f64) / 2.0);
                c.backup_entropy = false;
            }
        }
        c
    }

    /// Width of the state part of the network input (observation plus task one-hot).
    pub fn state_in(&self) -> usize {
        self.obs_dim
            + if self.num_tasks > 1 {
                self.num_tasks
            } else {
                0
            }
    }

    /// Width of the full network input (state part plus image features).
    pub fn net_in(&self) -> usize {
        self.state_in() + self.encoder.as_ref().map_or(0, |e| e.feature_dim)
    }

    pub fn target_entropy(&self) -> f64 {
        self.target_entropy.unwrap_or(-(self.act_dim as f64))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.obs_dim == 0 || self.act_dim == 0 {
            return bad("obs_dim and act_dim must be positive".into());
        }
        if self.num_tasks == 0 {
            return bad("num_tasks must be at least 1".into());
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad(format!("hidden sizes {:?} must be positive", self.hidden));
        }
        if self.n_critics == 0
            || self.critic_subsample == 0
            || self.critic_subsample > self.n_critics
        {
            return bad(format!(
                "critic_subsample ({}) must be in 1..=n_critics ({})",
                self.critic_subsample, self.n_critics
            ));
        }
        if !(0.0..=1.0).contains(&self.gamma) || !(0.0..=1.0).contains(&self.tau) {
            return bad(format!(
                "gamma {} and tau {} must be in [0, 1]",
                self.gamma, self.tau
            ));
        }
        if self.batch_size == 0 || self.utd == 0 || self.n_step == 0 {
            return bad("batch_size, utd and n_step must be at least 1".into());
        }
        for (n, v) in [
            ("lr_actor", self.lr_actor),
            ("lr_critic", self.lr_critic),
            ("lr_alpha", self.lr_alpha),
            ("init_alpha", self.init_alpha),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{n} must be positive, got {v}"));
            }
        }
        if let Some(c) = &self.cql
            && c.n_actions == 0
        {
            return bad("cql.n_actions must be at least 1".into());
        }
        if let Some(e) = &self.encoder {
            e.validate()?;
        }
        Ok(())
    }
}

/// Losses and statistics of one update round.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpdateInfo {
    pub critic_loss: f32,
    pub actor_loss: f32,
    pub q_mean: f32,
    pub alpha: f32,
    pub entropy: f32,
    pub cql_loss: f32,
    pub cql_alpha: f32,
    /// Fraction of policy-action Q-values raised to the MC-return bound (Cal-QL).
    pub calql_bound_rate: f32,
    pub bc_nll: f32,
}

/// The learner's networks, optimisers and update rules.
pub struct Agent {
    pub cfg: AgentConfig,
    pub dev: Device,
    pub actor: Actor,
    pub critic: Mlp,
    pub target: Mlp,
    pub encoder: Option<Encoder>,
    pub target_encoder: Option<Encoder>,
    actor_params: Params,
    critic_params: Params,
    target_params: Params,
    encoder_params: Params,
    target_encoder_params: Params,
    actor_opt: Adam,
    critic_opt: Adam,
    pub log_alpha: ScalarAdam,
    pub log_cql_alpha: ScalarAdam,
    pub rng: TensorRng,
    /// Gradient (critic) steps taken.
    pub steps: u64,
    /// Observation normalisation applied before the networks (identity unless fitted).
    pub norm: ObsNorm,
}

impl Agent {
    pub fn new(cfg: AgentConfig, dev: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut rng = TensorRng::new(cfg.seed ^ 0x5eed_a9e7);
        let din = cfg.net_in();
        let dq = din + cfg.act_dim;
        let mut actor_params = Params::new();
        let actor = Actor::new(
            &mut actor_params,
            din,
            &cfg.hidden,
            cfg.act_dim,
            cfg.actor_layer_norm,
            &mut rng,
            dev,
        )?;
        let ensemble = |name: &str, rng: &mut TensorRng| -> Result<(Mlp, Params)> {
            let mut p = Params::new();
            let net = Mlp::new(
                &mut p,
                name,
                Some(cfg.n_critics),
                dq,
                &cfg.hidden,
                1,
                cfg.critic_layer_norm,
                rng,
                dev,
            )?;
            Ok((net, p))
        };
        let (critic, critic_params) = ensemble("critic", &mut rng)?;
        let (target, target_params) = ensemble("target", &mut rng)?;
        let (mut encoder_params, mut target_encoder_params) = (Params::new(), Params::new());
        let (encoder, target_encoder) = match &cfg.encoder {
            Some(ec) => (
                Some(Encoder::new(
                    &mut encoder_params,
                    "encoder",
                    ec,
                    &mut rng,
                    dev,
                )?),
                Some(Encoder::new(
                    &mut target_encoder_params,
                    "target_encoder",
                    ec,
                    &mut rng,
                    dev,
                )?),
            ),
            None => (None, None),
        };
        let mut critic_opt_params = critic_params.clone();
        if cfg.encoder.as_ref().is_some_and(|e| e.trainable) {
            critic_opt_params.extend(&encoder_params);
        }
        let actor_opt = Adam::new(&actor_params, cfg.lr_actor)?;
        let critic_opt = Adam::new(&critic_opt_params, cfg.lr_critic)?;
        let log_alpha = ScalarAdam::new(cfg.init_alpha.ln(), cfg.lr_alpha);
        let log_cql_alpha = ScalarAdam::new(0.0, cfg.lr_critic);
        let mut agent = Agent {
            cfg,
            dev: dev.clone(),
            actor,
            critic,
            target,
            encoder,
            target_encoder,
            actor_params,
            critic_params,
            target_params,
            encoder_params,
            target_encoder_params,
            actor_opt,
            critic_opt,
            log_alpha,
            log_cql_alpha,
            rng,
            steps: 0,
            norm: ObsNorm::identity(),
        };
        agent.hard_update_targets()?;
        Ok(agent)
    }

    /// Every parameter set: actor, critic, target, encoder, target encoder.
    fn all_params(&self) -> [&Params; 5] {
        [
            &self.actor_params,
            &self.critic_params,
            &self.target_params,
            &self.encoder_params,
            &self.target_encoder_params,
        ]
    }

    /// (target, online) pairs that soft and hard target updates copy between.
    fn target_pairs(&self) -> [(&Params, &Params); 2] {
        [
            (&self.target_params, &self.critic_params),
            (&self.target_encoder_params, &self.encoder_params),
        ]
    }

    /// Copies the online critic (and encoder) into the targets.
    pub fn hard_update_targets(&mut self) -> Result<()> {
        for (a, b) in self.target_pairs() {
            for ((_, t), (_, o)) in a.iter().zip(b.iter()) {
                t.set(o.as_tensor())?;
            }
        }
        Ok(())
    }

    pub fn alpha(&self) -> f64 {
        self.log_alpha.value.exp()
    }

    /// The network input for a batch: state part, plus encoder features (detached unless
    /// `grad`), from the online or the target encoder, of the current or next frames.
    fn input(&self, b: &Batch, next: bool, target: bool, grad: bool) -> Result<Tensor> {
        let d = self.cfg.state_in();
        let s = Tensor::from_slice(
            if next { &b.next_obs } else { &b.obs },
            (b.size, d),
            &self.dev,
        )?;
        let (Some(ec), Some(enc), Some(tenc)) =
            (&self.cfg.encoder, &self.encoder, &self.target_encoder)
        else {
            return Ok(s);
        };
        let imgs = images_to_tensor(
            if next { &b.next_images } else { &b.images },
            [b.size, ec.channels, ec.height, ec.width],
            &self.dev,
        )?;
        let f = if target {
            tenc.forward(&imgs, true)?
        } else {
            enc.forward(&imgs, !(grad && ec.trainable))?
        };
        Ok(Tensor::cat(&[&s, &f], 1)?)
    }

    fn noise(&mut self, rows: usize) -> Result<Tensor> {
        let a = self.cfg.act_dim;
        self.rng.normal(&[rows, a], &self.dev)
    }

    /// Q-values `[n_critics, batch]` of the online (or target) ensemble.
    fn q(&self, net: &Mlp, x: &Tensor, a: &Tensor, detach: bool) -> Result<Tensor> {
        let xa = Tensor::cat(&[x, a], 1)?;
        Ok(net.forward(&xa, detach)?.squeeze(2)?)
    }

    /// One update round: a critic step on each batch (UTD = `batches.len()`), then one actor
    /// and temperature step on the last batch. Behaviour cloning trains only the actor.
    pub fn update(&mut self, batches: &[&Batch]) -> Result<UpdateInfo> {
        let Some(last) = batches.last() else {
            return Err(Error::Config("update needs at least one batch".into()));
        };
        let mut info = UpdateInfo::default();
        if self.cfg.algorithm == Algorithm::Bc {
            self.actor_step(last, &mut info)?;
            self.steps += 1;
            return Ok(info);
        }
        for b in batches {
            self.critic_step(b, &mut info)?;
            self.steps += 1;
        }
        self.actor_step(last, &mut info)?;
        Ok(info)
    }

    /// Critic updates only, one per batch (the actor and α stay): fits the critics to a new
    /// reward or data distribution before they steer the actor, as when fine-tuning starts
    /// from a behaviour-cloned policy whose critics never saw a reward.
    pub fn update_critics(&mut self, batches: &[&Batch]) -> Result<UpdateInfo> {
        let mut info = UpdateInfo::default();
        for b in batches {
            self.critic_step(b, &mut info)?;
            self.steps += 1;
        }
        Ok(info)
    }

    fn critic_step(&mut self, b: &Batch, info: &mut UpdateInfo) -> Result<()> {
        let bsz = b.size;
        let n = self.cfg.n_critics;
        let alpha = self.alpha();
        let act = Tensor::from_slice(&b.act, (bsz, self.cfg.act_dim), &self.dev)?;
        let reward = Tensor::from_slice(&b.reward, bsz, &self.dev)?;
        let discount = Tensor::from_slice(&b.discount, bsz, &self.dev)?;

        // TD target, without gradient.
        let x_next_actor = self.input(b, true, false, false)?;
        let x_next_target = self.input(b, true, true, false)?;
        let eps = self.noise(bsz)?;
        let (a_next, logp_next) = self.actor.sample(&x_next_actor, &eps)?;
        let (a_next, logp_next) = (a_next.detach(), logp_next.detach());
        let q_next = self.q(&self.target, &x_next_target, &a_next, true)?;
        let q_next = if self.cfg.critic_subsample < n {
            let idx = rand::seq::index::sample(&mut self.rng.rng, n, self.cfg.critic_subsample)
                .into_iter()
                .map(|i| i as u32)
                .collect::<Vec<_>>();
            let idx = Tensor::from_slice(&idx, idx.len(), &self.dev)?;
            q_next.index_select(&idx, 0)?
        } else {
            q_next
        };
        let mut v_next = q_next.min(0)?;
        if self.cfg.backup_entropy {
            v_next = (v_next - (logp_next * alpha)?)?;
        }
        let y = (reward + (discount * v_next)?)?.detach();

        let x = self.input(b, false, false, true)?;
        let mut loss;
        let q_data;
        if let Some(cql) = self.cfg.cql.clone() {
            let k = cql.n_actions;
            let rows = bsz * k;
            let x_actor = x.detach();
            let rep = |t: &Tensor| -> Result<Tensor> {
                let d = t.dim(1)?;
                Ok(t.unsqueeze(1)?
                    .broadcast_as((bsz, k, d))?
                    .reshape((rows, d))?)
            };
            let x_rep = rep(&x)?;
            let x_actor_rep = rep(&x_actor)?;
            let x_next_rep = rep(&x_next_actor)?;
            let a_rand = self
                .rng
                .uniform(-1.0, 1.0, &[rows, self.cfg.act_dim], &self.dev)?;
            let eps = self.noise(rows)?;
            let (a_cur, logp_cur) = self.actor.sample(&x_actor_rep, &eps)?;
            let eps = self.noise(rows)?;
            let (a_nxt, logp_nxt) = self.actor.sample(&x_next_rep, &eps)?;
            let xs = Tensor::cat(&[&x, &x_rep, &x_rep, &x_rep], 0)?;
            let acts = Tensor::cat(&[&act, &a_rand, &a_cur.detach(), &a_nxt.detach()], 0)?;
            let q_all = self.q(&self.critic, &xs, &acts, false)?;
            q_data = q_all.narrow(1, 0, bsz)?;
            let part = |i: usize| -> Result<Tensor> {
                Ok(q_all
                    .narrow(1, bsz + i * rows, rows)?
                    .reshape((n, bsz, k))?)
            };
            let (mut q_rand, mut q_cur, mut q_nxt) = (part(0)?, part(1)?, part(2)?);
            if cql.calql {
                let mc = Tensor::from_slice(&b.mc_return, (1, bsz, 1), &self.dev)?;
                let raised = q_cur.broadcast_lt(&mc)?.to_dtype(candle_core::DType::F32)?;
                info.calql_bound_rate = raised.mean_all()?.to_scalar::<f32>()?;
                q_cur = q_cur.broadcast_maximum(&mc)?;
                q_nxt = q_nxt.broadcast_maximum(&mc)?;
            }
            let cat = if cql.importance_sample {
                let log_density = -(self.cfg.act_dim as f64) * std::f64::consts::LN_2;
                q_rand = q_rand.affine(1.0, -log_density)?;
                let lc = logp_cur.detach().reshape((1, bsz, k))?;
                let ln = logp_nxt.detach().reshape((1, bsz, k))?;
                Tensor::cat(
                    &[
                        &q_rand,
                        &q_nxt.broadcast_sub(&ln)?,
                        &q_cur.broadcast_sub(&lc)?,
                    ],
                    2,
                )?
            } else {
                Tensor::cat(&[&q_rand, &q_data.unsqueeze(2)?, &q_nxt, &q_cur], 2)?
            };
            let t = cql.temperature;
            let ood = ((&cat / t)?.log_sum_exp(D::Minus1)? * t)?;
            let diff = (ood - &q_data)?.mean(1)?; // [n]
            let weight = match cql.lagrange_gap {
                Some(gap) => {
                    let a_prime = self.log_cql_alpha.value.exp().clamp(0.0, 1e6);
                    let mean_diff = diff.mean_all()?.to_scalar::<f32>()? as f64;
                    // maximise over α': loss −α'·w·(gap_est − gap); d/dlog α' = α' d/dα'.
                    self.log_cql_alpha
                        .step(-a_prime * cql.alpha * (mean_diff - gap));
                    info.cql_alpha = (a_prime * cql.alpha) as f32;
                    (diff.affine(1.0, -gap)? * (a_prime * cql.alpha))?
                }
                None => {
                    info.cql_alpha = cql.alpha as f32;
                    (diff * cql.alpha)?
                }
            };
            let cql_loss = weight.sum_all()?;
            info.cql_loss = cql_loss.to_scalar::<f32>()?;
            loss = cql_loss;
        } else {
            q_data = self.q(&self.critic, &x, &act, false)?;
            loss = Tensor::zeros((), candle_core::DType::F32, &self.dev)?;
        }
        let td = q_data
            .broadcast_sub(&y.unsqueeze(0)?)?
            .sqr()?
            .mean(1)?
            .sum_all()?;
        loss = ((td * 0.5)? + loss)?;
        info.critic_loss = loss.to_scalar::<f32>()?;
        info.q_mean = q_data.mean_all()?.to_scalar::<f32>()?;
        if !info.critic_loss.is_finite() {
            return Err(Error::Spec(format!(
                "critic loss became {} at step {}",
                info.critic_loss, self.steps
            )));
        }
        let grads = loss.backward()?;
        self.critic_opt.step(&grads)?;
        let tau = self.cfg.tau;
        for (a, b) in self.target_pairs() {
            for ((_, t), (_, o)) in a.iter().zip(b.iter()) {
                polyak_var(t, o.as_tensor(), tau)?;
            }
        }
        Ok(())
    }

    fn actor_step(&mut self, b: &Batch, info: &mut UpdateInfo) -> Result<()> {
        let x = self.input(b, false, false, false)?;
        let bc = self.cfg.algorithm == Algorithm::Bc;
        let nll = if bc || self.cfg.bc_weight > 0.0 {
            let act = Tensor::from_slice(&b.act, (b.size, self.cfg.act_dim), &self.dev)?;
            // Clone the demonstrations only: online rows hold the policy's own (noisy) actions.
            let (x_bc, act) = match b.demo_rows {
                n if n > 0 && n < b.size => (x.narrow(0, 0, n)?, act.narrow(0, 0, n)?),
                _ => (x.clone(), act),
            };
            let mut l = self.actor.log_prob(&x_bc, &act)?.mean_all()?.neg()?;
            if self.cfg.bc_mode_weight > 0.0 {
                let mse = (self.actor.mode(&x_bc)? - &act)?
                    .sqr()?
                    .sum(1)?
                    .mean_all()?;
                l = (l + (mse * self.cfg.bc_mode_weight)?)?;
            }
            Some(l)
        } else {
            None
        };
        if let Some(nll) = &nll {
            info.bc_nll = nll.to_scalar::<f32>()?;
        }
        let loss = if bc {
            let Some(nll) = nll else {
                return Err(Error::Config("behaviour cloning without a loss".into()));
            };
            nll
        } else {
            let alpha = self.alpha();
            let eps = self.noise(b.size)?;
            let (a, logp) = self.actor.sample(&x, &eps)?;
            let q = self.q(&self.critic, &x, &a, true)?;
            let q = match self.cfg.actor_q {
                QReduce::Min => q.min(0)?,
                QReduce::Mean => q.mean(0)?,
            };
            let mean_logp = logp.mean_all()?.to_scalar::<f32>()? as f64;
            info.entropy = -mean_logp as f32;
            let mut loss = ((logp * alpha)? - q)?.mean_all()?;
            if let Some(nll) = nll {
                loss = (loss + (nll * self.cfg.bc_weight)?)?;
            }
            if self.cfg.auto_alpha {
                self.log_alpha
                    .step(-(mean_logp + self.cfg.target_entropy()));
            }
            loss
        };
        info.actor_loss = loss.to_scalar::<f32>()?;
        info.alpha = self.alpha() as f32;
        let grads = loss.backward()?;
        self.actor_opt.step(&grads)?;
        Ok(())
    }

    /// Actions `[batch, act_dim]` for network inputs `x` (deterministic: `tanh(μ)`).
    pub fn act_batch(&mut self, x: &Tensor, deterministic: bool) -> Result<Tensor> {
        if deterministic {
            return self.actor.mode(x);
        }
        let eps = self.noise(x.dim(0)?)?;
        Ok(self.actor.sample(x, &eps)?.0)
    }

    /// How replay samples become network inputs for this agent.
    pub fn sample_spec(&self) -> SampleSpec {
        SampleSpec {
            norm: self.norm.clone(),
            num_tasks: self.cfg.num_tasks,
            gamma: self.cfg.gamma as f32,
            n_step: self.cfg.n_step,
            crop_pad: self.cfg.encoder.as_ref().map_or(0, |e| e.crop_pad),
        }
    }

    /// One action for one raw observation (normalised and task-tagged here), with candle.
    /// The policy runner uses [`crate::handle::PolicyHandle`] instead, which allocates nothing.
    pub fn act(
        &mut self,
        obs: &[f32],
        task_id: u8,
        image: Option<&[u8]>,
        deterministic: bool,
    ) -> Result<Vec<f32>> {
        if obs.len() != self.cfg.obs_dim {
            return Err(Error::Spec(format!(
                "observation has {} values, the policy expects {}",
                obs.len(),
                self.cfg.obs_dim
            )));
        }
        let mut x = Vec::with_capacity(self.cfg.state_in());
        push_obs(obs, task_id, &self.sample_spec(), &mut x);
        let mut xt = Tensor::from_vec(x, (1, self.cfg.state_in()), &self.dev)?;
        if self.cfg.encoder.is_some() {
            let Some(img) = image else {
                return Err(Error::Spec("this policy needs an image".into()));
            };
            if let Some(f) = self.encode(img, 1)? {
                xt = Tensor::cat(&[&xt, &f], 1)?;
            }
        }
        Ok(self
            .act_batch(&xt, deterministic)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Features `[batch, feature_dim]` of u8 images from the online encoder (for acting).
    pub fn encode(&self, images: &[u8], n: usize) -> Result<Option<Tensor>> {
        let (Some(ec), Some(enc)) = (&self.cfg.encoder, &self.encoder) else {
            return Ok(None);
        };
        let t = images_to_tensor(images, [n, ec.channels, ec.height, ec.width], &self.dev)?;
        Ok(Some(enc.forward(&t, true)?))
    }

    /// All network weights by name (actor, critic, target, encoders).
    pub fn weights(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for p in self.all_params() {
            for (n, v) in p.iter() {
                out.insert(n.to_string(), v.as_tensor().clone());
            }
        }
        out
    }

    /// The actor's (and encoder's) weights: what the policy runner needs.
    pub fn policy_weights(&self) -> Vec<(String, Tensor)> {
        self.actor_params
            .iter()
            .chain(self.encoder_params.iter())
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect()
    }

    /// Loads network weights saved by [`Agent::weights`] (every tensor, exact shapes).
    pub fn load_weights(&mut self, w: &HashMap<String, Tensor>) -> Result<()> {
        for p in self.all_params() {
            p.load(w)?;
        }
        Ok(())
    }

    /// Loads only the actor (and encoder) weights, e.g. from an exported policy.
    pub fn load_policy_weights(&mut self, w: &HashMap<String, Tensor>) -> Result<()> {
        self.actor_params.load(w)?;
        self.encoder_params.load(w)
    }

    /// Optimiser moments by name.
    pub fn optimizer_state(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = self.actor_opt.state_tensors("adam_actor")?;
        m.extend(self.critic_opt.state_tensors("adam_critic")?);
        Ok(m)
    }

    /// Step counts of the two optimisers (the moments travel as tensors).
    pub fn optimizer_steps(&self) -> (u64, u64) {
        (self.actor_opt.t, self.critic_opt.t)
    }

    pub fn load_optimizer_state(
        &mut self,
        t: &HashMap<String, Tensor>,
        steps: (u64, u64),
    ) -> Result<()> {
        self.actor_opt.load_state("adam_actor", t)?;
        self.critic_opt.load_state("adam_critic", t)?;
        self.actor_opt.t = steps.0;
        self.critic_opt.t = steps.1;
        Ok(())
    }

    /// Re-initialises the optimiser moments (fine-tuning after pre-training keeps weights only
    /// when asked to).
    pub fn reset_optimizers(&mut self) -> Result<()> {
        let mut critic_opt_params = self.critic_params.clone();
        if self.cfg.encoder.as_ref().is_some_and(|e| e.trainable) {
            critic_opt_params.extend(&self.encoder_params);
        }
        self.actor_opt = Adam::new(&self.actor_params, self.cfg.lr_actor)?;
        self.critic_opt = Adam::new(&critic_opt_params, self.cfg.lr_critic)?;
        Ok(())
    }

    /// Scales both optimisers' step sizes to `scale` × the configured `lr_actor` / `lr_critic`
    /// (a learning-rate schedule sets it before each update; 1 restores them).
    pub fn set_lr_scale(&mut self, scale: f64) {
        self.actor_opt.lr = self.cfg.lr_actor * scale;
        self.critic_opt.lr = self.cfg.lr_critic * scale;
    }

    /// The actor's and the critics' current step sizes.
    pub fn learning_rates(&self) -> (f64, f64) {
        (self.actor_opt.lr, self.critic_opt.lr)
    }

    pub fn num_params(&self) -> usize {
        self.actor_params.num_scalars() + self.critic_params.num_scalars()
    }
}
