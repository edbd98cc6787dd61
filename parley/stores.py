"""Where the shared stores are: configured addresses, or the embedded ones `parley dev` runs.

`parley dev` records the addresses of the stores it started in `<data dir>/run/stores.json`
and removes the file when it stops. Any other Parley process on the same data directory
(`python worker.py`, `parley gateway`, `parley ingest`) fills in what the environment leaves
unset from that file, so it attaches to the running embedded stores.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from parley.settings import Settings
from parley.temporal_client import configured_address


class StoresNotConfigured(RuntimeError):
    """Neither the environment nor a running `parley dev` names a store."""


@dataclass(frozen=True)
class Stores:
    database_url: str
    temporal_address: str


def state_file(data_dir: Path) -> Path:
    return data_dir / "run" / "stores.json"


def write_state(data_dir: Path, stores: Stores) -> None:
    path = state_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(stores)))
    os.replace(tmp, path)


def clear_state(data_dir: Path) -> None:
    state_file(data_dir).unlink(missing_ok=True)


def resolve_stores(settings: Settings) -> Stores:
    """The environment's stores, completed from a running `parley dev` where unset."""
    database_url = settings.database_url
    temporal_address = settings.temporal_address or configured_address()
    if not (database_url and temporal_address):
        path = state_file(settings.data_dir)
        recorded = json.loads(path.read_text()) if path.exists() else {}
        database_url = database_url or recorded.get("database_url")
        temporal_address = temporal_address or recorded.get("temporal_address")
    missing = [
        name
        for name, value in (("DATABASE_URL", database_url), ("TEMPORAL_ADDRESS", temporal_address))
        if not value
    ]
    if missing:
        raise StoresNotConfigured(
            f"{' and '.join(missing)} not set, and no `parley dev` is running on data directory "
            f"{settings.data_dir}: set them, or start `parley dev` first"
        )
    assert database_url and temporal_address
    return Stores(database_url=database_url, temporal_address=temporal_address)
