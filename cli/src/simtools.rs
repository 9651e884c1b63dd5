//! `rft sim …`: look at the simulator and its experts without launching anything.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use rft_sim::expert::{expert_for, run_episode};
use rft_sim::{Camera, Direction, Frame, Renderer, Sim, SimConfig, TaskKind, TwistController};

/// Parses a task name.
pub fn task(s: &str) -> anyhow::Result<TaskKind> {
    TaskKind::parse(s).with_context(|| format!("unknown task `{s}`; tasks: push, pick_place"))
}

/// Parses a direction name.
pub fn direction(s: &str) -> anyhow::Result<Direction> {
    match s {
        "forward" => Ok(Direction::Forward),
        "backward" => Ok(Direction::Backward),
        _ => bail!("unknown direction `{s}`; directions: forward, backward"),
    }
}

/// What `rft sim render` draws.
pub struct RenderArgs<'a> {
    pub task: TaskKind,
    pub direction: Direction,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub wrist: bool,
    /// Run the direction's expert to the end first, to show the finished task.
    pub solved: bool,
    pub urdf: Option<&'a Path>,
}

/// Renders one frame to a PNG; returns a one-line description.
pub fn render(args: &RenderArgs<'_>, out: &Path) -> anyhow::Result<String> {
    if !(8..=4096).contains(&args.width) || !(8..=4096).contains(&args.height) {
        bail!(
            "--width/--height {}×{} is outside 8..=4096",
            args.width,
            args.height
        );
    }
    let mut cfg = SimConfig {
        task: args.task,
        seed: args.seed,
        ..SimConfig::default()
    };
    if let Some(u) = args.urdf {
        cfg.urdf = u.to_path_buf();
    }
    let mut sim = Sim::new(cfg)?;
    sim.reset_for(args.seed, args.direction);
    let mut what = format!("{} {} seed {}", args.task, args.direction.name(), args.seed);
    if args.solved {
        let mut ctrl = TwistController::for_sim(&sim)?;
        let mut e = expert_for(args.task, args.direction);
        let r = run_episode(
            &mut sim,
            &mut ctrl,
            e.as_mut(),
            args.direction,
            30.0,
            20.0,
            100.0,
        );
        what += &format!(
            ", after the expert ({}, {:.1} s)",
            if r.success { "succeeded" } else { "failed" },
            r.time_s
        );
    }
    let cam = if args.wrist {
        let hand = sim.model().hand.unwrap_or(sim.model().tcp);
        Camera::wrist(args.width, args.height, 80.0, &sim.link_pose(hand))
    } else {
        Camera::scene(args.width, args.height)
    };
    let (mut frame, mut vis) = (Frame::default(), Vec::new());
    sim.visuals(&mut vis);
    Renderer::new().render(&vis, &cam, &mut frame);
    frame
        .write_png(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(what)
}

/// Runs `episodes` randomised expert episodes per direction and prints success rates.
pub fn experts(
    task: TaskKind,
    dirs: &[Direction],
    episodes: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let mut sim = Sim::new(SimConfig {
        task,
        ..SimConfig::default()
    })?;
    for &dir in dirs {
        let t0 = Instant::now();
        let (mut ok, mut time) = (0u64, 0.0);
        for seed in 0..episodes {
            sim.reset_for(seed, dir);
            let mut ctrl = TwistController::for_sim(&sim)?;
            let mut e = expert_for(task, dir);
            let r = run_episode(&mut sim, &mut ctrl, e.as_mut(), dir, 20.0, 20.0, 100.0);
            if r.success {
                ok += 1;
                time += r.time_s;
            }
            if (seed + 1) % 10 == 0 || seed + 1 == episodes {
                eprint!("\r{task} {}: {}/{episodes} episodes", dir.name(), seed + 1);
            }
        }
        eprintln!();
        writeln!(
            out,
            "{task} {}: {ok}/{episodes} succeeded, mean {:.1} s simulated per success, {:.1} s wall",
            dir.name(),
            time / ok.max(1) as f64,
            t0.elapsed().as_secs_f64()
        )?;
        all_ok &= ok * 100 >= episodes * 95;
    }
    Ok(all_ok)
}
