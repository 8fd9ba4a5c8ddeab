import pytest
import torch

from tests.reference import official_yolox


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def yolox_pkg():
    """The official yolox package; skipped when absent, an error in CI (REQUIRE_REFERENCE=1)."""
    pkg = official_yolox()
    if pkg is None:
        pytest.skip("official yolox package not installed (bash tests/install_reference.sh)")
    return pkg


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: on a small shared CPU, two threads of tiny convs
    spin-wait (100x slower). Use with pytestmark = pytest.mark.usefixtures("one_torch_thread")."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
