//! Generates and checks CDR fixtures for the interop tests against the `rosbags` Python package.
//!
//!   cargo run -p rft-msgs --example cdr_fixtures -- gen DIR N SEED
//!       writes DIR/<pkg>__<Name>.jsonl: N random instances per type, each line
//!       {"type": ..., "json": <fields>, "cdr": <hex>} encoded by rft
//!   cargo run -p rft-msgs --example cdr_fixtures -- check DIR
//!       reads lines written by the Python peer ({"type", "json", "cdr"}) and checks that rft
//!       decodes the peer's bytes to the same value and encodes that value to the same bytes
//!   cargo run -p rft-msgs --example cdr_fixtures -- hashes
//!       prints `<type> <RIHS01 hash>` for every type, for comparison with rosbags
//!
//! Random values come from the `.msg` definitions, so a Rust struct that disagrees with its
//! definition shows up as a byte mismatch on the Python side.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, Write};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rft_msgs::msgdef::{self, Arity, Field, FieldKind};
use rft_msgs::registry;
use serde_json::{Map, Value, json};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn random_string(rng: &mut StdRng) -> String {
    const ALPHABET: &[char] = &[
        'a', 'b', 'z', 'A', 'Q', '0', '9', '_', ' ', '/', 'é', 'ß', '日', '€', '"', '\\',
    ];
    let n = rng.random_range(0..12);
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

fn random_f64(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..4) {
        0 => 0.0,
        1 => rng.random_range(-1.0..1.0),
        2 => rng.random_range(-1e6..1e6),
        _ => loop {
            let v = f64::from_bits(rng.random());
            if v.is_finite() {
                break v;
            }
        },
    }
}

fn random_f32(rng: &mut StdRng) -> f32 {
    match rng.random_range(0..3) {
        0 => rng.random_range(-1.0f32..1.0),
        1 => rng.random_range(-1e4f32..1e4),
        _ => loop {
            let v = f32::from_bits(rng.random());
            if v.is_finite() {
                break v;
            }
        },
    }
}

fn random_primitive(rng: &mut StdRng, name: &str) -> Value {
    match name {
        "bool" => json!(rng.random::<bool>()),
        "int8" => json!(rng.random::<i8>()),
        "uint8" | "byte" | "char" => json!(rng.random::<u8>()),
        "int16" => json!(rng.random::<i16>()),
        "uint16" => json!(rng.random::<u16>()),
        "int32" => json!(rng.random::<i32>()),
        "uint32" => json!(rng.random::<u32>()),
        "int64" => json!(rng.random::<i64>()),
        "uint64" => json!(rng.random::<u64>()),
        "float32" => json!(random_f32(rng)),
        "float64" => json!(random_f64(rng)),
        _ => json!(random_string(rng)),
    }
}

fn random_value(rng: &mut StdRng, ty: &str) -> Value {
    let Some(text) = msgdef::definition(ty) else {
        panic!("no definition for {ty}");
    };
    let fields = msgdef::parse(ty, text).expect("definitions parse");
    let mut m = Map::new();
    for f in &fields {
        m.insert(f.name.clone(), random_field(rng, f));
    }
    Value::Object(m)
}

fn random_field(rng: &mut StdRng, f: &Field) -> Value {
    let one = |rng: &mut StdRng| match &f.kind {
        FieldKind::Primitive { name, .. } => random_primitive(rng, name),
        FieldKind::Nested(n) => random_value(rng, n),
    };
    let byte_like = matches!(&f.kind, FieldKind::Primitive { name, .. } if name == "uint8");
    match f.arity {
        Arity::Single => one(rng),
        Arity::Fixed(n) => Value::Array((0..n).map(|_| one(rng)).collect()),
        Arity::Bounded(n) => Value::Array((0..rng.random_range(0..=n)).map(|_| one(rng)).collect()),
        Arity::Unbounded => {
            let n = if byte_like {
                rng.random_range(0..64)
            } else {
                rng.random_range(0..8)
            };
            Value::Array((0..n).map(|_| one(rng)).collect())
        }
    }
}

fn file_name(ty: &str) -> String {
    ty.replace("/msg/", "__") + ".jsonl"
}

fn generate(dir: &Path, n: usize, seed: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut rng = StdRng::seed_from_u64(seed);
    for info in registry::all() {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(dir.join(file_name(info.name))).map_err(|e| e.to_string())?,
        );
        let mut buf = Vec::new();
        for _ in 0..n {
            let v = random_value(&mut rng, info.name);
            info.json_to_cdr(v.clone(), &mut buf)
                .map_err(|e| format!("{}: {e} for {v}", info.name))?;
            // What rft decodes from its own bytes must be the value it was given.
            let back = info.cdr_to_json(&buf).map_err(|e| e.to_string())?;
            if back != v {
                return Err(format!("{}: round trip changed {v} into {back}", info.name));
            }
            let line = json!({"type": info.name, "json": v, "cdr": hex(&buf)});
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    println!(
        "wrote {n} instances of each of {} types to {}",
        registry::all().len(),
        dir.display()
    );
    Ok(())
}

fn check(dir: &Path) -> Result<(), String> {
    let mut checked = 0;
    let mut files = 0;
    let mut buf = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        files += 1;
        let f = std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| e.to_string())?);
        for (i, line) in f.lines().enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            let rec: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            let ty = rec["type"].as_str().ok_or("no type")?;
            let info = registry::by_name(ty).map_err(|e| e.to_string())?;
            let peer_bytes = unhex(rec["cdr"].as_str().ok_or("no cdr")?)?;
            let where_ = format!("{}:{}", path.display(), i + 1);
            let decoded = info
                .cdr_to_json(&peer_bytes)
                .map_err(|e| format!("{where_}: rft cannot decode the peer's bytes: {e}"))?;
            if decoded != rec["json"] {
                return Err(format!(
                    "{where_}: decoded {decoded}\n expected {}",
                    rec["json"]
                ));
            }
            info.json_to_cdr(rec["json"].clone(), &mut buf)
                .map_err(|e| e.to_string())?;
            if buf != peer_bytes {
                return Err(format!(
                    "{where_}: rft encodes {}\n the peer encoded {}",
                    hex(&buf),
                    hex(&peer_bytes)
                ));
            }
            checked += 1;
        }
    }
    if checked == 0 {
        return Err(format!("no fixtures found in {}", dir.display()));
    }
    println!("checked {checked} messages from {files} files: decode and encode match the peer");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gen", dir, n, seed] => match (n.parse(), seed.parse()) {
            (Ok(n), Ok(seed)) => generate(Path::new(dir), n, seed),
            _ => Err("N and SEED must be numbers".into()),
        },
        ["check", dir] => check(Path::new(dir)),
        ["hashes"] => {
            for t in registry::all() {
                println!("{} {}", t.name, t.hash);
            }
            Ok(())
        }
        _ => Err("usage: cdr_fixtures gen DIR N SEED | check DIR | hashes".into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
