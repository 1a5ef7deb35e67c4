"""Feature extractors for FID/KID and the checked downloader behind the Inception weights.

Downloads are tested for real against an http.server on 127.0.0.1; Inception interface
detection against tiny TorchScript modules scripted here; the real shared weights only when
../shared/models/inception-v3-fid.pt exists."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import FakeFidHelper, FakeStyleGan, probe, save_scripted, serve_files

from genstudio.core.metrics import features as feat
from genstudio.core.metrics.download import (
    DownloadCancelled,
    DownloadError,
    download_file,
    sha256_of,
)
from genstudio.core.metrics.features import (
    NORMALIZED_299,
    STYLEGAN_0_255,
    InceptionExtractor,
    InvalidWeightsError,
    RandomConvExtractor,
    find_inception,
    get_extractor,
)
from genstudio.core.runs.preferences import (
    INCEPTION_WEIGHTS,
    load_preferences,
    preferences_path,
    set_preference,
)

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"
PAYLOAD = bytes(range(256)) * 1000  # 256 kB
SLOW_CHUNK, SLOW_CHUNKS = 16 * 1024, 64


# --------------------------------------------------------------------------- a local server


@pytest.fixture
def server():
    """Base URL of a loopback-only HTTP server serving /file.bin and /slow.bin, and its handler."""
    with serve_files({"/file.bin": PAYLOAD}, slow=(SLOW_CHUNK, SLOW_CHUNKS)) as served:
        yield served


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_reports_monotonic_progress(server, tmp_path):
    url, _ = server
    calls = []
    dest = download_file(
        f"{url}/file.bin",
        tmp_path / "sub" / "f.bin",
        _sha(PAYLOAD),
        progress=lambda done, total: calls.append((done, total)),
        chunk=10_000,
    )
    assert dest.read_bytes() == PAYLOAD and sha256_of(dest) == _sha(PAYLOAD)
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert {t for _, t in calls} == {len(PAYLOAD)} and len(calls) > 10


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(f"{url}/file.bin", tmp_path / "f.bin", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_404_is_a_download_error(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{url}/missing.bin", tmp_path / "f.bin", _sha(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_present_file_with_right_hash_needs_no_request(server, tmp_path):
    url, handler = server
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    download_file(f"{url}/file.bin", tmp_path / "f.bin", _sha(PAYLOAD).upper())
    assert handler.requests == []


def test_cancel_mid_download_leaves_nothing(server, tmp_path):
    url, handler = server
    seen = []
    with pytest.raises(DownloadCancelled):
        download_file(
            f"{url}/slow.bin",
            tmp_path / "slow.bin",
            "a" * 64,
            chunk=SLOW_CHUNK,
            progress=lambda done, total: seen.append(done),
            should_stop=lambda: len(seen) > 4,
        )
    assert handler.requests == ["/slow.bin"] and 0 < seen[-1] < SLOW_CHUNK * SLOW_CHUNKS
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url, sha", [("file:///etc/passwd", "a" * 64), ("http://x/f", "abc")])
def test_bad_url_or_checksum_is_refused_up_front(tmp_path, url, sha):
    with pytest.raises(DownloadError):
        download_file(url, tmp_path / "f", sha)


# --------------------------------------------------------------------------- offline extractor


def _images(n, size, channels, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_random_conv_shape_and_dtype(size, channels):
    out = RandomConvExtractor().extract(_images(5, size, channels))
    assert out.shape == (5, 512) and out.dtype == np.float32 and np.isfinite(out).all()


def test_random_conv_is_deterministic_and_batch_independent():
    images = _images(40, 28, 1)
    a = RandomConvExtractor().extract(images, batch=40)
    assert np.array_equal(a, RandomConvExtractor().extract(images, batch=40))
    np.testing.assert_allclose(RandomConvExtractor().extract(images, batch=7), a, atol=1e-5, rtol=0)


def test_random_conv_weights_are_pinned():
    # Raw PCG64 bits + our own arithmetic: the same values on every machine and numpy version.
    # They define "random-conv-v1": if they ever change, the extractor's name must change too.
    weights = RandomConvExtractor().weights
    assert [tuple(w.shape) for w in weights] == [(32, 3, 3, 3), (64, 32, 3, 3), (256, 64, 3, 3)]
    assert weights[0].flatten()[:3].tolist() == [
        -0.46748146414756775,
        0.1086144968867302,
        0.45631372928619385,
    ]
    assert weights[2].flatten()[-2:].tolist() == [-0.03620418161153793, 0.006747921463102102]
    assert float(weights[0].abs().max()) <= (6 / 27) ** 0.5


def test_grey_equals_grey_repeated_to_rgb():
    grey = _images(6, 28, 1)
    extractor = RandomConvExtractor()
    assert np.array_equal(extractor.extract(grey), extractor.extract(np.repeat(grey, 3, axis=-1)))


def test_random_conv_separates_different_image_sets():
    extractor = RandomConvExtractor()
    blank = extractor.extract(np.zeros((64, 28, 28, 1), np.uint8))
    noisy = extractor.extract(_images(64, 28, 1))
    between = np.linalg.norm(blank.mean(0) - noisy.mean(0))
    within = np.linalg.norm(noisy[:32].mean(0) - noisy[32:].mean(0))
    assert between > 10 * within


def test_extract_reports_progress_and_rejects_bad_input():
    calls = []
    RandomConvExtractor().extract(
        _images(10, 28, 3), batch=4, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(4, 10), (8, 10), (10, 10)]
    with pytest.raises(ValueError, match="uint8"):
        RandomConvExtractor().extract(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="C in"):
        RandomConvExtractor().extract(np.zeros((2, 28, 28, 2), np.uint8))


# --------------------------------------------------------------------------- Inception interfaces


class FakeTwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class FakeClassifier(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probe(x, 1000)


@pytest.fixture(autouse=True)
def _no_inception_env(monkeypatch):
    monkeypatch.delenv(feat.INCEPTION_ENV, raising=False)


def test_fid_helper_interface_gets_299_pixels_scaled_to_plus_minus_one(tmp_path):
    extractor = InceptionExtractor(save_scripted(FakeFidHelper(), tmp_path / "a.pt"))
    assert extractor.interface == NORMALIZED_299 and extractor.dim == 2048
    images = np.zeros((3, 28, 28, 1), np.uint8)
    images[:, :14] = 255
    out = extractor.extract(images, batch=2)
    assert out.shape == (3, 2048) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :4], [[-1.0, 127 / 128, 299, 299]] * 3, atol=1e-6)  # float32 resize


def test_stylegan_interface_gets_0_255_at_native_size(tmp_path):
    extractor = InceptionExtractor(save_scripted(FakeStyleGan(), tmp_path / "b.pt"))
    assert extractor.interface == STYLEGAN_0_255
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[:, :, :5] = 255
    np.testing.assert_allclose(extractor.extract(images)[:, :4], [[0, 255, 32, 32]] * 2)


@pytest.mark.parametrize(
    "module, message",
    [
        (FakeTwoInputs(), "unknown Inception interface"),
        (FakeClassifier(), r"expected \(N, 2048\)"),
    ],
)
def test_wrong_torchscript_interface_is_a_clear_error(tmp_path, module, message):
    with pytest.raises(InvalidWeightsError, match=message):
        InceptionExtractor(save_scripted(module, tmp_path / "w.pt"))


def test_non_torchscript_files_are_a_clear_error(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    for name in ("state.pt", "junk.pt"):
        with pytest.raises(InvalidWeightsError, match="not a TorchScript file"):
            InceptionExtractor(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        InceptionExtractor(tmp_path / "absent.pt")


# --------------------------------------------------------------------------- finding weights


def test_get_extractor_choices(tmp_path, monkeypatch):
    assert isinstance(get_extractor("auto"), RandomConvExtractor)  # empty cache, no env
    assert isinstance(get_extractor("offline"), RandomConvExtractor)
    with pytest.raises(FileNotFoundError, match="no Inception weights"):
        get_extractor("inception")
    model = save_scripted(FakeStyleGan(), tmp_path / "m.pt")
    assert isinstance(get_extractor(str(model)), InceptionExtractor)
    monkeypatch.setenv(feat.INCEPTION_ENV, str(model))
    assert find_inception() == model and isinstance(get_extractor("auto"), InceptionExtractor)
    monkeypatch.setenv(feat.INCEPTION_ENV, str(tmp_path / "gone.pt"))
    with pytest.raises(FileNotFoundError, match=feat.INCEPTION_ENV):
        find_inception()


def test_file_chosen_in_the_app_is_found_after_the_environment(tmp_path, monkeypatch):
    chosen = save_scripted(FakeStyleGan(), tmp_path / "chosen.pt")
    set_preference(INCEPTION_WEIGHTS, str(chosen))
    assert find_inception() == chosen and isinstance(get_extractor("auto"), InceptionExtractor)
    env = save_scripted(FakeStyleGan(), tmp_path / "env.pt")
    monkeypatch.setenv(feat.INCEPTION_ENV, str(env))
    assert find_inception() == env  # the environment overrides a remembered choice
    monkeypatch.delenv(feat.INCEPTION_ENV)
    chosen.unlink()  # a remembered file that has gone is passed over, not an error
    assert find_inception() is None and isinstance(get_extractor("auto"), RandomConvExtractor)


def test_unreadable_preferences_mean_defaults(tmp_path):
    preferences_path().parent.mkdir(parents=True, exist_ok=True)
    preferences_path().write_text("{not json")
    assert load_preferences() == {} and find_inception() is None
    set_preference("x", 1)  # and can be written over
    set_preference(INCEPTION_WEIGHTS, None)
    assert load_preferences() == {"x": 1}


def test_download_inception_needs_a_checksum_then_caches_verified_file(server, monkeypatch):
    url, handler = server
    with pytest.raises(DownloadError, match="no published checksum"):
        feat.download_inception()
    known = feat.KNOWN_WEIGHTS[feat.DEFAULT_WEIGHTS]
    monkeypatch.setitem(
        feat.KNOWN_WEIGHTS, feat.DEFAULT_WEIGHTS, dataclasses.replace(known, url=f"{url}/file.bin")
    )
    path = feat.download_inception(sha256=_sha(PAYLOAD))
    assert path.parent == feat.models_dir() and find_inception() == path
    path.write_bytes(PAYLOAD[:-1])  # a damaged cache file no longer counts
    assert find_inception() is None


# --------------------------------------------------------------------------- the real weights


@pytest.mark.slow  # ~5 s on an idle 2-core CPU, 11 s when the machine is busy
@pytest.mark.skipif(
    not (SHARED_MODELS / "inception-v3-fid.pt").is_file(),
    reason="../shared/models/inception-v3-fid.pt not present (real Inception weights)",
)
def test_real_shared_inception_weights():
    path = SHARED_MODELS / "inception-v3-fid.pt"
    sums = dict(
        reversed(line.split()) for line in (SHARED_MODELS / "SHA256SUMS").read_text().splitlines()
    )
    assert sha256_of(path) == sums[path.name]
    extractor = InceptionExtractor(path)
    assert extractor.interface == NORMALIZED_299
    images = _images(8, 28, 1, seed=3)
    first = extractor.extract(images, batch=4)
    assert first.shape == (8, 2048) and first.dtype == np.float32
    assert np.isfinite(first).all() and first.std() > 0
    # Same batch shape, same bytes out; half the images keep the test short (~0.25 s/image).
    assert np.array_equal(first[:4], extractor.extract(images[:4], batch=4))
