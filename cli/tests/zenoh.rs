//! Zenoh transport: two rft processes exchange JointState and 640×480 images; malformed samples
//! are counted and dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

// The test helpers shared with the nodes crate's tests.
#[path = "../../nodes/tests/common.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, read_mcap, wait_child, wait_for};
use rft_msgs::rmw_zenoh::{self, Attachment};
use rft_msgs::{Image, JointState, cdr, registry};
use rft_runtime::bus::zenoh::{ZenohConfig, ZenohTransport};
use rft_runtime::bus::{Bus, QueueConfig};
use rft_runtime::tools;
use zenoh::Wait;

fn session(listen: Option<u16>, connect: Option<u16>) -> Arc<ZenohTransport> {
    let cfg = ZenohConfig {
        listen: listen
            .map(|p| vec![format!("tcp/127.0.0.1:{p}")])
            .unwrap_or_default(),
        connect: connect
            .map(|p| vec![format!("tcp/127.0.0.1:{p}")])
            .unwrap_or_default(),
        ..ZenohConfig::default()
    };
    Arc::new(ZenohTransport::open(&cfg, 0).unwrap())
}

#[test]
fn two_processes_exchange_joint_states_and_vga_images() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let launch = dir.path().join("pub.toml");
    std::fs::write(
        &launch,
        format!(
            r#"
name = "publisher"
duration_s = 60.0
runs_dir = "{runs}"
[bus]
kind = "zenoh"
[bus.zenoh]
listen = ["tcp/127.0.0.1:{port}"]
connect = []
[[nodes]]
name = "arm"
kind = "kinematic_arm"
rate_hz = 100
[[nodes]]
name = "camera"
kind = "test_camera"
rate_hz = 30
params = {{ width = 640, height = 480 }}
"#,
            runs = dir.path().join("runs").display()
        ),
    )
    .unwrap();
    let rft = env!("CARGO_BIN_EXE_rft");
    let mut publisher = Command::new(rft)
        .args(["launch", launch.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("rec.mcap");
    let mut recorder = Command::new(rft)
        .args([
            "record",
            out.to_str().unwrap(),
            "/joint_states",
            "/camera/color/image_raw",
        ])
        .args([
            "--connect",
            &format!("tcp/127.0.0.1:{port}"),
            "--count",
            "60",
            "--duration-s",
            "40",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_child(&mut recorder, Duration::from_secs(60));
    let _ = Command::new("kill")
        .args(["-INT", &publisher.id().to_string()])
        .status();
    wait_child(&mut publisher, Duration::from_secs(10));
    assert!(status.success());
    let msgs = read_mcap(&out);
    assert_eq!(msgs.len(), 60);
    let images: Vec<Image> = msgs
        .iter()
        .filter(|(t, _, _)| t == "/camera/color/image_raw")
        .map(|(_, s, d)| {
            assert_eq!(s, "sensor_msgs/msg/Image");
            cdr::decode(d).unwrap()
        })
        .collect();
    let states: Vec<JointState> = msgs
        .iter()
        .filter(|(t, _, _)| t == "/joint_states")
        .map(|(_, _, d)| cdr::decode(d).unwrap())
        .collect();
    assert!(
        !images.is_empty() && !states.is_empty(),
        "{} images, {} states",
        images.len(),
        states.len()
    );
    for img in &images {
        assert_eq!(
            (img.width, img.height, img.encoding.as_str(), img.step),
            (640, 480, "rgb8", 1920)
        );
        assert_eq!(img.data.len(), 640 * 480 * 3);
        // The top-right pixel is outside the moving square: gradient red, no green, blue 96.
        assert_eq!(&img.data[639 * 3..640 * 3], &[254, 0, 96]);
    }
    assert!(
        states
            .iter()
            .all(|s| s.position.len() == 7 && s.name[0] == "panda_joint1")
    );
}

#[test]
fn malformed_and_unattached_samples_are_counted_and_dropped() {
    let port = free_port();
    let rx_t = session(Some(port), None);
    let tx_t = session(None, Some(port));
    let bus = Bus::new(rx_t.clone());
    let node = bus.simple_node("listener").unwrap();
    let sub = node
        .subscribe::<JointState>("/js", QueueConfig::drop_oldest(100))
        .unwrap();
    let info = registry::of::<JointState>().unwrap();
    let key = rmw_zenoh::data_key(0, "/js", info.name, &info.hash);
    let raw = tx_t.session().declare_publisher(key).wait().unwrap();
    let good = cdr::encode(&JointState {
        name: vec!["j".into()],
        position: vec![1.0],
        ..Default::default()
    })
    .unwrap();
    let att = |seq| {
        Attachment {
            sequence_number: seq,
            source_timestamp_ns: 1,
            gid: [3; 16],
        }
        .encode()
        .to_vec()
    };
    // Keep sending until the session has discovered the subscriber and all three kinds arrived.
    let mut seq = 0;
    let counts = wait_for(
        Duration::from_secs(15),
        "one good and two bad samples",
        || {
            seq += 1;
            raw.put(vec![0u8, 1, 0, 0, 0xff, 0xff, 0xff, 0x7f])
                .attachment(att(seq))
                .wait()
                .unwrap();
            raw.put(good.clone()).wait().unwrap(); // no attachment
            raw.put(good.clone()).attachment(att(seq)).wait().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let c = sub.stats();
            (c.received >= 1 && c.malformed >= 2).then_some(c)
        },
    );
    assert!(counts.malformed >= 2 * counts.received - 1, "{counts:?}");
    let msg = sub.try_recv().expect("the good sample was delivered");
    assert_eq!(msg.position, vec![1.0]);
}

#[test]
fn topics_lists_rft_publishers_and_subscribers_from_liveliness() {
    let port = free_port();
    let a = session(Some(port), None);
    let b = session(None, Some(port));
    let bus_a = Bus::new(a.clone());
    let n = bus_a.simple_node("talker").unwrap();
    let _p = n.publisher::<Image>("/cam/image").unwrap();
    let _s = n
        .subscribe::<JointState>("/js", QueueConfig::default())
        .unwrap();
    let topics = wait_for(Duration::from_secs(10), "both topics", || {
        let t = tools::list_topics(&b, Duration::from_millis(500)).unwrap();
        (t.len() >= 2).then_some(t)
    });
    let cam = topics.iter().find(|t| t.topic == "/cam/image").unwrap();
    assert_eq!(cam.type_name, "sensor_msgs/msg/Image");
    assert_eq!(cam.publishers, vec!["/talker".to_string()]);
    let js = topics.iter().find(|t| t.topic == "/js").unwrap();
    assert_eq!(js.subscribers, vec!["/talker".to_string()]);
}
