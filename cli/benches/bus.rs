//! Bus latency: in-process pub→sub of a 921,600-byte image, and zenoh loopback between two
//! processes (this one and an `rft pong`) for a 7-joint JointState and 64 B / 4 KB / 921,600 B
//! payloads. Criterion measures the mean; the percentiles (which criterion does not report) are
//! printed as `PCT` lines from a separate pass of the same measurement.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rft_msgs::Image;
use rft_runtime::bus::zenoh::{ZenohConfig, ZenohTransport};
use rft_runtime::bus::{Bus, QueueConfig, Signal};
use rft_runtime::tools::{PingKind, Pinger, percentile};

fn vga() -> Arc<Image> {
    Arc::new(Image {
        height: 480,
        width: 640,
        encoding: "rgb8".into(),
        step: 1920,
        data: vec![9; 921_600],
        ..Default::default()
    })
}

fn report(name: &str, mut samples: Vec<Duration>, extra: &str) {
    samples.sort();
    println!(
        "PCT {name}: n={} p50={:.1}us p99={:.1}us max={:.1}us {extra}",
        samples.len(),
        percentile(&samples, 50.0).as_secs_f64() * 1e6,
        percentile(&samples, 99.0).as_secs_f64() * 1e6,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
}

fn inproc(c: &mut Criterion) {
    let bus = Bus::inproc();
    let node = bus
        .node("bench", BTreeMap::new(), Arc::new(Signal::default()))
        .unwrap();
    let publ = node.publisher::<Image>("/img").unwrap();
    let sub = node
        .subscribe::<Image>("/img", QueueConfig::latest_only())
        .unwrap();
    let img = vga();
    // Same thread: publish, then take it from the subscription queue.
    c.bench_function("inproc/image_921600/pub_to_sub_same_thread", |b| {
        b.iter(|| {
            publ.publish_arc(img.clone()).unwrap();
            sub.try_recv().unwrap()
        })
    });
    let mut same = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t0 = Instant::now();
        publ.publish_arc(img.clone()).unwrap();
        let _m = sub.try_recv().unwrap();
        same.push(t0.elapsed());
    }
    report("inproc image 921600 B pub->sub (same thread)", same, "");

    // Across threads: the subscriber blocks on its queue and is woken by the publish.
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let sub2 = node
        .subscribe::<Image>("/img2", QueueConfig::latest_only())
        .unwrap();
    let publ2 = node.publisher::<Image>("/img2").unwrap();
    let worker = std::thread::spawn(move || {
        let _ = ready_tx.send(());
        while let Some(_m) = sub2.recv_timeout(Duration::from_secs(2)) {
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().unwrap();
    let mut cross = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        std::thread::sleep(Duration::from_micros(200)); // let the subscriber block again
        let t0 = Instant::now();
        publ2.publish_arc(img.clone()).unwrap();
        let t1 = rx.recv().unwrap();
        cross.push(t1 - t0);
    }
    report(
        "inproc image 921600 B pub->sub (other thread, blocked)",
        cross,
        "",
    );
    drop(publ2);
    drop(rx);
    let _ = worker.join();
}

struct Pong(Child);
impl Drop for Pong {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn zenoh(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _pong = Pong(
        Command::new(env!("CARGO_BIN_EXE_rft"))
            .args(["pong", "--listen", &format!("tcp/127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rft pong"),
    );
    let cfg = ZenohConfig {
        connect: vec![format!("tcp/127.0.0.1:{port}")],
        ..ZenohConfig::default()
    };
    let bus = Bus::new(Arc::new(ZenohTransport::open(&cfg, 0).unwrap()));
    let node = bus.simple_node("bench_ping").unwrap();
    let cases = [
        ("joint_state_7", PingKind::JointState, 0usize),
        ("bytes_64", PingKind::Bytes, 64),
        ("bytes_4096", PingKind::Bytes, 4096),
        ("bytes_921600", PingKind::Bytes, 921_600),
    ];
    for (name, kind, size) in cases {
        let p = Pinger::new(&node, kind, size).unwrap();
        assert!(
            p.wait_ready(Duration::from_secs(20)).unwrap(),
            "rft pong did not answer"
        );
        let n = if size > 100_000 { 1_000 } else { 10_000 };
        let t0 = Instant::now();
        let mut one_way = Vec::with_capacity(n);
        for _ in 0..n {
            let rtt = p
                .round_trip(Duration::from_secs(2))
                .unwrap()
                .expect("echo lost");
            one_way.push(rtt / 2);
        }
        let per_s = n as f64 / t0.elapsed().as_secs_f64();
        report(
            &format!("zenoh 2-process {name} one-way (RTT/2)"),
            one_way,
            &format!("round_trips_per_s={per_s:.0} (one in flight)"),
        );
        c.bench_function(&format!("zenoh/{name}/round_trip"), |b| {
            b.iter(|| {
                p.round_trip(Duration::from_secs(2))
                    .unwrap()
                    .expect("echo lost")
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = inproc, zenoh
}
criterion_main!(benches);
