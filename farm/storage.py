"""Run-directory I/O through pyarrow filesystems: local paths, file://, s3://, gs://.

Writes are atomic: on a local file system, a temp name beginning with `.` then rename;
on object stores (no rename), the final key is written in one put, and callers write
`_SUCCESS` last.

Credentials never travel in a run URI (it is printed, logged and shown in the report): they come
from the environment, as for any AWS or Google client: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
(or an instance profile, `AWS_PROFILE`), `GOOGLE_APPLICATION_CREDENTIALS` (or the node's service
account). A URI with a user/password part or a key/secret/token query parameter is refused.
An S3-compatible endpoint (MinIO, Ceph, moto) is named by the standard `AWS_ENDPOINT_URL` (or
`AWS_ENDPOINT_URL_S3`) environment variable, which pyarrow reads; pyarrow's URI parameters
(`s3://bucket/run?endpoint_override=host:port&scheme=http`) also work.
"""

from __future__ import annotations

import io
import json
import os
import re
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from farm.errors import RunError

_SECRET_PARAMETER = re.compile(r"key|secret|token|password|credential|signature", re.IGNORECASE)


def refuse_credentials(uri: str) -> None:
    """RunError (not echoing them) when `uri` carries credentials: user info or a secret-looking query key."""
    parts = urllib.parse.urlsplit(uri)
    keys = [key for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    if "@" in parts.netloc or any(_SECRET_PARAMETER.search(key) for key in keys):
        where = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
        raise RunError(f"{where}: credentials in a run URI would be written into logs and the report; "
                       "give them through the environment (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                       "GOOGLE_APPLICATION_CREDENTIALS) or the node's instance profile / service account")


def json_bytes(obj) -> bytes:
    """How a run's JSON files are written: sorted keys, indented, a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def table_bytes(table: pa.Table) -> bytes:
    """How a run's Parquet files are written: zstd-compressed."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class RunDir:
    """A run directory on some pyarrow filesystem. Paths given to methods are relative to it."""

    def __init__(self, uri: str):
        self.uri = str(uri)
        if "://" in self.uri:
            refuse_credentials(self.uri)
            self.fs, root = pafs.FileSystem.from_uri(self.uri)
        else:
            self.fs, root = pafs.LocalFileSystem(), os.path.abspath(self.uri)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.local and "://" not in self.uri:
            self.uri = self.root  # absolute: Ray workers and Tune trials may run in another directory

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def listdir(self, rel: str = "") -> list[str]:
        if not self.exists(rel):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), recursive=False))
        return sorted(i.base_name for i in infos)

    def delete(self, rel: str) -> None:
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))

    # ------------------------------------------------------------ bytes
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic write: readers see the old file or the whole new one, never a part."""
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.local:
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return
        tmp = f"{parent}/.{final.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        _write_synced(tmp, data)
        os.replace(tmp, final)

    def replace_dir(self, rel: str, files: dict[str, bytes]) -> None:
        """Make the directory `rel` hold exactly `files` (name -> bytes, written in their order).

        Local: written into a temporary directory beside it (a name beginning with `.`), then renamed into
        place, so a reader sees the old directory or the whole new one (or, for an instant, none). Object
        stores (no rename): the old keys are deleted, then the files are put in order: callers put the file
        that marks the directory complete (`_SUCCESS`) last."""
        if not self.local:
            self.delete(rel)
            for name, data in files.items():
                self.write_bytes(f"{rel}/{name}", data)
            return
        final = self.path(rel)
        parent, base = final.rsplit("/", 1)
        tmp, old = (f"{parent}/.{base}.{uuid.uuid4().hex[:8]}.{end}" for end in ("tmp", "old"))
        os.makedirs(tmp)
        for name, data in files.items():
            _write_synced(f"{tmp}/{name}", data)
        if os.path.isdir(final):
            os.rename(final, old)
        os.rename(tmp, final)
        if os.path.isdir(old):
            self.fs.delete_dir(old)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as src:
            return src.read()

    # ------------------------------------------------------------ typed helpers
    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, json_bytes(obj))

    def read_json(self, rel: str):
        return json.loads(self.read_text(rel))

    def write_table(self, rel: str, table: pa.Table) -> None:
        self.write_bytes(rel, table_bytes(table))

    def read_table(self, rel: str, columns=None) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs, columns=columns)

    def read_schema(self, rel: str) -> pa.Schema:
        with self.fs.open_input_file(self.path(rel)) as src:
            return pq.read_schema(src)
