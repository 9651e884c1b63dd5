//! The CLI tools' library functions on the in-process bus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use rft_msgs::{Float64MultiArray, JointState};
use rft_runtime::bus::Bus;
use rft_runtime::tools;

#[test]
fn hz_measures_a_steady_stream() {
    let bus = Bus::inproc();
    let node = bus.simple_node("hz").unwrap();
    let publisher = bus
        .simple_node("talker")
        .unwrap()
        .publisher::<Float64MultiArray>("/x")
        .unwrap();
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        let mut next = start;
        while start.elapsed() < Duration::from_millis(1600) {
            publisher
                .publish(Float64MultiArray::from_data(vec![1.0]))
                .unwrap();
            next += Duration::from_millis(10);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let mut out = Vec::new();
    let stats = tools::hz(&node, "/x", 50, Some(Duration::from_millis(1500)), &mut out)
        .unwrap()
        .expect("rate measured");
    t.join().unwrap();
    let text = String::from_utf8(out).unwrap();
    // The plumbing: the tool printed a rate over a full window of the stream's arrivals. The
    // value itself depends on the machine's scheduling; `rate_stats_are_exact` checks the
    // arithmetic on known arrival times.
    assert!(text.contains("average rate: "), "{text}");
    assert!(
        stats.min_s <= stats.max_s && stats.window == 49,
        "{stats:?}"
    );
    assert!(
        stats.rate_hz.is_finite() && stats.rate_hz > 0.0,
        "{stats:?}"
    );
}

#[test]
fn rate_stats_are_exact() {
    // Intervals 10, 20 and 10 ms: mean 13.33 ms, so 75 Hz; jitter as `ros2 topic hz` gives it
    // (population standard deviation of the intervals).
    let s = tools::rate_stats(&[0.0, 0.01, 0.03, 0.04]).unwrap();
    assert!((s.rate_hz - 75.0).abs() < 1e-9, "{s:?}");
    assert!(
        (s.min_s - 0.01).abs() < 1e-12 && (s.max_s - 0.02).abs() < 1e-12,
        "{s:?}"
    );
    let mean: f64 = 0.04 / 3.0;
    let sd = ((2.0 * (0.01 - mean).powi(2) + (0.02 - mean).powi(2)) / 3.0).sqrt();
    assert!((s.std_dev_s - sd).abs() < 1e-12, "{s:?}");
    assert_eq!(s.window, 3);
    // A steady 100 Hz stream has no jitter.
    let steady: Vec<f64> = (0..11).map(|i| f64::from(i) * 0.01).collect();
    let s = tools::rate_stats(&steady).unwrap();
    assert!(
        (s.rate_hz - 100.0).abs() < 1e-9 && s.std_dev_s < 1e-12,
        "{s:?}"
    );
    // Too few arrivals, or no time between them: no rate.
    assert!(tools::rate_stats(&[1.0]).is_none());
    assert!(tools::rate_stats(&[1.0, 1.0]).is_none());
}

#[test]
fn echo_prints_fields_as_yaml_and_stops_at_count() {
    let bus = Bus::inproc();
    let node = bus.simple_node("echo").unwrap();
    let publisher = bus
        .simple_node("talker")
        .unwrap()
        .publisher::<JointState>("/js")
        .unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..200 {
            publisher
                .publish(JointState {
                    name: vec!["j1".into()],
                    position: vec![f64::from(i)],
                    ..Default::default()
                })
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut out = Vec::new();
    let n = tools::echo(
        &node,
        "/js",
        Some(3),
        Some(Duration::from_secs(10)),
        false,
        &mut out,
    )
    .unwrap();
    t.join().unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(n, 3);
    assert_eq!(text.matches("---").count(), 3, "{text}");
    assert!(
        text.contains("name: ['j1']") && text.contains("header:\n  stamp:\n    sec: 0"),
        "{text}"
    );
}
