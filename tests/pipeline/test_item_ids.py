import pytest
from bson import ObjectId

from pipeline.jobs.item_ids import (
    MAX_ITEMS_PER_JOB,
    item_id,
    item_ids,
    new_item_base,
)


def test_a_jobs_item_ids_are_consecutive_and_ordered_by_seq():
    base = new_item_base()
    ids = item_ids(base, 0, 1000)
    assert ids[0] == base == item_id(base, 0)
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert ids[999] == item_id(base, 999)
    assert int(str(ids[999]), 16) - int(str(ids[0]), 16) == 999


def test_windows_are_clamped_to_the_valid_seqs():
    base = new_item_base()
    assert item_ids(base, -5, 2) == [item_id(base, 0), item_id(base, 1)]
    assert (
        len(item_ids(base, MAX_ITEMS_PER_JOB - 1, MAX_ITEMS_PER_JOB + 9)) == 1
    )
    with pytest.raises(ValueError, match="out of range"):
        item_id(base, MAX_ITEMS_PER_JOB)


def test_bases_of_different_jobs_do_not_overlap():
    bases = [new_item_base() for _ in range(1000)]
    prefixes = {b.binary[:9] for b in bases}
    assert len(prefixes) == 1000
    # Time-ordered like the job ids made at the same moment.
    assert (
        abs(bases[0].generation_time - ObjectId().generation_time).seconds < 5
    )
