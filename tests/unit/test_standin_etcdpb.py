"""The stand-in's protobuf encoder/decoder for etcd's v3 messages (_etcdpb.py): round trips for every message,
byte-exact encodings checked by hand against the protobuf wire format, and clear errors for bad input."""

import pytest

from tests.fixtures.standins import _runtime as rt

KV = {"key": b"/registry/pods/a", "create_revision": 7, "mod_revision": 9, "version": 2, "value": b"\x00{}",
      "lease": 0}
HEADER = {"cluster_id": 2**64 - 1, "member_id": 1234567890123, "revision": 42, "raft_term": 3}

# One fully populated value per message (repeated fields with several entries, oneof members set).
SAMPLES = {
    "KeyValue": KV,
    "ResponseHeader": HEADER,
    "RangeRequest": {"key": b"/a", "range_end": b"/b", "limit": 10, "revision": 5, "serializable": True,
                     "keys_only": True, "count_only": False},
    "RangeResponse": {"header": HEADER, "kvs": [KV, dict(KV, key=b"/x", value=b"")], "more": True, "count": 2},
    "PutRequest": {"key": b"k", "value": b"v" * 300, "lease": 0, "prev_kv": True},
    "PutResponse": {"header": HEADER, "prev_kv": KV},
    "DeleteRangeRequest": {"key": b"k", "range_end": b"l", "prev_kv": False},
    "DeleteRangeResponse": {"header": HEADER, "deleted": 2, "prev_kvs": [KV, KV]},
    "Compare": {"result": rt.PB_COMPARE_EQUAL, "target": rt.PB_TARGET_CREATE, "key": b"k", "create_revision": 0,
                "range_end": b""},
    "RequestOp": {"request_put": {"key": b"k", "value": b"v", "lease": 0, "prev_kv": False}},
    "ResponseOp": {"response_delete_range": {"header": HEADER, "deleted": 1, "prev_kvs": []}},
    "TxnRequest": {
        "compare": [{"result": rt.PB_COMPARE_EQUAL, "target": rt.PB_TARGET_MOD, "key": b"k", "mod_revision": 9,
                     "range_end": b""}],
        "success": [{"request_put": {"key": b"k", "value": b"v", "lease": 0, "prev_kv": False}}],
        "failure": [{"request_range": {"key": b"k", "range_end": b"", "limit": 0, "revision": 0,
                                       "serializable": False, "keys_only": False, "count_only": False}}],
    },
    "TxnResponse": {"header": HEADER, "succeeded": True,
                    "responses": [{"response_put": {"header": HEADER, "prev_kv": None}}]},
}


def test_every_message_has_a_sample():
    assert sorted(SAMPLES) == sorted(rt.PB_MESSAGES)


@pytest.mark.parametrize("message", sorted(SAMPLES))
def test_round_trip(message):
    data = rt.pb_encode(message, SAMPLES[message])
    assert rt.pb_decode(message, data) == SAMPLES[message]
    assert rt.pb_encode(message, rt.pb_decode(message, data)) == data


def test_varints_and_negative_int64():
    assert rt.pb_varint(0) == b"\x00"
    assert rt.pb_varint(300) == b"\xac\x02"
    assert rt.pb_varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    data = rt.pb_encode("KeyValue", {"version": -1})
    assert data == b"\x20" + b"\xff" * 9 + b"\x01"  # field 4, varint, 10 bytes of two's complement
    assert rt.pb_decode("KeyValue", data)["version"] == -1


def test_encoding_is_the_protobuf_wire_format():
    # RangeRequest{key: "/a", range_end: "/b"}: field 1 and 2, length-delimited
    assert rt.pb_encode("RangeRequest", {"key": "/a", "range_end": b"/b"}) == b"\x0a\x02/a\x12\x02/b"
    # proto3: defaults outside a oneof are not sent...
    assert rt.pb_encode("PutRequest", {"key": b"", "value": b"", "lease": 0, "prev_kv": False}) == b""
    # ...but a oneof member is, even at zero (Compare.create_revision = 5); range_end is field 64 (2-byte tag)
    assert rt.pb_encode("Compare", {"target": rt.PB_TARGET_CREATE, "create_revision": 0}) == b"\x10\x01\x28\x00"
    assert rt.pb_encode("Compare", {"range_end": b"z"}) == b"\x82\x04\x01z"
    # a nested message: TxnRequest.success[0].request_put.key
    assert rt.pb_encode("TxnRequest", {"success": [{"request_put": {"key": b"k"}}]}) == b"\x12\x05\x12\x03\x0a\x01k"


def test_decoding_fills_defaults_and_skips_unknown_fields():
    got = rt.pb_decode("RangeResponse", b"")
    assert got == {"header": None, "kvs": [], "more": False, "count": 0}
    # unknown field 15 of each wire type (varint, 64-bit, length-delimited, 32-bit) before count = 3
    unknown = b"\x78\x01" + b"\x79" + b"\x00" * 8 + b"\x7a\x02ab" + b"\x7d" + b"\x00" * 4
    assert rt.pb_decode("RangeResponse", unknown + b"\x20\x03")["count"] == 3
    assert "create_revision" not in rt.pb_decode("Compare", b"\x10\x01")  # oneof member not sent
    # the last oneof member on the wire wins and clears the others
    assert rt.pb_decode("RequestOp", b"\x12\x00\x1a\x00") == {"request_delete_range": {
        "key": b"", "range_end": b"", "prev_kv": False}}


@pytest.mark.parametrize("data, message", [
    (b"\x20", "truncated varint"),
    (b"\x20" + b"\xff" * 11, "longer than 10 bytes"),
    (b"\x0a\x05ab", "5 bytes announced, 2 left"),
    (b"\x0a\x01", "1 bytes announced, 0 left"),
    (b"\x18\x00" + b"\x79\x00", "truncated fixed-width"),
    (b"\x0b", "unsupported wire type 3"),
    (b"\x1a\x00", "KeyValue.mod_revision: wire type 2 does not fit int64"),
])
def test_malformed_input_is_a_clear_error(data, message):
    with pytest.raises(rt.ProtobufError, match=message):
        rt.pb_decode("KeyValue", data)


def test_bad_values_are_refused_when_encoding():
    with pytest.raises(rt.ProtobufError, match="KeyValue has no field nope"):
        rt.pb_encode("KeyValue", {"nope": 1})
    with pytest.raises(rt.ProtobufError, match="uint64 value -1 out of range"):
        rt.pb_encode("ResponseHeader", {"cluster_id": -1})
