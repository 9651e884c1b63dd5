//! `PolicyHandle::act` allocates nothing after warm-up (a counting global allocator watches).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use rft_policies::handle::{ActMode, InferencePolicy, PolicyHandle};
use rft_policies::nets::EncoderConfig;
use rft_policies::{Agent, AgentConfig, Algorithm};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn handle(encoder: Option<EncoderConfig>) -> PolicyHandle {
    let mut cfg = AgentConfig::preset(Algorithm::Rlpd, 12, 4);
    cfg.num_tasks = 2;
    cfg.actor_layer_norm = true;
    cfg.encoder = encoder;
    let agent = Agent::new(cfg, &Device::Cpu).unwrap();
    PolicyHandle::new(InferencePolicy::from_agent(&agent, 1).unwrap(), 0)
}

/// Allocations made by `n` calls of `act` after a warm-up call.
fn allocations(h: &mut PolicyHandle, image: Option<&[u8]>, n: usize) -> usize {
    let obs = [0.25f32; 12];
    let mut out = [0f32; 4];
    h.act(&obs, 1, image, ActMode::Stochastic, &mut out)
        .unwrap();
    let before = ALLOCS.load(Ordering::SeqCst);
    for i in 0..n {
        let mode = if i % 2 == 0 {
            ActMode::Stochastic
        } else {
            ActMode::Deterministic
        };
        h.act(&obs, (i % 2) as u8, image, mode, &mut out).unwrap();
    }
    ALLOCS.load(Ordering::SeqCst) - before
}

#[test]
fn act_allocates_nothing_after_warm_up() {
    let mut h = handle(None);
    assert_eq!(allocations(&mut h, None, 1000), 0, "MLP policy");
    let enc = EncoderConfig {
        height: 64,
        width: 64,
        ..Default::default()
    };
    let img = vec![128u8; enc.image_len()];
    let mut h = handle(Some(enc));
    let n = allocations(&mut h, Some(&img), 20);
    eprintln!("image policy: {n} allocations in 20 calls");
    // The convolutions call the `gemm` crate, which keeps small per-call bookkeeping vectors;
    // everything rft owns is preallocated. Bound it so a regression in our code shows.
    assert!(
        n <= 20 * 40,
        "image policy made {n} allocations in 20 calls"
    );
}
