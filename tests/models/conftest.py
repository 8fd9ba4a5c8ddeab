import pytest

from tests.easycv_reference import easycv_module, easycv_root


@pytest.fixture(scope="module")
def easycv():
    """EasyCV's RepVGG backbone module file (RepVGGBlock, RepVGGYOLOX); skipped without pai-easycv, an
    error in CI (REQUIRE_REFERENCE=1)."""
    if easycv_root() is None:
        pytest.skip("pai-easycv not installed (bash tests/install_reference.sh)")
    return easycv_module("easycv.models.backbones.repvgg_yolox_backbone")
