//! The CLI tools' library functions on the in-process bus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use rft_msgs::{Float64MultiArray, JointState};
use rft_nodes::bus::Bus;
use rft_nodes::tools;

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
    assert!(text.contains("average rate: "), "{text}");
    // A 100 Hz stream: the estimate is in the right decade even on a loaded machine.
    assert!((20.0..500.0).contains(&stats.rate_hz), "{stats:?}");
    assert!(
        stats.min_s <= stats.max_s && stats.window == 49,
        "{stats:?}"
    );
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
