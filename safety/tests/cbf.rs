//! The CBF-QP: KKT conditions on random QPs, pass-through of safe references, and forward
//! invariance of the safe set under random and adversarial commands.

use std::path::Path;

use nalgebra::{DVector, Matrix6xX, Point3, Vector3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rft_safety::cbf::{
    Barrier, BrakingRule, CbfConfig, CbfFilter, GainTuner, self_collision_pairs,
};
use rft_safety::kinematics::Chain;
use rft_safety::qp::DenseQp;

const READY: [f64; 7] = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785];

fn filter() -> CbfFilter {
    filter_with_self_pairs(false)
}

fn filter_with_self_pairs(guard_self: bool) -> CbfFilter {
    let urdf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/panda.urdf");
    let chain = Chain::from_urdf_file(&urdf, "panda_link0", "panda_hand_tcp").unwrap();
    let self_pairs = if guard_self {
        self_collision_pairs(&chain, &READY, 3, 0.05)
    } else {
        Vec::new()
    };
    let cfg = CbfConfig {
        joint_padding_rad: 0.05,
        alpha: 3.0,
        dt_s: 0.002,
        max_velocity_rad_s: chain.joints.iter().map(|j| j.max_velocity).collect(),
        max_accel_rad_s2: vec![15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0],
        workspace_min: Vector3::new(0.2, -0.4, 0.05),
        workspace_max: Vector3::new(0.75, 0.4, 0.7),
        obstacles: vec![
            (Point3::new(0.55, 0.25, 0.25), 0.06),
            (Point3::new(0.45, -0.3, 0.55), 0.05),
        ],
        first_obstacle_joint: 2,
        self_pairs,
        weights: vec![1.0; 7],
        slack_weight: 1e4,
        cartesian_brake_m_s2: 2.0,
    };
    CbfFilter::new(chain, cfg)
}

fn tuned_filter() -> CbfFilter {
    filter().with_tuner(Box::new(BrakingRule {
        alpha_min: 0.5,
        alpha_max: 20.0,
        margin: 0.3,
        min_speed: 0.05,
    }))
}

#[test]
fn solutions_of_random_qps_satisfy_the_kkt_conditions() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut worst = 0.0f64;
    for _ in 0..1000 {
        let n = 7;
        let x0: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let rows = (0..20)
            .map(|_| {
                let a: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
                let ax0: f64 = a.iter().zip(&x0).map(|(a, x)| a * x).sum();
                (a, ax0 - rng.random_range(0.0..0.5)) // x0 is feasible
            })
            .collect();
        let qp = DenseQp {
            p_diag: (0..n).map(|_| rng.random_range(0.1..10.0)).collect(),
            q: (0..n).map(|_| rng.random_range(-5.0..5.0)).collect(),
            rows,
            lo: vec![-2.0; n],
            hi: vec![2.0; n],
        };
        let sol = qp.solve().unwrap();
        worst = worst.max(qp.kkt_residual(&sol));
    }
    assert!(worst < 1e-5, "worst KKT residual {worst}");
}

#[test]
fn a_safe_reference_passes_unchanged() {
    let mut f = filter();
    let mut rng = StdRng::seed_from_u64(2);
    let mut u = [0.0; 7];
    for _ in 0..200 {
        let u_ref: Vec<f64> = (0..7).map(|_| rng.random_range(-0.05..0.05)).collect();
        let r = f.filter(&READY, &u_ref, &u_ref, &mut u).unwrap();
        for i in 0..7 {
            assert!(
                (u[i] - u_ref[i]).abs() < 1e-6,
                "joint {i}: {} vs {}",
                u[i],
                u_ref[i]
            );
        }
        assert!(r.slack < 1e-6);
    }
}

/// Commands that drive at joint limits, walls and obstacles as well as random ones.
fn adversarial(
    rng: &mut StdRng,
    f: &CbfFilter,
    q: &[f64],
    mode: u32,
    target: &Point3<f64>,
) -> Vec<f64> {
    let vmax = &f.config().max_velocity_rad_s;
    match mode {
        0 => (0..7)
            .map(|i| rng.random_range(-vmax[i]..vmax[i]))
            .collect(),
        1 => (0..7)
            .map(|i| {
                let j = &f.chain().joints[i];
                if q[i] - j.lower < j.upper - q[i] {
                    -vmax[i]
                } else {
                    vmax[i]
                }
            })
            .collect(),
        _ => {
            // Full speed pulling the tool towards a point outside the box or inside an obstacle.
            let chain = f.chain();
            let mut frames = Vec::new();
            let mut jac = Matrix6xX::zeros(7);
            chain.forward(q, &mut frames);
            chain.jacobian(&frames, &mut jac);
            let e = target - Point3::from(frames[7].translation.vector);
            let v = DVector::from_vec(vec![e.x, e.y, e.z, 0.0, 0.0, 0.0]);
            let qd = jac.transpose() * v;
            let scale = (0..7).map(|i| qd[i].abs() / vmax[i]).fold(1e-9, f64::max);
            (0..7).map(|i| qd[i] / scale).collect()
        }
    }
}

#[test]
fn random_and_adversarial_commands_never_leave_the_safe_set() {
    let (max_slack, _) = check_invariance(filter(), 3, 60);
    assert!(
        max_slack <= 1e-6,
        "the soft rows needed slack {max_slack}: the barriers alone did not hold"
    );
}

#[test]
fn with_online_gains_a_high_alpha_max_stays_safe() {
    // A fixed α = 20 lets the slack open and the tool cross a wall by centimetres (the
    // acceleration box cannot brake that hard); the braking rule lowers α where the robot closes
    // in fast and keeps the set invariant.
    // Known limit: when α drops as speed builds up, the bound can tighten faster than the
    // acceleration box follows, and the slack fallback opens for a step; the set still holds.
    let (_, slack_share) = check_invariance(tuned_filter(), 4, 60);
    assert!(
        slack_share < 0.01,
        "slack used in {:.2} % of steps",
        slack_share * 100.0
    );
}

#[test]
fn the_braking_rule_lowers_alpha_when_closing_fast_and_is_bounded() {
    let mut r = BrakingRule {
        alpha_min: 0.5,
        alpha_max: 20.0,
        margin: 0.5,
        min_speed: 0.05,
    };
    let b = Barrier::WorkspaceMin(0);
    assert_eq!(
        r.alpha(b, 0.2, 0.0, 2.0),
        20.0,
        "moving away: the fastest gain"
    );
    assert_eq!(r.alpha(b, 0.2, 0.5, 2.0), 2.0);
    assert_eq!(r.alpha(b, 0.2, 100.0, 2.0), 0.5, "bounded below");
    let mut f = tuned_filter();
    let mut u = [0.0; 7];
    let fast = [0.0, 1.5, 0.0, 1.5, 0.0, 0.0, 0.0];
    f.filter(&READY, &fast, &fast, &mut u).unwrap();
    let obstacle_rows = f
        .alphas()
        .iter()
        .filter(|(b, _)| matches!(b, Barrier::Obstacle(..)))
        .count();
    assert_eq!(
        f.alphas().len(),
        14 + 6 + obstacle_rows + f.config().self_pairs.len()
    );
    assert!(f.alphas().iter().all(|(_, a)| (0.5..=20.0).contains(a)));
    assert!(
        f.alphas().iter().any(|(_, a)| *a < 20.0),
        "some barrier is being approached"
    );
}

/// Runs the sequences and checks the safe set; returns the largest slack and the share of
/// steps that needed any.
fn check_invariance(mut f: CbfFilter, seed: u64, sequences: usize) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let targets = [
        Point3::new(1.2, 0.0, 0.4),
        Point3::new(0.45, 0.0, -0.3),
        Point3::new(0.5, 0.9, 0.4),
        Point3::new(0.55, 0.25, 0.25),
        Point3::new(0.45, -0.3, 0.55),
        Point3::new(0.0, 0.0, 1.2),
    ];
    let mut hs = Vec::new();
    let (mut worst_joint, mut worst_ws, mut worst_obs, mut worst_self) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let mut max_slack = 0.0f64;
    let (mut steps, mut slack_steps) = (0usize, 0usize);
    for seq in 0..sequences {
        let mut q: Vec<f64> = READY
            .iter()
            .map(|v| v + rng.random_range(-0.1..0.1))
            .collect();
        f.barriers(&q, &mut hs);
        assert!(
            hs.iter().all(|(_, h)| *h > 0.0),
            "start {seq} is inside the safe set"
        );
        let mut u_prev = vec![0.0; 7];
        let mut u = vec![0.0; 7];
        let mode = seq % 4;
        let target = targets[rng.random_range(0..targets.len())];
        for _ in 0..300 {
            let u_ref = adversarial(&mut rng, &f, &q, mode.min(2) as u32, &target);
            let r = f.filter(&q, &u_prev, &u_ref, &mut u).unwrap();
            max_slack = max_slack.max(r.slack);
            steps += 1;
            slack_steps += usize::from(r.slack > 1e-6);
            for i in 0..7 {
                q[i] += u[i] * f.config().dt_s;
            }
            u_prev.copy_from_slice(&u);
            f.barriers(&q, &mut hs);
            for (b, h) in &hs {
                match b {
                    Barrier::JointLower(_) | Barrier::JointUpper(_) => {
                        worst_joint = worst_joint.min(*h)
                    }
                    Barrier::WorkspaceMin(_) | Barrier::WorkspaceMax(_) => {
                        worst_ws = worst_ws.min(*h)
                    }
                    Barrier::Obstacle(..) => worst_obs = worst_obs.min(*h),
                    Barrier::SelfCollision(..) => worst_self = worst_self.min(*h),
                }
            }
        }
    }
    // Joint limits are linear and α·dt < 1: exact. The others are nonlinear in q and
    // discretised at 2 ms: allow a tenth of a millimetre.
    assert!(
        worst_joint >= -1e-9,
        "joint limit violated by {worst_joint} rad"
    );
    assert!(worst_ws >= -1e-4, "workspace violated by {worst_ws} m");
    assert!(
        worst_obs >= -1e-4,
        "obstacle clearance violated by {worst_obs} m"
    );
    assert!(
        worst_self >= -1e-4,
        "self-collision clearance violated by {worst_self} m"
    );
    (max_slack, slack_steps as f64 / steps as f64)
}

#[test]
fn self_collision_is_guarded() {
    let (max_slack, _) = check_invariance(filter_with_self_pairs(true), 5, 30);
    assert!(max_slack <= 1e-6, "slack {max_slack}");
}

#[test]
fn self_collision_pairs_skip_neighbours_and_start_clear() {
    let f = filter_with_self_pairs(true);
    let pairs = &f.config().self_pairs;
    assert!(pairs.len() >= 10, "{} pairs", pairs.len());
    let chain = f.chain();
    let link = |i: usize| chain.spheres[i].joint.map_or(0, |j| j + 1);
    assert!(pairs.iter().all(|&(a, b)| link(a).abs_diff(link(b)) >= 3));
    // The hand can reach the base and the lower links: those pairs are guarded.
    assert!(pairs.iter().any(|&(a, b)| link(a) <= 1 && link(b) == 7));
}
