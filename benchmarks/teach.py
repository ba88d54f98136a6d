"""Teaching maps from recorded drives, measured on nordland64.

Usage: python benchmarks/teach.py --model MODEL.onnx [--data ../shared/data]
       [--out benchmarks/results/teach.md] [--work DIR]

Everything runs through the installed ``edgevpr`` command, as a user would run it:

1. Round trip. nordland64's test database (1176 summer frames, 20 m apart, in travel order)
   recorded three ways: an MJPG video with a GPX track, a ROS 2 bag of raw ``Image`` and
   ``NavSatFix`` messages, and JPEGs with EXIF GPS. The file names' east/north, shifted to
   (400 km, 7000 km) in UTM zone 33W (the route then lies in its zone), become the
   recordings' latitude/longitude. Each recording taught into a map with ``index build``;
   its places against the map built from the named PNGs: count, and the largest position
   difference (taught east/north less the shift).
2. Truth from a bag. The winter test frames recorded as a bag with their own NavSatFix,
   localised against the bag-taught map with ``--truth /gps/fix``; the winter PNG folder
   localised against the folder map with the truth in its file names. Both summaries.
3. Keyframes. Maps taught from the summer bag with ``--every`` 0 (every frame), 20, 40 and
   80 m: places, file size, and the winter bag localised against each (L=10): the share of
   all frames whose fix is within 25 m (sequence Recall@1), accepted fixes and their
   precision.
4. A camera faster than the recording: the winter bag as 4 frames a second (each frame
   four times, stamped 0.25 s apart) against the every-frame and 40 m maps, beside the
   1 frame-a-second bag.
5. Bad input: each case's one line, exit status, and whether anything was written.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgevpr.bench.machine import describe_cpu, machine_info
from edgevpr.core.geo import utm_to_latlon
from edgevpr.data.recordings import (
    drive_of,
    record_bag,
    record_photos,
    record_video,
    write_gpx,
)
from edgevpr.runtime.localize.route import DEFAULT_SPEEDS
from edgevpr.runtime.placemap import PlaceMap

ZONE = "33W"
SHIFT = (400_000.0, 7_000_000.0)
START = 1_700_000_000.0
EDGEVPR = str(Path(sys.executable).with_name("edgevpr"))


def edgevpr(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([EDGEVPR, *(str(a) for a in args)], capture_output=True, text=True)
    if check and done.returncode:
        raise SystemExit(f"edgevpr {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done


def round_trip(model: Path, test: Path, work: Path) -> tuple[list[dict], Path, Path]:
    folder_map = work / "folder.vprmap"
    edgevpr("index", "build", model, test / "database", "-o", folder_map, "-q")
    reference = _positions(folder_map, (0.0, 0.0))
    frames, latlon, times = drive_of(test / "database", ZONE, START, 1.0, SHIFT)
    rec = work / "summer"
    rec.mkdir()
    record_video(rec / "drive.avi", frames, 1.0)
    write_gpx(rec / "drive.gpx", times, latlon)
    record_bag(rec / "bag", frames, times, latlon)
    record_photos(rec / "photos", frames, times, latlon)
    sources = {
        "video + GPX": [rec / "drive.avi", "--track", rec / "drive.gpx", "--start-time",
                        str(START)],
        "ROS 2 bag (Image + NavSatFix)": [rec / "bag"],
        "JPEGs with EXIF GPS": [rec / "photos"],
    }  # fmt: skip
    rows = [{"source": "named PNG folder (reference)", "places": len(reference),
             "max_diff_m": 0.0, "seconds": None}]  # fmt: skip
    for name, source in sources.items():
        out = work / f"{len(rows)}.vprmap"
        began = time.perf_counter()
        edgevpr("index", "build", model, *source, "-o", out, "-q")
        taught = _positions(out, SHIFT)
        same = len(taught) == len(reference)
        diff = float(np.abs(taught - reference).max()) if same else math.inf
        rows.append({"source": name, "places": len(taught), "max_diff_m": diff,
                     "seconds": time.perf_counter() - began})  # fmt: skip
    return rows, folder_map, work / "2.vprmap"


def _positions(path: Path, shift: tuple[float, float]) -> np.ndarray:
    records = sorted(PlaceMap.load(path).records(), key=lambda r: (r.north, r.east))
    return np.array([(r.east - shift[0], r.north - shift[1]) for r in records])


def localized(model: Path, map_path: Path, source: Path, work: Path, *extra: object) -> dict:
    """``edgevpr localize --json``'s summary of ``source`` against ``map_path``."""
    done = edgevpr("localize", map_path, source, "-m", model, "-o", work / "t.jsonl", "--json",
                   "-q", *extra)  # fmt: skip
    return json.loads(done.stdout)


def truth_runs(model: Path, test: Path, winter_drive: tuple, folder_map: Path, bag_map: Path,
               work: Path) -> dict:  # fmt: skip
    winter = record_bag(work / "winter", *winter_drive)
    runs = {
        "winter bag vs bag-taught map, --truth /gps/fix":
            [bag_map, winter, "--truth", "/gps/fix"],
        "winter PNGs vs folder map, truth from file names": [folder_map, test / "queries"],
    }  # fmt: skip
    results = {name: localized(model, map_path, source, work, *extra)
               for name, (map_path, source, *extra) in runs.items()}  # fmt: skip
    return {"winter": winter, "runs": results}


def keyframes(model: Path, summer_bag: Path, winter: Path, work: Path) -> list[dict]:
    rows = []
    for every in (0, 20, 40, 80):
        out = work / f"every{every}.vprmap"
        edgevpr("index", "build", model, summer_bag, "--every", every, "-o", out, "-q")
        size = {"every": every, "places": len(PlaceMap.load(out)), "bytes": out.stat().st_size}
        for pace in ([], ["--pace", "1"]):  # the map's own pace, then one place a frame
            result = localized(model, out, winter, work, "--truth", "/gps/fix", "--length",
                               "10", *pace)  # fmt: skip
            rows.append({**size, "pace": result["pace"], "given": bool(pace),
                         **result["score"]})  # fmt: skip
    return rows


def camera_rates(model: Path, winter_drive: tuple, keyframe_rows: list[dict],
                 work: Path) -> list[dict]:  # fmt: skip
    """The winter drive as a camera at 4 frames a second would give it (each frame four
    times, 0.25 s apart) against maps taught from the 1 frame-a-second summer bag, beside
    the recorded rate's runs of those maps (from the keyframe section)."""
    frames, times, latlon = winter_drive
    four = record_bag(work / "winter4x", [f for f in frames for _ in range(4)],
                      [t + k / 4 for t in times for k in range(4)],
                      [p for p in latlon for _ in range(4)])  # fmt: skip
    rows = []
    for every in (0, 40):
        recorded = next(r for r in keyframe_rows if r["every"] == every and not r["given"])
        result = localized(model, work / f"every{every}.vprmap", four, work, "--truth",
                           "/gps/fix", "--length", "10")  # fmt: skip
        rows += [{**recorded, "stream": "1 frame a second (as recorded)"},
                 {"every": every, "stream": "4 frames a second", **result["score"]}]
    return rows


def bad_inputs(model: Path, work: Path, rec: Path) -> list[dict]:
    bad = work / "bad"
    bad.mkdir()
    frames = [np.full((32, 64, 3), 30 * i, np.uint8) for i in range(5)]
    lat_lon = [utm_to_latlon(SHIFT[0], SHIFT[1] + 20 * i, ZONE) for i in range(5)]
    times = [START + i for i in range(5)]
    nofix = record_bag(bad / "nofix", frames, times, lat_lon, fix_status=-1)
    (bad / "nan.csv").write_text("time,lat,lon\n" + "".join(
        f"{t - START},{'nan' if i == 2 else lat},{lon}\n"
        for i, (t, (lat, lon)) in enumerate(zip(times, lat_lon, strict=True))))  # fmt: skip
    (bad / "damaged.gpx").write_text((rec / "drive.gpx").read_text()[:700])
    (bad / "damaged.srt").write_text("1\n00:00:00,000 --> 00:00:00,033\n[latitude: 63.5\n")
    (bad / "damaged.csv").write_text("time,lat,lon\n0,63.5,12.0\n1,63.5,\n")
    photos = bad / "photos"
    shutil.copytree(rec / "photos", photos)
    cv2.imwrite(str(photos / "zz_no_gps.jpg"), frames[0])
    video = rec / "drive.avi"
    cases = {
        "GNSS topic without a fix": [nofix],
        "NaN positions (CSV)": [video, "--track", bad / "nan.csv"],
        "track does not overlap the video in time": [video, "--track", rec / "drive.gpx",
                                                     "--start-time", str(START + 86400)],
        "photo without GPS": [photos],
        "missing topic": [rec / "bag", "--position-topic", "/gps/missing"],
        "damaged GPX": [video, "--track", bad / "damaged.gpx", "--start-time", str(START)],
        "damaged SRT": [video, "--track", bad / "damaged.srt"],
        "damaged CSV": [video, "--track", bad / "damaged.csv"],
        "bag whose clock never meets the track's": [rec / "bag", "--track", rec / "drive.gpx",
                                                    "--time-offset", "-3600"],
    }  # fmt: skip
    rows = []
    for name, args in cases.items():
        out = bad / "out.vprmap"
        before = set(bad.iterdir())
        done = edgevpr("index", "build", model, *args, "-o", out, "-q", check=False)
        written = sorted(p.name for p in set(bad.iterdir()) - before)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        rows.append({"case": name, "status": done.returncode, "lines": len(lines),
                     "message": lines[-1] if lines else "", "written": written})  # fmt: skip
    return rows


def report(model: Path, trip: list[dict], truth: dict, frames: list[dict], rates: list[dict],
           bad: list[dict], seconds: float) -> str:  # fmt: skip
    lines = [
        "# Teaching maps from recorded drives (nordland64)", "",
        f"{time.strftime('%Y-%m-%d')}, {describe_cpu(machine_info())}: `python benchmarks/teach.py "
        f"--model {model.name}` ({seconds:.0f} s in all; the model: MixVPR-Lite0 trained "
        "with Multi-Similarity on nordland64's train split, 64x128, exported to ONNX FP32).",
        "", (__doc__ or "").split("\n\n", 1)[1].strip(), "",
        "## 1. Round trip: three recordings against the folder of named images", "",
        "| recording | places | largest position difference | build time |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for row in trip:
        took = "" if row["seconds"] is None else f"{row['seconds']:.1f} s"
        lines.append(f"| {row['source']} | {row['places']} | {row['max_diff_m'] * 1000:.1f} mm "
                     f"| {took} |")  # fmt: skip
    lines += ["", "## 2. Truth from the winter bag's own GNSS against file-name truth", "",
              "| run | frames | accepted | precision within 25 m | error median | p95 | "
              "share of all fixes within 25 m |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, run in truth["runs"].items():
        s = run["score"]
        lines.append(f"| {name} | {s['frames']} | {s['accepted']} | {100 * s['precision']:.2f} % "
                     f"| {s['median_m']:.3f} m | {s['p95_m']:.3f} m | "
                     f"{100 * s['share_within']:.2f} % |")  # fmt: skip
    lines += ["", "## 3. Keyframes: map size and sequence Recall@1 (L=10) against spacing", "",
              "| --every | places | map file | route pace (places a frame) | sequence R@1 (fix "
              "within 25 m, all frames) | accepted | precision of accepted |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in frames:
        every = "every frame (0)" if not row["every"] else f"{row['every']} m"
        given = "--pace 1" if row["given"] else "the map's own"
        pace = f"{row['pace']:g} ({given})"
        precision = "-" if row["precision"] is None else f"{100 * row['precision']:.1f} %"
        lines.append(f"| {every} | {row['places']} | {row['bytes'] / 1e6:.2f} MB | {pace} | "
                     f"{100 * row['share_within']:.1f} % | {row['accepted']} | {precision} |")
    lines += ["", "Why spacing costs recall: the winter frames are 20 m apart, so against a map "
              "with a place every N metres the stream moves 20/N places a frame. The route "
              "search tries speeds of "
              f"{', '.join(f'{v:g}' for v in DEFAULT_SPEEDS)}x its pace, and the pace is the "
              "map's own: one over the recorded frames between its places (4 at 80 m), so a "
              "stream recorded as the map's drive was is searched around its true speed; "
              "`--pace 1` shows what searching around one place a frame gives. A map's "
              "position is its places': at 80 m a frame half-way between two places is 40 m "
              "from either, beyond the 25 m counted here (the fix says so: its uncertainty is "
              "at least half the spacing). Teach with --every at most twice the spacing of "
              "the frames that will be localised where 25 m matters."]  # fmt: skip
    lines += ["", "## 4. A camera faster than the recording", "",
              "| map | stream | sequence R@1 (fix within 25 m, all frames) | accepted | "
              "precision of accepted |", "|---|---|---|---|---|"]  # fmt: skip
    for row in rates:
        every = "every frame" if not row["every"] else f"every {row['every']} m"
        precision = "-" if row["precision"] is None else f"{100 * row['precision']:.1f} %"
        lines.append(f"| {every} | {row['stream']} | {100 * row['share_within']:.1f} % | "
                     f"{row['accepted']} | {precision} |")
    lines += ["", "The maps' drive was recorded at 1 frame a second; the stream's timestamps "
              "are counted in those frames, so at 4 frames a second each frame moves a "
              "quarter of a recorded frame along the route. The window of L=10 frames then "
              "holds 2.5 views instead of 10, and its margin is weighed at sqrt(2.5 / 10) = "
              "half: fewer fixes are accepted, not more wrong ones."]  # fmt: skip
    lines += ["", "## 5. Bad input: one line, nothing written", "",
              "| case | exit | lines on stderr | message | files left |", "|---|---|---|---|---|"]
    for row in bad:
        message = row["message"].replace("|", "\\|")
        left = ", ".join(row["written"]) or "none"
        lines.append(f"| {row['case']} | {row['status']} | {row['lines']} | {message} | {left} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/teach.md"))
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    began = time.perf_counter()
    test = args.data / "nordland64/images/test"
    work = args.work or Path(tempfile.mkdtemp(prefix="teach-"))
    work.mkdir(parents=True, exist_ok=True)
    trip, folder_map, bag_map = round_trip(args.model, test, work)
    frames, latlon, times = drive_of(test / "queries", ZONE, START, 1.0, SHIFT)
    winter_drive = (frames, times, latlon)  # record_bag's order
    truth = truth_runs(args.model, test, winter_drive, folder_map, bag_map, work)
    keyframe_rows = keyframes(args.model, work / "summer/bag", truth["winter"], work)
    rates = camera_rates(args.model, winter_drive, keyframe_rows, work)
    bad = bad_inputs(args.model, work, work / "summer")
    text = report(args.model, trip, truth, keyframe_rows, rates, bad,
                  time.perf_counter() - began)  # fmt: skip
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
