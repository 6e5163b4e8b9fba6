"""Where a Hugging Face model's files are on this machine: a local folder, or a hub id's snapshot in the local cache.

Nothing is downloaded unless the deployment allows it (DEEPFLOYD_ALLOW_DOWNLOAD): a worker must not fetch gigabytes
while a job waits, and the API reads only the small JSON configs. huggingface_hub needs no torch.
"""

import json
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError


class SourceMissing(Exception):
    """The source is neither a folder here nor (allowed to be) in the Hugging Face cache; the message says which."""


def _folder(source: str) -> Path | None:
    """The source as a folder here; None for a hub id ("org/name"). A path that is no folder is missing."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if source.startswith(("/", ".", "~")):
        raise SourceMissing(f"{source}: no such folder")
    return None


def read_config(source: str, filename: str, allow_download: bool = False) -> dict[str, Any]:
    """One JSON file of the source (`unet/config.json`, ...)."""
    folder = _folder(source)
    try:
        if folder is not None:
            path = folder / filename
        else:
            path = Path(hf_hub_download(source, filename, local_files_only=not allow_download))
        config: dict[str, Any] = json.loads(path.read_text())
    except LocalEntryNotFoundError as exc:
        raise SourceMissing(
            f"{source} is not a folder and its {filename} is not in the local Hugging Face cache "
            "(docs/deepfloyd.md, 'Serving the real model')"
        ) from exc
    except FileNotFoundError as exc:
        raise SourceMissing(f"{source} has no {filename}") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise SourceMissing(f"{filename} of {source} could not be read: {exc}") from exc
    return config


def local_folder(source: str, allow_download: bool = False, patterns: list[str] | None = None) -> Path:
    """The source's folder on this machine; with `allow_download`, the files matching `patterns` fetched first."""
    folder = _folder(source)
    if folder is not None:
        return folder
    try:
        return Path(snapshot_download(source, local_files_only=not allow_download, allow_patterns=patterns))
    except LocalEntryNotFoundError as exc:
        raise SourceMissing(f"{source} is not a folder and is not in the local Hugging Face cache") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise SourceMissing(f"{source} could not be fetched: {exc}") from exc
