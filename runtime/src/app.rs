//! Running a launch: the bus, the run directory, the nodes, the runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bus::zenoh::ZenohTransport;
use crate::bus::{Bus, Signal};
use crate::error::{Error, Result};
use crate::executor::{Clock, RunReport, Runtime, Shutdown, SimClock, Stage};
use crate::launch::{BusConfig, BusKind, ClockKind, ExecutorKind, Launch, LaunchCtx};

/// Opens the bus a launch file asks for.
pub fn open_bus(cfg: &BusConfig) -> Result<Bus> {
    match cfg.kind {
        BusKind::Inproc => Ok(Bus::inproc()),
        BusKind::Zenoh => Ok(Bus::new(Arc::new(ZenohTransport::open(
            &cfg.zenoh,
            cfg.domain_id,
        )?))),
        BusKind::Ros2 => {
            #[cfg(feature = "ros2")]
            {
                Ok(Bus::new(Arc::new(crate::bus::ros2::Ros2Transport::open(
                    cfg.domain_id,
                )?)))
            }
            #[cfg(not(feature = "ros2"))]
            {
                Err(Error::Zenoh(
                    "bus kind `ros2` needs rft built with `--features ros2`".into(),
                ))
            }
        }
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn timestamp_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates `runs/<time>-<name>[-N]` and writes the resolved launch file into it.
pub fn make_run_dir(launch: &Launch, suffix: Option<&str>) -> Result<PathBuf> {
    let base = launch.file.runs_dir.join(format!(
        "{}-{}{}",
        timestamp_utc(),
        launch.file.name,
        suffix.map(|s| format!("-{s}")).unwrap_or_default()
    ));
    let mut dir = base.clone();
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = PathBuf::from(format!("{}-{n}", base.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        context: format!("creating run directory {}", dir.display()),
        source: e,
    })?;
    std::fs::write(dir.join("launch.toml"), &launch.resolved).map_err(|e| Error::Io {
        context: format!("writing {}", dir.join("launch.toml").display()),
        source: e,
    })?;
    Ok(dir)
}

/// A launch ready to run.
pub struct Prepared {
    pub runtime: Runtime,
    pub run_dir: PathBuf,
    pub duration: Option<Duration>,
    pub bus: Bus,
}

/// Builds the bus, run directory and nodes (all of them, or only `only`).
pub fn prepare(launch: &Launch, only: Option<&str>) -> Result<Prepared> {
    prepare_in(launch, only, None)
}

/// [`prepare`] into an existing run directory (`None`: a new one).
pub fn prepare_in(launch: &Launch, only: Option<&str>, dir: Option<PathBuf>) -> Result<Prepared> {
    if let Some(name) = only {
        if !launch.nodes.iter().any(|n| n.entry.name == name) {
            let names: Vec<&str> = launch.nodes.iter().map(|n| n.entry.name.as_str()).collect();
            return Err(Error::Launch {
                path: launch.path.clone(),
                key: "nodes".into(),
                reason: format!("no node named `{name}` (nodes: {})", names.join(", ")),
            });
        }
        if launch.file.bus.kind == BusKind::Inproc {
            return Err(Error::Launch {
                path: launch.path.clone(),
                key: "bus.kind".into(),
                reason: "`rft node` runs one node per process, which an in-process bus cannot connect; set bus.kind = \"zenoh\" (e.g. --set bus.kind=zenoh)".into(),
            });
        }
    }
    let clock = match launch.file.clock.kind {
        ClockKind::Wall => Clock::Wall,
        ClockKind::Sim => Clock::Sim(Arc::new(SimClock::default())),
    };
    let bus = open_bus(&launch.file.bus)?;
    let run_dir = match dir {
        Some(d) => d,
        None => make_run_dir(launch, only)?,
    };
    let ctx = LaunchCtx {
        run_dir: run_dir.clone(),
    };
    let mut runtime =
        Runtime::new(clock).with_progress(Duration::from_secs_f64(launch.file.progress_s));
    if launch.file.clock.executor == ExecutorKind::Lockstep {
        runtime = runtime.lockstep()?;
    }
    for spec in launch
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|o| o == n.entry.name))
    {
        let wake = Arc::new(Signal::default());
        let handle = bus.node(&spec.entry.name, spec.entry.remap.clone(), wake)?;
        let node = spec
            .params
            .build_in(spec.entry.name.clone(), spec.period(), &handle, &ctx)?;
        let stage = if spec.params.is_observer() {
            Stage::Observer
        } else {
            Stage::Normal
        };
        runtime.add_with_handle(node, handle, stage);
    }
    Ok(Prepared {
        runtime,
        run_dir,
        duration: launch.file.duration_s.map(Duration::from_secs_f64),
        bus,
    })
}

/// Runs a prepared launch; `on_start` receives the shutdown handle (for Ctrl-C).
pub fn run(prepared: Prepared, on_start: impl FnOnce(Arc<Shutdown>)) -> Result<RunReport> {
    let Prepared {
        runtime,
        run_dir,
        duration,
        bus,
    } = prepared;
    on_start(runtime.shutdown_handle());
    tracing::info!(run_dir = %run_dir.display(), bus = bus.kind(), "launch running");
    let report = runtime.run(duration)?;
    drop(bus);
    Ok(report)
}
