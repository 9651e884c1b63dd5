#!/usr/bin/env python3
"""Stable-Baselines3 SAC on the same machine and network sizes as `benches/learner.rs`.

Creates a venv under target/sb3-venv (not part of CI), then measures:
  * gradient steps/s of `SAC.train` (batch 256, 256x256 nets, 2 critics, auto entropy),
  * env steps/s of `SAC.learn` on Pendulum-v1 (1 gradient step per env step), like `rft train`.

Usage: python3 policies/benches/sb3_sac.py [--threads N]
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "..", "..", "target", "sb3-venv")


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "stable-baselines3", "gymnasium"])
    return py


def measure(threads):
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    if threads:
        torch.set_num_threads(threads)
    env = gym.make("Pendulum-v1")
    model = SAC("MlpPolicy", env, learning_rate=1e-3, batch_size=256, learning_starts=100,
                policy_kwargs=dict(net_arch=[256, 256]), device="cpu", seed=0, verbose=0)
    # Fill the buffer and warm up.
    model.learn(total_timesteps=1100)
    n = 500
    t = time.perf_counter()
    model.train(gradient_steps=n, batch_size=256)
    grad_rate = n / (time.perf_counter() - t)
    t = time.perf_counter()
    model.learn(total_timesteps=1000, reset_num_timesteps=False)
    env_rate = 1000 / (time.perf_counter() - t)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"SB3 SAC gradient steps/s (batch 256, 256x256, 2 critics): {grad_rate:.1f}")
    print(f"SB3 SAC learn() env steps/s on Pendulum-v1 (1 grad step/step): {env_rate:.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--inner", action="store_true")
    a = ap.parse_args()
    if a.inner:
        measure(a.threads)
    else:
        py = ensure_venv()
        sys.exit(subprocess.call([py, __file__, "--inner", "--threads", str(a.threads)]))
