"""Shared test set-up: no display, and every run/cache folder inside the test's tmp_path."""

import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores: keep torch from oversubscribing them when pytest runs alongside other work.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: intra-op threads gain nothing there, and on a busy
    two-core machine their spin-waits can cost far more than the work (a GAN latent inversion
    ran 100× slower with two). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("genstudio-home")
    monkeypatch.setenv("GENSTUDIO_HOME", str(home / "data"))
    monkeypatch.setenv("GENSTUDIO_CACHE_DIR", str(home / "cache"))
    # No shipped pretrained runs unless a test asks for them: a window would open one at start.
    monkeypatch.setenv("GENSTUDIO_PRETRAINED", str(home / "no-pretrained"))


@pytest.fixture(autouse=True)
def no_python_thread_left_running():
    """A test that leaves a Python thread running fails: a leaked thread keeps training or
    holding files in the background and would make later tests flaky. (The app tests add a
    QThread check of their own.) A short grace period lets a thread that was already told to
    stop finish its last step."""
    before = set(threading.enumerate())
    yield
    # A _DummyThread stands for a thread Python did not start (a QThread that logged, say):
    # it cannot be joined, and the app tests check their QThreads themselves.
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
              and not isinstance(t, threading._DummyThread)]
    for thread in leaked:
        thread.join(timeout=10)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"thread(s) still running after the test: {still}"
