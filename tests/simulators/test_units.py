"""Fast tests of the simulators' pure parts: the HPACK coder, the quota, the tally's shown."""
from __future__ import annotations

import random

import hpack
import orjson
import pytest

from simulators.hpack_codec import CachingDecoder, LiteralEncoder
from simulators.quota import Quota
from simulators.tally import Tally


def test_decoder_reads_what_hpack_encodes_huffman_or_not_indexed_or_not():
    encoder, ours, reference = hpack.Encoder(), CachingDecoder(), hpack.Decoder()
    for i in range(300):
        headers = [(":method", "POST"), (":path", f"/3/device/{i:064x}"), hpack.NeverIndexedHeaderTuple("authorization", "bearer " + "j" * 180),
                   ("apns-topic", "com.example"), (f"x-{i % 7}", "v" * random.randint(0, 300))]
        if i == 150:
            encoder.header_table_size = 256  # a table size update at the start of the next block
            ours.max_allowed_table_size = reference.max_allowed_table_size = 4096
        block = encoder.encode(headers, huffman=bool(i % 2))
        assert ours.decode(block, raw=True) == reference.decode(block, raw=True)


def test_decoder_refuses_a_truncated_block_and_an_oversized_list():
    block = hpack.Encoder().encode([("x-long", "v" * 100)], huffman=False)
    with pytest.raises(hpack.HPACKDecodingError):
        CachingDecoder().decode(block[:-10], raw=True)
    decoder = CachingDecoder()
    decoder.max_header_list_size = 50
    with pytest.raises(hpack.OversizedHeaderListError):
        decoder.decode(block, raw=True)


def test_encoder_blocks_are_read_by_hpack_and_signal_a_table_size_change():
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    headers = [(":status", "200"), ("content-length", "0"), ("apns-id", "a" * 36), ("retry-after", "1"), (b":status", b"429")]
    assert decoder.decode(encoder.encode(headers)) == [(str(k, "utf-8") if isinstance(k, bytes) else k,
                                                       str(v, "utf-8") if isinstance(v, bytes) else v) for k, v in headers]
    encoder.header_table_size = 0
    block = encoder.encode([(":status", "200")])
    assert block[0] == 0x20  # size update to 0 first
    assert decoder.decode(block) == [(":status", "200")]


def test_quota_lets_a_period_through_then_refills_at_its_rate():
    quota = Quota(limit=10, period_seconds=1)
    assert [quota.take("p", now=100.0) for _ in range(10)] == [None] * 10
    assert quota.take("p", now=100.0) == 1
    assert quota.take("other", now=100.0) is None  # per key
    assert quota.take("p", now=100.15) is None  # 0.15 s refilled one
    assert quota.take("p", now=100.15) == 1
    per_minute = Quota(limit=1, period_seconds=60)
    assert per_minute.take("p", now=0.0) is None
    assert per_minute.take("p", now=0.0) == 60
    assert Quota().take("p") is None  # no quota


def test_shown_counts_a_collapse_id_once_across_batches():
    tally = Tally()
    tally.apply({"attempts": ["t", "t"], "delivered": [["t", "m.0"]], "first_at": 1.0, "last_at": 2.0})
    tally.apply({"attempts": ["t"], "delivered": [["t", "m.0"], ["t", None], ["t", "m.1"]], "first_at": 3.0, "last_at": 4.0})
    assert tally.counts_of("t") == {"delivered": 4, "attempts": 3, "shown": 3}
    assert tally.stats()["first_at"] == 1.0 and tally.stats()["last_delivered_at"] == 4.0


def test_hms_success_answer_is_the_json_hms_answer_makes():
    from simulators.hms import SUCCESS, hms_answer, hms_success  # noqa: PLC0415

    made, fast = orjson.loads(hms_answer(200, *SUCCESS).body), orjson.loads(hms_success().body)
    assert set(made) == set(fast) == {"code", "msg", "requestId"}
    assert (fast["code"], fast["msg"]) == (made["code"], made["msg"]) == SUCCESS
    assert fast["requestId"].isdigit() and len(fast["requestId"]) == len(made["requestId"])
    assert hms_success().headers == hms_answer(200, *SUCCESS).headers
