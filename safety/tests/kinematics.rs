//! Kinematics of the repo's Panda URDF against an independent modified-DH chain, Jacobians
//! against finite differences, differential IK, and bad URDFs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::f64::consts::{FRAC_PI_2, FRAC_PI_4};
use std::path::Path;

use nalgebra::{Isometry3, Matrix4, Matrix6xX, Vector3, Vector6};
use rft_safety::kinematics::{Chain, DiffIk};

fn urdf() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/panda.urdf")
}

fn panda(tip: &str) -> Chain {
    Chain::from_urdf_file(&urdf(), "panda_link0", tip).unwrap()
}

/// Craig's modified DH: Rx(α_{i-1}) Tx(a_{i-1}) Rz(θ_i) Tz(d_i), with the published Panda table.
fn dh_flange(q: &[f64; 7]) -> Matrix4<f64> {
    let table = [
        (0.0, 0.333, 0.0),
        (0.0, 0.0, -FRAC_PI_2),
        (0.0, 0.316, FRAC_PI_2),
        (0.0825, 0.0, FRAC_PI_2),
        (-0.0825, 0.384, -FRAC_PI_2),
        (0.0, 0.0, FRAC_PI_2),
        (0.088, 0.0, FRAC_PI_2),
    ];
    let rx = |a: f64| {
        Matrix4::new(
            1.0,
            0.0,
            0.0,
            0.0,
            0.0,
            a.cos(),
            -a.sin(),
            0.0,
            0.0,
            a.sin(),
            a.cos(),
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
        )
    };
    let rz = |t: f64| {
        Matrix4::new(
            t.cos(),
            -t.sin(),
            0.0,
            0.0,
            t.sin(),
            t.cos(),
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
        )
    };
    let tr = |x: f64, z: f64| {
        Matrix4::new(
            1.0, 0.0, 0.0, x, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, z, 0.0, 0.0, 0.0, 1.0,
        )
    };
    let mut t: Matrix4<f64> = Matrix4::identity();
    for (i, (a, d, alpha)) in table.iter().enumerate() {
        t = t * rx(*alpha) * tr(*a, 0.0) * rz(q[i]) * tr(0.0, *d);
    }
    t * tr(0.0, 0.107)
}

const CONFIGS: [[f64; 7]; 5] = [
    [0.0, 0.0, 0.0, -0.0698, 0.0, 0.0, 0.0],
    [
        0.0,
        -FRAC_PI_4,
        0.0,
        -3.0 * FRAC_PI_4,
        0.0,
        FRAC_PI_2,
        FRAC_PI_4,
    ],
    [0.5, 0.3, -0.7, -1.2, 0.9, 1.8, -2.0],
    [-2.5, 1.5, 2.5, -2.9, -2.5, 3.5, 2.8],
    [1.0, -1.0, 1.0, -2.0, 1.0, 0.5, 0.0],
];

#[test]
fn forward_kinematics_matches_an_independent_dh_chain_within_a_millimetre() {
    let chain = panda("panda_link8");
    assert_eq!(chain.dof(), 7);
    for q in CONFIGS {
        let ours = chain.base_from_tip(&q).to_homogeneous();
        let theirs = dh_flange(&q);
        let dp = (ours.fixed_view::<3, 1>(0, 3) - theirs.fixed_view::<3, 1>(0, 3)).norm();
        let dr = (ours.fixed_view::<3, 3>(0, 0) - theirs.fixed_view::<3, 3>(0, 0)).norm();
        assert!(dp < 1e-9, "position differs by {dp} m at {q:?}");
        assert!(dr < 1e-9, "rotation differs by {dr} at {q:?}");
    }
    // The TCP is 0.1034 m beyond the flange along its z axis.
    let tcp = panda("panda_hand_tcp");
    for q in CONFIGS {
        let flange = chain.base_from_tip(&q);
        let expected = flange * nalgebra::Point3::new(0.0, 0.0, 0.1034);
        let got = tcp.base_from_tip(&q).translation.vector;
        assert!((got - expected.coords).norm() < 1e-9);
    }
}

#[test]
fn jacobian_matches_finite_differences() {
    let chain = panda("panda_hand_tcp");
    let mut frames = Vec::new();
    let mut jac = Matrix6xX::zeros(7);
    let h = 1e-6;
    for q in CONFIGS {
        chain.forward(&q, &mut frames);
        chain.jacobian(&frames, &mut jac);
        let t0: Isometry3<f64> = chain.base_from_tip(&q);
        for i in 0..7 {
            let mut qp = q;
            qp[i] += h;
            let t1 = chain.base_from_tip(&qp);
            let v = (t1.translation.vector - t0.translation.vector) / h;
            let w = (t1.rotation * t0.rotation.inverse()).scaled_axis() / h;
            let fd = Vector6::new(v.x, v.y, v.z, w.x, w.y, w.z);
            let col = jac.column(i).into_owned();
            assert!(
                (fd - col).norm() < 1e-5,
                "joint {i} at {q:?}: {fd} vs {col}"
            );
        }
    }
}

#[test]
fn differential_ik_tracks_twists_and_keeps_posture_in_the_null_space() {
    let chain = panda("panda_hand_tcp");
    let ready = CONFIGS[1].to_vec();
    let mut ik = DiffIk::new(&chain, 1e-3, 1.0, ready.clone());
    let mut frames = Vec::new();
    let mut jac = Matrix6xX::zeros(7);
    let mut qd = [0.0; 7];
    let q = [0.3, -0.5, 0.2, -2.0, 0.1, 1.7, 0.5];
    let twist = Vector6::new(0.05, -0.02, 0.03, 0.0, 0.0, 0.2);
    ik.solve(&chain, &q, &twist, &mut qd);
    chain.forward(&q, &mut frames);
    chain.jacobian(&frames, &mut jac);
    let achieved = &jac * nalgebra::DVector::from_column_slice(&qd);
    assert!((achieved - twist).norm() < 1e-3, "{achieved} vs {twist}");
    // The posture term moves the joints without moving the tip.
    let mut qd0 = [0.0; 7];
    ik.solve(&chain, &q, &Vector6::zeros(), &mut qd0);
    assert!(
        qd0.iter().any(|v| v.abs() > 1e-3),
        "posture pull is active away from rest"
    );
    let tip_motion = &jac * nalgebra::DVector::from_column_slice(&qd0);
    assert!(tip_motion.norm() < 1e-3, "{tip_motion}");
    // Integrating a pure z velocity moves the tip along z.
    let mut q2 = q;
    let z0 = chain.base_from_tip(&q2).translation.vector;
    for _ in 0..100 {
        ik.solve(
            &chain,
            &q2,
            &Vector6::new(0.0, 0.0, 0.1, 0.0, 0.0, 0.0),
            &mut qd,
        );
        for i in 0..7 {
            q2[i] += qd[i] * 0.01;
        }
    }
    let dz = chain.base_from_tip(&q2).translation.vector - z0;
    assert!((dz - Vector3::new(0.0, 0.0, 0.1)).norm() < 2e-3, "{dz}");
}

#[test]
fn limits_and_collision_spheres_come_from_the_urdf() {
    let chain = panda("panda_hand_tcp");
    assert_eq!(chain.joints[3].lower, -3.0718);
    assert_eq!(chain.joints[3].upper, -0.0698);
    assert_eq!(chain.joints[6].max_velocity, 2.61);
    // Every link with geometry has spheres; the hand's hangs off joint 7 (index 6).
    assert!(
        chain.spheres.iter().any(|s| s.joint.is_none()),
        "base spheres"
    );
    for i in 0..7 {
        assert!(
            chain.spheres.iter().any(|s| s.joint == Some(i)),
            "link {} has spheres",
            i + 1
        );
    }
    let hand = chain
        .spheres
        .iter()
        .filter(|s| s.joint == Some(6))
        .map(|s| s.center_in_frame.z)
        .fold(f64::MIN, f64::max);
    assert!(
        hand > 0.107,
        "the hand sphere sits beyond the flange ({hand})"
    );
}

#[test]
fn bad_urdfs_give_clear_errors() {
    let e = Chain::from_urdf_file(Path::new("/nonexistent.urdf"), "a", "b")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent.urdf") && e.contains("cannot read"),
        "{e}"
    );
    let e = Chain::from_urdf_str("<robot name=\"x\"><link", "a", "b")
        .unwrap_err()
        .to_string();
    assert!(e.contains("malformed URDF"), "{e}");
    let e = Chain::from_urdf_file(&urdf(), "panda_link0", "nope")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("panda.urdf") && e.contains("`nope` is not connected"),
        "{e}"
    );
    let e = Chain::from_urdf_file(&urdf(), "base", "panda_link8")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no link named `base`"), "{e}");
}
