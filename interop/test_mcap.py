"""Recordings: rft's MCAP files are read back by the `mcap` package and decoded with rosbags."""

import struct
import threading
import time

import numpy as np
from mcap.reader import make_reader

from conftest import ROOT, rft
from test_zenoh_peer import RosPublisher, joint_state, open_peer
from conftest import free_port


def read_all(path):
    with open(path, "rb") as f:
        reader = make_reader(f)
        header = reader.get_header()
        return header, list(reader.iter_messages())


def test_rft_record_output_reads_back_with_mcap_and_rosbags(typestore, tmp_path):
    port = free_port()
    session = open_peer(port)
    js_pub = RosPublisher(session, typestore, "/py/joint_states", "sensor_msgs/msg/JointState")
    img_pub = RosPublisher(session, typestore, "/py/image", "sensor_msgs/msg/Image", node="py_camera")
    Image = typestore.types["sensor_msgs/msg/Image"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    pixels = (np.arange(640 * 480 * 3) % 251).astype(np.uint8)
    stop = threading.Event()

    def loop():
        i = 0
        while not stop.is_set():
            js_pub.put(typestore.serialize_cdr(joint_state(typestore, i), "sensor_msgs/msg/JointState"))
            img = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=480, width=640,
                        encoding="rgb8", is_bigendian=0, step=640 * 3, data=pixels)
            img_pub.put(typestore.serialize_cdr(img, "sensor_msgs/msg/Image"))
            i += 1
            time.sleep(0.05)
    threading.Thread(target=loop, daemon=True).start()
    out = tmp_path / "rec.mcap"
    try:
        rft("record", str(out), "/py/joint_states", "/py/image", "--connect", f"tcp/127.0.0.1:{port}",
            "--count", "20", "--duration-s", "30", timeout=60)
    finally:
        stop.set()
        session.close()
    header, msgs = read_all(out)
    assert header.profile == "ros2"
    assert len(msgs) >= 20
    seen = set()
    for schema, channel, message in msgs:
        assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
        decoded = typestore.deserialize_cdr(message.data, schema.name)
        seen.add(channel.topic)
        if channel.topic == "/py/image":
            assert schema.name == "sensor_msgs/msg/Image"
            assert (decoded.width, decoded.height, decoded.encoding) == (640, 480, "rgb8")
            assert np.array_equal(decoded.data, pixels)
        else:
            assert schema.name == "sensor_msgs/msg/JointState"
            assert decoded.name == ["panda_joint1", "panda_joint2"]
        assert message.publish_time > 0 and message.log_time >= message.publish_time - 5_000_000_000
    assert seen == {"/py/joint_states", "/py/image"}
    # The schema text is a full ros2msg definition that rosbags can parse again.
    from rosbags.typesys import get_types_from_msg
    schema = next(s for s, _, _ in msgs if s.name == "sensor_msgs/msg/Image")
    types = get_types_from_msg(schema.data.decode(), "sensor_msgs/msg/Image")
    assert "std_msgs/msg/Header" in types


def test_launch_recorder_writes_a_readable_run_directory(typestore, tmp_path):
    cams = '"/camera/color/image_raw", "/camera/depth/image_raw", "/camera/color/camera_info", "/camera/pose"'
    proc = rft("launch", "launch/sim_dry_run.toml", "--set", "pipeline.enabled=false",
        # On the wall clock, as on a robot.
        "--set", 'clock.executor="threads"', "--set", "nodes.0.params.realtime_factor=1.0",
        # The sinusoidal commander instead of the policy loop (no artifacts needed).
        "--set", "nodes.2.enabled=true", *[a for n in (3, 4, 5, 6) for a in ("--set", f"nodes.{n}.enabled=false")],
        # The camera's topics too (the launch file leaves them out of its recording).
        "--set", f'nodes.7.params.topics=["/joint_states", "/joint_velocity_cmd", "/gripper_cmd", '
                 f'"/rft/action", "/rft/safety", {cams}, "/rft/object_pose", "/rft/metrics"]',
        "--set", "duration_s=1.5", "--set", f"runs_dir=\"{tmp_path}\"",
        timeout=60)
    (run_dir,) = list(tmp_path.iterdir())
    # The log went to a pipe, not a terminal: plain text, no ANSI colour codes.
    assert "launch running" in proc.stderr and "all nodes stopped" in proc.stderr, proc.stderr
    assert "\x1b[" not in proc.stderr, proc.stderr[:500]
    assert (run_dir / "launch.toml").read_text().count("[[nodes]]") == 8
    header, msgs = read_all(run_dir / "events.mcap")
    topics = {}
    for schema, channel, message in msgs:
        msg = typestore.deserialize_cdr(message.data, schema.name)
        topics.setdefault(channel.topic, []).append(msg)
    assert set(topics) == {"/joint_states", "/joint_velocity_cmd", "/gripper_cmd", "/rft/action",
                           "/rft/safety", "/camera/color/image_raw", "/camera/depth/image_raw",
                           "/camera/color/camera_info", "/camera/pose", "/rft/object_pose", "/rft/metrics"}
    js = topics["/joint_states"]
    assert len(js) >= 140  # 100 Hz for 1.5 s of simulated time
    # The simulated Panda: seven arm joints and two fingers, with efforts that hold it up.
    assert all(len(m.position) == len(m.velocity) == len(m.effort) == 9 for m in js)
    assert js[0].name[:7] == [f"panda_joint{i}" for i in range(1, 8)]
    assert js[0].name[7:] == ["panda_finger_joint1", "panda_finger_joint2"]
    assert abs(js[0].effort[1]) > 1.0  # the shoulder carries the arm
    # The arm moved under the sinusoidal commands and stamps increase.
    assert not np.allclose(js[0].position, js[-1].position)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in js]
    assert stamps == sorted(stamps)
    # The safety filter commanded the arm: one command per joint state, the last one zero.
    assert abs(len(topics["/joint_velocity_cmd"]) - len(js)) <= 2
    assert np.all(topics["/joint_velocity_cmd"][-1].data == 0.0)
    # Its status: running (OK or limiting) from the commander's first action until the final
    # stop, no e-stop or fault. (Before the first action arrives the filter holds the arm and
    # says "stale command": the nodes start together and either may step first.)
    status = topics["/rft/safety"]
    assert len(status) >= 20  # 20 Hz for 1.5 s
    ns = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
    first_action = min(ns(m) for m in topics["/rft/action"])
    early = [m for m in status if ns(m) <= first_action]
    assert all(m.reason in ("", "stale command") for m in early)
    running = [m for m in status[:-1] if ns(m) > first_action]
    assert len(running) >= 20
    assert all(m.state in (0, 1) and m.reason == "" for m in running)
    assert all(len(m.alpha) == len(m.active_constraints) for m in status)
    assert all(0.0 < m.min_distance_m < 10.0 for m in running)
    img = topics["/camera/color/image_raw"][0]
    assert (img.width, img.height, len(img.data)) == (128, 128, 128 * 128 * 3)
    # The sim clock starts at zero; the camera runs at 10 Hz of simulated time.
    assert stamps[0] == 0
    assert 14 <= len(topics["/camera/color/image_raw"]) <= 17
    # Depth in metres (32FC1) and camera_info + the camera's pose agree with the ground truth:
    # the top centre of the cube projects to a pixel whose depth lifts back to it.
    depth = topics["/camera/depth/image_raw"][0]
    assert (depth.encoding, depth.step) == ("32FC1", 128 * 4)
    d = np.frombuffer(bytes(depth.data), dtype="<f4").reshape(128, 128)
    info = topics["/camera/color/camera_info"][0]
    pose = topics["/camera/pose"][0].pose
    fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
    q = pose.orientation
    x, y, zq, w = q.x, q.y, q.z, q.w
    rot = np.array([[1 - 2 * (y * y + zq * zq), 2 * (x * y - zq * w), 2 * (x * zq + y * w)],
                    [2 * (x * y + zq * w), 1 - 2 * (x * x + zq * zq), 2 * (y * zq - x * w)],
                    [2 * (x * zq - y * w), 2 * (y * zq + x * w), 1 - 2 * (x * x + y * y)]])
    eye = np.array([pose.position.x, pose.position.y, pose.position.z])
    c = topics["/rft/object_pose"][0].pose.position
    top = np.array([c.x, c.y, c.z + 0.025])
    p_cam = rot.T @ (top - eye)
    u, v = fx * p_cam[0] / p_cam[2] + cx, fy * p_cam[1] / p_cam[2] + cy
    z = float(d[round(v), round(u)])
    lifted = rot @ np.array([(round(u) - cx) / fx * z, (round(v) - cy) / fy * z, z]) + eye
    assert np.linalg.norm(lifted - top) < 0.01, (lifted, top)
    assert np.isnan(d[0, 0])  # the sky: nothing hit
    # Ground truth: the cube sits in the push task's start region, not yet a success.
    cube = topics["/rft/object_pose"][0].pose.position
    assert abs(cube.x - 0.5) < 0.05 and abs(cube.y + 0.15) < 0.05 and abs(cube.z - 0.025) < 0.002
    metrics = {m.name: m.value for m in topics["/rft/metrics"]}
    assert metrics["sim/push/forward/success"] == 0.0 and 0.0 <= metrics["sim/push/forward/progress"] < 0.2
