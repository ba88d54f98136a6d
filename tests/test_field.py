"""On a live robot: no confident wrong fix after a jump, live sources (an MJPEG stream served
on loopback, cameras and pipelines that cannot open), signals that end a run cleanly, the
CLI's calibration and video traps, the Foxglove live view, the track figure, and the ROS 2
node against a stand-in rclpy that enforces rclpy's signatures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import standin_ros

from edgevpr.core.images import list_images
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.localize import LOST, TRACKING, Calibration, FixIntegrity, Localizer
from edgevpr.runtime.localize.calibration import sidecar
from edgevpr.runtime.localize.layout import name_key
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.place_record import PlaceRecord, record_for

EDGEVPR = str(Path(sys.executable).with_name("edgevpr"))
PLACES = 30
OFF = FixIntegrity(gate=-100.0, floor=-100.0, frames=1, contradiction=100.0)


# ------------------------------------------------------------------ integrity of the fix
def drifting_route(places: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Place descriptors that change slowly along a route, as a drive's do."""
    rng = np.random.default_rng(seed)
    vectors, current = np.empty((places, dim), np.float32), rng.standard_normal(dim)
    for i in range(places):
        current = 0.8 * current + 0.6 * rng.standard_normal(dim)
        vectors[i] = current / np.linalg.norm(current)
    return vectors


class FakeEmbedder(Embedder):
    """An Embedder that is only its descriptor size and fingerprint (frames come embedded)."""

    def __init__(self, dim: int) -> None:  # no model: update_descriptor only
        self._dim = dim

    @property
    def descriptor_dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return "f" * 64


@pytest.fixture(scope="module")
def synthetic_route() -> tuple[PlaceMap, np.ndarray]:
    vectors = drifting_route(400)
    placemap = PlaceMap.create(64, "f" * 64)
    placemap.add(vectors, [PlaceRecord(east=10.0 * i, north=0.0, path=f"p{i:04d}.png")
                           for i in range(400)])  # fmt: skip
    return placemap, vectors


def frames_of(vectors: np.ndarray, places: list[int], noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = vectors[places] + noise * rng.standard_normal((len(places), vectors.shape[1]))
    return (frames / np.linalg.norm(frames, axis=1, keepdims=True)).astype(np.float32)


def test_after_a_jump_nothing_wrong_is_accepted_and_the_state_turns_lost(synthetic_route):
    placemap, vectors = synthetic_route
    before, away, back = list(range(40, 80)), list(range(300, 330)), list(range(80, 120))
    stream = frames_of(vectors, before + away + back, 0.15, seed=1)
    truth = np.array(before + away + back)
    results = {}
    for name, integrity in (("checked", None), ("unchecked", OFF)):
        localizer = Localizer(FakeEmbedder(64), placemap, length=10, calibration=None,
                              integrity=integrity)  # fmt: skip
        fixes = [localizer.update_descriptor(frame) for frame in stream]
        wrong = [f.accepted and abs(f.place_id - t) > 2
                 for f, t in zip(fixes, truth, strict=True)]  # fmt: skip
        results[name] = (fixes, np.array(wrong))
    fixes, wrong = results["checked"]
    jump, ret = len(before), len(before) + len(away)
    assert not wrong.any()
    assert results["unchecked"][1].any()  # without the checks the old path is believed
    assert TRACKING in {f.state for f in fixes[:jump]}
    assert LOST in {f.state for f in fixes[jump : jump + 5]}
    assert any(f.accepted for f in fixes[jump + 10 : ret])  # the new place is earned
    assert any(f.accepted for f in fixes[ret + 10 :])  # and so is the way back
    rejected = [f for f in fixes[jump : jump + 3] if not f.accepted]
    assert all(f.confidence == 0.0 for f in rejected if "support" in (f.reason or ""))


def test_the_checks_never_move_a_fix(synthetic_route) -> None:
    placemap, vectors = synthetic_route
    stream = frames_of(vectors, list(range(100, 220)), 0.3, seed=2)
    runs = []
    for integrity in (None, OFF):
        localizer = Localizer(FakeEmbedder(64), placemap, length=10, calibration=None,
                              integrity=integrity)  # fmt: skip
        runs.append([localizer.update_descriptor(f).place_id for f in stream])
    assert runs[0] == runs[1]


def test_integrity_settings_are_checked() -> None:
    from edgevpr.core.errors import EdgeVPRError

    with pytest.raises(EdgeVPRError, match="integrity frames"):
        FixIntegrity(frames=0)
    with pytest.raises(EdgeVPRError, match="integrity gate"):
        FixIntegrity(gate=float("nan"))


# ------------------------------------------------------------------ a route on disk
@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict:
    root = tmp_path_factory.mktemp("field") / "set"
    generate(root, SynthConfig(seed=5, places=PLACES, val_places=0, train_places=0))
    ordered = sorted(list_images(root / "images/test/database"), key=lambda p: name_key(p.name))
    queries = sorted(list_images(root / "images/test/queries"), key=lambda p: name_key(p.name))
    placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    placemap.add(embedder.embed_paths(ordered), [record_for(p) for p in ordered])
    path = root / "route.vprmap"
    placemap.save(path)
    video = root / "queries.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 96))
    for query in queries * 4:
        writer.write(cv2.imread(str(query)))
    writer.release()
    return {"map": path, "queries": queries, "video": video, "root": root}


def run_edgevpr(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEVPR, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


# ------------------------------------------------------------------ calibration traps
def test_an_explicit_threshold_overrides_and_none_ignores_the_calibration(
    cli, embedder, exported, route, tmp_path
) -> None:
    map_copy = tmp_path / "m.vprmap"
    map_copy.write_bytes(route["map"].read_bytes())
    Calibration.fit(np.linspace(0, 2, 50), np.arange(50) > 10, 1.0, embedder.fingerprint,
                    "route", 10).save(sidecar(map_copy))  # fmt: skip
    base = ("localize", map_copy, route["queries"][0].parent, "-m", exported["onnx"], "-q")
    other_length = cli(*base, "--length", "5", "-o", tmp_path / "a.jsonl")
    assert other_length.code == 0, other_length.err
    assert "warning: not using the calibration beside the map" in other_length.err
    forced = cli(*base, "--threshold", "0.25", "-o", tmp_path / "b.jsonl", "--json")
    assert forced.code == 0 and json.loads(forced.out)["threshold"] == 0.25
    assert json.loads(forced.out)["calibrated"] is True  # its curve still gives confidence
    ignored = cli(*base, "--calibration", "none", "-o", tmp_path / "c.jsonl", "--json")
    assert ignored.code == 0 and json.loads(ignored.out)["calibrated"] is False
    other = tmp_path / "other.json"
    Calibration.fit(np.linspace(0, 2, 50), np.arange(50) > 10, 1.0, "0" * 64, "route",
                    10).save(other)  # fmt: skip
    refused = cli(*base, "--calibration", other, "-o", tmp_path / "d.jsonl")
    assert refused.code == 2 and "measured with another model" in refused.err


def test_a_calibration_is_written_only_for_the_maps_own_model(cli, torch_model, exported,
                                                              route, tmp_path) -> None:  # fmt: skip
    foreign = tmp_path / "foreign.vprmap"
    placemap = PlaceMap.create(4, "0" * 64)
    placemap.add(np.eye(4, dtype=np.float32), [PlaceRecord(east=float(i), north=0.0)
                                               for i in range(4)])  # fmt: skip
    placemap.save(foreign)
    args = ("eval", exported["checkpoint"], route["root"], "--sequence", "5",
            "--threshold-at-precision", "0.9", "--calibration")  # fmt: skip
    result = cli(*args, foreign)
    assert result.code == 2 and "built by another model" in result.err
    assert not sidecar(foreign).exists()
    own = tmp_path / "own.vprmap"
    own.write_bytes(route["map"].read_bytes())
    assert cli(*args, own).code == 0 and sidecar(own).is_file()  # the checkpoint built it


@pytest.mark.parametrize(("speeds", "message"), [("1,x", "give numbers"), ("", "at least one")])
def test_speeds_are_an_option(cli, exported, route, tmp_path, speeds, message) -> None:
    base = ("localize", route["map"], route["queries"][0].parent, "-m", exported["onnx"], "-q",
            "-o", tmp_path / "t.jsonl")  # fmt: skip
    assert cli(*base, "--speeds", "0.5,1,2").code == 0
    bad = cli(*base, "--speeds", speeds)
    assert bad.code == 2 and message in bad.err


def test_the_pace_is_an_option(cli, exported, route, tmp_path) -> None:
    base = ("localize", route["map"], route["queries"][0].parent, "-m", exported["onnx"], "-q",
            "-o", tmp_path / "t.jsonl", "--json")  # fmt: skip
    assert json.loads(cli(*base).out)["pace"] == 1.0  # the map's own: every frame a place
    given = cli(*base, "--pace", "0.5")
    assert given.code == 0 and json.loads(given.out)["pace"] == 0.5
    assert "at 0.5 places a frame" in cli(*base[:-1], "--pace", "0.5").out
    refused = cli(*base, "--pace", "0")
    assert refused.code == 2 and "--pace" in refused.err


# ------------------------------------------------------------------ video and signals
def test_a_truncated_video_is_warned_about_and_ffmpeg_stays_quiet(exported, route, tmp_path):
    video = tmp_path / "cut.avi"
    data = route["video"].read_bytes()
    video.write_bytes(data[: len(data) * 2 // 3])
    done = run_edgevpr("localize", route["map"], video, "-m", exported["onnx"], "-q", "-o",
                       tmp_path / "t.jsonl")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(line.startswith("warning: read ") and "truncated" in line for line in lines)
    assert all(line.startswith(("warning:", "WARNING clustering")) for line in lines), lines


# ------------------------------------------------------------------ live sources
class MJPEG(BaseHTTPRequestHandler):
    """multipart/x-mixed-replace JPEGs, as an IP camera serves them; stops after the list."""

    frames: list[bytes] = []
    period = 0.05

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for jpeg in self.frames:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                 b"Content-Length: %d\r\n\r\n%s\r\n"
                                 % (len(jpeg), jpeg))  # fmt: skip
                time.sleep(self.period)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def camera_url(route):
    MJPEG.frames = [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes()
                    for p in route["queries"]] * 2  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), MJPEG)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream"
    server.shutdown()
    MJPEG.period = 0.05


@pytest.mark.parametrize(("signum", "out"), [(signal.SIGTERM, "track.jsonl"),
                                              (signal.SIGINT, "track.csv")])  # fmt: skip
def test_a_signal_ends_a_live_run_with_the_track_kept_whole(
    exported, route, camera_url, tmp_path, signum, out
) -> None:
    MJPEG.period = 0.1  # a camera at 10 frames a second, 6 s of stream
    target = tmp_path / out
    process = subprocess.Popen(
        [EDGEVPR, "localize", str(route["map"]), camera_url, "-m", str(exported["onnx"]),
         "-q", "-o", str(target), "--length", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until fixes reach the (temporary) file
        if any(p.stat().st_size for p in tmp_path.glob(f".{out}.*")):
            break
        time.sleep(0.01)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [out]  # no temporary file left
    if out.endswith(".jsonl"):
        lines = target.read_text().splitlines()
        assert 0 < len(lines) < 2 * PLACES and all(json.loads(line) for line in lines)
    else:
        rows = target.read_text().splitlines()
        assert len(rows) > 1 and len({row.count(",") for row in rows}) == 1  # whole rows


def test_a_network_stream_is_localised_line_by_line_to_stdout(exported, route, camera_url):
    done = run_edgevpr("localize", route["map"], camera_url, "-m", exported["onnx"], "-q",
                       "--out", "-", "--max-frames", "12")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 12 and all(json.loads(line)["frame"] == i for i, line in
                                    enumerate(lines))  # fmt: skip
    assert "live: " in done.stderr and "dropped" in done.stderr


def test_a_stream_that_stops_keeps_the_track_so_far(exported, route, camera_url, tmp_path):
    out = tmp_path / "t.csv"
    done = run_edgevpr("localize", route["map"], camera_url, "-m", exported["onnx"], "-q",
                       "-o", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = out.read_text().splitlines()
    assert 2 <= len(rows) <= 2 * PLACES + 1
    assert "the stream ended" in done.stdout


def test_the_newest_frame_is_taken_and_drops_counted(exported, route, camera_url, tmp_path):
    from edgevpr.runtime.localize.live import NewestFrame, open_capture

    reader = NewestFrame(open_capture(camera_url, "url"), "camera")
    taken = []
    for frame in reader.frames(max_frames=None, duration=None):
        taken.append(frame)
        time.sleep(0.2)  # a slow model: four frames arrive meanwhile
    stats = reader.stats
    assert stats.read == 2 * PLACES and stats.delivered == len(taken)
    assert stats.dropped == stats.read - stats.delivered > PLACES


@pytest.mark.parametrize(("source", "message"), [
    ("/dev/video57", "cannot open camera /dev/video57"),
    ("http://127.0.0.1:9/nothing", "cannot open stream http://127.0.0.1:9/nothing"),
    ("videotestsrc ! appsink", "GStreamer"),
])  # fmt: skip
def test_live_sources_that_cannot_open_are_one_line(exported, route, tmp_path, source,
                                                    message) -> None:  # fmt: skip
    """In a process of its own: FFmpeg's log level is read once, when OpenCV first opens a
    video, and the CLI sets it before that."""
    from edgevpr.runtime.localize.live import has_gstreamer

    if "!" in source and has_gstreamer():
        pytest.skip("this OpenCV has GStreamer: the pipeline would run")
    started = time.monotonic()
    done = run_edgevpr("localize", route["map"], source, "-m", exported["onnx"], "-q", "-o",
                       tmp_path / "t.jsonl")  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert time.monotonic() - started < 30 and not list(tmp_path.iterdir())


# ------------------------------------------------------------------ live view and figure
def test_foxglove_serves_the_channels_to_a_client_on_loopback(embedder, route, tmp_path):
    pytest.importorskip("foxglove")
    websockets = pytest.importorskip("websockets.sync.client")
    from edgevpr.runtime.localize.liveview import LiveView
    from edgevpr.runtime.localize.stream import StreamFrame

    localizer = Localizer(embedder, PlaceMap.load(route["map"]), length=3, calibration=None)
    view = LiveView(localizer, 0, tmp_path / "run.mcap")
    try:
        with websockets.connect(f"ws://127.0.0.1:{view.port}",
                                subprotocols=["foxglove.sdk.v1",
                                              "foxglove.websocket.v1"]) as client:  # fmt: skip
            advertised = {}
            while len(advertised) < 6:
                message = json.loads(client.recv(timeout=10))
                if message.get("op") == "advertise":
                    advertised.update({c["topic"]: c for c in message["channels"]})
            assert {"/camera/image", "/map/image", "/fix/location", "/fix/pose", "/fix/track",
                    "/fix/status"} <= set(advertised)  # fmt: skip
            status = advertised["/fix/status"]["id"]
            client.send(json.dumps({"op": "subscribe",
                                    "subscriptions": [{"id": 1, "channelId": status}]}))
            time.sleep(0.2)
            for path in route["queries"][:4]:
                view.show(localizer.update(path), StreamFrame(path, None, str(path)))
            data = client.recv(timeout=10)
            assert isinstance(data, bytes) and data[0] == 1  # a message data frame
            assert b'"frame"' in data and b'"confidence"' in data
    finally:
        view.close()
    recorded = (tmp_path / "run.mcap").read_bytes()
    assert recorded.startswith(b"\x89MCAP0\r\n") and b"/fix/status" in recorded


def test_the_live_view_reads_a_place_reference_image_once(embedder, route, tmp_path,
                                                         monkeypatch) -> None:  # fmt: skip
    pytest.importorskip("foxglove")
    from edgevpr.runtime.localize import liveview

    localizer = Localizer(embedder, PlaceMap.load(route["map"]), length=3, calibration=None)
    fix = localizer.update(route["queries"][0])
    assert fix.place_id is not None
    reads: list[Path] = []
    read_image = liveview.read_image
    monkeypatch.setattr(liveview, "read_image", lambda path: reads.append(path) or read_image(path))
    view = liveview.LiveView(localizer, None, tmp_path / "run.mcap")
    try:
        for _ in range(3):
            view.show(fix, None)
    finally:
        view.close()
    assert len(reads) == 1 and reads[0].is_file()


def test_the_track_figure_is_drawn(cli, exported, route, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    result = cli("localize", route["map"], route["queries"][0].parent, "-m", exported["onnx"],
                 "-q", "-o", tmp_path / "t.jsonl", "--plot", tmp_path / "t.png")  # fmt: skip
    assert result.code == 0, result.err
    image = cv2.imread(str(tmp_path / "t.png"))
    assert image is not None and image.shape[1] > 2 * image.shape[0]  # three panels


def test_the_figure_legend_lists_only_what_is_drawn(embedder, route) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgevpr.runtime.localize.trackplot import TrackFigure, _top_view

    localizer = Localizer(embedder, PlaceMap.load(route["map"]), length=3, calibration=None)
    fixes = [localizer.update(p) for p in route["queries"][:6]]
    for truth in (None, np.array([[f.position.east, f.position.north] for f in fixes])):
        figure = TrackFigure.of(fixes, np.zeros((0, 3)), truth, localizer, 25.0)
        fig, ax = plt.subplots()
        _top_view(ax, figure)
        labels = set(ax.get_legend_handles_labels()[1])
        plt.close(fig)
        assert ("truth" in labels) == (truth is not None)
        assert ("accepted fix" in labels) == any(f.accepted for f in fixes)


# ------------------------------------------------------------------ the ROS 2 node
def image_message(types: dict, path: Path, stamp: int, encoding: str = "bgr8"):
    bgr = cv2.imread(str(path))
    header = types["Image"]().header
    header.stamp.sec = stamp
    return types["Image"](header=header, height=bgr.shape[0], width=bgr.shape[1],
                          encoding=encoding, is_bigendian=0, step=bgr.shape[1] * 3,
                          data=bgr.tobytes())  # fmt: skip


def test_ros2_node_against_a_strict_stand_in(exported, route, monkeypatch) -> None:
    standin_ros.install(monkeypatch)
    from edgevpr.runtime.localize.ros_node import build_node

    standin_ros.Node.overrides = {"map": str(route["map"]), "model": str(exported["onnx"]),
                                  "length": 5, "publish_tf": True, "threshold": 0.3}  # fmt: skip
    types = standin_ros.messages()
    node = build_node(types)
    (kind, topic, callback, qos), = node.subscriptions
    assert kind is types["Image"] and topic == "/camera/image_raw"
    assert qos.depth == 1 and qos.reliability == standin_ros.ReliabilityPolicy.BEST_EFFORT
    for i, path in enumerate(route["queries"]):
        callback(image_message(types, path, 100 + i))
    callback(image_message(types, route["queries"][0], 200, encoding="yuv422"))
    callback(image_message(types, route["queries"][0], 201, encoding="yuv422"))
    poses = node.publishers["/vpr/fix"].sent
    confidence = node.publishers["/vpr/fix/confidence"].sent
    diagnostics = node.publishers["/diagnostics"].sent
    assert len(confidence) == len(diagnostics) == PLACES  # every readable frame
    assert 0 < len(poses) < PLACES  # accepted fixes only
    assert node.bridge.localizer.threshold == 0.3
    states = [d.status[0].values[0].value for d in diagnostics]
    assert states[0] == "initialising" and "tracking" in states
    levels = {d.status[0].level for d in diagnostics}
    assert levels <= {bytes([0]), bytes([1])}
    truth = [record_for(p) for p in route["queries"]]
    assert min(abs(poses[-1].pose.pose.position.y - t.north) for t in truth) <= 25
    assert len(node.tf.sent) == len(poses) and node.tf.sent[-1].child_frame_id == "base_link"
    warnings = [line for line in node.logger.lines if line[0] == "warning"]
    assert len(warnings) == 2 and "yuv422" in warnings[0][1]
    assert all(line[2] == {"throttle_duration_sec": 5.0} for line in warnings)


def test_ros2_node_parameters_keep_their_types(exported, route, monkeypatch) -> None:
    standin_ros.install(monkeypatch)
    from edgevpr.runtime.localize.ros_node import build_node

    standin_ros.Node.overrides = {"map": str(route["map"]), "model": str(exported["onnx"]),
                                  "reliable": True, "depth": 3}  # fmt: skip
    node = build_node(standin_ros.messages())
    qos = node.subscriptions[0][3]
    assert qos.depth == 3 and qos.reliability == standin_ros.ReliabilityPolicy.RELIABLE
    assert node.bridge.localizer.pace == 1.0  # unset: the map's own (every frame a place)
    standin_ros.Node.overrides = {"map": str(route["map"]), "model": str(exported["onnx"]),
                                  "pace": 0.5}  # fmt: skip
    assert build_node(standin_ros.messages()).bridge.localizer.pace == 0.5
    standin_ros.Node.overrides = {"map": str(route["map"]), "model": str(exported["onnx"]),
                                  "length": "5"}  # fmt: skip
    with pytest.raises(standin_ros.InvalidParameterTypeException):
        build_node(standin_ros.messages())


def test_the_ros2_package_names_the_node_and_its_launch_file() -> None:
    import ast
    import xml.etree.ElementTree as ET

    root = Path(__file__).resolve().parents[1] / "ros2" / "edgevpr"
    package = ET.parse(root / "package.xml").getroot()
    assert package.findtext("name") == "edgevpr"
    assert package.find("export/build_type").text == "ament_python"
    depends = {d.text for d in package.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "diagnostic_msgs", "tf2_ros", "launch_ros"} <= depends
    setup = (root / "setup.py").read_text()
    assert "localize = edgevpr.runtime.localize.ros_node:main" in setup
    assert (root / "resource" / "edgevpr").is_file()
    launch = ast.parse((root / "launch" / "localize.launch.py").read_text())
    calls = {n.func.id for n in ast.walk(launch) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name)}  # fmt: skip
    assert {"Node", "DeclareLaunchArgument", "LaunchDescription"} <= calls
    from edgevpr.runtime.localize import ros_node

    assert callable(ros_node.main)  # the entry point setup.py names
