//! What the tests that run the `rft` binary share.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;

pub const RFT: &str = env!("CARGO_BIN_EXE_rft");

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `rft` with `args` (no colour); panics with its output when it fails, else returns it.
pub fn rft(args: &[String]) -> String {
    let o = Command::new(RFT)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "rft {args:?} failed:\n{text}");
    text
}
