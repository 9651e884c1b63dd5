//! The `rft` command line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rft_autonomy::pipeline::PipelineConfig;
use rft_runtime::Shutdown;
use rft_runtime::bus::zenoh::{ZenohConfig, ZenohTransport};
use rft_runtime::{app, launch, tools};

mod learntools;
mod pipeline;
mod rewardtools;
mod simtools;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rft",
    version,
    about = "Reset-free RL fine-tuning of robot manipulation policies"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Payload of `rft ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PingKindArg {
    /// A 7-joint `sensor_msgs/JointState`.
    JointState,
    /// A `sensor_msgs/Image` whose data has `--size` bytes.
    Bytes,
}

impl From<PingKindArg> for tools::PingKind {
    fn from(k: PingKindArg) -> Self {
        match k {
            PingKindArg::JointState => tools::PingKind::JointState,
            PingKindArg::Bytes => tools::PingKind::Bytes,
        }
    }
}

#[derive(Subcommand)]
enum SimCmd {
    /// Render the scene (or the wrist camera) to a PNG: `rft sim render --task push --out frame.png`.
    Render {
        /// push | pick_place
        #[arg(long, default_value = "push")]
        task: String,
        /// forward | backward: where the cube starts.
        #[arg(long, default_value = "forward")]
        direction: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "frame.png")]
        out: PathBuf,
        #[arg(long, default_value_t = 640)]
        width: u32,
        #[arg(long, default_value_t = 480)]
        height: u32,
        /// The wrist camera instead of the scene camera.
        #[arg(long)]
        wrist: bool,
        /// Let the scripted expert finish the task first.
        #[arg(long)]
        solved: bool,
        /// Another robot's URDF.
        #[arg(long)]
        urdf: Option<PathBuf>,
    },
    /// Render scripted demos (successes, near misses, partial attempts) as labelled frames
    /// for `rft train-reward`: `rft sim frames --direction forward --episodes 45 --out f.safetensors`.
    Frames {
        #[arg(long, default_value = "push")]
        task: String,
        #[arg(long, default_value = "forward")]
        direction: String,
        #[arg(long, default_value_t = 45)]
        episodes: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 128)]
        width: u32,
        #[arg(long, default_value_t = 128)]
        height: u32,
        /// Camera frames per simulated second.
        #[arg(long, default_value_t = 5.0)]
        frame_hz: f64,
        /// Share of failed episodes.
        #[arg(long, default_value_t = 1.0 / 3.0)]
        failure_fraction: f64,
        #[arg(long, default_value = "frames.safetensors")]
        out: PathBuf,
    },
    /// Run the scripted experts on randomised episodes and print their success rates.
    Experts {
        #[arg(long, default_value = "push")]
        task: String,
        /// forward | backward | both
        #[arg(long, default_value = "both")]
        direction: String,
        #[arg(long, default_value_t = 20)]
        episodes: u64,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every node of a launch file in this process.
    Launch {
        file: PathBuf,
        /// Override a value: `--set nodes.0.rate_hz=20`, `--set bus.kind=zenoh`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The run directory (`{run_dir}` in node parameters); made if missing. Default: a new
        /// `runs/<time>-<launch>`.
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Run one node of a launch file (multi-process / multi-machine over zenoh).
    Node {
        name: String,
        #[arg(long)]
        launch: PathBuf,
        /// The run directory to share with the other nodes' processes (`{run_dir}` in node
        /// parameters), e.g. the one an earlier `rft launch` or `rft pipeline --out` made.
        /// Default: a new `runs/<time>-<launch>-<node>`.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Validate a launch file without running anything.
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// List live topics and their types (rmw_zenoh peers included).
    Topics {
        #[command(flatten)]
        zenoh: ZenohArgs,
        /// How long to wait for the graph to answer.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Also list publishers and subscribers.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print messages of a topic.
    Echo {
        topic: String,
        #[command(flatten)]
        zenoh: ZenohArgs,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout_s: Option<f64>,
        /// Print long arrays in full.
        #[arg(long)]
        full: bool,
    },
    /// Print the rate and jitter of a topic.
    Hz {
        topic: String,
        #[command(flatten)]
        zenoh: ZenohArgs,
        #[arg(long, default_value_t = 100)]
        window: usize,
        #[arg(long)]
        duration_s: Option<f64>,
    },
    /// Record topics (all when none given) to an MCAP file that Foxglove and `ros2 bag` open.
    Record {
        out: PathBuf,
        topics: Vec<String>,
        #[command(flatten)]
        zenoh: ZenohArgs,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        duration_s: Option<f64>,
    },
    /// Publish a message given as JSON, e.g.
    /// `rft pub /joint_velocity_cmd std_msgs/msg/Float64MultiArray '{"layout":{"dim":[],"data_offset":0},"data":[0,0]}'`.
    Pub {
        topic: String,
        r#type: String,
        json: String,
        #[command(flatten)]
        zenoh: ZenohArgs,
        #[arg(long, default_value_t = 1.0)]
        rate_hz: f64,
        /// Stop after this many messages (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Wait this long for subscribers to be discovered before the first message.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
    },
    /// Train online on a built-in environment: `rft train --env pendulum --algo sac`.
    Train(learntools::TrainArgs),
    /// Pre-train offline from a dataset: `rft pretrain --data run.mcap --algo calql`.
    Pretrain(learntools::PretrainArgs),
    /// Write a built-in offline dataset: `rft dataset pendulum --episodes 50 --noise 0.5`.
    Dataset(learntools::DatasetArgs),
    /// Train a success classifier on labelled frames: `rft train-reward --data f.safetensors`.
    TrainReward(rewardtools::TrainRewardArgs),
    /// The offline stages on the simulated push task: demos, reward classifiers, Cal-QL
    /// pre-training, ground-truth evaluation (`rft launch` then fine-tunes in the node graph).
    Pipeline(pipeline::PipelineArgs),
    /// Ground-truth success rate of a policy on the simulated task, with a 95% interval:
    /// `rft eval --checkpoint runs/<run>/learner/checkpoints --episodes 50`.
    Eval(pipeline::EvalArgs),
    /// Plot learning curves from metrics CSVs: `rft plot run/metrics.csv --y eval_return`.
    Plot(learntools::PlotArgs),
    /// The simulator: render a picture, run the scripted experts.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
    /// Run a zenoh router (what `zenohd`/`rmw_zenohd` do) so processes and machines find each
    /// other: `rft router` listens on tcp/127.0.0.1:7447, the default every rft process connects to.
    Router {
        #[arg(long, default_value = "tcp/127.0.0.1:7447")]
        listen: Vec<String>,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration_s: Option<f64>,
    },
    /// Echo ping messages back (the other end of `rft ping` and the zenoh benchmarks).
    Pong {
        #[command(flatten)]
        zenoh: ZenohArgs,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Measure round-trip latency against an `rft pong`.
    Ping {
        #[command(flatten)]
        zenoh: ZenohArgs,
        #[arg(long, value_enum, default_value = "joint-state")]
        kind: PingKindArg,
        /// Payload size in bytes for `--kind bytes`.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
}

/// Zenoh session options shared by the graph tools.
#[derive(Args, Clone)]
struct ZenohArgs {
    /// Endpoint to connect to (repeatable); default tcp/127.0.0.1:7447 (a router or an rft
    /// process listening there) unless --listen is given.
    #[arg(long)]
    connect: Vec<String>,
    /// Endpoint to listen on (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// ROS domain id.
    #[arg(long, env = "ROS_DOMAIN_ID", default_value_t = 0)]
    domain_id: u32,
    /// Zenoh mode: peer or client.
    #[arg(long, default_value = "peer")]
    mode: String,
}

impl ZenohArgs {
    fn open(&self) -> anyhow::Result<Arc<ZenohTransport>> {
        let mut cfg = ZenohConfig {
            mode: self.mode.clone(),
            ..ZenohConfig::default()
        };
        if !self.listen.is_empty() {
            cfg.listen = self.listen.clone();
        }
        if !self.connect.is_empty() || !self.listen.is_empty() {
            cfg.connect = self.connect.clone();
        }
        Ok(Arc::new(ZenohTransport::open(&cfg, self.domain_id)?))
    }
}

static RUNTIME_STOP: Mutex<Option<Arc<Shutdown>>> = Mutex::new(None);

fn install_ctrl_c() {
    let result = ctrlc::set_handler(|| {
        tools::INTERRUPTED.store(true, Ordering::Relaxed);
        if let Some(s) = RUNTIME_STOP
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            s.trigger("interrupted (Ctrl-C)");
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot install the Ctrl-C handler");
    }
}

fn secs(s: Option<f64>) -> anyhow::Result<Option<Duration>> {
    s.map(|s| Duration::try_from_secs_f64(s).with_context(|| format!("bad duration {s}")))
        .transpose()
}

fn run_launch(
    file: &std::path::Path,
    set: &[String],
    only: Option<&str>,
    run_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let launch = launch::load(&rft_nodes::registry(), file, set)?;
    let mut dir = run_dir;
    let mut summary = None;
    // `rft launch --run-dir D`: the launch as run goes there, as into a new run directory.
    if only.is_none()
        && let Some(d) = &dir
    {
        std::fs::write(d.join("launch.toml"), &launch.resolved)
            .with_context(|| format!("writing {}", d.join("launch.toml").display()))?;
    }
    let pipeline: Option<PipelineConfig> = launch
        .file
        .pipeline
        .as_ref()
        .map(rft_config::from_table)
        .transpose()
        .with_context(|| format!("{}: pipeline", file.display()))?;
    if only.is_none()
        && let Some(p) = pipeline.as_ref().filter(|p| p.enabled)
    {
        let d = match dir.take() {
            Some(d) => d,
            None => app::make_run_dir(&launch, None)?,
        };
        println!("run directory: {}", d.display());
        let s = rft_autonomy::pipeline::run(p, &d)?;
        pipeline::print_summary(&s);
        if launch.nodes.is_empty() {
            return Ok(());
        }
        summary = Some(s);
        dir = Some(d);
    }
    let prepared = app::prepare_in(&launch, only, dir)?;
    let run_dir = prepared.run_dir.clone();
    let report = app::run(prepared, |s| {
        *RUNTIME_STOP.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    })?;
    println!("run directory: {}", run_dir.display());
    println!(
        "stopped: {} (in {} ms)",
        report.reason,
        report.stop_latency.as_millis()
    );
    for n in &report.nodes {
        println!(
            "  {:<20} {:>8} steps {:>6} overruns {:>8} wakes{}",
            n.name,
            n.steps,
            n.overruns,
            n.wakes,
            n.error
                .as_ref()
                .map(|e| format!("  ERROR: {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = report.nodes.iter().find_map(|n| n.error.as_ref()) {
        bail!("a node failed: {e}");
    }
    if let Some(line) = pipeline::graph_summary(&run_dir) {
        println!("{line}");
    }
    // The policy the graph fine-tuned, evaluated as the pipeline evaluates.
    if let (Some(p), Some(s)) = (pipeline.as_ref(), summary.as_mut())
        && rft_autonomy::pipeline::evaluate_after_launch(p, &run_dir, s)?
    {
        pipeline::print_summary(s);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    // Colour only for a person at a terminal: a log redirected to a file or read by another
    // program gets plain text (and NO_COLOR, https://no-color.org, turns it off everywhere).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,zenoh=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    install_ctrl_c();
    match real_main(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_sim(cmd: SimCmd) -> anyhow::Result<()> {
    match cmd {
        SimCmd::Render {
            task,
            direction,
            seed,
            out,
            width,
            height,
            wrist,
            solved,
            urdf,
        } => {
            let args = simtools::RenderArgs {
                task: simtools::task(&task)?,
                direction: simtools::direction(&direction)?,
                seed,
                width,
                height,
                wrist,
                solved,
                urdf: urdf.as_deref(),
            };
            let what = simtools::render(&args, &out)?;
            println!("wrote {} ({what})", out.display());
            Ok(())
        }
        SimCmd::Frames {
            task,
            direction,
            episodes,
            seed,
            width,
            height,
            frame_hz,
            failure_fraction,
            out,
        } => {
            let args = rewardtools::FramesArgs {
                task: simtools::task(&task)?,
                direction: simtools::direction(&direction)?,
                episodes,
                seed,
                width,
                height,
                frame_hz,
                failure_fraction,
            };
            let what = rewardtools::frames(&args, &out)?;
            println!("wrote {}: {what}", out.display());
            Ok(())
        }
        SimCmd::Experts {
            task,
            direction,
            episodes,
        } => {
            let dirs = match direction.as_str() {
                "both" => vec![rft_sim::Direction::Forward, rft_sim::Direction::Backward],
                d => vec![simtools::direction(d)?],
            };
            if !simtools::experts(
                simtools::task(&task)?,
                &dirs,
                episodes,
                &mut std::io::stdout(),
            )? {
                bail!("an expert succeeded on fewer than 95% of its episodes");
            }
            Ok(())
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    match cli.cmd {
        Cmd::Launch { file, set, run_dir } => {
            if let Some(d) = &run_dir {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("creating run directory {}", d.display()))?;
            }
            run_launch(&file, &set, None, run_dir)
        }
        Cmd::Node {
            name,
            launch,
            set,
            run_dir,
        } => run_launch(&launch, &set, Some(&name), run_dir),
        Cmd::Check { file, set } => {
            let l = launch::load(&rft_nodes::registry(), &file, &set)?;
            println!("{}: ok ({} nodes)", file.display(), l.nodes.len());
            Ok(())
        }
        Cmd::Topics {
            zenoh,
            timeout_ms,
            verbose,
        } => {
            let t = zenoh.open()?;
            let topics = tools::list_topics(&t, Duration::from_millis(timeout_ms))?;
            let mut out = stdout.lock();
            for ti in topics {
                writeln!(out, "{} [{}]", ti.topic, ti.type_name)?;
                if verbose {
                    writeln!(out, "    publishers: {}", ti.publishers.join(", "))?;
                    writeln!(out, "    subscribers: {}", ti.subscribers.join(", "))?;
                }
            }
            Ok(())
        }
        Cmd::Echo {
            topic,
            zenoh,
            count,
            timeout_s,
            full,
        } => {
            let (_bus, node) = tools::zenoh_node(zenoh.open()?, "rft_echo")?;
            let n = tools::echo(
                &node,
                &topic,
                count,
                secs(timeout_s)?,
                full,
                &mut stdout.lock(),
            )?;
            if count.is_some_and(|c| n < c) {
                bail!("received {n} of {} messages on {topic}", count.unwrap_or(0));
            }
            Ok(())
        }
        Cmd::Hz {
            topic,
            zenoh,
            window,
            duration_s,
        } => {
            let (_bus, node) = tools::zenoh_node(zenoh.open()?, "rft_hz")?;
            tools::hz(&node, &topic, window, secs(duration_s)?, &mut stdout.lock())?;
            Ok(())
        }
        Cmd::Sim { cmd } => run_sim(cmd),
        Cmd::Train(a) => learntools::train(&a).map(|_| ()),
        Cmd::Pretrain(a) => learntools::pretrain(&a).map(|_| ()),
        Cmd::Dataset(a) => learntools::dataset(&a),
        Cmd::TrainReward(a) => rewardtools::train_reward(&a).map(|_| ()),
        Cmd::Pipeline(a) => pipeline::run_cli(&a),
        Cmd::Eval(a) => pipeline::eval_cli(&a).map(|_| ()),
        Cmd::Plot(a) => learntools::plot(&a),
        Cmd::Record {
            out,
            topics,
            zenoh,
            count,
            duration_s,
        } => {
            let (_bus, node) = tools::zenoh_node(zenoh.open()?, "rft_record")?;
            let n = tools::record(&node, &out, &topics, count, secs(duration_s)?)?;
            println!("wrote {n} messages to {}", out.display());
            Ok(())
        }
        Cmd::Pub {
            topic,
            r#type,
            json,
            zenoh,
            rate_hz,
            count,
            wait_ms,
        } => {
            let (_bus, node) = tools::zenoh_node(zenoh.open()?, "rft_pub")?;
            let n = tools::publish_json(
                &node,
                &topic,
                &r#type,
                &json,
                rate_hz,
                count,
                Duration::from_millis(wait_ms),
            )?;
            println!("published {n} messages on {topic}");
            Ok(())
        }
        Cmd::Router { listen, duration_s } => {
            let cfg = ZenohConfig {
                mode: "router".into(),
                listen,
                connect: vec![],
                ..ZenohConfig::default()
            };
            let _router = ZenohTransport::open(&cfg, 0)?;
            println!("zenoh router listening on {}", cfg.listen.join(", "));
            let t0 = Instant::now();
            let limit = secs(duration_s)?;
            while !tools::INTERRUPTED.load(Ordering::Relaxed)
                && limit.is_none_or(|d| t0.elapsed() < d)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        Cmd::Pong { zenoh, count } => {
            let (_bus, node) = tools::zenoh_node(zenoh.open()?, "rft_pong")?;
            let n = tools::pong(&node, count)?;
            println!("echoed {n} messages");
            Ok(())
        }
        Cmd::Ping {
            zenoh,
            kind,
            size,
            count,
        } => {
            let (_bus, node) = tools::zenoh_node(zenoh.open()?, "rft_ping")?;
            let p = tools::Pinger::new(&node, kind.into(), size)?;
            if !p.wait_ready(Duration::from_secs(10))? {
                bail!("no `rft pong` answered within 10 s");
            }
            let t0 = Instant::now();
            let mut rtts = Vec::with_capacity(count);
            for _ in 0..count {
                match p.round_trip(Duration::from_secs(1))? {
                    Some(d) => rtts.push(d),
                    None => eprintln!("lost one echo"),
                }
            }
            let rate = rtts.len() as f64 / t0.elapsed().as_secs_f64();
            rtts.sort();
            println!(
                "{} round trips: p50 {:?} p99 {:?} max {:?}; one-way ≈ RTT/2: p50 {:?} p99 {:?}; {rate:.0} round trips/s",
                rtts.len(),
                tools::percentile(&rtts, 50.0),
                tools::percentile(&rtts, 99.0),
                rtts.last().copied().unwrap_or_default(),
                tools::percentile(&rtts, 50.0) / 2,
                tools::percentile(&rtts, 99.0) / 2,
            );
            Ok(())
        }
    }
}
