//! The run's `report/` PNGs: success rate against online steps (ground-truth evaluations and
//! the training episodes' true outcomes), the classifier's precision and recall against ground
//! truth during the run, human resets and safety interventions, and loop-latency histograms.

use std::path::{Path, PathBuf};

use rft_sim::Direction;

use super::finetune::FinetuneLog;
use crate::plot::{BLUE, Chart, GREEN, GREY, ORANGE, RED, Series, csv_column, render_png};

const W: usize = 900;
const H: usize = 500;

fn series(label: &str, points: Vec<(f64, f64)>, color: [u8; 3]) -> Series {
    Series {
        label: label.into(),
        points,
        color,
    }
}

/// Counts of `v` in `bins` equal bins between its 0.1st and 99.9th percentile, as points.
pub fn histogram(v: &[f32], bins: usize) -> Vec<(f64, f64)> {
    if v.is_empty() || bins == 0 {
        return Vec::new();
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let q = |p: f64| f64::from(s[((s.len() - 1) as f64 * p).round() as usize]);
    let (lo, hi) = (q(0.0), q(0.999).max(q(0.0) + 1e-9));
    let w = (hi - lo) / bins as f64;
    let mut c = vec![0usize; bins];
    for x in &s {
        let i = ((f64::from(*x) - lo) / w).floor();
        if i >= 0.0 {
            c[(i as usize).min(bins - 1)] += 1;
        }
    }
    c.iter()
        .enumerate()
        .map(|(i, n)| (lo + (i as f64 + 0.5) * w, *n as f64))
        .collect()
}

/// Writes the report PNGs of a fine-tuning run into `out` and returns their paths.
pub fn write(log: &FinetuneLog, metrics_csv: &Path, out: &Path) -> crate::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(crate::Error::io(out))?;
    let mut files = Vec::new();
    let mut save = |name: &str, c: &Chart| -> crate::Result<()> {
        let p = out.join(name);
        render_png(c, W, H, &p)?;
        files.push(p);
        Ok(())
    };
    // Success rate vs online steps.
    let eval = |f: &dyn Fn(&super::finetune::EvalPoint) -> f64| -> Vec<(f64, f64)> {
        log.evals
            .iter()
            .map(|e| (e.step as f64, 100.0 * f(e)))
            .collect()
    };
    let rolling = |dir: Direction| -> Vec<(f64, f64)> {
        let eps: Vec<_> = log
            .episodes
            .iter()
            .filter(|e| e.direction == dir.name())
            .collect();
        (0..eps.len())
            .map(|i| {
                let w = &eps[i.saturating_sub(19)..=i];
                let ok = w.iter().filter(|e| e.true_success).count();
                (eps[i].end_step as f64, 100.0 * ok as f64 / w.len() as f64)
            })
            .collect()
    };
    save(
        "success_rate.png",
        &Chart {
            title: "success rate vs online steps (ground truth)".into(),
            x_label: "online steps".into(),
            y_label: "success %".into(),
            series: vec![
                series("forward eval", eval(&|e| e.forward.rate.rate), BLUE),
                series("backward eval", eval(&|e| e.backward.rate.rate), ORANGE),
                series(
                    "forward episodes (last 20)",
                    rolling(Direction::Forward),
                    GREEN,
                ),
                series(
                    "backward episodes (last 20)",
                    rolling(Direction::Backward),
                    GREY,
                ),
            ],
            hlines: vec![(85.0, "85 %".into(), RED)],
            vlines: Vec::new(),
        },
    )?;
    let col = |y: &str| csv_column(metrics_csv, "step", y).unwrap_or_default();
    save(
        "classifier.png",
        &Chart {
            title: "reward classifier vs ground truth, per frame".into(),
            x_label: "online steps".into(),
            y_label: "%".into(),
            series: vec![
                series(
                    "precision",
                    col("classifier_precision")
                        .into_iter()
                        .map(|(x, y)| (x, 100.0 * y))
                        .collect(),
                    BLUE,
                ),
                series(
                    "recall",
                    col("classifier_recall")
                        .into_iter()
                        .map(|(x, y)| (x, 100.0 * y))
                        .collect(),
                    ORANGE,
                ),
            ],
            hlines: vec![(95.0, "95 %".into(), GREY)],
            vlines: Vec::new(),
        },
    )?;
    save(
        "human_resets.png",
        &Chart {
            title: "human resets needed (cumulative)".into(),
            x_label: "online steps".into(),
            y_label: "resets".into(),
            series: vec![series("human resets", col("human_resets"), RED)],
            ..Default::default()
        },
    )?;
    save(
        "safety.png",
        &Chart {
            title: "safety filter interventions (cumulative control steps)".into(),
            x_label: "online steps".into(),
            y_label: "steps".into(),
            series: vec![series(
                "overridden steps",
                col("safety_override_steps"),
                ORANGE,
            )],
            ..Default::default()
        },
    )?;
    save(
        "latency.png",
        &Chart {
            title: "observation to action latency (histogram)".into(),
            x_label: "microseconds".into(),
            y_label: "steps".into(),
            series: vec![series("obs -> action", histogram(&log.act_us, 40), BLUE)],
            ..Default::default()
        },
    )?;
    save(
        "learner_latency.png",
        &Chart {
            title: "learner update round (histogram)".into(),
            x_label: "milliseconds".into(),
            y_label: "rounds".into(),
            series: vec![series("update round", histogram(&log.update_ms, 40), GREEN)],
            ..Default::default()
        },
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_value_once() {
        let v: Vec<f32> = (0..1000).map(|i| (i % 100) as f32).collect();
        let h = histogram(&v, 10);
        assert_eq!(h.len(), 10);
        let total: f64 = h.iter().map(|p| p.1).sum();
        assert_eq!(total, 1000.0);
        assert!(h.iter().all(|p| (p.1 - 100.0).abs() <= 10.0), "{h:?}");
        assert!(histogram(&[], 10).is_empty());
    }
}
