"""Shared helpers for the interop tests: real peers (rosbags, eclipse-zenoh, mcap) against rft."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("RFT_PROFILE", "debug")
RFT = ROOT / "target" / PROFILE / "rft"


@pytest.fixture(scope="session")
def typestore():
    """rosbags' Jazzy type store with rft's own messages registered from msgs/msg/*.msg."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for f in sorted((ROOT / "msgs" / "msg").glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(), f"rft_msgs/msg/{f.stem}"))
    ts.register(types)
    return ts


def run_example(*args, timeout=600):
    """Runs the msgs crate's cdr_fixtures example (built by .ci/run before pytest)."""
    exe = ROOT / "target" / PROFILE / "examples" / "cdr_fixtures"
    cmd = [str(exe), *args] if exe.exists() else [
        "cargo", "run", "-q", "-p", "rft-msgs", "--example", "cdr_fixtures", "--", *args]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=timeout)


def rft(*args, timeout=60, check=True):
    """Runs the rft binary and returns the completed process."""
    assert RFT.exists(), f"{RFT} is missing: build it first (cargo build -p rft)"
    return subprocess.run([str(RFT), *args], cwd=ROOT, check=check, capture_output=True,
                          text=True, timeout=timeout)


def rft_spawn(*args):
    assert RFT.exists(), f"{RFT} is missing: build it first (cargo build -p rft)"
    return subprocess.Popen([str(RFT), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
