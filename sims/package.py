"""Simulator packages: a folder or an archive holding a process simulator's executable.

``materialise(source, sha256)`` returns the folder to run the simulator from: a folder as it
is; an archive (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``) checked against its SHA-256 and
extracted once per machine into a cache shared by every process there (a file lock makes
the first one extract and the others wait; an extraction is complete only once renamed).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from sims.contract import SimError

ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
CACHE_VARIABLE = "AML_RL_SIM_CACHE"
"""Where archives are extracted (default: ``aml-rl-sim-packages`` in the temporary folder)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_remote(source: str) -> bool:
    """An Azure ML datastore path or data asset: the job mounts it, nothing local reads it."""
    return str(source).startswith("azureml:") or "://" in str(source)


def package_source(source: str) -> str:
    """A local package as an absolute path (env runners may start elsewhere); others as given."""
    return source if is_remote(source) else str(Path(source).resolve())


def materialise(source: str | Path, sha256: str | None = None) -> Path:
    """The folder holding the package at ``source``; :class:`SimError` naming what is wrong."""
    if is_remote(str(source)):
        raise SimError(
            f"sim_package {source}: an Azure ML path is mounted by the job that `invoke submit` "
            "sends; to train here, give a local folder or archive"
        )
    path = Path(source)
    if not path.exists():
        raise SimError(
            f"sim_package {source}: no such file or folder; give the folder or archive "
            "(.tar.gz, .zip) that holds the simulator"
        )
    if path.is_dir():
        if sha256:
            raise SimError(
                f"sim_package {source} is a folder; sim_package_sha256 checks archives only: "
                "drop it, or give the archive"
            )
        return path.resolve()
    if not path.name.endswith(ARCHIVES):
        raise SimError(f"sim_package {source}: not a folder or an archive ({', '.join(ARCHIVES)})")
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise SimError(
            f"sim_package {source}: SHA-256 is {digest}, but sim_package_sha256 says {sha256}; "
            "the archive changed or is incomplete: fetch it again or update the checksum"
        )
    cache = Path(os.environ.get(CACHE_VARIABLE) or tempfile.gettempdir()) / "aml-rl-sim-packages"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / digest[:16]
    with (cache / f"{digest[:16]}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one extraction per machine; the others wait here
        if not target.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=cache))
            try:
                _extract(path, partial)
            except Exception:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            partial.rename(target)
    entries = list(target.iterdir())
    if len(entries) == 1 and entries[0].is_dir():  # an archive of one folder: that folder
        return entries[0]
    return target


def _safe_members(tf: tarfile.TarFile, into: Path, archive: Path) -> list[tarfile.TarInfo]:
    """What the "data" filter allows, where the interpreter has no filters: files, folders
    and links that stay inside ``into``; no devices, no absolute or escaping paths."""
    root = into.resolve()
    members = []
    for member in tf.getmembers():
        target = (root / member.name).resolve()
        link = (target.parent / member.linkname).resolve() if member.issym() else None
        if member.islnk():
            link = (root / member.linkname).resolve()
        if not target.is_relative_to(root) or (link is not None and not link.is_relative_to(root)):
            raise SimError(f"sim_package {archive}: {member.name} leaves the archive")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise SimError(f"sim_package {archive}: {member.name} is not a file or a folder")
        members.append(member)
    return members


def _extract(archive: Path, into: Path) -> None:
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    dest = (into / info.filename).resolve()
                    if not dest.is_relative_to(into.resolve()):
                        raise SimError(f"sim_package {archive}: {info.filename} leaves the archive")
                    zf.extract(info, into)
                    mode = info.external_attr >> 16  # Unix permissions: keep executables so
                    if mode and not info.is_dir():
                        os.chmod(dest, mode & 0o777)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, filter="data")
                else:  # Python before 3.11.4 (Debian 12's 3.11.2, in an offline-built image)
                    tf.extractall(into, members=_safe_members(tf, into, archive))
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        # a gzip stream cut short raises EOFError, a damaged one zlib.error
        raise SimError(
            f"sim_package {archive}: cannot be extracted ({type(exc).__name__}: {exc}); the "
            "archive is damaged or cut short: make it again (tar -czf NAME.tar.gz -C FOLDER .)"
        ) from None


def use_package(source: str | Path, sha256: str | None = None) -> Path:
    """Materialise the package and point ``{package}`` in process simulators' commands at it,
    for this process and the ones it starts (a local Ray's workers)."""
    from sims.process import PACKAGE_VARIABLE

    folder = materialise(source, sha256)
    os.environ[PACKAGE_VARIABLE] = str(folder)
    return folder
