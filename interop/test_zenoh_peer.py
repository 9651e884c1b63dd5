"""rft against a Python eclipse-zenoh peer speaking rmw_zenoh's wire format (as a ROS 2 Jazzy
node with rmw_zenoh would): liveliness tokens, data keys with type hashes, 33-byte attachments,
rosbags-serialized CDR."""

import struct
import threading
import time

import numpy as np
import pytest
import zenoh

from conftest import free_port, rft, rft_spawn, wait_for


def open_peer(port):
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("listen/endpoints", f'["tcp/127.0.0.1:{port}"]')
    conf.insert_json5("connect/endpoints", "[]")
    conf.insert_json5("scouting/multicast/enabled", "false")
    return zenoh.open(conf)


def dds(typename):
    pkg, _, name = typename.split("/")
    return f"{pkg}::msg::dds_::{name}_"


class RosPublisher:
    """A minimal rmw_zenoh-style publisher: node + publisher tokens, attachment per sample."""

    def __init__(self, session, typestore, topic, typename, node="py_talker"):
        zid = str(session.info.zid())
        h = typestore.hash_rihs01(typename)
        self.key = f"0/{topic.lstrip('/')}/{dds(typename)}/{h}"
        self.tokens = [
            session.liveliness().declare_token(f"@ros2_lv/0/{zid}/0/0/NN/%/%/{node}"),
            session.liveliness().declare_token(
                f"@ros2_lv/0/{zid}/0/1/MP/%/%/{node}/{topic.replace('/', '%')}/{dds(typename)}/{h}/::,10:,:,:,,"),
        ]
        self.pub = session.declare_publisher(self.key)
        self.seq = 0
        self.gid = bytes(range(16))

    def put(self, raw, attachment=True):
        self.seq += 1
        att = struct.pack("<qqB", self.seq, time.time_ns(), 16) + self.gid
        self.pub.put(bytes(raw), attachment=att if attachment else None)


def joint_state(ts, i=0):
    JointState = ts.types["sensor_msgs/msg/JointState"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    return JointState(
        header=Header(stamp=Time(sec=100 + i, nanosec=5), frame_id="base"),
        name=["panda_joint1", "panda_joint2"],
        position=np.array([0.25, -1.5 + i], dtype=np.float64),
        velocity=np.array([0.0, 0.125], dtype=np.float64),
        effort=np.array([], dtype=np.float64),
    )


@pytest.fixture
def peer():
    port = free_port()
    session = open_peer(port)
    yield session, f"tcp/127.0.0.1:{port}"
    session.close()


def start_publishing(stop, publisher, make_raw, rate_hz=20):
    def loop():
        i = 0
        while not stop.is_set():
            publisher.put(make_raw(i))
            i += 1
            time.sleep(1 / rate_hz)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def test_rft_topics_lists_and_echo_prints_a_python_rmw_zenoh_publisher(peer, typestore):
    session, endpoint = peer
    pub = RosPublisher(session, typestore, "/py/joint_states", "sensor_msgs/msg/JointState")
    stop = threading.Event()
    start_publishing(stop, pub, lambda i: typestore.serialize_cdr(joint_state(typestore, i),
                                                                   "sensor_msgs/msg/JointState"))
    try:
        listed = wait_for(lambda: (out := rft("topics", "--connect", endpoint).stdout)
                          and "/py/joint_states [sensor_msgs/msg/JointState]" in out and out,
                          timeout=15, what="rft topics to list /py/joint_states")
        assert "/py/joint_states [sensor_msgs/msg/JointState]" in listed
        verbose = rft("topics", "--connect", endpoint, "-v").stdout
        assert "publishers: /py_talker" in verbose, verbose
        echo = rft("echo", "/py/joint_states", "--connect", endpoint, "--count", "2",
                   "--timeout-s", "15", timeout=30)
        out = echo.stdout
        assert out.count("---") == 2, out
        assert "frame_id: 'base'" in out and "name: ['panda_joint1', 'panda_joint2']" in out, out
        assert "position: [0.25, " in out and "velocity: [0.0, 0.125]" in out, out
    finally:
        stop.set()


def test_python_rmw_zenoh_subscriber_receives_rft_messages(peer, typestore):
    session, endpoint = peer
    typename = "std_msgs/msg/Float64MultiArray"
    key = f"0/rft_cmd/{dds(typename)}/{typestore.hash_rihs01(typename)}"
    got = []
    sub = session.declare_subscriber(
        key, lambda s: got.append((bytes(s.payload.to_bytes()),
                                   bytes(s.attachment.to_bytes()) if s.attachment else None)))
    proc = rft_spawn("pub", "/rft_cmd", typename,
                     '{"layout": {"dim": [{"label": "joints", "size": 3, "stride": 3}], "data_offset": 0},'
                     ' "data": [0.5, -1.0, 2.25]}',
                     "--connect", endpoint, "--rate-hz", "50", "--count", "400", "--wait-ms", "300")
    try:
        wait_for(lambda: len(got) >= 5, timeout=15, what="5 messages from rft pub")
        # The graph shows rft's node and publisher the way `ros2 node list`/`ros2 topic list` read it.
        tokens = [str(r.ok.key_expr) for r in session.liveliness().get("@ros2_lv/0/**", timeout=2.0) if r.ok]
        assert any(t.endswith("/NN/%/%/rft_pub") for t in tokens), tokens
        pubs = [t for t in tokens if "/MP/%/%/rft_pub/%rft_cmd/" in t]
        assert pubs and pubs[0].split("/")[-2] == typestore.hash_rihs01(typename), tokens
    finally:
        proc.kill()
        proc.wait()
        sub.undeclare()
    seqs = []
    for payload, att in got[:5]:
        msg = typestore.deserialize_cdr(payload, typename)
        assert msg.data.tolist() == [0.5, -1.0, 2.25]
        assert msg.layout.dim[0].label == "joints" and msg.layout.dim[0].size == 3
        assert att is not None and len(att) == 33
        seq, ts_ns, gid_len = struct.unpack("<qqB", att[:17])
        assert gid_len == 16 and abs(ts_ns - time.time_ns()) < 60e9
        seqs.append(seq)
    assert seqs == list(range(seqs[0], seqs[0] + 5)), seqs
    assert seqs[0] >= 1


def test_rft_drops_samples_without_attachment_and_garbage(peer, typestore):
    """Malformed input is counted and dropped; good samples around it still arrive."""
    session, endpoint = peer
    pub = RosPublisher(session, typestore, "/py/mixed", "sensor_msgs/msg/JointState")
    good = typestore.serialize_cdr(joint_state(typestore), "sensor_msgs/msg/JointState")
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            pub.put(b"\x00\x01\x00\x00\xff\xff\xff\xff")  # sequence length past the end
            pub.put(good, attachment=False)                 # no attachment: rmw_zenoh drops it
            pub.put(good)
            time.sleep(0.05)
    threading.Thread(target=loop, daemon=True).start()
    try:
        out = rft("echo", "/py/mixed", "--connect", endpoint, "--count", "6", "--timeout-s", "15",
                  timeout=30).stdout
    finally:
        stop.set()
    # echo prints every sample it gets: the garbage one says it cannot be decoded, the good one
    # with an attachment decodes, and the good one without an attachment never arrives. So the
    # printed samples alternate garbage / good, wherever in the loop echo started.
    blocks = [b for b in out.split("---") if b.strip()]
    assert len(blocks) == 6, out
    kinds = ["bad" if "cannot decode sensor_msgs/msg/JointState" in b else
             "good" if "frame_id: 'base'" in b else "other" for b in blocks]
    assert "other" not in kinds, out
    assert all(a != b for a, b in zip(kinds, kinds[1:])), kinds


def test_a_launch_over_zenoh_lists_one_node_token_per_running_node(peer, tmp_path):
    """What `ros2 node list` reads over rmw_zenoh: every running node of a launch has exactly one
    NN liveliness token with its name, for as long as it runs, and its topics name it too."""
    session, endpoint = peer
    running = {"robot", "safety", "commander", "recorder"}
    proc = rft_spawn("launch", "launch/sim_dry_run.toml", "--set", "pipeline.enabled=false",
                     "--set", "bus.kind=zenoh", "--set", f'bus.zenoh.connect=["{endpoint}"]',
                     "--set", 'clock.executor="threads"', "--set", "nodes.0.params.realtime_factor=1.0",
                     # The sinusoidal commander instead of the policy loop (no artifacts needed).
                     "--set", "nodes.2.enabled=true",
                     *[a for n in (3, 4, 5, 6) for a in ("--set", f"nodes.{n}.enabled=false")],
                     "--set", "duration_s=120", "--set", f"runs_dir=\"{tmp_path}\"")

    def node_tokens():
        keys = [str(r.ok.key_expr) for r in session.liveliness().get("@ros2_lv/0/**", timeout=2.0)
                if r.ok]
        return keys, [k.split("/")[8] for k in keys if k.split("/")[5] == "NN"]

    try:
        keys, names = wait_for(lambda: (t := node_tokens()) and running <= set(t[1]) and t,
                               timeout=30, what="NN tokens of robot, safety, commander, recorder")
        # Still there a while later (tokens live as long as the node, not as its constructor).
        wait_for(lambda: proc.poll() is None and any(
            "/MP/%/%/robot/%joint_states/" in k for k in node_tokens()[0]), timeout=10,
            what="the robot's /joint_states publisher token")
        keys, names = node_tokens()
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert sorted(names) == sorted(running), names
    # Every rft entity token names a node that has its NN token.
    entity_nodes = {k.split("/")[8] for k in keys if k.split("/")[5] in ("MP", "MS")}
    assert entity_nodes and entity_nodes <= running, entity_nodes
