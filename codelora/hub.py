"""Hub traffic: credential checks before heavy work, pushes with cards.

All calls go through huggingface_hub, so HF_ENDPOINT redirects them (the tests point it at a
loopback server). Check credentials with `check_push_access` at the *start* of a stage, so a
missing token fails in a second, not after hours of training.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from codelora.utils import UserError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def validate_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or len(repo_id) > 96:
        raise UserError(f"invalid Hub repo id {repo_id!r}: expected USER/NAME")


def check_push_access(repo_id: str) -> str:
    """Return a usable token for pushing to `repo_id`, or raise UserError naming the problem."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    validate_repo_id(repo_id)
    token = get_token()
    if not token:
        raise UserError(
            f"cannot push to {repo_id}: no Hub credentials (run `huggingface-cli login` or set HF_TOKEN)"
        )
    try:
        HfApi(token=token).whoami()
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            raise UserError(f"cannot push to {repo_id}: the Hub rejected the token (HTTP {status})") from None
        raise UserError(f"cannot push to {repo_id}: Hub error ({err})") from None
    except OSError as err:
        raise UserError(f"cannot push to {repo_id}: cannot reach the Hub ({err})") from None
    return token


def render_card(metadata: dict[str, Any], body: str) -> str:
    """A card in the standard format: YAML metadata between `---` lines, then markdown."""
    front = yaml.safe_dump(metadata, sort_keys=False).strip()
    return f"---\n{front}\n---\n\n{body.strip()}\n"


def push_folder(folder: str | Path, repo_id: str, *, token: str, card: str | None = None,
                repo_type: str = "model", private: bool = False, message: str = "Upload with codelora") -> str:
    """Create `repo_id` if needed and upload `folder` (plus README.md = card). Returns the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if card is not None:
        api.upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                        repo_type=repo_type, commit_message="Add card")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=message,
                      ignore_patterns=["README.md"] if card is not None else None)
    log.info("pushed %s to %s", folder, url)
    return str(url)


def push_dataset(dataset_dict, repo_id: str, *, token: str, card: str, private: bool = False) -> str:
    """Push a DatasetDict (parquet shards) and then its card."""
    from huggingface_hub import HfApi

    dataset_dict.push_to_hub(repo_id, private=private, token=token)
    HfApi(token=token).upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo="README.md",
                                   repo_id=repo_id, repo_type="dataset", commit_message="Add dataset card")
    return f"datasets/{repo_id}"
