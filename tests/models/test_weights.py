"""models/weights.py: a checkpoint of another nc as a training start."""
import pytest
import torch

from models.weights import load_pretrained
from models.yolo import Model
from utils.checkpoints import save_checkpoint


def test_finetune_onto_another_nc_reinitialises_only_class_predictions(tmp_path, caplog):
    import logging

    source = Model("models/yoloxn.yaml", nc=80)
    path = save_checkpoint(tmp_path / "w.pt", {"model": source.state_dict(), "yaml": source.yaml})
    target = Model("models/yoloxn.yaml", nc=5)
    fresh = target.model[-1].cls_preds[0].weight.clone()
    with caplog.at_level(logging.INFO):
        load_pretrained(target, path)
    assert "class predictions re-initialised for nc=5 (checkpoint has nc=80)" in caplog.text
    assert torch.equal(target.model[-1].cls_preds[0].weight, fresh)
    assert torch.equal(target.model[0].conv.conv.weight, source.model[0].conv.conv.weight)
    assert torch.equal(target.model[-1].reg_preds[0].weight, source.model[-1].reg_preds[0].weight)
    with pytest.raises(ValueError, match="does not fit the model"):
        load_pretrained(Model("models/yoloxs.yaml", nc=5), path)
