"""The ``filesystem`` bucket backend: the embedded default of ``kliv up``.

Called by the bucket provider when no S3 endpoint is configured. A bucket is a
directory ``<root>/<name>/`` holding its objects under ``objects/`` and its
settings in ``.kliv-bucket.json`` (written atomically), which a local upload
path reads to enforce size, content types and public access.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kliv.stacks.buckets.desired import Settings, cors_rule
from kliv.stacks.errors import EngineError

SETTINGS_FILE = ".kliv-bucket.json"
OBJECTS = "objects"
_DEFAULTS: dict[str, Any] = {"public": False, "versioning": False, "cors": [], "lifecycle": [], "tags": {}}


class FilesystemBuckets:
    """Buckets as directories under ``root``."""

    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str) -> Path:
        return self.root / bucket

    def endpoint(self, bucket: str) -> str:
        return self._path(bucket).resolve().as_uri()

    def _load(self, bucket: str) -> dict[str, Any] | None:
        path = self._path(bucket)
        if not path.is_dir():
            return None
        try:
            loaded = json.loads((path / SETTINGS_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"the settings of bucket directory {path} cannot be read ({type(exc).__name__})",
                f"fix or remove {path / SETTINGS_FILE}; kliv rewrites it on the next apply",
            ) from None
        return loaded if isinstance(loaded, dict) else {}

    def read(self, bucket: str) -> Settings | None:
        raw = self._load(bucket)
        if raw is None:
            return None
        cors = []
        for rule in raw.get("cors") or []:
            cors.append(
                cors_rule(
                    list(rule.get("origins", [])),
                    list(rule.get("methods", [])),
                    list(rule.get("headers", [])),
                    list(rule.get("expose", [])),
                    rule.get("maxAge"),
                )
            )
        return Settings(
            public=bool(raw.get("public", False)),
            versioning=bool(raw.get("versioning", False)),
            cors=tuple(cors),
            lifecycle=tuple((str(r["prefix"]), int(r["days"])) for r in raw.get("lifecycle") or []),
            tags=tuple(sorted((raw.get("tags") or {}).items())),
        )

    def _write(self, bucket: str, **changes: Any) -> None:
        path = self._path(bucket)
        raw = {**_DEFAULTS, **(self._load(bucket) or {}), **changes}
        with tempfile.NamedTemporaryFile("w", dir=path, prefix=".settings-", delete=False) as handle:
            json.dump(raw, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path / SETTINGS_FILE)

    def create(self, bucket: str) -> None:
        (self._path(bucket) / OBJECTS).mkdir(parents=True, exist_ok=True, mode=0o750)
        if not (self._path(bucket) / SETTINGS_FILE).exists():
            self._write(bucket)

    def put_public(self, bucket: str, public: bool) -> None:
        self._write(bucket, public=public)

    def put_versioning(self, bucket: str, enabled: bool) -> None:
        self._write(bucket, versioning=enabled)

    def put_cors(self, bucket: str, settings: Settings) -> None:
        self._write(bucket, cors=settings.cors_rules())

    def put_lifecycle(self, bucket: str, settings: Settings) -> None:
        self._write(bucket, lifecycle=[{"prefix": p, "days": d} for p, d in settings.lifecycle])

    def put_tags(self, bucket: str, tags: dict[str, str]) -> None:
        self._write(bucket, tags=tags)

    def count_objects(self, bucket: str, limit: int = 100_000) -> int:
        found = 0
        for _, _, files in os.walk(self._path(bucket) / OBJECTS):
            found += len(files)
            if found >= limit:
                return limit
        return found

    def delete(self, bucket: str, purge: bool) -> None:
        """The bucket; with ``purge`` its objects too (without, objects make it fail, as on S3)."""
        if not purge and self.count_objects(bucket, limit=1):
            raise EngineError(
                f"bucket {bucket} is no longer empty", "plan again: deleting its objects needs --allow-data-loss"
            )
        shutil.rmtree(self._path(bucket), ignore_errors=True)
