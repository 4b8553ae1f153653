"""Downloads (only when the user asks with ``--download``): D4RL hdf5 files, OGBench npz files, Minari datasets.

Every file is streamed to ``<name>.part`` beside its destination while its sha256 is computed, checked against
the expected checksum, opened by the matching reader, and only then renamed into place - a failed or
interrupted download never leaves a file the loaders would pick up.

Checksums: D4RL and OGBench publish none. The expected sha256 of a file is, in order, the one the user passes
(``--sha256``), the one in :data:`KNOWN_SHA256`, or the one pinned by an earlier download of the same file
(trust on first use, kept in ``<file>.source.json``). A first download with no known checksum is accepted
after the structural check and its sha256 is pinned and recorded as the dataset's source.

``$FROZEN_DT_MIRROR`` replaces the D4RL/OGBench servers by a mirror holding the same file names (for
air-gapped clusters with an internal copy).
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_write_text
from frozen_dt.schema import hex_hash, mapping_of, record, text

SOURCE_RECORD = record({"sha256": hex_hash(64)}, {"url": text()})  # <file>.source.json
MINARI_RECORD = record({"sha256": mapping_of(hex_hash(64))})  # minari-<id>.source.json

MIRROR_ENV_VAR = "FROZEN_DT_MIRROR"
# sha256 of upstream files, filled in as they are verified by a maintainer with network access.
KNOWN_SHA256: dict[str, str] = {}
CHUNK = 1 << 20


def source_record_path(path: Path) -> Path:
    return path.with_name(path.name + ".source.json")


def read_source_record(path: Path) -> dict | None:
    """The download record beside ``path`` (url, sha256, date), or None when the file was not downloaded by us; a
    record that is not one (a SHA-256 of 64 hex digits) is refused, naming it, rather than taken as none."""
    from frozen_dt.run_dir import read_json

    found = source_record_path(path)
    return read_json(found, SOURCE_RECORD) if found.is_file() else None


def resolve_url(url: str) -> str:
    mirror = os.environ.get(MIRROR_ENV_VAR)
    if mirror and "://" not in mirror:
        raise FrozenDTError(f"${MIRROR_ENV_VAR}={mirror!r} is not a URL: use http(s)://host/dir or file:///path/to/dir")
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def expected_sha256(dest: Path, user_sha256: str | None = None) -> str | None:
    if user_sha256:
        return user_sha256.lower()
    if dest.name in KNOWN_SHA256:
        return KNOWN_SHA256[dest.name]
    previous = read_source_record(dest)
    return previous.get("sha256") if previous else None


def download_file(url: str, dest: Path, *, sha256: str | None = None, check=None, progress: bool = True) -> dict:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` (if given) and ``check(part_path)``.

    Returns the source record written beside ``dest``.
    """
    from frozen_dt.progress import progress_bar

    url = resolve_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = getattr(response, "length", None)  # file:// responses have no length
            with progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name, enabled=progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise FrozenDTError(f"download of {url} stopped after {out.tell()} of {total} bytes")
        actual = digest.hexdigest()
        if sha256 and actual != sha256.lower():
            raise FrozenDTError(f"download of {url} failed its checksum: sha256 {actual}, expected {sha256}")
        if check is not None:
            check(part)
        os.replace(part, dest)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # IncompleteRead: chunked transfer cut
        raise FrozenDTError(f"download of {url} failed ({e}); check the network or set ${MIRROR_ENV_VAR}") from None
    finally:
        part.unlink(missing_ok=True)
    record = {
        "url": url,
        "sha256": actual,
        "sha256_verified_against": "expected checksum" if sha256 else "none known: pinned on first download",
        "bytes": dest.stat().st_size,
        "downloaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(source_record_path(dest), json.dumps(record, indent=2))
    return record


def download_task_files(task, *, sha256: str | None = None, progress: bool = True) -> Path:
    """Download the upstream file(s) of ``task`` into the data dir; return the path of the main file."""
    from frozen_dt.data.dataset import check_task_dims
    from frozen_dt.data.readers import detect_format, read_file
    from frozen_dt.paths import data_file

    dest = data_file(task.dataset_files[0] if task.family == "ogbench" else task.download_url.rsplit("/", 1)[-1])

    def check(part: Path) -> None:
        # Structural check before the file is put in place: it must read, and fit the task.
        check_task_dims(read_file(part, fmt=detect_format(dest)), task)

    download_file(task.download_url, dest, sha256=expected_sha256(dest, sha256), check=check, progress=progress)
    if task.family == "ogbench":  # OGBench ships a validation file beside the training file
        val = dest.with_name(dest.stem + "-val.npz")
        download_file(task.download_url.replace(".npz", "-val.npz"), val, sha256=expected_sha256(val), check=check,
                      progress=progress)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_minari(dataset_id: str) -> dict:
    """Download a Minari dataset with minari's own client (into Minari's dataset directory).

    Minari publishes no checksums either: the sha256 of every downloaded file is pinned in a record in the
    data dir, and a later download of the same id must reproduce it.
    """
    import minari
    from minari.storage.datasets_root_dir import get_dataset_path

    from frozen_dt.paths import data_file

    try:
        minari.download_dataset(dataset_id, force_download=True)
    except Exception as e:  # minari's client raises various network/storage errors
        raise FrozenDTError(f"Minari download of {dataset_id!r} failed ({type(e).__name__}: {e})") from None
    root = get_dataset_path(dataset_id)
    hashes = {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    record_path = data_file("minari-" + dataset_id.replace("/", "--") + ".source.json")
    if record_path.is_file():
        from frozen_dt.run_dir import read_json

        pinned = read_json(record_path, MINARI_RECORD)["sha256"]
        changed = [name for name, h in hashes.items() if pinned.get(name, h) != h]
        if changed:  # minari downloaded it in place: remove it so that no loader picks up the refused copy
            shutil.rmtree(root, ignore_errors=True)
            raise FrozenDTError(f"Minari dataset {dataset_id!r} differs from the copy pinned earlier: {', '.join(changed)}; "
                                f"the downloaded copy was removed from {root}")
    record = {
        "minari_id": dataset_id,
        "sha256": hashes,
        "downloaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, json.dumps(record, indent=2))
    return record
