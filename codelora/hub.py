"""Hub traffic: credential checks before heavy work, and pushes with their cards.

All calls go through huggingface_hub, so HF_ENDPOINT redirects them (the tests point it at a
loopback server). A stage that will push calls `check_push_access` at its *start*, so a missing
or rejected token fails in a second, not after hours of training; it pushes at its end with
`push_folder` (adapter, merged model) or `push_dataset` (prepared DatasetDict).

The cards themselves are built in `codelora.cards`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codelora.cards import REPO_ID, parse_card, render_card
from codelora.utils import UserError

log = logging.getLogger(__name__)

# Files in an output directory that are ours (stage markers, temp files) or training leftovers:
# never pushed.
_PRIVATE_FILE = re.compile(r"(^|/)(\.[^/]*|checkpoint-\d+|checkpoints|runs)(/|$)")


def validate_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or len(repo_id) > 96:
        raise UserError(f"invalid Hub repo id {repo_id!r}: expected USER/NAME")


# --------------------------------------------------------------------------------- credentials


def check_push_access(repo_id: str) -> str:
    """Return a usable token for pushing to `repo_id`, or raise UserError naming the problem.

    Checks, in order: the id is well formed; the Hub is not disabled (HF_HUB_OFFLINE); a token
    exists; the Hub accepts it (whoami); it may write (not a read token); its user or one of its
    organisations owns the namespace. One round trip, no uploads.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    validate_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (unset it to push)")
    token = get_token()
    if not token:
        raise UserError(f"cannot push to {repo_id}: no Hub credentials (run `hf auth login` or set HF_TOKEN)")
    try:
        info = HfApi(token=token).whoami(cache=False)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            raise UserError(f"cannot push to {repo_id}: the Hub rejected the token (HTTP {status})") from None
        raise UserError(f"cannot push to {repo_id}: Hub error ({err})") from None
    except OfflineModeIsEnabled:
        raise UserError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (unset it to push)") from None
    except Exception as err:  # noqa: BLE001 - httpx transport errors, DNS, TLS: all "cannot reach"
        raise UserError(
            f"cannot push to {repo_id}: cannot reach the Hub at {constants.ENDPOINT} ({err})"
        ) from None
    _check_write_permission(repo_id, info)
    return token


def _check_write_permission(repo_id: str, whoami: Mapping[str, Any]) -> None:
    namespace = repo_id.split("/", 1)[0]
    user = whoami.get("name")
    orgs = {org.get("name") for org in whoami.get("orgs", []) if isinstance(org, Mapping)}
    if user and namespace != user and namespace not in orgs:
        raise UserError(
            f"cannot push to {repo_id}: the token belongs to {user!r}, who is not a member of {namespace!r}"
        )
    access = whoami.get("auth", {}).get("accessToken", {}) if isinstance(whoami.get("auth"), Mapping) else {}
    role = access.get("role")
    if role == "read":
        raise UserError(f"cannot push to {repo_id}: the token is read-only (create a write token)")
    if role == "fineGrained":
        # Fine-grained tokens list permissions per entity (user, org or repo); repo.write is the
        # one a push needs. Unknown shapes are let through: the upload would then fail with 403.
        scoped = access.get("fineGrained", {}).get("scoped")
        if isinstance(scoped, list):
            allowed = {
                s.get("entity", {}).get("name")
                for s in scoped
                if isinstance(s, Mapping) and "repo.write" in s.get("permissions", [])
            }
            if not ({namespace, repo_id} & allowed):
                raise UserError(
                    f"cannot push to {repo_id}: the fine-grained token has no repo.write "
                    f"permission for {namespace!r}"
                )


# -------------------------------------------------------------------------------------- pushes


def _folder_files(folder: Path) -> list[str]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not _PRIVATE_FILE.search(rel):
            files.append(rel)
    return files


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str,
    card: str | None = None,
    repo_type: str = "model",
    private: bool = False,
    message: str = "Upload with codelora",
    delete_stale: bool = True,
) -> str:
    """Create `repo_id` if needed and upload `folder` (plus README.md = card) in ONE commit.

    One commit, so the repo never shows weights without their card or a half-uploaded model.
    Dot-files (stage markers) and checkpoints are not pushed. With `delete_stale`, files the repo
    holds but `folder` does not (e.g. shards of an earlier, differently sharded push) are deleted
    in the same commit, so the repo mirrors the folder. Returns the repo URL.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"cannot push {folder}: not a directory")
    validate_repo_id(repo_id)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    files = [f for f in _folder_files(folder) if card is None or f != "README.md"]
    operations: list[Any] = [
        CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files
    ]
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    if delete_stale:
        keep = {op.path_in_repo for op in operations} | {".gitattributes"}
        remote = api.list_repo_files(repo_id, repo_type=repo_type)
        operations += [CommitOperationDelete(path_in_repo=f) for f in remote if f not in keep]
    api.create_commit(repo_id, operations=operations, repo_type=repo_type, commit_message=message)
    log.info("pushed %s (%d files) to %s", folder, len(files), url)
    return str(url)


def push_dataset(dataset_dict, repo_id: str, *, token: str, card: str, private: bool = False) -> str:
    """Push a DatasetDict (parquet shards), then its card.

    `push_to_hub` writes a README.md whose metadata (`dataset_info`: features and split sizes;
    `configs`: which files form which split) the Hub and `load_dataset` use; our card's metadata
    is merged into it rather than replacing it. Returns the dataset's URL.
    """
    from huggingface_hub import HfApi, hf_hub_download

    validate_repo_id(repo_id)
    dataset_dict.push_to_hub(repo_id, private=private, token=token)
    ours, body = parse_card(card)
    generated_path = hf_hub_download(repo_id, "README.md", repo_type="dataset", token=token)
    generated, _ = parse_card(Path(generated_path).read_text(encoding="utf-8"))
    merged = {**ours, **{k: v for k, v in generated.items() if k in ("dataset_info", "configs")}}
    api = HfApi(token=token)
    api.upload_file(
        path_or_fileobj=render_card(merged, body).encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Add dataset card",
    )
    url = f"{api.endpoint}/datasets/{repo_id}"
    log.info("pushed dataset (%s) to %s", ", ".join(f"{k}: {len(v)}" for k, v in dataset_dict.items()), url)
    return url
