"""Catalog pricing: live prices, and batch prices (half of live unless set)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.catalog import BATCH_DISCOUNT, ModelSpec, Pricing


def test_batch_prices_default_to_half_of_live() -> None:
    pricing = Pricing(input_per_million=3.0, output_per_million=15.0)
    assert BATCH_DISCOUNT == 0.5
    assert pricing.cost(1_000_000, 1_000_000) == pytest.approx(18.0)
    assert pricing.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(9.0)
    assert pricing.batch_input == pytest.approx(1.5)
    assert pricing.batch_output == pytest.approx(7.5)


def test_batch_prices_can_be_set_apart() -> None:
    pricing = Pricing.model_validate(
        {
            "inputPerMillion": 2.0,
            "outputPerMillion": 8.0,
            "batchInputPerMillion": 0.5,
        }
    )
    # The output price was not given: it stays half of live.
    assert pricing.cost(2_000_000, 1_000_000, batch=True) == pytest.approx(
        1.0 + 4.0
    )
    assert pricing.cost(2_000_000, 1_000_000) == pytest.approx(12.0)


def test_batch_prices_are_read_from_a_spec_and_written_back() -> None:
    spec = ModelSpec.model_validate(
        {
            "name": "m",
            "provider": "openai",
            "pricing": {
                "inputPerMillion": 1,
                "outputPerMillion": 2,
                "batchOutputPerMillion": 0.75,
            },
        }
    )
    stored = spec.model_dump(by_alias=True)["pricing"]
    assert stored["batchOutputPerMillion"] == 0.75
    assert stored["batchInputPerMillion"] is None
    again = Pricing.model_validate(stored)
    assert again.batch_output == 0.75 and again.batch_input == 0.5


def test_negative_batch_prices_are_refused() -> None:
    with pytest.raises(ValidationError, match="batchInputPerMillion"):
        Pricing.model_validate({"batchInputPerMillion": -1})
