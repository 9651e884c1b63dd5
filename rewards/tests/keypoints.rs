//! KAGI in sim: keypoint lifting round trip with rendered depth, the dense reward along the
//! scripted expert (monotone, correlated with ground-truth progress), proposal parsing and the
//! VLM proposal round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use nalgebra::{Point3, Vector3};
use proptest::prelude::*;
use rft_rewards::keypoints::*;
use rft_rewards::metrics::spearman;
use rft_rewards::vlm::{VlmClient, VlmConfig};
use rft_rewards::{Error, ImageRef};
use rft_sim::{
    Camera, DemoFramesConfig, DemoKind, Direction, Frame, Renderer, Sim, SimConfig, TaskKind,
    demo_frames,
};
use support::{Reply, completion, serve};

/// Renders the push scene; returns the frame and camera.
fn render(sim: &Sim, cam: Camera) -> Frame {
    let (mut frame, mut vis) = (Frame::default(), Vec::new());
    sim.visuals(&mut vis);
    Renderer::new().render(&vis, &cam, &mut frame);
    frame
}

#[test]
fn lifting_rendered_depth_round_trips_within_5_mm() {
    let mut sim = Sim::new(SimConfig::default()).unwrap();
    sim.reset(3);
    let h = sim.cube_half();
    let cube = sim.object_pose().translation.vector;
    for (w, hgt) in [(128u32, 128u32), (640, 480)] {
        let cam = Camera::scene(w, hgt);
        let frame = render(&sim, cam);
        let depth = DepthRef {
            width: w,
            height: hgt,
            depth: &frame.depth,
        };
        let k = Intrinsics::from_k(&cam.k()).unwrap();
        // The cube's top face, the two region centres and a grid of table points.
        let mut points = vec![
            Point3::from(cube + Vector3::new(0.0, 0.0, h)),
            Point3::new(0.5, 0.15, 0.0),
            Point3::new(0.5, -0.15, 0.001),
        ];
        for i in 0..6 {
            for j in 0..5 {
                points.push(Point3::new(
                    0.3 + 0.08 * f64::from(i),
                    -0.35 + 0.15 * f64::from(j),
                    0.0,
                ));
            }
        }
        let (mut worst, mut used) = (0.0f64, 0);
        for p in points {
            let Some((u, v, z)) = cam.project(&p) else {
                continue;
            };
            // Only points the camera sees (not behind the arm): rendered depth agrees.
            match depth.sample(u, v) {
                Some(d) if (d - z).abs() < 0.01 => {}
                _ => continue,
            }
            let q = lift(u, v, &depth, &k, &cam.world_from_camera).unwrap();
            worst = worst.max((q - p).norm());
            used += 1;
        }
        eprintln!(
            "{w}x{hgt}: {used} points, worst lifting error {:.2} mm",
            worst * 1e3
        );
        assert!(used >= 20, "only {used} visible points");
        assert!(worst < 0.005, "{w}x{hgt}: {:.2} mm", worst * 1e3);
    }
}

#[test]
fn lifting_where_nothing_was_rendered_is_an_error() {
    let d = vec![f32::NAN; 16];
    let depth = DepthRef {
        width: 4,
        height: 4,
        depth: &d,
    };
    let k = Intrinsics::from_k(&[10.0, 0.0, 2.0, 0.0, 10.0, 2.0, 0.0, 0.0, 1.0]).unwrap();
    let e = lift(1.5, 1.5, &depth, &k, &nalgebra::Isometry3::identity()).unwrap_err();
    assert!(e.to_string().contains("no valid depth"), "{e}");
    assert!(Intrinsics::from_k(&[0.0; 9]).is_err());
}

/// Ground-truth keypoints of push in sim: the tool goes to the cube's far side from the goal
/// (the affordance point), then the cube goes to the goal.
fn gt_waypoints(task: TaskKind, dir: Direction, cube0: Vector3<f64>, half: f64) -> Vec<Waypoint> {
    let (_, to) = task.regions(dir);
    let goal = to.rest_point(half);
    let u = (goal - cube0).xy().normalize();
    let behind = cube0 - Vector3::new(u.x, u.y, 0.0) * (half + 0.03);
    vec![
        Waypoint {
            point: Point3::from(behind),
            track: Tracked::Tool,
        },
        Waypoint {
            point: Point3::from(goal),
            track: Tracked::Object,
        },
    ]
}

/// Dense reward and ground-truth progress of each frame of successful expert demos.
fn dense_along_expert(dir: Direction, episodes: usize, seed: u64) -> Vec<(Vec<f64>, Vec<f64>)> {
    let mut cfg = DemoFramesConfig::new(TaskKind::Push, dir, episodes, seed);
    cfg.failure_fraction = 0.0;
    cfg.width = 16;
    cfg.height = 16;
    cfg.frame_hz = 10.0;
    let d = demo_frames(&cfg, |_, _| {}).unwrap();
    assert!(d.kinds.iter().all(|k| *k == DemoKind::Success));
    let mut out = Vec::new();
    for e in 0..episodes as u32 {
        let idx: Vec<usize> = (0..d.len()).filter(|&i| d.episode[i] == e).collect();
        let c0 = d.cube[idx[0]].map(f64::from);
        let wp = gt_waypoints(TaskKind::Push, dir, Vector3::from(c0), 0.025);
        let mut scorer = DenseScorer::new(wp, 0.02).unwrap();
        let mut dense = Vec::new();
        let mut gt = Vec::new();
        for &i in &idx {
            let p = |v: [f32; 3]| Point3::new(f64::from(v[0]), f64::from(v[1]), f64::from(v[2]));
            dense.push(f64::from(scorer.score(&p(d.tcp[i]), &p(d.cube[i]))));
            gt.push(f64::from(d.progress[i]));
        }
        out.push((dense, gt));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    /// Along the scripted expert the dense reward never drops (beyond 1 % of its range, for
    /// contact jitter) and stays in [0, 1).
    #[test]
    fn dense_reward_is_monotone_along_the_expert(seed in 0u64..10_000, backward in any::<bool>()) {
        let dir = if backward { Direction::Backward } else { Direction::Forward };
        for (dense, _) in dense_along_expert(dir, 1, seed) {
            for w in dense.windows(2) {
                prop_assert!(w[1] >= w[0] - 0.01, "{dense:?}");
            }
            prop_assert!(dense.iter().all(|d| (0.0..1.0).contains(d)));
            // It ends with both waypoints reached.
            prop_assert!(*dense.last().unwrap() > 0.6, "{dense:?}");
        }
    }
}

#[test]
fn dense_reward_correlates_with_ground_truth_progress() {
    for dir in [Direction::Forward, Direction::Backward] {
        let (mut d, mut g) = (Vec::new(), Vec::new());
        for (dense, gt) in dense_along_expert(dir, 10, 777) {
            d.extend(dense);
            g.extend(gt);
        }
        let rho = spearman(&d, &g);
        eprintln!(
            "push {}: Spearman ρ(dense, progress) = {rho:.3} over {} frames",
            dir.name(),
            d.len()
        );
        assert!(rho >= 0.8, "{rho}");
    }
}

#[test]
fn scorer_advances_through_waypoints_and_stays_below_one() {
    let wp = vec![
        Waypoint {
            point: Point3::new(1.0, 0.0, 0.0),
            track: Tracked::Tool,
        },
        Waypoint {
            point: Point3::new(0.0, 1.0, 0.0),
            track: Tracked::Object,
        },
    ];
    let mut s = DenseScorer::new(wp, 0.1).unwrap();
    let o = Point3::origin();
    assert_eq!(s.score(&o, &o), 0.0);
    let half = s.score(&Point3::new(0.45, 0.0, 0.0), &o);
    assert!((half - 0.5 / 3.0).abs() < 1e-6, "{half}");
    // Within the radius: the first waypoint is reached; the object segment starts at 0.
    assert!((s.score(&Point3::new(0.95, 0.0, 0.0), &o) - 1.0 / 3.0).abs() < 1e-6);
    assert_eq!(s.reached(), 1);
    // Moving the tool away no longer matters.
    assert!((s.score(&o, &o) - 1.0 / 3.0).abs() < 1e-6);
    let all = s.score(&o, &Point3::new(0.0, 0.95, 0.0));
    assert!((all - 2.0 / 3.0).abs() < 1e-6 && all < 1.0);
    s.reset();
    assert_eq!(s.score(&o, &o), 0.0);
    assert!(DenseScorer::new(vec![], 0.1).is_err());
}

fn marks(n: u32) -> Vec<Mark> {
    (1..=n)
        .map(|id| Mark {
            id,
            u: f64::from(id),
            v: 1.0,
        })
        .collect()
}

#[test]
fn proposals_are_parsed_and_validated() {
    let m = marks(9);
    let p = parse_proposal(
        "Sure!\n```json\n{\"keypoints\": [3], \"waypoints\": [3, \"7\", 9]}\n```",
        &m,
    )
    .unwrap();
    assert_eq!(
        p,
        Proposal {
            keypoints: vec![3],
            waypoints: vec![3, 7, 9]
        }
    );
    for (bad, why) in [
        ("no json here", "no JSON object"),
        ("{\"keypoints\": [1], \"waypoints\": [12]}", "mark 12"),
        ("{\"keypoints\": [1]}", "`waypoints` is missing"),
        ("{\"keypoints\": [1], \"waypoints\": []}", "empty"),
        (
            "{\"keypoints\": [\"left\"], \"waypoints\": [1]}",
            "not a mark number",
        ),
        ("{\"keypoints\": [1], \"waypoints\": [1,", "bad JSON"),
    ] {
        let e = parse_proposal(bad, &m).unwrap_err();
        assert!(
            matches!(e, Error::Answer(_)) && e.to_string().contains(why),
            "{bad}: {e}"
        );
    }
}

#[test]
fn colour_marks_find_the_cube_and_the_vlm_proposal_round_trips() {
    let mut sim = Sim::new(SimConfig::default()).unwrap();
    sim.reset(5);
    let cam = Camera::scene(256, 256);
    let frame = render(&sim, cam);
    let img = ImageRef::new(256, 256, &frame.rgb).unwrap();
    let found = candidate_marks(
        &img,
        MarkSource::Colour {
            max_marks: 8,
            min_area_px: 6,
        },
    );
    let (cu, cv, _) = cam
        .project(&Point3::from(sim.object_pose().translation.vector))
        .unwrap();
    let near = found.iter().find(|m| (m.u - cu).hypot(m.v - cv) < 6.0);
    assert!(
        near.is_some(),
        "no mark near the cube at ({cu:.0}, {cv:.0}): {found:?}"
    );
    let cube_mark = near.unwrap().id;

    let grid = candidate_marks(&img, MarkSource::Grid { cols: 4, rows: 3 });
    assert_eq!(grid.len(), 12);
    assert_eq!((grid[0].u, grid[0].v), (32.0, 256.0 / 6.0));
    let drawn = draw_marks(&img, &found, 2);
    assert_ne!(drawn, frame.rgb);

    let answer = format!("{{\"keypoints\": [{cube_mark}], \"waypoints\": [{cube_mark}, 1]}}");
    let s = serve(vec![Reply::Json(completion(&answer, None))]);
    let client = VlmClient::new(VlmConfig {
        base_url: s.url.clone(),
        model: "test-vlm".into(),
        ..VlmConfig::default()
    })
    .unwrap();
    let mut proposer = KeypointProposer {
        client,
        marks: MarkSource::Colour {
            max_marks: 8,
            min_area_px: 6,
        },
        label_scale: 2,
    };
    let (m, p) = proposer
        .propose(&img, "push the red cube onto the green square")
        .unwrap();
    assert_eq!(m, found);
    assert_eq!(p.keypoints, vec![cube_mark]);
    // The prompt lists the marks and the image sent is the marked one.
    let body = s.requests.lock().unwrap()[0].clone();
    let text = body["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("push the red cube") && text.contains(&format!("{cube_mark}")));
    let url = body["messages"][0]["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap();
    let want = rft_rewards::vlm::png_data_url(&ImageRef::new(256, 256, &drawn).unwrap()).unwrap();
    assert_eq!(url, want);
}
