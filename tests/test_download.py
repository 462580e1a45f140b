"""export/download.py against a real HTTP server on 127.0.0.1 (http.server in a thread), no mocking of urllib."""
from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import torch

from export.download import DownloadError, download_weights, main, recorded_sha256, weights_dir, zenodo_url
from runtime.models.bundles import MODELS, model_for

MODEL = model_for("tract_segmentation")


@dataclass
class Behaviour:
    """What the test server does; every request's Range header (or None) lands in `ranges`."""

    payload: bytes = b""
    status: int | None = None  # e.g. 404: answer only this
    drop_after: int | None = None  # send the full Content-Length but only this many body bytes, once
    ignore_range: bool = False
    extra_length: int = 0  # announce this many bytes more than are sent, always
    ranges: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        b = self.server.behaviour  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        b.ranges.append(rng)
        if b.status is not None or not re.fullmatch(r"/records/\d+/files/[\w.]+\?download=1", self.path):
            self.send_error(b.status or 404)
            return
        data, start, total = b.payload, 0, len(b.payload)
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and not b.ignore_range:
            start = int(match.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body) + b.extra_length))
        self.end_headers()
        if b.drop_after is not None:
            body, b.drop_after = body[:b.drop_after], None
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small checkpoint in upstream's exact format: torch.save({"unet": state_dict})."""
    path = tmp_path_factory.mktemp("ckpt") / "best_weights_ep220.npz"
    g = torch.Generator().manual_seed(0)
    torch.save({"unet": {"conv_5.weight": torch.randn(72, 64, 1, 1, generator=g),
                         "conv_5.bias": torch.randn(72, generator=g),
                         "output_2.bias": torch.randn(72, generator=g)}}, path)
    return path.read_bytes()


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("TRACTSEG_WEIGHTS_DIR", "TRACTSEG_AOT_ZENODO_URL", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def server(checkpoint: bytes) -> Iterator[tuple[str, Behaviour]]:
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    httpd.behaviour = Behaviour(payload=checkpoint)  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", httpd.behaviour  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A port that is bound but not listening, so connecting is refused and nobody else can take it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_zenodo_url_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert zenodo_url(MODEL) == "https://zenodo.org/records/3518348/files/best_weights_ep220.npz?download=1"
    monkeypatch.setenv("TRACTSEG_AOT_ZENODO_URL", "http://127.0.0.1:9/")
    assert zenodo_url(MODEL).startswith("http://127.0.0.1:9/records/3518348/")
    assert zenodo_url(MODEL, "http://x").startswith("http://x/records/")


def test_clean_download(server: tuple[str, Behaviour], tmp_path: Path, checkpoint: bytes) -> None:
    url, behaviour = server
    path = download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert path == tmp_path / "pretrained_weights_tract_segmentation_v3.npz"
    assert path.read_bytes() == checkpoint
    assert not (tmp_path / (path.name + ".part")).exists()
    digest = hashlib.sha256(checkpoint).hexdigest()
    assert recorded_sha256(path) == digest
    assert (tmp_path / (path.name + ".sha256")).read_text() == f"{digest}  {path.name}\n"
    assert torch.load(path, weights_only=True)["unet"]["conv_5.bias"].shape == (72,)
    assert behaviour.ranges == [None]


def test_present_and_verified_file_is_not_fetched(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    url, behaviour = server
    download_weights(MODEL, tmp_path, base_url=url, progress=False)
    download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert len(behaviour.ranges) == 1


def test_changed_file_is_fetched_again(server: tuple[str, Behaviour], tmp_path: Path, checkpoint: bytes) -> None:
    url, behaviour = server
    path = download_weights(MODEL, tmp_path, base_url=url, progress=False)
    path.write_bytes(b"corrupt")
    download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert path.read_bytes() == checkpoint and len(behaviour.ranges) == 2


def test_file_placed_by_hand_is_kept_offline(refused_url: str, tmp_path: Path) -> None:
    path = tmp_path / MODEL.local_name
    path.write_bytes(b"placed by hand")
    assert download_weights(MODEL, tmp_path, base_url=refused_url, progress=False) == path
    assert recorded_sha256(path) == hashlib.sha256(b"placed by hand").hexdigest()


def test_resume_after_interrupted_transfer(server: tuple[str, Behaviour], tmp_path: Path,
                                           checkpoint: bytes) -> None:
    url, behaviour = server
    behaviour.drop_after = 5000
    part = tmp_path / (MODEL.local_name + ".part")
    with pytest.raises(DownloadError, match="got 5000 of"):
        download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert part.read_bytes() == checkpoint[:5000]
    assert not (tmp_path / MODEL.local_name).exists()
    path = download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert behaviour.ranges == [None, "bytes=5000-"]
    assert path.read_bytes() == checkpoint and not part.exists()
    assert recorded_sha256(path) == hashlib.sha256(checkpoint).hexdigest()


def test_complete_part_is_renamed_on_416(server: tuple[str, Behaviour], tmp_path: Path, checkpoint: bytes) -> None:
    url, behaviour = server
    (tmp_path / (MODEL.local_name + ".part")).write_bytes(checkpoint)
    path = download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert path.read_bytes() == checkpoint and behaviour.ranges == [f"bytes={len(checkpoint)}-"]


def test_server_ignoring_range_restarts_cleanly(server: tuple[str, Behaviour], tmp_path: Path,
                                                checkpoint: bytes) -> None:
    url, behaviour = server
    behaviour.ignore_range = True
    (tmp_path / (MODEL.local_name + ".part")).write_bytes(b"x" * 1234)
    path = download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert behaviour.ranges == ["bytes=1234-"]
    assert path.read_bytes() == checkpoint


def test_truncated_transfer_is_refused(server: tuple[str, Behaviour], tmp_path: Path, checkpoint: bytes) -> None:
    url, behaviour = server
    behaviour.extra_length = 100
    with pytest.raises(DownloadError) as info:
        download_weights(MODEL, tmp_path, base_url=url, progress=False)
    message = str(info.value)
    assert "\n" not in message and f"got {len(checkpoint)} of {len(checkpoint) + 100} bytes" in message
    assert not (tmp_path / MODEL.local_name).exists()
    assert not (tmp_path / (MODEL.local_name + ".sha256")).exists()


def test_connection_refused(refused_url: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download_weights(MODEL, tmp_path, base_url=refused_url, progress=False)
    message = str(info.value)
    assert "\n" not in message and zenodo_url(MODEL, refused_url) in message
    assert "refused" in message.lower() and str(tmp_path / MODEL.local_name) in message
    assert not (tmp_path / MODEL.local_name).exists()


def test_http_404(server: tuple[str, Behaviour], tmp_path: Path) -> None:
    url, behaviour = server
    behaviour.status = 404
    with pytest.raises(DownloadError, match=r"HTTP 404") as info:
        download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert "\n" not in str(info.value) and zenodo_url(MODEL, url) in str(info.value)
    assert not any(tmp_path.iterdir())


def test_weights_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert weights_dir() == home / ".tractseg"
    (home / ".tractseg").mkdir(parents=True)
    (home / ".tractseg" / "config.txt").write_text("working_dir=/w\n\nweights_dir=/from/config\n")
    assert weights_dir() == Path("/from/config")
    monkeypatch.setenv("TRACTSEG_WEIGHTS_DIR", str(tmp_path / "env"))
    assert weights_dir() == tmp_path / "env"


def test_default_destination_is_weights_dir(server: tuple[str, Behaviour], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("TRACTSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    url, _ = server
    assert download_weights(MODEL, base_url=url, progress=False) == tmp_path / "w" / MODEL.local_name


def test_cli_all(server: tuple[str, Behaviour], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 capsys: pytest.CaptureFixture[str], checkpoint: bytes) -> None:
    monkeypatch.setenv("TRACTSEG_AOT_ZENODO_URL", server[0])
    assert main(["--all", "--dest", str(tmp_path)]) == 0
    digest = hashlib.sha256(checkpoint).hexdigest()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{digest}  {tmp_path / m.local_name}" for m in MODELS]


def test_cli_failure_exits_1_with_one_line(refused_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRACTSEG_AOT_ZENODO_URL", refused_url)
    assert main(["--task", "endings_segmentation", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot download ")
    assert zenodo_url(model_for("endings_segmentation"), refused_url) in err


def test_cli_unsupported_combination_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--task", "endings_segmentation", "--tract_definition", "xtract", "--dest", str(tmp_path)]) == 1
    assert "no upstream model" in capsys.readouterr().err


def test_oversized_part_is_discarded_on_416(server: tuple[str, Behaviour], tmp_path: Path,
                                            checkpoint: bytes) -> None:
    url, behaviour = server
    (tmp_path / (MODEL.local_name + ".part")).write_bytes(checkpoint + b"junk")
    path = download_weights(MODEL, tmp_path, base_url=url, progress=False)
    assert path.read_bytes() == checkpoint and behaviour.ranges == [f"bytes={len(checkpoint) + 4}-", None]


def test_module_entry_point_exits_1(refused_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRACTSEG_AOT_ZENODO_URL": refused_url}
    done = subprocess.run([sys.executable, "-m", "export.download", "--dest", str(tmp_path)], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and refused_url in done.stderr
