"""detect.py: sources (folders, globs, videos), the files it writes, clear errors."""
import json

import pytest

import detect
from tests.conftest import DETECT_NAMES


def test_detect_writes_what_it_claims(detect_weights, detect_images, tmp_path):
    save_dir = detect.main(["--weights", str(detect_weights), "--source", str(detect_images), "--img-size", "128", "--conf-thres", "0.1",
                            "--save-txt", "--save-conf", "--save-json", "--project", str(tmp_path), "--name", "run"])
    assert (save_dir / "im0.jpg").is_file() and (save_dir / "im1.jpg").is_file() and (save_dir / "clip.mp4").is_file()
    rows = (save_dir / "labels" / "im0.txt").read_text().split("\n")[0].split()
    assert len(rows) == 6 and int(rows[0]) in range(3) and all(0 <= float(v) <= 1 for v in rows[1:5])
    assert len(list((save_dir / "labels").glob("clip_*.txt"))) == 3  # one per video frame
    entries = json.loads((save_dir / "predictions.json").read_text())
    assert {e["name"] for e in entries} <= set(DETECT_NAMES) and any(e["frame"] == 2 for e in entries)
    glob_dir = detect.main(["--weights", str(detect_weights), "--source", str(detect_images / "*.jpg"), "--img-size", "128",
                            "--project", str(tmp_path), "--name", "glob"])
    assert sorted(p.name for p in glob_dir.iterdir()) == ["im0.jpg", "im1.jpg"]
    with pytest.raises(SystemExit, match="detect.py: --source not found"):  # one line, no traceback
        detect.main(["--weights", str(detect_weights), "--source", str(detect_images / "nope"), "--project", str(tmp_path)])


def test_options_are_checked_where_they_are_parsed(detect_weights, detect_images, tmp_path, capsys):
    for flag, value, message in (("--conf-thres", "1.5", r"argument --conf-thres: must be in [0, 1], got 1.5"),
                                 ("--img-size", "0", "argument --img-size/--imgsz: must be >= 1, got 0")):
        with pytest.raises(SystemExit) as e:
            detect.main(["--weights", str(detect_weights), "--source", str(detect_images), flag, value,
                         "--project", str(tmp_path)])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_user_errors_are_one_line_and_verbose_shows_the_traceback(detect_images, tmp_path):
    argv = ["--weights", str(tmp_path / "missing.pt"), "--source", str(detect_images), "--project", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"^detect.py: weights not found: .*missing.pt$"):
        detect.main(argv)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        detect.main(argv + ["--verbose"])
