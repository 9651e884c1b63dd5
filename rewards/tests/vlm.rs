//! The OpenAI-compatible VLM classifier against a local server that speaks the wire format:
//! request schema, logprobs, and each failure mode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use rft_rewards::vlm::{VlmClient, VlmConfig};
use rft_rewards::{Error, ImageRef, SuccessClassifier};
use support::{Reply, completion, serve};

fn image() -> (u32, u32, Vec<u8>) {
    let (w, h) = (16u32, 8u32);
    let rgb = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    (w, h, rgb)
}

fn client(url: &str, f: impl FnOnce(&mut VlmConfig)) -> VlmClient {
    let mut cfg = VlmConfig {
        base_url: url.to_string(),
        model: "test-vlm".into(),
        timeout_ms: 2_000,
        backoff_ms: 10,
        ..VlmConfig::default()
    };
    f(&mut cfg);
    VlmClient::new(cfg).unwrap()
}

#[test]
fn request_matches_the_chat_completions_schema_and_logprobs_give_the_probability() {
    let s = serve(vec![Reply::Json(completion(
        "Yes",
        Some(&[("Yes", -0.2), (" no", -1.8), ("Maybe", -3.0)]),
    ))]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| c.api_key_env = Some("PATH".into()));
    let p = c
        .predict(
            &[ImageRef::new(w, h, &rgb).unwrap()],
            "push the red cube into the green square",
        )
        .unwrap()[0];
    let want = (-0.2f64).exp() / ((-0.2f64).exp() + (-1.8f64).exp());
    assert!((f64::from(p) - want).abs() < 1e-6, "{p} vs {want}");

    let body = s.requests.lock().unwrap()[0].clone();
    assert_eq!(body["model"], "test-vlm");
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 5);
    assert!(body["max_tokens"].as_u64().unwrap() >= 1);
    let msg = &body["messages"][0];
    assert_eq!(msg["role"], "user");
    let parts = msg["content"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "text");
    assert!(
        parts[0]["text"]
            .as_str()
            .unwrap()
            .contains("push the red cube into the green square")
    );
    assert_eq!(parts[1]["type"], "image_url");
    let url = parts[1]["image_url"]["url"].as_str().unwrap();
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    // The PNG decodes to the very frame that was sent.
    let mut dec = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    assert_eq!(&buf[..info.buffer_size()], &rgb[..]);
    // The API key travels as a bearer token.
    let auth = s.headers.lock().unwrap()[0]
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(
        auth,
        Some(format!("Bearer {}", std::env::var("PATH").unwrap()))
    );
}

#[test]
fn without_logprobs_the_text_answer_decides() {
    let s = serve(vec![
        Reply::Json(completion("No.", None)),
        Reply::Json(completion(" yes, it is", None)),
    ]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| c.logprobs = false);
    let img = ImageRef::new(w, h, &rgb).unwrap();
    assert_eq!(c.success_probability(&img, "t").unwrap(), 0.0);
    assert_eq!(c.success_probability(&img, "t").unwrap(), 1.0);
    assert!(s.requests.lock().unwrap()[0].get("logprobs").is_none());
}

#[test]
fn a_timeout_is_retried_then_reported() {
    let slow = Reply::Delay(
        Duration::from_millis(800),
        Box::new(Reply::Json(completion("yes", None))),
    );
    let s = serve(vec![slow]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| {
        c.timeout_ms = 150;
        c.max_retries = 1;
    });
    let err = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Vlm { .. }), "{msg}");
    assert!(
        msg.contains("timeout_ms = 150") && msg.contains("2 attempts"),
        "{msg}"
    );
    assert_eq!(c.stats().requests, 2);
}

#[test]
fn http_500_is_retried_with_backoff_and_then_succeeds() {
    let s = serve(vec![
        Reply::Status(500, r#"{"error":"overloaded"}"#.into(), vec![]),
        Reply::Status(503, "busy".into(), vec![]),
        Reply::Json(completion("yes", Some(&[("yes", -0.01), ("no", -4.6)]))),
    ]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| {
        c.max_retries = 2;
        c.backoff_ms = 40;
    });
    let t0 = Instant::now();
    let p = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap();
    assert!(p > 0.95);
    // Two backoffs, 40 ms then 80 ms: the schedule exactly, and the client really waited.
    assert_eq!(c.stats().backoff_ms, 120);
    assert!(t0.elapsed() >= Duration::from_millis(120));
    assert_eq!((c.stats().requests, c.stats().retries), (3, 2));
    let a = s.arrivals.lock().unwrap().clone();
    assert!(a[1] - a[0] >= Duration::from_millis(40) && a[2] - a[1] >= Duration::from_millis(80));
}

#[test]
fn http_500_that_persists_is_a_clear_error() {
    let s = serve(vec![Reply::Status(
        500,
        r#"{"error":"model crashed"}"#.into(),
        vec![],
    )]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| c.max_retries = 2);
    let err = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 500") && err.contains("model crashed") && err.contains("3 attempts"),
        "{err}"
    );
}

#[test]
fn http_400_is_not_retried() {
    let s = serve(vec![Reply::Status(
        400,
        r#"{"error":"image too large"}"#.into(),
        vec![],
    )]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| c.max_retries = 3);
    let err = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("image too large"),
        "{err}"
    );
    assert_eq!(c.stats().requests, 1);
}

#[test]
fn rate_limit_429_honours_retry_after() {
    let s = serve(vec![
        Reply::Status(
            429,
            "slow down".into(),
            vec![("retry-after".into(), "0.3".into())],
        ),
        Reply::Json(completion("no", None)),
    ]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |_| {});
    let t0 = Instant::now();
    assert_eq!(
        c.success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
            .unwrap(),
        0.0
    );
    // The server's 0.3 s, not the client's own 250 ms first backoff.
    assert_eq!(c.stats().backoff_ms, 300);
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn requests_are_spaced_by_the_minimum_interval() {
    let s = serve(vec![Reply::Json(completion("no", None))]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |c| c.min_interval_ms = 100);
    let img = ImageRef::new(w, h, &rgb).unwrap();
    let t0 = Instant::now();
    for _ in 0..4 {
        c.success_probability(&img, "t").unwrap();
    }
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // Every pair of requests, not only the total, is about the interval apart as the server
    // saw them (a rate limit is a lower bound; 80 ms leaves room for connection jitter, while
    // unpaced requests would be ~1 ms apart).
    let a = s.arrivals.lock().unwrap().clone();
    assert_eq!(a.len(), 4);
    for w in a.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(80),
            "{:?}",
            w[1] - w[0]
        );
    }
    assert_eq!(c.stats().backoff_ms, 0);
}

#[test]
fn malformed_json_is_an_error_not_a_probability() {
    let s = serve(vec![Reply::Raw("{\"choices\": [ {\"message\": ".into())]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |_| {});
    let err = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed JSON"), "{err}");
    assert_eq!(c.stats().requests, 1);
    // Valid JSON that is not a chat completion is refused too.
    let s = serve(vec![Reply::Json(
        serde_json::json!({"object": "list", "data": []}),
    )]);
    let mut c = client(&s.url, |_| {});
    let err = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap_err();
    assert!(matches!(err, Error::Answer(_)), "{err}");
}

#[test]
fn refusal_text_and_refusal_field_are_errors() {
    let mut refusal = completion("", None);
    refusal["choices"][0]["message"]["refusal"] = "I can't help with that.".into();
    refusal["choices"][0]["message"]["content"] = serde_json::Value::Null;
    let s = serve(vec![
        Reply::Json(completion(
            "I'm sorry, I cannot determine that from the image.",
            None,
        )),
        Reply::Json(refusal),
    ]);
    let (w, h, rgb) = image();
    let mut c = client(&s.url, |_| {});
    let img = ImageRef::new(w, h, &rgb).unwrap();
    let e1 = c.success_probability(&img, "t").unwrap_err().to_string();
    assert!(
        e1.contains("expected yes or no") && e1.contains("I'm sorry"),
        "{e1}"
    );
    let e2 = c.success_probability(&img, "t").unwrap_err().to_string();
    assert!(e2.contains("refused"), "{e2}");
}

#[test]
fn endpoint_down_is_a_clear_error() {
    // A port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = client(&format!("http://127.0.0.1:{port}/v1"), |c| {
        c.max_retries = 1
    });
    let (w, h, rgb) = image();
    let err = c
        .success_probability(&ImageRef::new(w, h, &rgb).unwrap(), "t")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}/v1/chat/completions")),
        "{err}"
    );
    assert!(err.contains("2 attempts"), "{err}");
}

#[test]
fn bad_config_is_rejected_before_any_request() {
    let bad = |f: fn(&mut VlmConfig)| {
        let mut c = VlmConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            ..VlmConfig::default()
        };
        f(&mut c);
        VlmClient::new(c).err().map(|e| e.to_string())
    };
    assert!(
        bad(|c| c.base_url = "localhost:8000".into())
            .unwrap()
            .contains("base_url")
    );
    assert!(bad(|c| c.model.clear()).unwrap().contains("model"));
    assert!(
        bad(|c| c.api_key_env = Some("RFT_SURELY_UNSET_VAR".into()))
            .unwrap()
            .contains("RFT_SURELY_UNSET_VAR")
    );
    if cfg!(not(feature = "tls")) {
        assert!(
            bad(|c| c.base_url = "https://api.example.com/v1".into())
                .unwrap()
                .contains("--features tls")
        );
    }
    assert!(bad(|_| {}).is_none());
}
