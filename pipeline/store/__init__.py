"""MongoDB persistence: the connection, document helpers and indexes."""

from pipeline.store.database import Store, create_mongo_client
from pipeline.store.document_collection import (
    DocumentCollection,
    new_metadata,
    not_deleted,
    parse_object_id,
)
from pipeline.store.retry import safe_operation

__all__ = [
    "DocumentCollection",
    "Store",
    "create_mongo_client",
    "new_metadata",
    "not_deleted",
    "parse_object_id",
    "safe_operation",
]
