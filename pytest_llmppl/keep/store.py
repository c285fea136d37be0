"""The one on-disk store: atomic writes, best-effort locks, checksums on read.

Entry layout: ``ROOT/<namespace>/<key[:2]>/<key>.entry``, one file per entry:

    b"LLMPPL1\\n" + header JSON + b"\\n" + body bytes

The header holds the SHA-256 of the body and the entry's metadata.  A file is
written to a temp name in the same folder and moved into place with
``os.replace``, so a reader sees either the old entry, the new one, or none:
correct even where the lock does nothing.  A body whose checksum does not match
(a crash on a file system without atomic rename, a hand edit, bit rot) is
deleted with a warning and reported as a miss, so the caller rebuilds it.
Arrays are stored as ``.npy`` bytes and read with ``allow_pickle=False``.

A read that hits touches the entry's modification time, so the time says when it was
last *used*: ``prune`` removes what no run has used for a while (a CI cache restored and
saved on every commit would otherwise only grow).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LLMPPLError
from .files import atomic_write

MAGIC = b"LLMPPL1\n"
_KEY = re.compile(r"^[0-9a-f]{16,128}$")
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ENV_CACHE_DIR = "PYTEST_LLMPPL_CACHE_DIR"


class CacheWarning(UserWarning):
    """The cache fell back, or found and dropped a corrupted entry."""


def default_cache_dir() -> Path:
    """``$PYTEST_LLMPPL_CACHE_DIR``, else the user cache dir (platformdirs)."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pytest-llmppl", appauthor=False))


@dataclass(frozen=True)
class Pruned:
    """What ``Store.prune`` removed, and what is left."""

    entries: int
    bytes: int
    kept_entries: int
    kept_bytes: int


@dataclass(frozen=True)
class Write:
    """One entry of several written together (``Store.put_together``): a JSON value, or with
    ``array`` a numpy array."""

    namespace: str
    key: str
    value: Any
    meta: dict | None = None
    array: bool = False


class StoreRefused(LLMPPLError):
    """No store can be trusted here: a run goes on without one (the command line says so)."""


def private_dir(path: Path) -> str:
    """Make ``path`` a directory only this user can write (0700), as pytest's ``tmp_path`` does;
    "" when it is one, else why it cannot be trusted (someone else's, or writable by others:
    an entry planted there would be served as a measurement)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be made ({exc.strerror or exc})"
    import stat

    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory (a link or a file)"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


class Store:
    """Entries addressed by (namespace, hex key); nothing outside ``root`` is touched."""

    def __init__(self, root: str | os.PathLike | None = None):
        wanted = Path(root).expanduser() if root is not None else default_cache_dir()
        self.root = self._usable(wanted)

    @staticmethod
    def _usable(root: Path) -> Path:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True):
                pass
            return root
        except OSError as exc:
            fallback = Path(tempfile.gettempdir()) / f"pytest-llmppl-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
            why = private_dir(fallback)
            if why:
                raise StoreRefused(
                    f"pytest-llmppl: cache directory {root} is not writable ({exc.strerror or exc}), and the fallback "
                    f"{fallback} {why}: running without a local store (every result is measured). Set "
                    f"--ppl-cache-dir or ${ENV_CACHE_DIR} to a writable folder of your own.") from None
            warnings.warn(
                f"pytest-llmppl: cache directory {root} is not writable ({exc.strerror or exc}); "
                f"using {fallback} for this run. Set --ppl-cache-dir or ${ENV_CACHE_DIR} to a "
                "writable folder to keep entries between runs.",
                CacheWarning, stacklevel=3,
            )
            return fallback

    def path(self, namespace: str, key: str) -> Path:
        """Where an entry lives; refuses anything that is not a plain hex key."""
        if not _NAMESPACE.match(namespace):
            raise ValueError(f"bad cache namespace {namespace!r}")
        if not _KEY.match(key):
            raise ValueError(f"bad cache key {key!r}: keys are lowercase hex digests")
        return self.root / namespace / key[:2] / f"{key}.entry"

    # -- raw bytes ---------------------------------------------------------
    def get_bytes(self, namespace: str, key: str) -> tuple[dict, bytes] | None:
        """(metadata, body), or None on a miss or a dropped corrupt entry."""
        path = self.path(namespace, key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(f"pytest-llmppl: cannot read cache entry {path}: {exc}", CacheWarning, stacklevel=2)
            return None
        parsed = _parse(raw)
        if parsed is None:
            warnings.warn(
                f"pytest-llmppl: cache entry {path} is corrupted (checksum mismatch); "
                "it was removed and will be rebuilt.",
                CacheWarning, stacklevel=2,
            )
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # last used now (see prune)
        except OSError:
            pass
        return parsed

    def put_bytes(self, namespace: str, key: str, body: bytes, meta: dict | None = None) -> Path | None:
        """Write atomically; a failed write (disk full, read-only) warns and returns None."""
        path = self.path(namespace, key)
        header = dict(meta or {})
        header["sha256"] = _sha256(body)
        header["size"] = len(body)
        blob = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self.lock(path):
                atomic_write(path, blob)
            return path
        except OSError as exc:
            warnings.warn(
                f"pytest-llmppl: could not write cache entry {path} ({exc.strerror or exc}); "
                "the result is used for this run but not kept.",
                CacheWarning, stacklevel=2,
            )
            return None

    # -- typed helpers ------------------------------------------------------
    def get_array(self, namespace: str, key: str):
        """(metadata, numpy array) or None."""
        import numpy as np

        hit = self.get_bytes(namespace, key)
        if hit is None:
            return None
        meta, body = hit
        try:
            return meta, np.load(io.BytesIO(body), allow_pickle=False)
        except ValueError:
            self.delete(namespace, key)
            return None

    def put_array(self, namespace: str, key: str, array, meta: dict | None = None) -> Path | None:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        return self.put_bytes(namespace, key, buf.getvalue(), meta)

    def get_json(self, namespace: str, key: str):
        hit = self.get_bytes(namespace, key)
        if hit is None:
            return None
        try:
            return json.loads(hit[1].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.delete(namespace, key)
            return None

    def put_json(self, namespace: str, key: str, value, meta: dict | None = None) -> Path | None:
        body = json.dumps(value, sort_keys=True, allow_nan=False).encode("utf-8")
        return self.put_bytes(namespace, key, body, meta)

    def put_together(self, writes: Sequence[Write]) -> bool:
        """Entries that belong together, in order, the one readers look for last: a reader that
        finds it finds the others.  The first write that fails stops the rest (False), so no entry
        is kept without the parts written before it."""
        for w in writes:
            put = self.put_array if w.array else self.put_json
            if put(w.namespace, w.key, w.value, w.meta) is None:
                return False
        return True

    def delete(self, namespace: str, key: str) -> None:
        try:
            self.path(namespace, key).unlink()
        except FileNotFoundError:
            pass

    # -- management ----------------------------------------------------------
    @contextmanager
    def lock(self, path: Path, timeout: float = 60.0):
        """A best-effort inter-process lock; correctness never depends on it."""
        try:
            import filelock

            lk = filelock.FileLock(str(path) + ".lock", timeout=timeout)
            lk.acquire()
        except Exception:  # noqa: BLE001 - no lock support here (NFS, read-only): go on without it
            yield
            return
        try:
            yield
        finally:
            lk.release()

    @contextmanager
    def measure_lock(self, namespace: str, key: str, timeout: float = 3600.0):
        """Held while one process measures what ``(namespace, key)`` will hold, so that
        xdist workers needing the same result measure it once."""
        path = self.path(namespace, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        with self.lock(path.with_suffix(".measure"), timeout=timeout):
            yield

    def info(self) -> dict:
        """Entry count and bytes per namespace."""
        out: dict[str, dict] = {}
        for ns in self._namespaces():
            files = list(ns.glob("*/*.entry"))
            out[ns.name] = {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
        return out

    def prune(self, *, unused_days: float | None = None, max_bytes: int | None = None) -> Pruned:
        """Remove entries no run has used for ``unused_days``, then the least recently used
        ones until the store holds at most ``max_bytes``.  Entries of one key (a result and
        its argmax) go together."""
        groups: dict[str, list[tuple[float, int, Path]]] = {}
        for ns in self._namespaces():
            for path in ns.glob("*/*.entry"):
                try:
                    st = path.stat()
                except OSError:
                    continue
                groups.setdefault(path.stem, []).append((st.st_mtime, st.st_size, path))
        by_use = sorted(groups.values(), key=lambda g: max(mtime for mtime, _, _ in g))
        n_entries = sum(len(g) for g in by_use)
        total = sum(size for g in by_use for _, size, _ in g)
        cutoff = None if unused_days is None else time.time() - unused_days * 86400
        removed = freed = 0
        for group in by_use:
            too_old = cutoff is not None and max(mtime for mtime, _, _ in group) < cutoff
            too_big = max_bytes is not None and total - freed > max_bytes
            if not (too_old or too_big):
                continue
            for _, size, path in group:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
                freed += size
                for lock in (Path(f"{path}.lock"), path.with_suffix(".measure.lock")):
                    try:
                        lock.unlink()
                    except OSError:
                        pass
        return Pruned(removed, freed, n_entries - removed, total - freed)

    def _namespaces(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _NAMESPACE.match(p.name))

    def clear(self) -> int:
        """Remove every namespace folder; returns how many entries went."""
        n = sum(v["entries"] for v in self.info().values())
        for ns in self._namespaces():
            shutil.rmtree(ns, ignore_errors=True)
        return n


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _parse(raw: bytes) -> tuple[dict, bytes] | None:
    if not raw.startswith(MAGIC):
        return None
    end = raw.find(b"\n", len(MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(raw[len(MAGIC):end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    body = raw[end + 1:]
    if not isinstance(header, dict) or header.get("size") != len(body) or header.get("sha256") != _sha256(body):
        return None
    return header, body
