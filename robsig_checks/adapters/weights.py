"""Locate, hash and load model weight files, offline first.

Weights come from the Hugging Face Hub cache, from a download folder keyed by URL (open_clip's
``~/.cache/clip``, torch hub's ``checkpoints``) or from a local file. A file that is already cached is
used without any network access. When downloads are disabled (``HF_HUB_OFFLINE=1`` or
``ROBSIG_OFFLINE=1``), a missing file raises :class:`RobsigError` at once. Otherwise it is downloaded
with short timeouts, and any failure becomes a :class:`RobsigError` that names the file and the fix.

This module imports neither open_clip nor timm.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from robsig_checks.errors import RobsigError

logger = logging.getLogger("robsig")

#: Timeout in seconds for a server response; a download attempt that exceeds it fails.
DOWNLOAD_TIMEOUT_SECONDS = 10.0

#: How many key names a state-dict mismatch message lists before it only counts.
LISTED_KEYS = 5

_TRUE_VALUES = {"1", "true", "yes", "on"}
_SHA256_CHUNK_BYTES = 1 << 20
_SHA256_MEMO_FILE = "sha256-memo.json"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_VALUES


def offline_reason() -> str | None:
    """Return the environment variable that disables downloads (e.g. ``HF_HUB_OFFLINE=1``), or None.

    ``ROBSIG_OFFLINE``, ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are read on every call, so a
    value set after import (or by a test) takes effect.
    """
    for name in ("ROBSIG_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _env_flag(name):
            return f"{name}={os.environ[name]}"
    return None


def robsig_cache_dir() -> Path:
    """Return robsig's cache folder: ``$ROBSIG_CACHE_DIR``, else ``~/.cache/robsig`` (not created here)."""
    configured = os.environ.get("ROBSIG_CACHE_DIR", "").strip()
    if configured:
        return Path(os.path.expandvars(configured)).expanduser()
    return Path.home() / ".cache" / "robsig"


def hf_hub_cache_dir() -> Path:
    """Return the Hugging Face Hub cache folder, resolved from the environment on every call.

    The order follows huggingface_hub: ``HF_HUB_CACHE``, the older ``HUGGINGFACE_HUB_CACHE``, then
    ``$HF_HOME/hub`` with ``HF_HOME`` defaulting to ``$XDG_CACHE_HOME/huggingface`` or
    ``~/.cache/huggingface``. huggingface_hub reads these once at import; reading them here lets a
    later change (a test's monkeypatch, a CI step) apply.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        configured = os.environ.get(name, "").strip()
        if configured:
            return Path(os.path.expandvars(configured)).expanduser()
    home = os.environ.get("HF_HOME", "").strip()
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader never sees a partly written file, and two writers leave one complete file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates the file readable by its owner only, but a cache file is not secret.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _read_sha256_memo(memo_path: Path) -> dict[str, dict]:
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def sha256_file(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file's bytes.

    Digests are remembered in ``<robsig cache>/sha256-memo.json`` under the file's real path, size and
    modification time (ns), so a multi-gigabyte checkpoint is read once per change, not once per run.
    A file rewritten in place with the same size within the same mtime tick would keep its old digest.

    Parameters
    ----------
    path:
        An existing regular file.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise RobsigError(f"Cannot hash weights file {str(file_path)!r}: it does not exist or is not a regular file.")
    status = file_path.stat()
    key = str(file_path.resolve())
    memo_path = robsig_cache_dir() / _SHA256_MEMO_FILE
    memo = _read_sha256_memo(memo_path)
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("size") == status.st_size and entry.get("mtime_ns") == status.st_mtime_ns:
        return str(entry["sha256"])

    digest = hashlib.sha256()
    with file_path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_SHA256_CHUNK_BYTES), b""):
            digest.update(chunk)
    value = digest.hexdigest()

    # Re-read so that digests written meanwhile by another process are kept.
    memo = _read_sha256_memo(memo_path)
    memo[key] = {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": value}
    try:
        write_bytes_atomic(memo_path, json.dumps(memo, indent=0, sort_keys=True).encode())
    except OSError as error:
        logger.warning("robsig: could not store the SHA-256 of %s in %s: %s", file_path, memo_path, error)
    return value


def _is_missing_on_hub(error: Exception) -> bool:
    """Return True when ``error`` means that the repo has no such file, False for a failed request."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _hub_fix(repo_id: str, filenames: Sequence[str], cache_dir: Path, local_hint: str) -> str:
    alternatives = f", or with {' or '.join(filenames[1:])} if the repo has no {filenames[0]}" if len(filenames) > 1 else ""
    return (
        f"To fix it, on a machine with network access run `hf download {repo_id} {filenames[0]}`{alternatives}. "
        "Older huggingface_hub versions name the command `huggingface-cli download`. Then copy the Hugging Face "
        f"cache folder to {cache_dir} or point HF_HUB_CACHE at the copy. Or pass the weights file directly as "
        f"{local_hint}."
    )


def resolve_hub_file(
    repo_id: str,
    filenames: Sequence[str],
    *,
    revision: str | None = None,
    description: str,
    local_hint: str,
) -> Path:
    """Return the local path of the first of ``filenames`` found in a Hugging Face Hub repo.

    The local cache is searched first for every name, without network access. Only when none is cached
    and downloads are allowed is each name requested from the Hub in turn (``hf_hub_download`` with a
    :data:`DOWNLOAD_TIMEOUT_SECONDS` metadata timeout); a name that the repo does not contain is skipped.

    Parameters
    ----------
    repo_id:
        The Hub repo, ``org/name``.
    filenames:
        Candidate file names in order of preference (e.g. the safetensors file, then the pickle).
    revision:
        A branch, tag or commit; None means ``main``.
    description:
        What the file is, for messages (e.g. ``open_clip weights for ViT-B-16:openai``).
    local_hint:
        The spec form that loads a local file instead (e.g. ``ViT-B-16:/path/to/open_clip_model.safetensors``).

    Raises
    ------
    RobsigError
        When no candidate is cached and downloads are disabled, or every download attempt failed. The
        message names the repo, the file names, the cache folder searched and how to fix it.
    """
    if not repo_id or not filenames:
        raise ValueError(f"resolve_hub_file needs a repo_id and at least one file name, got {repo_id!r}, {filenames!r}")
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hf_hub_cache_dir()
    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir), revision=revision)
        if isinstance(cached, str) and os.path.isfile(cached):
            logger.debug("robsig: %s found in the Hugging Face cache: %s", description, cached)
            return Path(cached)

    expected = " or ".join(filenames)
    reason = offline_reason()
    if reason is not None:
        raise RobsigError(
            f"Missing {description}: file {expected} of Hugging Face repo {repo_id}"
            f"{'' if revision is None else f' (revision {revision})'} is not in the local cache {cache_dir}, "
            f"and downloads are disabled ({reason}). {_hub_fix(repo_id, filenames, cache_dir, local_hint)}"
        )

    from huggingface_hub import hf_hub_download

    # NOTE: the tests run this download loop only with a mocked hf_hub_download, never against the Hub.
    absent: list[str] = []
    for filename in filenames:
        logger.info("robsig: downloading %s from Hugging Face repo %s (%s)", description, repo_id, filename)
        try:
            path = hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=str(cache_dir),
                etag_timeout=DOWNLOAD_TIMEOUT_SECONDS,
            )
        # The hub client raises its own HTTP errors, OSError subclasses, and exceptions of its HTTP
        # library for failed connections. Each of them ends the attempt with the same message.
        except Exception as error:  # noqa: BLE001
            if _is_missing_on_hub(error):
                absent.append(filename)
                continue
            raise RobsigError(
                f"Could not download {description}: file {filename} of Hugging Face repo {repo_id} is not in the "
                f"local cache {cache_dir}, and the download failed ({_first_line(error)}). "
                f"{_hub_fix(repo_id, filenames, cache_dir, local_hint)}"
            ) from error
        return Path(path)

    raise RobsigError(
        f"Missing {description}: Hugging Face repo {repo_id} contains none of {', '.join(absent)}. "
        f"Check the repo on the Hub, or pass the weights file directly as {local_hint}."
    )


def expected_sha256_prefix(url: str) -> str | None:
    """Return the SHA-256 (or its leading hex digits) that a weights URL encodes, or None.

    Two conventions are recognised: a 64-hex-digit path segment (OpenAI's CLIP URLs) and a file name
    ending in ``-<8 or more hex digits>.<ext>`` (torch hub's ``check_hash`` and open_clip release files).
    """
    segments = [segment for segment in urllib.parse.urlparse(url).path.split("/") if segment]
    for segment in segments[:-1]:
        if re.fullmatch(r"[0-9a-f]{64}", segment):
            return segment
    if segments:
        match = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", segments[-1])
        if match:
            return match.group(1)
    return None


def _url_fix(url: str, target: Path, local_hint: str) -> str:
    return (
        f"To fix it, download {url} on a machine with network access and copy it to {target}, "
        f"or pass the weights file directly as {local_hint}."
    )


def _download_url(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as source:
            for chunk in iter(lambda: source.read(_SHA256_CHUNK_BYTES), b""):
                output.write(chunk)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def resolve_url_file(url: str, cache_dir: Path, *, description: str, local_hint: str) -> Path:
    """Return ``cache_dir / basename(url)``, downloading it first when it is missing and downloads are allowed.

    A file whose URL encodes a SHA-256 (see :func:`expected_sha256_prefix`) must match it, whether it
    was already cached or just downloaded.

    Parameters
    ----------
    url:
        The weights URL (any scheme ``urllib`` opens).
    cache_dir:
        The folder that the owning library downloads this URL into.
    description, local_hint:
        As for :func:`resolve_hub_file`.
    """
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    if not filename:
        raise RobsigError(f"Cannot resolve {description}: the URL {url!r} does not end with a file name.")
    target = Path(cache_dir) / filename
    expected = expected_sha256_prefix(url)

    if not target.is_file():
        reason = offline_reason()
        if reason is not None:
            raise RobsigError(
                f"Missing {description}: {target} does not exist and downloads are disabled ({reason}). "
                f"{_url_fix(url, target, local_hint)}"
            )
        logger.info("robsig: downloading %s from %s to %s", description, url, target)
        try:
            _download_url(url, target)
        # urllib raises URLError (an OSError), HTTPException or ValueError for a malformed URL.
        except Exception as error:  # noqa: BLE001
            raise RobsigError(
                f"Could not download {description} from {url} ({_first_line(error)}). {_url_fix(url, target, local_hint)}"
            ) from error

    if expected is not None:
        actual = sha256_file(target)
        if not actual.startswith(expected):
            raise RobsigError(
                f"Corrupt {description}: the SHA-256 of {target} is {actual}, but its URL {url} expects a digest "
                f"starting with {expected}. Delete the file so that it is downloaded again, or replace it."
            )
    return target


def _unwrap_checkpoint(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            inner = checkpoint.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(value, torch.Tensor) for value in inner.values()):
                checkpoint = inner
                break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise RobsigError(
            f"Weights file {str(path)!r} does not contain a state dict (a mapping from parameter names to "
            f"tensors, optionally under 'state_dict' or 'model'); it contains {type(checkpoint).__name__}. "
            "Save the model's state_dict() instead."
        )
    state_dict = {str(key): value for key, value in checkpoint.items()}
    if state_dict and all(key.startswith("module.") for key in state_dict):
        # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from a ``.safetensors`` file or a torch pickle, on the CPU.

    Pickles are read with ``torch.load(weights_only=True)``, which executes no code from the file. A
    state dict nested under ``state_dict`` or ``model`` is unwrapped, and a ``module.`` prefix on every
    key is removed.

    Parameters
    ----------
    path:
        The weights file.

    Returns
    -------
    dict[str, torch.Tensor]
        Parameter and buffer names to tensors.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise RobsigError(
            f"Weights file {str(file_path)!r} not found. Pass the path of an existing .safetensors, .pt, .pth "
            "or .bin file."
        )
    if file_path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _unwrap_checkpoint(load_file(str(file_path), device="cpu"), file_path)
        except SafetensorError as error:
            raise RobsigError(f"Weights file {str(file_path)!r} is not a valid safetensors file: {error}.") from error
    try:
        checkpoint = torch.load(file_path, map_location="cpu", weights_only=True)
    # An unsafe or foreign pickle raises UnpicklingError. A truncated or non-torch file raises
    # RuntimeError, EOFError or ValueError.
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as error:
        raise RobsigError(
            f"Weights file {str(file_path)!r} cannot be read with torch.load(weights_only=True): "
            f"{_first_line(error)}. Save the weights with torch.save(model.state_dict(), path) or as .safetensors."
        ) from error
    return _unwrap_checkpoint(checkpoint, file_path)


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    first_keys = ", ".join(keys[:LISTED_KEYS])
    more = f" and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return f"{len(keys)} ({first_keys}{more})"


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``state_dict`` into ``module`` with strict key and shape matching.

    Parameters
    ----------
    module:
        The freshly built model.
    state_dict:
        Names to tensors; the names must equal ``module.state_dict()``'s names, and every shape must match.
    source:
        Where the state dict came from, for messages (a file path or a package name).

    Raises
    ------
    RobsigError
        Listing the missing and unexpected keys (the first few of each, and their counts) and any shape
        mismatch.
    """
    expected = module.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    if missing or unexpected:
        raise RobsigError(
            f"The weights in {source} do not match the model {type(module).__name__}: "
            f"missing keys: {_listed(missing)}; unexpected keys: {_listed(unexpected)}. "
            "Check that the architecture named in the spec is the one these weights were trained with."
        )
    wrong_shape = [
        f"{key}: file {tuple(state_dict[key].shape)}, model {tuple(value.shape)}"
        for key, value in expected.items()
        if tuple(state_dict[key].shape) != tuple(value.shape)
    ]
    if wrong_shape:
        listed = "; ".join(wrong_shape[:LISTED_KEYS])
        more = f"; and {len(wrong_shape) - LISTED_KEYS} more" if len(wrong_shape) > LISTED_KEYS else ""
        raise RobsigError(
            f"The weights in {source} do not match the model {type(module).__name__}: "
            f"{len(wrong_shape)} tensors have other shapes ({listed}{more}). "
            "Check the architecture (width, depth, number of classes) named in the spec."
        )
    module.load_state_dict(state_dict, strict=True)
