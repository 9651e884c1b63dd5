"""CDR and type hashes against rosbags: byte for byte, both directions, every message type."""

import json
import random
import subprocess

import numpy as np
import pytest

from conftest import run_example

N = 1000
STD_TYPES = [
    "builtin_interfaces/msg/Time", "std_msgs/msg/Header", "std_msgs/msg/Bool", "std_msgs/msg/String",
    "std_msgs/msg/MultiArrayDimension", "std_msgs/msg/MultiArrayLayout", "std_msgs/msg/Float64MultiArray",
    "sensor_msgs/msg/JointState", "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/RegionOfInterest", "sensor_msgs/msg/CameraInfo", "geometry_msgs/msg/Vector3",
    "geometry_msgs/msg/Point", "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Twist",
    "geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/Pose", "geometry_msgs/msg/PoseStamped",
]
RFT_TYPES = [f"rft_msgs/msg/{n}" for n in
             ["Action", "Transition", "Reward", "PolicyUpdate", "EpisodePhase", "SafetyStatus", "Metric", "Obstacles",
              "SceneReset"]]
ALL_TYPES = STD_TYPES + RFT_TYPES

DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
          "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
          "float32": np.float32, "float64": np.float64, "bool": np.bool_}


def to_py(value):
    """A rosbags message as plain Python values, in field order."""
    if hasattr(value, "__dataclass_fields__"):
        # Constants (upper-case by ROS convention) are class attributes, not fields on the wire.
        return {k: to_py(getattr(value, k)) for k in value.__dataclass_fields__
                if k != "__msgtype__" and not k.isupper()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [to_py(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def same(a, b, path="msg"):
    """Exact comparison; float32 values compare as float32."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: fields {list(a)} vs {list(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert float(a) == float(b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def rft_fixtures(tmp_path_factory):
    d = tmp_path_factory.mktemp("rft_cdr")
    run_example("gen", str(d), str(N), "7")
    return d


@pytest.mark.parametrize("typename", ALL_TYPES)
def test_rft_encoding_equals_rosbags(typestore, rft_fixtures, typename):
    lines = (rft_fixtures / (typename.replace("/msg/", "__") + ".jsonl")).read_text().splitlines()
    assert len(lines) == N
    for i, line in enumerate(lines):
        rec = json.loads(line)
        ours = bytes.fromhex(rec["cdr"])
        msg = typestore.deserialize_cdr(ours, typename)
        theirs = bytes(typestore.serialize_cdr(msg, typename))
        assert theirs == ours, f"{typename} #{i}: rosbags {theirs.hex()} vs rft {ours.hex()}"
        same(to_py(msg), rec["json"], f"{typename}#{i}")


def rand_base(rng, name):
    if name == "bool":
        return rng.random() < 0.5
    if name == "string":
        n = rng.randrange(0, 12)
        return "".join(rng.choice("abzAQ09_ /éß日€\"\\") for _ in range(n))
    if name in ("float32", "float64"):
        kind = rng.randrange(3)
        if kind == 0:
            v = rng.uniform(-1, 1)
        elif kind == 1:
            v = rng.uniform(-1e6, 1e6)
        else:
            v = rng.choice([0.0, -0.0, 1e-30, 3.0e38, -1e-40] if name == "float32"
                           else [0.0, -0.0, 1e-300, 1.5e300, 5e-324])
        return float(np.float32(v)) if name == "float32" else v
    bits = int(name.lstrip("uint")) if name.startswith("u") else int(name.lstrip("int"))
    if name.startswith("u"):
        return rng.randrange(0, 2 ** bits)
    return rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))


def rand_field(ts, rng, desc):
    kind = desc[0].name
    if kind == "BASE":
        v = rand_base(rng, desc[1][0])
        return v, v
    if kind == "NAME":
        return rand_msg(ts, rng, desc[1])
    sub, count = desc[1]
    if kind == "SEQUENCE":
        count = rng.randrange(0, 64 if sub[0].name == "BASE" and sub[1][0] == "uint8" else 8)
    items = [rand_field(ts, rng, sub) for _ in range(count)]
    values = [v for v, _ in items]
    if sub[0].name == "BASE" and sub[1][0] in DTYPES:
        return np.array(values, dtype=DTYPES[sub[1][0]]), [j for _, j in items]
    return values, [j for _, j in items]


def rand_msg(ts, rng, typename):
    _, fields = ts.fielddefs[typename]
    values, js = {}, {}
    for name, desc in fields:
        values[name], js[name] = rand_field(ts, rng, desc)
    return ts.types[typename](**values), js


def test_rft_decodes_and_reencodes_what_rosbags_encodes(typestore, tmp_path):
    rng = random.Random(11)
    for typename in ALL_TYPES:
        with open(tmp_path / (typename.replace("/msg/", "__") + ".jsonl"), "w") as f:
            for _ in range(N):
                msg, js = rand_msg(typestore, rng, typename)
                raw = bytes(typestore.serialize_cdr(msg, typename))
                f.write(json.dumps({"type": typename, "json": js, "cdr": raw.hex()}) + "\n")
    try:
        out = run_example("check", str(tmp_path))
    except subprocess.CalledProcessError as e:
        raise AssertionError(e.stderr) from None
    assert f"checked {N * len(ALL_TYPES)} messages" in out.stdout, out.stdout


def test_type_hashes_equal_rosbags(typestore):
    ours = dict(line.split() for line in run_example("hashes").stdout.splitlines())
    assert set(ours) == set(ALL_TYPES)
    for typename in ALL_TYPES:
        assert ours[typename] == typestore.hash_rihs01(typename), typename
