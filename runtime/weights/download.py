"""Download upstream TractSeg's pretrained weights from Zenodo, resumably, with a size check and a recorded sha256.

The files are what upstream's `download_pretrained_weights` fetches (tractseg/libs/utils.py), saved under the
same local names in the same directory (upstream's WEIGHTS_DIR), so an existing upstream install is reused.
Despite the .npz suffix each file is a torch.save pickle `{"unet": state_dict}` of about 148 MB.

Upstream streams straight into the final name and never checks what arrived, so an interrupted or truncated
transfer leaves a corrupt file that later fails to load (TractSeg issues #241, #255, #43, #254). Here the bytes go
to `<name>.part`, resume with an HTTP Range request, must add up to the size the server announced, and only then
are renamed into place; the sha256 is recorded next to the file in sha256sum format (`<name>.sha256`).

URLs use Zenodo's current form `/records/<id>/files/<name>`: upstream's older `/record/...` still works but is
answered with a redirect to this one. TRACTSEG_AOT_ZENODO_URL (or `base_url`) replaces `https://zenodo.org`.

Used by `python -m runtime.weights` (tractseg-aot-download) and `python -m export.download`; moved here from
export/download.py so that a deploy install (no export toolchain) downloads with the same code.
"""
from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from runtime.errors import TractSegError
from runtime.io.checksum import sha256_of
from runtime.models.bundles import Model

DEFAULT_BASE_URL = "https://zenodo.org"
BASE_URL_ENV = "TRACTSEG_AOT_ZENODO_URL"
WEIGHTS_DIR_ENV = "TRACTSEG_WEIGHTS_DIR"
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 17
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DownloadError(TractSegError):
    """A download that failed; the message is one line naming the URL, the reason and where to put the file (a
    RuntimeError, as before the move, and a TractSegError: the command lines print it as their one error line)."""


def weights_dir() -> Path:
    """Upstream's WEIGHTS_DIR: $TRACTSEG_WEIGHTS_DIR, else weights_dir= in ~/.tractseg/config.txt, else ~/.tractseg."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env is not None:
        return Path(env)
    config = Path.home() / ".tractseg" / "config.txt"
    if config.is_file():
        for line in config.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key == "weights_dir":
                return Path(value)
    return Path.home() / ".tractseg"


def zenodo_url(model: Model, base_url: str | None = None) -> str:
    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/records/{model.zenodo_record}/files/{model.zenodo_file}?download=1"


def sha256_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded for `path` by a previous download, or None."""
    try:
        first = sha256_path(path).read_text().split(maxsplit=1)
    except OSError:
        return None
    return first[0].lower() if first and _SHA256.fullmatch(first[0].lower()) else None


def _record_sha256(path: Path, digest: str | None = None) -> str:
    digest = digest or sha256_of(path)
    tmp = sha256_path(path).with_suffix(".sha256.tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    tmp.replace(sha256_path(path))
    return digest


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split()) or type(reason).__name__


def _fetch(url: str, part: Path, final: Path, label: str, progress: bool) -> None:
    """Stream `url` into `part`, resuming what is there; raises DownloadError unless all announced bytes arrived."""
    hint = f"place the file manually at {final}"
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "tractseg-aot"} | ({"Range": f"bytes={have}-"} if have else {})
    opener = urllib.request.build_opener()  # per call: honours the proxy settings of the moment
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        complete = re.fullmatch(r"bytes \*/(\d+)", (e.headers or {}).get("Content-Range", "") or "")
        if e.code == 416 and have and complete and int(complete.group(1)) == have:
            return  # the .part already holds the whole file (stopped before the rename)
        if e.code == 416 and have:
            part.unlink()
            return _fetch(url, part, final, label, progress)
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {_one_line(e.reason)}; {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise DownloadError(f"cannot download {url}: {_one_line(reason)}; {hint}") from None

    with response:
        length = response.headers.get("Content-Length")
        body = int(length) if length is not None else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                raise DownloadError(f"cannot resume {url}: unexpected Content-Range "
                                    f"{response.headers.get('Content-Range')!r} for {have} bytes held; "
                                    f"delete {part} and retry, or {hint}")
            start, total = have, (int(match.group(3)) if match.group(3) != "*" else None)
        else:  # 200: the server ignored Range (or none was sent), so start from zero
            start, total = 0, body
        if total is None and body is not None:
            total = start + body
        received = start
        try:
            with open(part, "ab" if start else "wb") as out, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=label, disable=not progress, leave=False) as bar:
                while block := response.read(CHUNK_BYTES):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:  # reset connection, timeout, full disk
            raise DownloadError(f"download of {url} interrupted after {received} bytes: {_one_line(e)}; "
                                f"run again to resume from {part}, or {hint}") from None
    if total is not None and received != total:
        raise DownloadError(f"short download from {url}: got {received} of {total} bytes; "
                            f"run again to resume from {part}, or {hint}")


def download_weights(model: Model, dest_dir: str | Path | None = None, base_url: str | None = None,
                     progress: bool = True) -> Path:
    """Fetch `model`'s weights into dest_dir (default weights_dir()) and return the final path.

    Nothing is fetched when the file is there and matches its recorded sha256. A file that is there with no
    record (placed by hand, or by upstream) is kept and its sha256 recorded; one that no longer matches its
    record is downloaded again. The sha256 is printed to stderr when `progress` is set.
    """
    final = Path(dest_dir if dest_dir is not None else weights_dir()) / model.local_name
    if final.is_file():
        recorded, actual = recorded_sha256(final), sha256_of(final)
        if recorded in (None, actual):
            digest = _record_sha256(final, actual) if recorded is None else actual
            if progress:
                print(f"{model.local_name}: present, sha256 {digest}", file=sys.stderr)
            return final
        if progress:
            print(f"{model.local_name}: sha256 {actual} != recorded {recorded}, downloading again", file=sys.stderr)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    _fetch(zenodo_url(model, base_url), part, final, model.local_name, progress)
    part.replace(final)
    digest = _record_sha256(final)
    if progress:
        print(f"{model.local_name}: downloaded, sha256 {digest}", file=sys.stderr)
    return final
