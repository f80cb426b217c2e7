"""Blobs on a workspace datastore, reached as the caller (shared keys are off: azure-ai-ml
and these calls read and write with the caller's own identity)."""

from __future__ import annotations

from typing import Any


def datastore_blob(
    client: Any, datastore: str, blob: str, credential: Any, transport: Any = None
) -> tuple[Any, str]:
    """A ``BlobClient`` for ``blob`` on the named datastore, and "account/container" for
    messages."""
    from azure.storage.blob import BlobClient

    store = client.datastores.get(datastore)
    # the service passes null through for a datastore made without them (as ours were):
    # Azure's own defaults then, the public cloud's
    protocol, endpoint = store.protocol or "https", store.endpoint or "core.windows.net"
    url = f"{protocol}://{store.account_name}.blob.{endpoint}"
    kwargs = {"transport": transport} if transport is not None else {}
    where = f"{store.account_name}/{store.container_name}"
    return BlobClient(url, store.container_name, blob, credential=credential, **kwargs), where
