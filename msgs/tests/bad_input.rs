//! Random and truncated byte strings fed to every decoder give errors, never panics, and never
//! allocate more than the input could describe.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use proptest::prelude::*;
use rft_msgs::rmw_zenoh::{Attachment, parse_data_key, parse_token};
use rft_msgs::{CameraInfo, Image, JointState, Transition, cdr, registry};

fn valid_samples() -> Vec<(&'static rft_msgs::TypeInfo, Vec<u8>)> {
    let js = JointState {
        name: vec!["a".into(), "bb".into()],
        position: vec![1.0, 2.0],
        velocity: vec![3.0],
        effort: vec![],
        ..Default::default()
    };
    let img = Image {
        encoding: "rgb8".into(),
        width: 2,
        height: 1,
        step: 6,
        data: vec![1, 2, 3, 4, 5, 6],
        ..Default::default()
    };
    let tr = Transition {
        obs: vec![1.0; 3],
        action: vec![0.5; 2],
        next_obs: vec![2.0; 3],
        ..Default::default()
    };
    vec![
        (
            registry::of::<JointState>().unwrap(),
            cdr::encode(&js).unwrap(),
        ),
        (registry::of::<Image>().unwrap(), cdr::encode(&img).unwrap()),
        (
            registry::of::<CameraInfo>().unwrap(),
            cdr::encode(&CameraInfo::default()).unwrap(),
        ),
        (
            registry::of::<Transition>().unwrap(),
            cdr::encode(&tr).unwrap(),
        ),
    ]
}

#[test]
fn every_truncation_of_a_valid_message_is_an_error() {
    for (info, bytes) in valid_samples() {
        for len in 0..bytes.len().saturating_sub(3) {
            assert!(
                info.cdr_to_json(&bytes[..len]).is_err(),
                "{} truncated to {len}",
                info.name
            );
        }
        assert!(info.cdr_to_json(&bytes).is_ok());
    }
}

#[test]
fn a_claimed_length_of_four_gigabytes_is_rejected_without_allocating() {
    // header, stamp, frame_id "", then name: u32::MAX strings.
    let mut b = vec![0, 1, 0, 0];
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    let e = cdr::decode::<JointState>(&b).unwrap_err();
    assert!(matches!(e, rft_msgs::Error::LengthTooLarge { .. }), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_header = vec![0, 1, 0, 0];
        with_header.extend_from_slice(&bytes);
        for info in registry::all() {
            let _ = info.cdr_to_json(&bytes);
            let _ = info.cdr_to_json(&with_header);
        }
        let _ = Attachment::decode(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_data_key(&text);
        let _ = parse_token(&text);
    }

    #[test]
    fn mutated_valid_messages_never_panic(idx in 0usize..4, pos in any::<prop::sample::Index>(), val in any::<u8>()) {
        let samples = valid_samples();
        let (info, mut bytes) = samples[idx].clone();
        let p = pos.index(bytes.len());
        bytes[p] = val;
        let _ = info.cdr_to_json(&bytes);
    }

    #[test]
    fn joint_states_round_trip(pos in proptest::collection::vec(any::<f64>(), 0..16),
                               names in proptest::collection::vec("[a-z_0-9]{0,12}", 0..16),
                               sec in any::<i32>(), nanosec in any::<u32>()) {
        let js = JointState {
            header: rft_msgs::Header { stamp: rft_msgs::Time { sec, nanosec }, frame_id: "base".into() },
            name: names,
            position: pos.clone(),
            velocity: pos.iter().map(|p| p * 2.0).collect(),
            effort: vec![],
        };
        let bytes = cdr::encode(&js).unwrap();
        let back: JointState = cdr::decode(&bytes).unwrap();
        prop_assert_eq!(back.name, js.name);
        prop_assert_eq!(back.header, js.header);
        for (a, b) in back.position.iter().zip(&js.position) {
            prop_assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
