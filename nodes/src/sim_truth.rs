//! The simulator's ground truth of success as nodes read it: `sim/<task>/<dir>/success` on
//! `/rft/metrics` (published by `sim_robot`), the newest sample per task id. The evaluator
//! scores episodes with it; the reward node scores its classifier with it (and answers with it
//! in the `ground_truth` ablation). Nothing a robot publishes.

use rft_msgs::Metric;
use rft_runtime::Result;
use rft_runtime::bus::{NodeHandle, QueueConfig, Subscription};
use rft_sim::TaskKind;

pub(crate) struct SimTruth {
    metrics: Subscription<Metric>,
    /// The task whose metrics count (None: any simulated task's).
    task: Option<TaskKind>,
    /// The newest sample per task id (forward, backward): (stamp ns, success).
    newest: [Option<(i64, bool)>; 2],
}

impl SimTruth {
    pub(crate) fn new(bus: &NodeHandle, task: Option<TaskKind>) -> Result<Self> {
        Ok(Self {
            metrics: bus.subscribe_quiet("/rft/metrics", QueueConfig::drop_oldest(1024))?,
            task,
            newest: [None, None],
        })
    }

    /// Takes the samples that arrived.
    pub(crate) fn update(&mut self) {
        for m in self.metrics.drain() {
            let Some(rest) = m.name.strip_prefix("sim/") else {
                continue;
            };
            let mut parts = rest.split('/');
            let (Some(task), Some(dir), Some("success"), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if self.task.is_some_and(|t| t.name() != task) {
                continue;
            }
            let i = match dir {
                "forward" => 0,
                "backward" => 1,
                _ => continue,
            };
            self.newest[i] = Some((m.header.stamp.as_nanos(), m.value > 0.5));
        }
    }

    /// The newest sample for `task_id` (0 forward, else backward): (stamp ns, success).
    pub(crate) fn newest(&self, task_id: u8) -> Option<(i64, bool)> {
        self.newest[usize::from(task_id).min(1)]
    }

    /// Success for `task_id` at `stamp_ns`, if the newest sample is at most `max_age_ns` from it.
    pub(crate) fn at(&mut self, task_id: u8, stamp_ns: i64, max_age_ns: i64) -> Option<bool> {
        self.update();
        self.newest(task_id)
            .filter(|(at, _)| (at - stamp_ns).abs() <= max_age_ns)
            .map(|(_, yes)| yes)
    }
}
