//! Reward fusion, configured in the launch file: a sparse success reward, a dense term that
//! counts only while the classifier reports no success (as in KAGI), a step penalty, and
//! penalties for human interventions and safety overrides.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionConfig {
    /// Reward when the (debounced) classifier reports success.
    pub success_reward: f32,
    /// Weight of the dense keypoint term (in [0, 1)); must stay below `success_reward` so a
    /// success always beats any dense progress.
    pub dense_weight: f32,
    /// Subtracted every step.
    pub step_penalty: f32,
    /// Subtracted on steps where a human intervened.
    pub intervention_penalty: f32,
    /// Subtracted on steps where the safety filter overrode the command.
    pub safety_penalty: f32,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            success_reward: 1.0,
            dense_weight: 0.5,
            step_penalty: 0.0,
            intervention_penalty: 0.0,
            safety_penalty: 0.0,
        }
    }
}

/// What one step's reward is made of.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RewardInputs {
    pub success: bool,
    /// The dense term in [0, 1), if a scorer runs.
    pub dense: Option<f32>,
    pub intervention: bool,
    pub safety_override: bool,
}

impl FusionConfig {
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("success_reward", self.success_reward),
            ("dense_weight", self.dense_weight),
            ("step_penalty", self.step_penalty),
            ("intervention_penalty", self.intervention_penalty),
            ("safety_penalty", self.safety_penalty),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(key, format!("{v} must be finite and ≥ 0")));
            }
        }
        if self.dense_weight >= self.success_reward && self.dense_weight > 0.0 {
            return Err(Error::config(
                "dense_weight",
                format!(
                    "{} must be below success_reward {} so success always dominates",
                    self.dense_weight, self.success_reward
                ),
            ));
        }
        Ok(())
    }

    /// The fused reward.
    pub fn reward(&self, r: &RewardInputs) -> f32 {
        let base = if r.success {
            self.success_reward
        } else {
            self.dense_weight * r.dense.unwrap_or(0.0).clamp(0.0, 1.0)
        };
        base - self.step_penalty
            - if r.intervention {
                self.intervention_penalty
            } else {
                0.0
            }
            - if r.safety_override {
                self.safety_penalty
            } else {
                0.0
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_dominates_and_penalties_subtract() {
        let f = FusionConfig {
            step_penalty: 0.01,
            intervention_penalty: 0.1,
            safety_penalty: 0.2,
            ..FusionConfig::default()
        };
        f.validate().unwrap();
        let dense_max = f.reward(&RewardInputs {
            dense: Some(0.999),
            ..Default::default()
        });
        let success = f.reward(&RewardInputs {
            success: true,
            dense: Some(0.0),
            ..Default::default()
        });
        assert!(success > dense_max);
        // The dense term does not add on top of success.
        assert_eq!(
            success,
            f.reward(&RewardInputs {
                success: true,
                dense: Some(0.9),
                ..Default::default()
            })
        );
        let both = f.reward(&RewardInputs {
            intervention: true,
            safety_override: true,
            ..Default::default()
        });
        assert!((both - (-0.31)).abs() < 1e-6, "{both}");
        let bad = FusionConfig {
            dense_weight: 1.0,
            ..FusionConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("dense_weight")
        );
        assert!(
            FusionConfig {
                step_penalty: -1.0,
                ..FusionConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
