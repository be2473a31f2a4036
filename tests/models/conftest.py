import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _single_thread_torch():
    """Tiny models run fastest, and time most reproducibly, on one torch thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
