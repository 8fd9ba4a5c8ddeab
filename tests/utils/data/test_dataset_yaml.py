"""utils/data/dataset_yaml.py: dataset descriptions, their paths, names, splits and the demo generator."""
import pytest

from utils.data.dataset_yaml import has_split, load_data_config, split_source


def test_data_yaml_paths_names_and_demo_generation(tmp_path):
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text("path: ds\ntrain: images/train\nval: images/val\nnames: {0: a, 1: b}\n")
    data = load_data_config(yaml_path)
    assert data["names"] == ["a", "b"] and data["nc"] == 2
    assert data["train"] == str(tmp_path / "ds" / "images" / "train")
    yaml_path.write_text("path: ds\ntrain: images/train\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(ValueError, match="nc is 3 but 2 names"):
        load_data_config(yaml_path)
    yaml_path.write_text("path: demo\ntrain: images/train\nval: images/val\nnames: [a]\ngenerate: demo\n")
    import utils.data.demo as demo_data

    calls = []
    original = demo_data.ensure_demo_dataset
    demo_data.ensure_demo_dataset = lambda root, **kw: calls.append(root)
    try:
        load_data_config(yaml_path)
    finally:
        demo_data.ensure_demo_dataset = original
    assert calls == [tmp_path / "demo"]
    with pytest.raises(FileNotFoundError, match="dataset description not found"):
        load_data_config(tmp_path / "missing.yaml")


def test_split_sources():
    data = {"yaml_file": "d.yaml", "train": "/d/images/train", "val_json": "/d/a.json", "val_images": "/d/val"}
    assert split_source(data, "train") == {"path": "/d/images/train"}
    assert split_source(data, "val") == {"path": None, "json": "/d/a.json", "images_dir": "/d/val"}
    assert has_split(data, "val") and not has_split(data, "test")
    with pytest.raises(ValueError, match="d.yaml: no 'test' split"):
        split_source(data, "test")
