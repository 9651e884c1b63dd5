//! Binary-classification metrics: confusion matrix, precision, recall, ROC-AUC, and the
//! threshold that reaches a target precision (false positives are what break RL).

use serde::{Deserialize, Serialize};

/// A confusion matrix at one threshold, with the scores' ROC-AUC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub threshold: f32,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub precision: f64,
    pub recall: f64,
    pub roc_auc: f64,
}

impl Confusion {
    /// Counts `score > threshold` against `labels`.
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Self {
        let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
        for (&s, &l) in scores.iter().zip(labels) {
            match (s > threshold, l) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, false) => tn += 1,
                (false, true) => fn_ += 1,
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Confusion {
            threshold,
            tp,
            fp,
            tn,
            fn_,
            // No positive prediction: nothing was wrongly called a success.
            precision: if tp + fp == 0 {
                1.0
            } else {
                ratio(tp, tp + fp)
            },
            recall: ratio(tp, tp + fn_),
            roc_auc: roc_auc(scores, labels),
        }
    }

    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// A two-line table for logs and BENCHMARKS.md.
    pub fn table(&self) -> String {
        format!(
            "| | predicted success | predicted failure |\n|---|---|---|\n| success | {} | {} |\n| failure | {} | {} |",
            self.tp, self.fn_, self.fp, self.tn
        )
    }
}

impl std::fmt::Display for Confusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "precision {:.3} recall {:.3} ROC-AUC {:.3} at τ {:.3} (tp {} fp {} tn {} fn {})",
            self.precision,
            self.recall,
            self.roc_auc,
            self.threshold,
            self.tp,
            self.fp,
            self.tn,
            self.fn_
        )
    }
}

/// Area under the ROC curve (the Mann–Whitney statistic, ties counted half). 0.5 when one
/// class is missing.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> f64 {
    let mut v: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    // Sum of the positives' (average) ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += v[i..=j].iter().filter(|x| x.1).count() as f64 * avg_rank;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Sweeps the threshold down through the distinct scores, highest first: for each, the score,
/// the next lower score (if any) and the running (tp, fp) of everything scoring at or above it.
fn sweep(scores: &[f32], labels: &[bool]) -> Vec<(f32, Option<f32>, u64, u64)> {
    let mut v: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let s = v[i].0;
        while i < v.len() && v[i].0 == s {
            if v[i].1 {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        out.push((s, v.get(i).map(|x| x.0), tp, fp));
    }
    out
}

/// The lowest threshold whose precision on `(scores, labels)` is at least `target`, keeping
/// some recall; `None` when no threshold with a true positive reaches it.
pub fn threshold_for_precision(scores: &[f32], labels: &[bool], target: f64) -> Option<f32> {
    sweep(scores, labels)
        .into_iter()
        .filter(|&(_, _, tp, fp)| tp > 0 && tp as f64 / (tp + fp) as f64 >= target)
        // Everything scoring >= s is predicted positive: a threshold just under s.
        .map(|(s, next, _, _)| 0.5 * (s + next.unwrap_or(s - 1e-3)))
        .next_back()
}

/// Ranks with ties averaged (1-based).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson correlation of the tie-averaged ranks); 0 when either
/// side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (ra, rb) = (ranks(&a[..n]), ranks(&b[..n]));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n.max(1) as f64;
    let (ma, mb) = (mean(&ra), mean(&rb));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// τ for `target` precision on held-out scores; when no threshold reaches it, the one with
/// the best precision and `false`.
pub fn calibrate(scores: &[f32], labels: &[bool], target: f64) -> (f32, bool) {
    match threshold_for_precision(scores, labels, target) {
        Some(t) => (t, true),
        None => {
            let best = max_precision(scores, labels);
            (
                threshold_for_precision(scores, labels, best - 1e-12).unwrap_or(0.5),
                false,
            )
        }
    }
}

/// The best precision any threshold with a true positive reaches.
pub fn max_precision(scores: &[f32], labels: &[bool]) -> f64 {
    sweep(scores, labels)
        .into_iter()
        .filter(|&(_, _, tp, _)| tp > 0)
        .map(|(_, _, tp, fp)| tp as f64 / (tp + fp) as f64)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_reversed_scores() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &labels), 0.5);
        // One of four positive-negative pairs is in the wrong order.
        assert_eq!(roc_auc(&[0.1, 0.7, 0.6, 0.9], &labels), 0.75);
    }

    #[test]
    fn spearman_of_monotone_reversed_and_tied_sequences() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&a, &[1.0, 1.0, 1.0, 1.0]), 0.0);
        // Ranks [1, 2, 3.5, 3.5] against [1, 2, 3, 4]: 0.9487.
        assert!((spearman(&a, &[0.0, 1.0, 2.0, 2.0]) - 0.948_683).abs() < 1e-5);
    }

    #[test]
    fn threshold_reaches_the_target_precision_with_the_most_recall() {
        let scores = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.3, 0.2];
        let labels = [true, true, false, true, true, false, true, false];
        let t = threshold_for_precision(&scores, &labels, 0.75).unwrap();
        let c = Confusion::at(&scores, &labels, t);
        assert!(c.precision >= 0.75, "{c}");
        // 4 of 5 above 0.65 are positive (0.8); admitting 0.6 drops to 4/6.
        assert_eq!((c.tp, c.fp), (4, 1), "{c}");
        let t = threshold_for_precision(&scores, &labels, 1.0).unwrap();
        let c = Confusion::at(&scores, &labels, t);
        assert_eq!((c.tp, c.fp), (2, 0), "{c}");
        assert!(threshold_for_precision(&[0.9, 0.1], &[false, true], 0.9).is_none());
    }
}
