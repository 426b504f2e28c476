"""
Known-answer tests over ``tests/vectors/wire/``: valid vectors both ways, invalid ones by error.

The JSON-to-message mapping here is written apart from the generator's
message-to-JSON mapping, so that a mistake in one does not hide in the other.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from townsquare import wire
from townsquare.wire import errors

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "wire"

KINDS: dict[str, type[wire.Message]] = {
    "text": wire.Text,
    "reply": wire.Reply,
    "reaction": wire.Reaction,
    "edit": wire.Edit,
    "delete": wire.Delete,
    "attachment": wire.Attachment,
    "profile": wire.Profile,
    "group_title": wire.GroupTitle,
}
BYTES_FIELDS = {"message_id", "in_reply_to", "target_id", "blob_id", "key", "sha256", "preview"}
REF_FIELDS = {"ref", "avatar"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _load(name: str) -> list[dict[str, object]]:
    content = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert content["protocol_version"] == wire.PROTOCOL_VERSION
    vectors: list[dict[str, object]] = content["vectors"]
    return vectors


VALID = _load("messages.json")
INVALID = _load("invalid.json")


def _value(name: str, value: object) -> object:
    if name in BYTES_FIELDS:
        assert isinstance(value, str)
        return bytes.fromhex(value)
    if name in REF_FIELDS:
        assert isinstance(value, dict)
        return wire.AttachmentRef(
            bytes.fromhex(value["blob_id"]),
            value["content_type"],
            value["size"],
            key=bytes.fromhex(value["key"]),
            sha256=bytes.fromhex(value["sha256"]),
        )
    return value


def message_from_json(kind: str, fields: dict[str, object]) -> wire.Message:
    values = {name: _value(name, value) for name, value in fields.items()}
    milliseconds = values.pop("sent_at_ms")
    assert isinstance(milliseconds, int)
    sent_at = EPOCH + timedelta(milliseconds=milliseconds)
    return KINDS[kind](**values, sent_at=sent_at)


@pytest.mark.parametrize("vector", VALID, ids=[str(v["description"]) for v in VALID])
def test_valid_vector_decodes_to_its_fields(vector: dict[str, object]) -> None:
    expected = message_from_json(str(vector["kind"]), vector["message"])  # type: ignore[arg-type]
    decoded = wire.decode(bytes.fromhex(str(vector["encoded"])))
    assert type(decoded) is type(expected)
    assert decoded.KIND.value == vector["kind_number"]
    # Field by field, then as a whole, so a failure names the field.
    for name in ("message_id", "sent_at", *(f.name for f in type(expected).FIELDS)):
        assert getattr(decoded, name) == getattr(expected, name), name
    assert decoded == expected


@pytest.mark.parametrize("vector", VALID, ids=[str(v["description"]) for v in VALID])
def test_valid_vector_encodes_to_its_bytes(vector: dict[str, object]) -> None:
    message = message_from_json(str(vector["kind"]), vector["message"])  # type: ignore[arg-type]
    assert wire.encode(message).hex() == vector["encoded"]


@pytest.mark.parametrize("vector", INVALID, ids=[str(v["description"]) for v in INVALID])
def test_invalid_vector_raises_its_error(vector: dict[str, object]) -> None:
    expected = getattr(errors, str(vector["error"]))
    with pytest.raises(expected) as raised:
        wire.decode(bytes.fromhex(str(vector["encoded"])))
    assert type(raised.value) is expected
    attributes = vector.get("error_attributes", {})
    assert isinstance(attributes, dict)
    for name, value in attributes.items():
        if name == "sent_at_ms":
            actual: object = (raised.value.sent_at - EPOCH) // timedelta(milliseconds=1)
        elif name == "message_id":
            actual = raised.value.message_id.hex()
        else:
            actual = getattr(raised.value, name)
        assert actual == value, name


def test_every_kind_has_a_valid_vector() -> None:
    assert {v["kind"] for v in VALID} == {k.name.lower() for k in wire.Kind}


def test_every_decode_error_has_an_invalid_vector() -> None:
    leaves = {
        cls.__name__
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.DecodeError)
        and not cls.__subclasses__()
    }
    assert leaves <= {str(v["error"]) for v in INVALID}


def test_vector_descriptions_are_unique() -> None:
    for vectors in (VALID, INVALID):
        descriptions = [v["description"] for v in vectors]
        assert len(descriptions) == len(set(descriptions))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wire_vector_generator", VECTORS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vector_files_are_what_the_generator_writes() -> None:
    built = _generator().build()
    for name, text in built.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run tests/vectors/wire/generate.py"
        )


def test_fragile_characters_are_escaped_in_the_files() -> None:
    # The files must survive an editor that normalises Unicode on save.
    for name in ("messages.json", "invalid.json"):
        text = (VECTORS / name).read_text(encoding="utf-8")
        for char in ("\uf900", "\u0301", "\u200d", "\u3000"):
            assert char not in text
