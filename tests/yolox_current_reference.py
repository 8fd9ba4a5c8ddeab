"""Official YOLOX's current code as a reference, run in its own environment (pixeltable-yolox 0.4.3, which
imports as ``yolox`` like the yolox 0.3.0 the main test environment holds; tests/install_reference.sh makes
.venv/yolox-current for it):

    .venv/yolox-current/bin/python tests/yolox_current_reference.py cases.pt answers.pt

cases.pt: {"strides", "cases": [{"preds", "targets", "nc", "use_l1"}, ...]} as torch.save writes it;
answers.pt: {"version", "answers": [{"items" [4], "fg": [[A] bool per image], "matched": [[F] per image]}]}.
Official's get_losses gives the loss items; its get_assignments, called as get_losses calls it, the
assignments. The main environment's tests compare ComputeXLoss with prior ``center`` against them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def current_official_env_python() -> Path:
    """Where tests/install_reference.sh puts the environment (YOLOX_CURRENT_PYTHON overrides it)."""
    import os

    return Path(os.environ.get("YOLOX_CURRENT_PYTHON", ROOT / ".venv" / "yolox-current" / "bin" / "python"))


def main(cases_path: str, answers_path: str) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.reference import install_torchvision_stub

    install_torchvision_stub()
    import yolox
    from yolox.models import YoloxHead  # pixeltable-yolox's name; yolox 0.3.0 has YOLOXHead

    from tests.simota_reference import official_assignments, official_losses

    spec = torch.load(cases_path, weights_only=True)
    answers = []
    for case in spec["cases"]:
        args = (case["preds"], case["targets"], spec["strides"], case["nc"])
        items = official_losses(*args, use_l1=case["use_l1"], head_class=YoloxHead)
        per_image = official_assignments(*args, head_class=YoloxHead)
        answers.append({"items": items, "fg": [fg for fg, _ in per_image], "matched": [m for _, m in per_image]})
    torch.save({"version": yolox.__version__, "answers": answers}, answers_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
