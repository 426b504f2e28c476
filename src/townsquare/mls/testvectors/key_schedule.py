"""
Checks ``key-schedule.json``: GroupContexts, epoch secrets, external key, exporter (RFC 9420 §8).
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_schedule import derive_epoch_secrets, external_key_pair, mls_exporter
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    list_field,
    obj_field,
    optional_hex_field,
    str_field,
)

# The vector's name for each secret, and the EpochSecrets field that holds it.
_SECRETS = (
    ("joiner_secret", "joiner_secret"),
    ("welcome_secret", "welcome_secret"),
    ("init_secret", "init_secret"),
    ("sender_data_secret", "sender_data_secret"),
    ("encryption_secret", "encryption_secret"),
    ("exporter_secret", "exporter_secret"),
    ("epoch_authenticator", "epoch_authenticator"),
    ("external_secret", "external_secret"),
    ("confirmation_key", "confirmation_key"),
    ("membership_key", "membership_key"),
    ("resumption_psk", "resumption_psk"),
)


def check(case: Mapping[str, object]) -> None:
    """
    Verify one key-schedule vector completely, epoch by epoch.

    :raises VectorMismatch: on the first difference.
    """
    suite_id = int_field(case, "cipher_suite")
    suite = get_cipher_suite(suite_id)
    group_id = hex_field(case, "group_id")
    init_secret = hex_field(case, "initial_init_secret")
    for index, epoch in enumerate(list_field(case, "epochs")):
        if not isinstance(epoch, Mapping):
            raise VectorMismatch(f"epochs[{index}] is not an object")
        where = f"epochs[{index}]"
        group_context = GroupContext(
            cipher_suite=suite_id,
            group_id=group_id,
            epoch=index,
            tree_hash=hex_field(epoch, "tree_hash"),
            confirmed_transcript_hash=hex_field(epoch, "confirmed_transcript_hash"),
            extensions=(),
        )
        expect_equal(
            f"{where}.group_context", group_context.encode(), hex_field(epoch, "group_context")
        )
        secrets = derive_epoch_secrets(
            suite,
            init_secret=init_secret,
            commit_secret=hex_field(epoch, "commit_secret"),
            psk_secret=optional_hex_field(epoch, "psk_secret"),
            group_context=group_context,
        )
        for vector_name, attribute in _SECRETS:
            expect_equal(
                f"{where}.{vector_name}",
                getattr(secrets, attribute),
                hex_field(epoch, vector_name),
            )
        _, external_pub = external_key_pair(suite, secrets.external_secret)
        expect_equal(f"{where}.external_pub", external_pub, hex_field(epoch, "external_pub"))
        exporter = obj_field(epoch, "exporter")
        exported = mls_exporter(
            suite,
            secrets.exporter_secret,
            str_field(exporter, "label").encode(),
            hex_field(exporter, "context"),
            int_field(exporter, "length"),
        )
        expect_equal(f"{where}.exporter.secret", exported, hex_field(exporter, "secret"))
        init_secret = secrets.init_secret
