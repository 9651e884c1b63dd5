//! `rft dataset` → `rft pretrain` (Cal-QL) → `rft train` (WSRL from the pre-trained
//! checkpoint, RLPD with the dataset mixed in) → `rft plot`, through the real binary, on tiny
//! budgets; and the errors for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

use rft_policies::checkpoint;
use rft_policies::handle::InferencePolicy;

fn rft(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rft"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn ok(args: &[&str]) -> String {
    let (success, text) = rft(args);
    assert!(success, "rft {args:?} failed:\n{text}");
    text
}

/// Rows of a metrics CSV with the eval column filled.
fn eval_rows(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "eval_return").unwrap();
    lines
        .filter(|l| !l.split(',').nth(col).unwrap_or("").is_empty())
        .count()
}

#[test]
fn dataset_pretrain_finetune_and_plot_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_string_lossy().into_owned();
    let small = [
        "--hidden",
        "32,32",
        "--batch-size",
        "32",
        "--eval-episodes",
        "1",
    ];

    let data = d("data.safetensors");
    let text = ok(&[
        "dataset",
        "pendulum",
        "--episodes",
        "3",
        "--noise",
        "0.5",
        "--out",
        &data,
    ]);
    assert!(text.contains("600 transitions"), "{text}");

    let mut args = vec![
        "pretrain",
        "--data",
        &data[..],
        "--algo",
        "calql",
        "--steps",
        "30",
    ];
    let pre = d("pre");
    args.extend([
        "--env",
        "pendulum",
        "--eval-every",
        "15",
        "--cql-actions",
        "2",
        "--out",
        &pre,
    ]);
    args.extend(small);
    ok(&args);
    let pre_dir = Path::new(&pre);
    assert_eq!(eval_rows(pre_dir), 2);
    let p = InferencePolicy::load(&pre_dir.join("policy.safetensors")).unwrap();
    assert_eq!(
        (p.spec.obs_dim, p.spec.act_dim, p.spec.hidden.clone()),
        (3, 1, vec![32, 32])
    );
    assert!(
        !p.spec.norm.is_identity(),
        "observations normalised with the dataset's statistics"
    );
    let ck = checkpoint::latest(&pre_dir.join("checkpoints"))
        .unwrap()
        .unwrap();
    assert!(ck.ends_with("step-0000000030"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pre_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["algorithm"], "calql");
    assert!(summary["final_eval"].as_f64().is_some());

    // WSRL from the pre-trained checkpoint: warm-up with its policy, then UTD updates.
    let ft = d("ft");
    let mut args = vec![
        "train",
        "--algo",
        "wsrl",
        "--init",
        &pre[..],
        "--steps",
        "250",
        "--warmup-steps",
        "200",
    ];
    args.extend([
        "--utd",
        "2",
        "--critics",
        "2",
        "--eval-every",
        "125",
        "--out",
        &ft,
    ]);
    args.extend(small);
    let text = ok(&args);
    assert!(
        text.contains("initialised from") && text.contains("calql"),
        "{text}"
    );
    assert!(
        text.contains("100 gradient steps"),
        "50 updates at UTD 2: {text}"
    );
    let ft_dir = Path::new(&ft);
    assert_eq!(eval_rows(ft_dir), 2);
    let q = InferencePolicy::load(&ft_dir.join("policy.safetensors")).unwrap();
    assert_eq!(
        q.spec.norm, p.spec.norm,
        "the pre-trained normalisation is kept"
    );
    assert!(
        checkpoint::latest(&ft_dir.join("checkpoints"))
            .unwrap()
            .is_some()
    );

    // RLPD with the dataset mixed in.
    let rl = d("rlpd");
    let mut args = vec![
        "train",
        "--algo",
        "rlpd",
        "--offline",
        &data[..],
        "--steps",
        "120",
    ];
    args.extend([
        "--utd",
        "2",
        "--critics",
        "3",
        "--eval-every",
        "0",
        "--checkpoint",
        "false",
        "--out",
        &rl,
    ]);
    args.extend(small);
    let text = ok(&args);
    assert!(text.contains("40 gradient steps"), "{text}");

    let png = d("curve.png");
    let f = format!("wsrl={ft}/metrics.csv");
    ok(&[
        "plot",
        &f,
        "--hline=-500=pre-trained",
        "--vline=200=warm-up",
        "--out",
        &png,
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
}

#[test]
fn bad_learning_input_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.mcap");
    let (success, text) = rft(&["pretrain", "--data", missing.to_str().unwrap()]);
    assert!(!success && text.contains("nope.mcap"), "{text}");
    let (success, text) = rft(&["train", "--algo", "calql"]);
    assert!(!success && text.contains("rft pretrain"), "{text}");
    let (success, text) = rft(&["train", "--env", "cartpole", "--steps", "10"]);
    assert!(!success && text.contains("unknown environment"), "{text}");
    let (success, text) = rft(&["train", "--algo", "rlpd", "--steps", "10"]);
    assert!(!success && text.contains("--offline"), "{text}");
    let (success, text) = rft(&[
        "train",
        "--algo",
        "wsrl",
        "--init",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!success && text.contains("not a checkpoint"), "{text}");
    std::fs::write(tmp.path().join("data.txt"), "x").unwrap();
    let (success, text) = rft(&[
        "pretrain",
        "--data",
        tmp.path().join("data.txt").to_str().unwrap(),
    ]);
    assert!(!success && text.contains("unknown dataset type"), "{text}");
}
