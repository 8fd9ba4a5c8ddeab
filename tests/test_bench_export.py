"""benchmarks/bench_export.py: one small run end to end (two exports of a random yoloxn, their latency and
table), so the benchmark keeps up with export.py's API; the int8 rows need calibration and are left out."""
from benchmarks import bench_export as B


def test_one_small_run_prints_the_table(capsys):
    B.main(["--cfg", "models/yoloxn.yaml", "--nc", "3", "--img-size", "64", "--data", "", "--runs", "1"])
    table = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("yoloxn")]
    assert [row[1] for row in table] == ["fp32", "deploy"]
    assert all(float(row[4]) > 0 and float(row[5]) > 0 for row in table)  # ORT ms and the ratio to fp32
    assert table[0][5] == "1.00"
