//! SAC on Pendulum-v1 with the rl-zoo hyperparameters: `cargo run --release -p rft-policies
//! --example sac_pendulum -- [steps] [seed]`.
use rft_policies::{Agent, AgentConfig, Algorithm, train};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> rft_policies::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cfg = AgentConfig::preset(Algorithm::Sac, 3, 1);
    cfg.lr_actor = 1e-3;
    cfg.lr_critic = 1e-3;
    cfg.lr_alpha = 1e-3;
    cfg.seed = seed;
    let mut agent = Agent::new(cfg, &candle_core::Device::Cpu)?;
    let oc = train::OnlineConfig {
        total_steps: steps,
        seed,
        eval_every: 2000,
        eval_episodes: 10,
        ..Default::default()
    };
    let mut line = train::ProgressLine::default();
    let log = train::train_online(&mut agent, "pendulum", &oc, None, None, &mut |p| {
        line.show(p)
    })?;
    println!(
        "final eval {:?} wall {:.1}s grad steps {}",
        log.final_eval(),
        log.wall_s,
        log.grad_steps
    );
    Ok(())
}
