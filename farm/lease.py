"""Where an object store keeps a writer's lease (`farm.lock`): one object, written so that two writers cannot both
take it where the store allows.

On S3 (`s3://`, when boto3 is installed) the lease is written with S3's conditional writes (2024): a new lease
with `If-None-Match: *` (it fails when any lease exists), a takeover of an expired one and every renewal with
`If-Match: <the ETag read>` (it fails when another writer has written it since). Of two writers that read one
expired lease, exactly one takes it; the other refuses, naming it (a store that answers a conditional write with
501 Not Implemented is written as below). Elsewhere (`gs://`, other pyarrow
filesystems, S3 without boto3), pyarrow offers no conditional write: the lease is written, then read back, and a
writer refuses when another's token is there, which narrows the window of two writers starting on one expired
lease within the same instant but cannot close it.
"""

from __future__ import annotations

import json
import urllib.parse

from farm.storage import RunDir


class LeaseObject:
    """The lease object `rel` of `run`: `read()` -> (record or None, version), `put(record, version)` -> the new
    version, or None when another writer got there first (version None: only if there is no lease)."""

    def __init__(self, run: RunDir, rel: str):
        self.run, self.rel = run, rel
        self.client = _s3_client(run.uri)
        if self.client is not None:
            self.bucket, _, self.key = run.path(rel).partition("/")

    def read(self) -> tuple[dict | None, str | None]:
        if self.client is None:
            return _record(lambda: self.run.read_bytes(self.rel) if self.run.is_file(self.rel) else None), None
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None, None
        return _record(got["Body"].read), got["ETag"]

    def put(self, record: dict, version: str | None) -> str | None:
        body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        if self.client is None:  # no conditional write: write, then read back
            self.run.write_bytes(self.rel, body)
            return "written" if (self.read()[0] or {}).get("token") == record["token"] else None
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except ClientError as exc:  # 412: another writer wrote it first; 409: one is writing it now
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):
                return None
            if status == 501:  # a store without conditional writes (an older S3-compatible one): as elsewhere
                self.client = None
                return self.put(record, version)
            raise OSError(f"{self.run.path(self.rel)}: {exc}") from None
        except BotoCoreError as exc:
            raise OSError(f"{self.run.path(self.rel)}: {exc}") from None

    def delete(self) -> None:
        self.run.delete(self.rel)


def _record(read) -> dict | None:
    try:
        data = read()
        holder = None if data is None else json.loads(data)
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # half-written by a holder that is starting: no name to give
    return holder if isinstance(holder, dict) else None


def _s3_client(uri: str):
    """A boto3 S3 client for an s3:// run URI (its endpoint_override, scheme and region, else the environment's:
    AWS_ENDPOINT_URL, the credential chain), or None (another store, or no boto3)."""
    if not uri.startswith("s3://"):
        return None
    try:
        import boto3
    except ImportError:
        return None
    options = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query))
    endpoint = options.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme', 'https')}://{endpoint}"
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=options.get("region"))
