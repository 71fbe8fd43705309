"""A loopback fake of the Hugging Face Hub: the part of its HTTP API that our code paths use.

Tests point `HF_ENDPOINT` at `FakeHub.url` and then push and load with the real clients
(huggingface_hub, datasets, transformers, peft), so a round trip exercises exactly the requests a
real push/load would make. What is implemented, and why each piece exists:

- `GET /api/whoami-v2`: credential checks. A token the server does not know gets 401 with the Hub's
  own "Invalid credentials in Authorization header" message; tokens carry a role (read/write).
- `POST /api/repos/create`, `POST /api/validate-yaml`: repo creation (409 when it exists) and the
  README.md metadata check that `create_commit` runs before any upload (400 on broken YAML).
- `GET /api/{models,datasets}/NS/NAME[/revision/REV]`: repo info with `sha` and `siblings`.
- `GET .../tree/REV[/PATH]` and `POST .../paths-info/REV`: listings used by HfFileSystem (datasets
  resolves data files through it) and by `upload_folder` (to find remote files to delete).
- `GET .../refs`, `GET .../commits/REV`: branch and history listings.
- `POST .../preupload/REV`: chooses "regular" or "lfs" per file like the Hub (binary content,
  LFS-tracked extensions, or a size threshold) and returns the remote oid so unchanged files skip.
- `POST NS/NAME.git/info/lfs/objects/batch` → `PUT /__lfs/upload/OID?ticket=…` → `POST
  /__lfs/verify`: the LFS "basic" transfer that huggingface_hub uses when Xet is disabled. Upload
  URLs carry a one-time ticket because the client sends no Authorization header on the PUT.
- `POST .../commit/REV`: the NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder).
- `HEAD/GET [datasets/]NS/NAME/resolve/REV/PATH`: downloads with ETag, X-Repo-Commit,
  Content-Length, X-Linked-Etag/X-Linked-Size for LFS files, and Range requests (HfFileSystem
  reads files in blocks).

Errors carry the `X-Error-Code` header the client maps to its exception types (RepoNotFound,
RevisionNotFound, EntryNotFound). Private repos are visible only to their owner's token, as on
the Hub. Every request is recorded in `FakeHub.requests`; routes the fake does not implement are
also recorded in `FakeHub.unhandled`, so a test can assert the clients needed nothing more.

The server binds 127.0.0.1 on a random port, keeps file contents content-addressed (sha256) in a
directory, bounds every request body, and is stopped by `FakeHub.stop()` (or the context manager).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

MAX_BODY = 256 * 1024 * 1024  # refuse request bodies above 256 MiB: tests push kilobytes to megabytes
# Extensions the Hub's default .gitattributes routes through LFS, whatever their size.
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".parquet",
    ".arrow",
    ".h5",
    ".onnx",
    ".msgpack",
    ".model",
    ".npy",
    ".npz",
    ".pkl",
    ".zip",
    ".gz",
    ".tar",
)
INVALID_TOKEN = "Invalid credentials in Authorization header"


class HubError(Exception):
    """Raised inside a handler; becomes an HTTP error with the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class Blob:
    """One file version: contents live in the object store under `sha256`."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # sha1 of the git blob: the file itself, or its LFS pointer

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass
class Commit:
    oid: str
    title: str
    message: str
    parent: str | None
    files: dict[str, Blob]
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))


@dataclass
class Repo:
    repo_type: str  # "model" or "dataset"
    repo_id: str
    owner: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit oid

    def resolve(self, revision: str) -> Commit:
        oid = self.branches.get(revision, revision)
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """The server plus its state. `tokens` maps a token to (user name, role)."""

    def __init__(
        self,
        root: str | Path,
        tokens: dict[str, tuple[str, str]] | None = None,
        orgs: dict[str, list[str]] | None = None,
        lfs_threshold: int = 10 * 1024 * 1024,
    ) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tokens = tokens if tokens is not None else {"hf_test_write": ("tester", "write")}
        self.orgs = orgs or {}  # user -> organisations the user may write to
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: set[str] = set()  # sha256 of LFS objects uploaded (and verified)
        self.tickets: dict[str, str] = {}  # one-time upload ticket -> sha256 it may upload
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- state helpers

    def store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.objects / sha
        if not path.exists():
            tmp = path.with_suffix(f".tmp-{threading.get_ident()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def read_object(self, sha256: str) -> bytes:
        return (self.objects / sha256).read_bytes()

    def user_for(self, token: str | None) -> tuple[str, str] | None:
        """(user, role) for a token; None without one. An unknown token is a 401, as on the Hub."""
        if token is None:
            return None
        if token not in self.tokens:
            raise HubError(401, INVALID_TOKEN)
        return self.tokens[token]

    def get_repo(self, repo_type: str, repo_id: str, token: str | None, write: bool = False) -> Repo:
        user = self.user_for(token)
        repo = self.repos.get((repo_type, repo_id))
        visible = repo is not None and (
            not repo.private or (user is not None and self.may_write(user, repo.owner))
        )
        if not visible:
            raise HubError(404, "Repository not found", "RepoNotFound")
        assert repo is not None
        if write:
            if user is None:
                raise HubError(401, "You must be authenticated to write")
            if user[1] != "write" or not self.may_write(user, repo.owner):
                raise HubError(403, "You don't have the rights to write to this repository")
        return repo

    def may_write(self, user: tuple[str, str], namespace: str) -> bool:
        return namespace == user[0] or namespace in self.orgs.get(user[0], [])

    def repo_files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Test helper: the files of a repo at `revision`, as bytes."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return {path: self.read_object(blob.sha256) for path, blob in commit.files.items()}

    def repo_blobs(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, Blob]:
        return dict(self.repos[(repo_type, repo_id)].resolve(revision).files)


# HTTP routes: (method, regex) -> handler method name. NS/NAME are two path segments.
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API = rf"/api/(?P<kind>models|datasets)/{_REPO}"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h)
    for m, p, h in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"{_API}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", rf"{_API}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", rf"{_API}/refs", "refs"),
        ("GET", rf"{_API}/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"{_API}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"/(?P<prefix>datasets/)?{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/__lfs/upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", r"/__lfs/verify", "lfs_verify"),
        ("GET", rf"/(?P<prefix>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/(?P<prefix>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect; every response has a length
    timeout = 30  # an idle keep-alive connection frees its thread after this many seconds

    # ---------------------------------------------------------------- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the request log is `FakeHub.requests`; stderr noise helps nobody

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.fake.requests.append((method, split.path))
        try:
            body = self._read_body()
            for route_method, pattern, name in ROUTES:
                match = pattern.fullmatch(split.path) if route_method == method else None
                if match:
                    groups = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    with self.fake.lock:
                        getattr(self, f"h_{name}")(body=body, **groups)
                    return
            self.fake.unhandled.append((method, split.path))
            raise HubError(404, f"no route for {method} {split.path}")
        except HubError as err:
            self._error(err)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise HubError(413, "request body too large")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:  # bounded: every chunk adds to `total`, capped at MAX_BODY
            size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                for _ in range(100):  # trailers (at most 100), then the blank line
                    if not self.rfile.readline(1024).strip():
                        break
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise HubError(413, "request body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after each chunk

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :].strip() or None if auth.startswith("Bearer ") else None

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message}, status=err.status, headers=headers)

    def _repo(self, kind: str | None, ns: str, name: str, write: bool = False) -> Repo:
        repo_type = "dataset" if kind in ("datasets", "datasets/") else "model"
        return self.fake.get_repo(repo_type, f"{ns}/{name}", self._token(), write=write)

    def _repo_url(self, repo: Repo) -> str:
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        return f"{self.fake.url}/{prefix}{repo.repo_id}"

    # ---------------------------------------------------------------- account and repos

    def h_whoami(self, body: bytes) -> None:
        user = self.fake.user_for(self._token())
        if user is None:
            raise HubError(401, INVALID_TOKEN)
        name, role = user
        orgs = [{"type": "org", "name": org, "roleInOrg": "write"} for org in self.fake.orgs.get(name, [])]
        self._json(
            {
                "type": "user",
                "id": hashlib.md5(name.encode()).hexdigest()[:24],
                "name": name,
                "fullname": name.title(),
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": role}},
            }
        )

    def h_create_repo(self, body: bytes) -> None:
        user = self.fake.user_for(self._token())
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = json.loads(body or b"{}")
        namespace = payload.get("organization") or user[0]
        name = payload.get("name", "")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", name) or ".." in name:
            raise HubError(400, f"invalid repo name {name!r}")
        if user[1] != "write" or not self.fake.may_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            raise HubError(400, f"repo type {repo_type!r} is not supported by the fake Hub")
        key = (repo_type, f"{namespace}/{name}")
        if key in self.fake.repos:
            # Like the Hub, a 409 still names the repo URL (create_repo(exist_ok=True) returns it).
            message = "You already created this repo"
            self._json(
                {"error": message, "url": self._repo_url(self.fake.repos[key])},
                status=409,
                headers={"X-Error-Message": message},
            )
            return
        repo = Repo(repo_type, key[1], owner=namespace, private=payload.get("visibility") == "private")
        # The Hub creates repos with one commit holding .gitattributes.
        attributes = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
        self._apply_commit(repo, "Initial commit", "", {".gitattributes": self._regular_blob(attributes)}, [])
        self.fake.repos[key] = repo
        self._json(
            {"url": self._repo_url(repo), "name": key[1], "id": hashlib.md5(key[1].encode()).hexdigest()}
        )

    def h_validate_yaml(self, body: bytes) -> None:
        content = json.loads(body or b"{}").get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                self._json({"errors": [{"message": f"invalid YAML: {err}"}]}, status=400)
                return
            if meta is not None and not isinstance(meta, dict):
                self._json({"errors": [{"message": "metadata must be a YAML mapping"}]}, status=400)
                return
        self._json({"errors": [], "warnings": []})

    def h_repo_info(self, body: bytes, kind: str, ns: str, name: str, rev: str | None) -> None:
        repo = self._repo(kind, ns, name)
        commit = repo.resolve(rev or "main")
        card = self._card_data(commit)
        siblings = []
        for path, blob in sorted(commit.files.items()):
            entry: dict[str, Any] = {"rfilename": path, "size": blob.size, "blobId": blob.git_oid}
            if blob.lfs:
                entry["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": blob.pointer_size}
            siblings.append(entry)
        self._json(
            {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": repo.owner,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": commit.date,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": list(card.get("tags", []) or []),
                "cardData": card,
                "siblings": siblings,
            }
        )

    def _card_data(self, commit: Commit) -> dict[str, Any]:
        blob = commit.files.get("README.md")
        if blob is None:
            return {}
        text = self.fake.read_object(blob.sha256).decode("utf-8", "replace")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
        meta = yaml.safe_load(match.group(1)) if match else None
        return meta if isinstance(meta, dict) else {}

    def h_refs(self, body: bytes, kind: str, ns: str, name: str) -> None:
        repo = self._repo(kind, ns, name)
        branches = [
            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.branches.items()
        ]
        self._json({"branches": branches, "converts": [], "tags": []})

    def h_commits(self, body: bytes, kind: str, ns: str, name: str, rev: str) -> None:
        repo = self._repo(kind, ns, name)
        commit: Commit | None = repo.resolve(rev)
        history = []
        while commit is not None:  # bounded by the number of commits in the repo
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "date": commit.date,
                    "authors": [{"user": repo.owner}],
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(history)

    # ---------------------------------------------------------------- listings

    def _file_entry(self, path: str, blob: Blob) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        return entry

    @staticmethod
    def _dir_entry(path: str, commit: Commit) -> dict[str, Any]:
        tree_oid = hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest()
        return {"type": "directory", "oid": tree_oid, "size": 0, "path": path}

    @staticmethod
    def _dirs(commit: Commit) -> set[str]:
        return {str(p) for path in commit.files for p in PurePosixPath(path).parents if str(p) != "."}

    def h_tree(self, body: bytes, kind: str, ns: str, name: str, rev: str, path: str | None) -> None:
        repo = self._repo(kind, ns, name)
        commit = repo.resolve(rev)
        base = (path or "").strip("/")
        dirs = self._dirs(commit)
        if base and base not in dirs:
            raise HubError(404, f"{base} does not exist on {rev}", "EntryNotFound")
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{base}/" if base else ""

        def wanted(p: str) -> bool:
            if not p.startswith(prefix):
                return False
            return recursive or "/" not in p[len(prefix) :]

        entries = [self._dir_entry(d, commit) for d in sorted(dirs) if wanted(d)]
        entries += [self._file_entry(p, b) for p, b in sorted(commit.files.items()) if wanted(p)]
        self._json(entries)

    def h_paths_info(self, body: bytes, kind: str, ns: str, name: str, rev: str) -> None:
        repo = self._repo(kind, ns, name)
        commit = repo.resolve(rev)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        dirs = self._dirs(commit)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._file_entry(path, commit.files[path]))
            elif path in dirs:
                out.append(self._dir_entry(path, commit))
        self._json(out)

    # ---------------------------------------------------------------- uploads

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        return path.endswith(LFS_SUFFIXES) or size >= self.fake.lfs_threshold or b"\0" in sample

    def h_preupload(self, body: bytes, kind: str, ns: str, name: str, rev: str) -> None:
        repo = self._repo(kind, ns, name, write=True)
        commit = repo.resolve(rev)
        files = []
        for item in json.loads(body).get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            existing = commit.files.get(item["path"])
            # The client compares this oid with its own: sha256 for LFS files, git sha1 otherwise.
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            mode = "lfs" if self._is_lfs(item["path"], int(item["size"]), sample) else "regular"
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": files, "commitOid": commit.oid})

    def h_lfs_batch(self, body: bytes, prefix: str | None, ns: str, name: str) -> None:
        self._repo(prefix, ns, name, write=True)
        payload = json.loads(body)
        if payload.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.fake.lfs_objects:  # already stored objects need no upload
                ticket = secrets.token_hex(16)
                self.fake.tickets[ticket] = oid
                entry["actions"] = {
                    "upload": {"href": f"{self.fake.url}/__lfs/upload/{oid}?ticket={ticket}", "header": {}},
                    "verify": {"href": f"{self.fake.url}/__lfs/verify", "header": {}},
                }
            objects.append(entry)
        self._json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def h_lfs_upload(self, body: bytes, oid: str) -> None:
        if self.fake.tickets.pop(self.query.get("ticket", ""), None) != oid:
            raise HubError(403, "invalid or used upload ticket")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        self.fake.store(body)
        self.fake.lfs_objects.add(oid)
        self._send(200)

    def h_lfs_verify(self, body: bytes) -> None:
        if self.fake.user_for(self._token()) is None:
            raise HubError(401, "You must be authenticated to verify uploads")
        payload = json.loads(body)
        oid, size = payload.get("oid", ""), payload.get("size")
        if oid not in self.fake.lfs_objects or (self.fake.objects / oid).stat().st_size != size:
            raise HubError(404, f"LFS object {oid} not found", "EntryNotFound")
        self._json({"success": True})

    def _regular_blob(self, data: bytes) -> Blob:
        return Blob(self.fake.store(data), len(data), lfs=False, git_oid=git_blob_oid(data))

    def h_commit(self, body: bytes, kind: str, ns: str, name: str, rev: str) -> None:
        repo = self._repo(kind, ns, name, write=True)
        head = repo.resolve(rev)
        if rev not in repo.branches:
            raise HubError(400, f"can only commit to a branch, not {rev}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        added: dict[str, Blob] = {}
        deleted: list[tuple[str, bool]] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = str(value.get("path", "")).strip("/")
            if not path or ".." in PurePosixPath(path).parts:
                raise HubError(400, f"invalid path {path!r}")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "file content must be base64")
                added[path] = self._regular_blob(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                oid = value.get("oid", "")
                if oid not in self.fake.lfs_objects:
                    raise HubError(400, f"LFS object {oid} for {path} was never uploaded")
                size = (self.fake.objects / oid).stat().st_size
                if value.get("size") is not None and int(value["size"]) != size:
                    raise HubError(400, f"LFS size mismatch for {path}")
                added[path] = Blob(oid, size, lfs=True, git_oid=git_blob_oid(lfs_pointer(oid, size)))
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append((path, key == "deletedFolder"))
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        oid = self._apply_commit(
            repo, header.get("summary", ""), header.get("description", ""), added, deleted, branch=rev
        )
        self._json(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{oid}",
                "pullRequestUrl": None,
                "commitMessage": header.get("summary", ""),
            }
        )

    def _apply_commit(
        self,
        repo: Repo,
        title: str,
        message: str,
        added: dict[str, Blob],
        deleted: list[tuple[str, bool]],
        branch: str = "main",
    ) -> str:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path, is_folder in deleted:
            doomed = [p for p in files if p == path or (is_folder and p.startswith(f"{path}/"))]
            if not doomed:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del files[p]
        files.update(added)
        digest = json.dumps(
            [parent, title, message, len(repo.commits), sorted((p, b.git_oid) for p, b in files.items())]
        )
        oid = hashlib.sha1(digest.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, title, message, parent, files)
        repo.branches[branch] = oid
        return oid

    # ---------------------------------------------------------------- downloads

    def h_resolve(self, body: bytes, prefix: str | None, ns: str, name: str, rev: str, path: str) -> None:
        repo = self._repo(prefix, ns, name)
        commit = repo.resolve(rev)
        blob = commit.files.get(path)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if blob is None:
            # The Hub sends X-Repo-Commit on a 404 too: the client caches the absence per commit.
            self._json(
                {"error": "Entry not found"},
                status=404,
                headers={**headers, "X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"},
            )
            return
        headers["ETag"] = f'"{blob.git_oid}"'
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        data = self.fake.read_object(blob.sha256)
        status, range_header = 200, self.headers.get("Range")
        if range_header and self.command == "GET":
            start, end = self._parse_range(range_header, len(data))
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, content_type="application/octet-stream", headers=headers)

    @staticmethod
    def _parse_range(header: str, size: int) -> tuple[int, int]:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
        if not match or match.groups() == ("", ""):
            raise HubError(416, f"unsupported Range {header!r}")
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise HubError(416, f"Range {header!r} outside 0-{size - 1}")
        return start, end


def hub_url_for(
    fake: FakeHub, repo_id: str, path: str, repo_type: str = "model", revision: str = "main"
) -> str:
    """The resolve URL of a file (handy in assertions)."""
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{fake.url}/{prefix}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def point_clients_at(monkeypatch: Any, url: str, home: Path, token: str | None) -> None:
    """Make huggingface_hub, datasets and transformers talk to `url`, as HF_ENDPOINT would.

    The environment is set for code that reads it at call time (and for subprocesses), but these
    libraries copy HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_DISABLE_XET / cache paths into module
    constants at import, and pytest imported them long ago (with HF_HUB_OFFLINE=1 from conftest):
    so the constants are patched too. `home` isolates caches and keeps a developer's real token
    (~/.cache/huggingface/token) out of the tests. `token=None` means "not logged in".
    """
    import datasets.config
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_ENDPOINT": url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
    ):
        monkeypatch.delenv(key, raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)

    patches: dict[Any, dict[str, Any]] = {
        constants: {
            "ENDPOINT": url,
            "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_DISABLE_TELEMETRY": True,
        },
        datasets.config: {
            "HF_ENDPOINT": url,
            "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
            "HF_CACHE_HOME": str(home),
            "HF_DATASETS_CACHE": home / "datasets",
            "DOWNLOADED_DATASETS_PATH": home / "datasets" / "downloads",
            "EXTRACTED_DATASETS_PATH": home / "datasets" / "downloads" / "extracted",
            "HF_MODULES_CACHE": home / "modules",
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
        },
    }
    for module, values in patches.items():
        for name, value in values.items():
            monkeypatch.setattr(module, name, value)
    # Module-level helpers (`huggingface_hub.file_exists`, used by peft) are methods of an HfApi
    # built at import time, which captured the endpoint then.
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", url)
