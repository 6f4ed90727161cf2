"""Batch API lines through the real request pipeline: recorded with their batch, sold cheaper.

A line is an ordinary request with `batch_id` set (as the batch runner sends
it); its usage record names the batch and its revenue is the batch price:
the catalogue entry's own batch price, else the deployment's batch share
(half, as OpenAI's Batch API) of the price that would apply interactively.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.gateway.tenancy.test_steps import ENTRY, gateway, price, records, request, usage_of


async def test_a_batch_line_is_recorded_with_its_batch_at_half_price() -> None:
    async with gateway() as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice")
        line = replace(request(secret, "line-1"), batch_id="batch_abc")
        usage = usage_of(await parts.serving.serve(line))
        await parts.serving.serve(request(secret, "chat-1"))
        got = await records(parts)
        full = price(usage["prompt"], usage["completion"])
        assert got["line-1"].batch_id == "batch_abc"
        assert got["line-1"].revenue_usd == pytest.approx(full / 2)
        assert got["chat-1"].batch_id is None
        assert got["chat-1"].revenue_usd == pytest.approx(full)


async def test_the_batch_share_is_a_setting() -> None:
    async with gateway(batch_price_share=0.25) as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice")
        line = replace(request(secret, "line-1"), batch_id="batch_abc")
        usage = usage_of(await parts.serving.serve(line))
        record = (await records(parts))["line-1"]
        assert record.revenue_usd == pytest.approx(price(usage["prompt"], 5) / 4)


async def test_a_catalogue_batch_price_wins_over_the_share() -> None:
    entry = {**ENTRY, "batch_price_in_per_1m": 0.5, "batch_price_out_per_1m": 3.0}
    async with gateway(model_catalogue=[entry]) as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice")
        line = replace(request(secret, "line-1"), batch_id="batch_abc")
        usage = usage_of(await parts.serving.serve(line))
        record = (await records(parts))["line-1"]
        expected = (usage["prompt"] * 0.5 + usage["completion"] * 3.0) / 1_000_000
        assert record.revenue_usd == pytest.approx(expected)


async def test_a_keys_own_price_is_discounted_for_its_batch_lines() -> None:
    async with gateway() as (parts, _):
        own = {ENTRY["name"]: {"input_per_1m": 100.0, "output_per_1m": 1000.0}}
        _, secret = await parts.tenancy.directory.create("alice", prices=own)
        line = replace(request(secret, "line-1"), batch_id="batch_abc")
        usage = usage_of(await parts.serving.serve(line))
        record = (await records(parts))["line-1"]
        full = (usage["prompt"] * 100.0 + usage["completion"] * 1000.0) / 1_000_000
        assert record.revenue_usd == pytest.approx(full / 2)
