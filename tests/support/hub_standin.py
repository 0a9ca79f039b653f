"""A stand-in for the Hugging Face Hub on loopback, for the real huggingface_hub client.

    with HubStandIn() as hub:
        hub.add_repo("acme/tiny", folder)                  # a folder on disk: its files
        hub.add_repo("acme/gated", folder, gated=True, tokens={"hf_good"})
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)    # or endpoint=hub.endpoint
        get_safetensors_metadata("acme/tiny")
        assert hub.count("/acme/tiny/resolve/main/model.safetensors", method="GET") == 1

It serves the part of the Hub's HTTP protocol that `hf_hub_download`, `snapshot_download`,
`HfApi.model_info`/`dataset_info`/`repo_info`, `list_repo_tree` and `get_safetensors_metadata`
use (huggingface_hub 2.x, read from its file_download.py, utils/_http.py and hf_api.py):

- `HEAD|GET /{repo}/resolve/{revision}/{path}` (`/datasets/{repo}/resolve/...` for datasets):
  the file, without redirects, with `ETag` (the git blob sha1, or the sha256 of files stored
  as LFS: `*.safetensors`, `*.bin` and anything over 10 MB, as the Hub does), `X-Repo-Commit`,
  `Content-Length`, `Accept-Ranges` and `Range` requests answered `206` with `Content-Range`;
- `GET /api/{models|datasets}/{repo}[/revision/{revision}]`: `id`, `sha`, `siblings`,
  `gated`, `private` (with `?blobs=true` the siblings' size, blob id and LFS info);
- `GET /api/{models|datasets}/{repo}/tree/{revision}[/{path}]` (`?recursive=true`);
- revisions: `main` (each `push` of a new folder moves it) and any commit sha pushed;
- errors as the Hub sends them, with the `X-Error-Code` and `X-Error-Message` headers
  huggingface_hub maps to its exceptions: a missing repo `404 RepoNotFound`
  (`RepositoryNotFoundError`), revision `404 RevisionNotFound`, file `404 EntryNotFound`;
  a gated repo without a token `401 GatedRepo`, with a token not granted access `403
  GatedRepo` (both `GatedRepoError`); a token the hub does not know `401 Invalid credentials
  in Authorization header` (`HfHubHTTPError`).

Every request is recorded (`requests`, `count`) with the bytes of body sent
(`bytes_sent`), so a test can assert that a file was downloaded once, or that only its first
bytes were read. No maintained package serves this protocol offline (the mirrors on PyPI
proxy the real Hub), hence this small one.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".parquet")
LFS_THRESHOLD = 10 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    """One request as the stand-in received it."""

    method: str
    path: str  # unquoted, without the query
    range: str | None
    token: str | None
    status: int


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # "model" or "dataset"
    gated: bool = False
    tokens: set[str] = field(default_factory=set)  # tokens granted access to a gated repo
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def push(self, folder: Path | str | dict[str, bytes], branch: str = "main") -> str:
        """A new commit with the files of `folder` (or a {path: bytes} mapping) on `branch`;
        returns its sha."""
        files = folder if isinstance(folder, dict) else _read_folder(Path(folder))
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(self.branches.get(branch, "").encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + _git_blob_sha(files[path]).encode())
        sha = digest.hexdigest()
        self.commits[sha] = Commit(sha, dict(files))
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


class HubStandIn:
    """The server. Start it with `with` (or start()/stop()); it listens on 127.0.0.1 (or on
    `host`, e.g. the cluster bridge's address for pods to reach), on a free port by default."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.address = (host, port)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.users: set[str] = set()  # tokens the hub knows (every granted token is one)
        self.requests: list[Request] = []
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ set-up

    def add_repo(self, repo_id: str, folder: Path | str | dict[str, bytes], *,
                 repo_type: str = "model", gated: bool = False,
                 tokens: Iterable[str] = ()) -> Repo:
        """Host `folder` as `repo_id` at `main`. A gated repo admits only `tokens`."""
        repo = Repo(repo_id, repo_type, gated=gated, tokens=set(tokens))
        repo.push(folder)
        self.users |= repo.tokens
        self.repos[(repo_type, repo_id)] = repo
        return repo

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(self.address, handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="hub-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what was asked

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests reached `path` (unquoted, no query), of `method` if given."""
        with self._lock:
            return sum(1 for r in self.requests
                       if r.path == path and (method is None or r.method == method))

    def downloads(self, prefix: str) -> int:
        """Whole files sent under `prefix`: successful GETs without a Range (a sizer's read
        of a safetensors header asks for its first bytes only, and is no download)."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == "GET" and r.range is None
                       and r.path.startswith(prefix) and r.status < 300)

    def requests_under(self, prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _record(self, request: Request, sent: int) -> None:
        with self._lock:
            self.requests.append(request)
            self.bytes_sent[request.path] = self.bytes_sent.get(request.path, 0) + sent


# --------------------------------------------------------------------------- protocol


class _Reply(Exception):
    """An error answer: status, X-Error-Code, X-Error-Message, extra headers."""

    def __init__(self, status: int, code: str | None, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a length

    def log_message(self, format: str, *args: Any) -> None:  # quiet in test output
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        raw_path = url.path
        path = unquote(raw_path)
        token = _bearer(self.headers.get("authorization"))
        try:
            status, headers, body = self._route(raw_path, parse_qs(url.query), token)
        except _Reply as reply:
            status, body = reply.status, json.dumps({"error": reply.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": reply.message,
                       **reply.headers}
            if reply.code:
                headers["X-Error-Code"] = reply.code
        # Recorded before the answer goes out: once the client has it, a test sees the count.
        self.hub._record(Request(self.command, path, self.headers.get("range"), token, status),
                         0 if head else len(body))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # ------------------------------------------------------------------ routes

    def _route(self, raw_path: str, query: dict[str, list[str]], token: str | None
               ) -> tuple[int, dict[str, str], bytes]:
        if raw_path.startswith(("/api/models/", "/api/datasets/")):
            kind, _, rest = raw_path.removeprefix("/api/").partition("/")
            return self._api(kind.removesuffix("s"), rest, query, token)
        if "/resolve/" in raw_path:
            repo_part, _, rest = raw_path.lstrip("/").partition("/resolve/")
            repo_type = "model"
            if repo_part.startswith("datasets/"):
                repo_type, repo_part = "dataset", repo_part.removeprefix("datasets/")
            revision, _, file_path = rest.partition("/")
            return self._resolve(repo_type, unquote(repo_part), unquote(revision),
                                 unquote(file_path), token)
        raise _Reply(404, None, "Sorry, we can't find the page you are looking for.")

    def _repo(self, repo_type: str, repo_id: str, token: str | None) -> Repo:
        if token is not None and token not in self.hub.users:
            raise _Reply(401, None, "Invalid credentials in Authorization header")
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            raise _Reply(404, "RepoNotFound", "Repository not found")
        if repo.gated and token is None:
            raise _Reply(401, "GatedRepo", f"Access to {repo_type} {repo_id} is restricted. "
                         "You must have access to it and be authenticated to access it. "
                         "Please log in.")
        if repo.gated and token not in repo.tokens:
            raise _Reply(403, "GatedRepo", f"Access to {repo_type} {repo_id} is restricted "
                         "and you are not in the authorized list. Visit the repository's page "
                         "to ask for access.")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _Reply(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _resolve(self, repo_type: str, repo_id: str, revision: str, file_path: str,
                 token: str | None) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo(repo_type, repo_id, token)
        commit = self._commit(repo, revision)
        data = commit.files.get(file_path)
        if data is None:
            raise _Reply(404, "EntryNotFound", "Entry not found",
                         {"X-Repo-Commit": commit.sha})
        headers = {
            "ETag": f'"{_etag(file_path, data)}"',
            "X-Repo-Commit": commit.sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{Path(file_path).name}"',
        }
        wanted = self.headers.get("range")
        if wanted is None:
            return 200, headers, data
        start, end = _byte_range(wanted, len(data))
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, headers, data[start:end + 1]

    def _api(self, repo_type: str, rest: str, query: dict[str, list[str]], token: str | None
             ) -> tuple[int, dict[str, str], bytes]:
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_part, _, tail = rest.partition(marker)
                break
        else:
            repo_part, marker, tail = rest, "", ""
        repo = self._repo(repo_type, unquote(repo_part), token)
        if marker == "/tree/":
            revision, _, under = tail.partition("/")
            commit = self._commit(repo, unquote(revision))
            recursive = _flag(query, "recursive")
            return _json(_tree(commit, unquote(under), recursive))
        commit = self._commit(repo, unquote(tail) if marker else "main")
        blobs = _flag(query, "blobs")
        info = {
            "id": repo.repo_id, "_id": repo.repo_id, "sha": commit.sha,
            "private": False, "gated": "manual" if repo.gated else False, "disabled": False,
            "siblings": [_sibling(p, d, blobs) for p, d in sorted(commit.files.items())],
            "tags": [],
        }
        if repo_type == "model" and "config.json" in commit.files:
            try:
                config = json.loads(commit.files["config.json"])
                info["config"] = {"model_type": config.get("model_type"),
                                  "architectures": config.get("architectures")}
            except ValueError:
                pass
        return _json(info)


# --------------------------------------------------------------------------- helpers


def _json(value: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return any(v.lower() in ("1", "true") for v in query.get(name, []))


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _byte_range(header: str, size: int) -> tuple[int, int]:
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise _Reply(416, None, f"Invalid range {header!r}",
                     {"Content-Range": f"bytes */{size}"})
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise _Reply(416, None, f"Range {header!r} not satisfiable for {size} bytes",
                     {"Content-Range": f"bytes */{size}"})
    return start, end


def _is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _etag(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if _is_lfs(path, data) else _git_blob_sha(data)


def _lfs(path: str, data: bytes) -> dict[str, Any] | None:
    if not _is_lfs(path, data):
        return None
    return {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}


def _sibling(path: str, data: bytes, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    lfs = _lfs(path, data)
    sibling: dict[str, Any] = {"rfilename": path, "size": len(data),
                               "blobId": _git_blob_sha(data)}
    if lfs:
        sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"],
                          "pointerSize": lfs["pointerSize"]}
    return sibling


def _tree(commit: Commit, under: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = f"{under.strip('/')}/" if under.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, data in sorted(commit.files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if not recursive and "/" in rest:
            folder = prefix + rest.split("/", 1)[0]
            entries.setdefault(folder, {"type": "directory", "path": folder,
                                        "oid": _git_blob_sha(folder.encode()), "size": 0})
            continue
        parts = rest.split("/")[:-1]
        for depth in range(1, len(parts) + 1):  # recursive listings name the folders too
            folder = prefix + "/".join(parts[:depth])
            entries.setdefault(folder, {"type": "directory", "path": folder,
                                        "oid": _git_blob_sha(folder.encode()), "size": 0})
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data),
                                 "oid": _git_blob_sha(data)}
        lfs = _lfs(path, data)
        if lfs:
            entry["lfs"] = lfs
        entries[path] = entry
    return list(entries.values())


def _read_folder(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- for tests


def go_online(monkeypatch: Any, endpoint: str, home: Path) -> None:
    """Point huggingface_hub at `endpoint` for one test: the tests' conftest makes it
    offline (HF_HUB_OFFLINE=1, read once at import), and no token of the machine may leak
    into a request. The cache goes to `home`."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Both, so that a call without an explicit endpoint reaches the stand-in too, never
    # the real Hub (hf_hub_url starts from the template, made from ENDPOINT at import).
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    try:  # `datasets` reads the endpoint and offline mode once too, at its import
        from datasets import config as datasets_config
    except ImportError:
        return
    monkeypatch.setattr(datasets_config, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL",
                        endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets_config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: Any) -> tuple[Path, int]:
    """A random tiny Llama saved with save_pretrained, and its num_parameters(). Import it
    into a test module to use it."""
    from tests.support.tiny import save_tiny_model

    folder = tmp_path_factory.mktemp("tiny-model")
    return folder, save_tiny_model(folder)


@pytest.fixture
def tiny_hub(monkeypatch: Any, tmp_path: Path, tiny_model: tuple[Path, int]) -> Any:
    """The stand-in serving `acme/tiny` (the tiny model) and `acme/gated` (the same, gated,
    for the token `hf_granted`), with huggingface_hub pointed at it. Import it (and
    tiny_model) into a test module to use it."""
    with HubStandIn() as server:
        server.add_repo("acme/tiny", tiny_model[0])
        server.add_repo("acme/gated", tiny_model[0], gated=True, tokens={"hf_granted"})
        go_online(monkeypatch, server.endpoint, tmp_path / "hf-home")
        yield server


ADDED_TOKENS = ["<|tool|>", "<|think|>"]  # what acme/chat-grown's chat template adds


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory: Any) -> dict[str, Path]:
    """Two folders: `base`, a tiny chat model trained briefly and saved with its tokenizer
    (tests/support/tiny.save_chat_model); `grown`, the same weights with a tokenizer whose
    chat template adds ADDED_TOKENS (more tokens than the embeddings hold)."""
    from tests.support.tiny import grow_chat_template, save_chat_model

    root = tmp_path_factory.mktemp("chat-models")
    save_chat_model(root / "base")
    grow_chat_template(root / "base", root / "grown", ADDED_TOKENS)
    return {"base": root / "base", "grown": root / "grown"}


def chat_dataset_files(rows: list[dict], evals: list[dict], file_format: str
                       ) -> dict[str, bytes]:
    """A dataset repository's files as the Hub's own converter lays them out: data/ with a
    train and a test split, as JSONL or as parquet."""
    if file_format == "jsonl":
        def encode(records: list[dict]) -> bytes:
            return "".join(json.dumps(r) + "\n" for r in records).encode()
        return {"data/train.jsonl": encode(rows), "data/test.jsonl": encode(evals)}
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(records: list[dict]) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buffer)
        return buffer.getvalue()
    return {"data/train-00000-of-00001.parquet": table(rows),
            "data/test-00000-of-00001.parquet": table(evals)}


@pytest.fixture
def chat_hub(monkeypatch: Any, tmp_path: Path, chat_models: dict[str, Path]) -> Any:
    """The stand-in serving the chat models (`acme/chat-base`, `acme/chat-grown`, and
    `acme/chat-gated` for the token `hf_granted`) and the arithmetic chats as the dataset
    repositories `acme/chats-jsonl` and `acme/chats-parquet`, huggingface_hub and datasets
    pointed at it. Import it (and chat_models) into a test module to use it."""
    from tests.support.tiny import chat_rows

    rows, evals = chat_rows(64, seed=1), chat_rows(8, seed=2)
    with HubStandIn() as server:
        server.add_repo("acme/chat-base", chat_models["base"])
        server.add_repo("acme/chat-grown", chat_models["grown"])
        server.add_repo("acme/chat-gated", chat_models["base"], gated=True,
                        tokens={"hf_granted"})
        for file_format in ("jsonl", "parquet"):
            server.add_repo(f"acme/chats-{file_format}",
                            chat_dataset_files(rows, evals, file_format), repo_type="dataset")
        go_online(monkeypatch, server.endpoint, tmp_path / "hf-home")
        yield server


def file_gets(hub: HubStandIn, repo: str, repo_type: str = "model") -> int:
    """Downloads of a repository's files (weights, tokenizer, data): whole-file GETs."""
    return hub.downloads(f"/{repo}/resolve/" if repo_type == "model" else
                         f"/datasets/{repo}/resolve/")
