from datetime import UTC, datetime

from bson import ObjectId

from pipeline.clients import Client, Quotas


def test_a_client_round_trips_through_its_document():
    client = Client(
        id=ObjectId(),
        name="acme",
        key_prefix="msk_0123456789ab",
        key_hash="h",
        active=True,
        quotas=Quotas(max_pending_items=10, budget=2.5),
    )
    doc = client.to_doc()
    assert doc["quotas"] == {
        "maxPendingItems": 10,
        "requestsPerMinute": None,
        "budget": 2.5,
    }
    assert Client.from_doc(doc) == client


def test_a_stored_client_reads_its_times_and_missing_quotas():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    doc = {
        "_id": ObjectId(),
        "name": "old",
        "keyPrefix": "msk_x",
        "keyHash": "h",
        "active": False,
        "_metadata": {"createdAt": created, "updatedAt": created},
    }
    client = Client.from_doc(doc)
    assert client.quotas == Quotas()
    assert client.created_at == created and not client.active
    assert client.actor == f"client:{doc['_id']}"
