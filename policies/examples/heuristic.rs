fn main() {
    for noise in [0.0, 0.3, 0.5, 0.7, 1.0] {
        let eps = rft_policies::pendulum::heuristic_episodes(20, noise, 1);
        let m: f32 = eps.iter().map(|e| e.total_reward()).sum::<f32>() / 20.0;
        println!("noise {noise}: mean return {m:.1}");
    }
}
