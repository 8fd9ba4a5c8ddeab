"""benchmarks/distill_gradients.py: the gradient comparison, and one small run on the trainer's batches."""
import pytest
import torch

from benchmarks import distill_gradients as G
from models.yolo import Model
from utils.checkpoints import save_checkpoint


def test_gradient_agreement_is_over_the_parameters_both_losses_reach():
    w, only_task = torch.tensor([1.0, 2.0, 3.0], requires_grad=True), torch.tensor([5.0], requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, -2.0, 0.0])
    task = (w * a).sum() + only_task.sum() * 7  # only_task's gradient is left out: distill does not reach it
    n_task, n_distill, cos = G.gradient_agreement(task, (w * b).sum() + (w * a).sum(), [w, only_task])
    assert (n_task, n_distill) == pytest.approx((5.0, (9 + 4 + 16) ** 0.5))
    assert cos == pytest.approx(25 / (5 * 29 ** 0.5))
    with pytest.raises(ValueError, match="no parameter in common"):
        G.gradient_agreement(only_task.sum(), (w * b).sum(), [w, only_task])


def test_one_small_run_prints_a_row_per_batch(tiny_data, tmp_path, capsys):
    teacher = Model("models/yoloxs_rslu.yaml", nc=3)
    ckpt = save_checkpoint(tmp_path / "teacher.pt", {"model": teacher.state_dict(), "yaml": teacher.yaml})
    G.main(["--teacher", str(ckpt), "--cfg", "models/yoloxn.yaml", "--data", str(tiny_data), "--img-size", "64",
            "--batch-size", "4", "--batches", "2"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line[:3] in ("| 0", "| 1")]
    assert [int(r[0]) for r in rows] == [0, 1]
    assert all(float(x) > 0 for r in rows for x in r[1:5]) and all(-1 <= float(r[5]) <= 1 for r in rows)
