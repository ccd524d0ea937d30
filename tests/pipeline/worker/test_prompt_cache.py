"""The worker's prompt cache stays bounded and keeps what is in use."""

from bson import ObjectId

from pipeline.settings import Settings
from pipeline.store import Store, create_mongo_client
from pipeline.worker.engine import open_worker
from pipeline.worker.prompt_cache import PROMPT_CACHE_ENTRIES, PromptCache
from tests.support.inprocess import local_sync


def test_the_least_recently_used_version_is_dropped_first():
    cache = PromptCache(max_entries=2)
    a, b, c = ((ObjectId(), 1) for _ in range(3))
    cache.update({a: "A", b: "B"})
    assert cache.get(a) == "A"  # a is now the most recently used
    cache.update({c: "C"})
    assert len(cache) == 2
    assert b not in cache
    assert cache.missing([a, b, c]) == {b}
    assert (cache.get(a), cache.get(c)) == ("A", "C")


def test_the_cache_never_grows_past_its_size():
    cache = PromptCache(max_entries=10)
    for n in range(1000):
        cache.update({(ObjectId(), n): f"prompt {n}"})
        assert len(cache) <= 10
    assert len(cache) == 10


def test_the_worker_keeps_its_prompts_in_a_bounded_cache(tmp_path):
    settings = Settings.from_env({"METASYNC_HOME": str(tmp_path)})
    # The client connects lazily: nothing here reaches a database.
    store = Store(create_mongo_client("mongodb://127.0.0.1:9"), "unused")
    worker = open_worker("openai", 0, settings, local_sync(), store=store)
    prompts = worker.preparation.prompts
    assert isinstance(prompts, PromptCache)
    assert prompts.max_entries == PROMPT_CACHE_ENTRIES
    for n in range(PROMPT_CACHE_ENTRIES + 50):
        prompts.update({(ObjectId(), n): "x"})
    assert len(prompts) == PROMPT_CACHE_ENTRIES
