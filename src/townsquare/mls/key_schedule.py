"""
The key schedule (RFC 9420 §8): from the previous epoch's init secret to this epoch's secrets.

RFC 9420 §8, Figure 22, with ``KDF.Extract`` taking its salt from above and
its input keying material from the left::

                     init_secret_[n-1]
                           |
     commit_secret --> KDF.Extract
                           |
                   ExpandWithLabel(., "joiner", GroupContext_[n], KDF.Nh)
                           |
                      joiner_secret
                           |
 psk_secret (or 0) --> KDF.Extract
                           |
                           +--> DeriveSecret(., "welcome") = welcome_secret
                           |
                   ExpandWithLabel(., "epoch", GroupContext_[n], KDF.Nh)
                           |
                      epoch_secret
                           |
                           +--> DeriveSecret(., <label>) = <secret>  (Table 4)
                           |
                     DeriveSecret(., "init") = init_secret_[n]

Members who process a Commit start from ``init_secret``
(:func:`derive_epoch_secrets`); members who join by Welcome start from the
``joiner_secret`` the Welcome carries (:func:`derive_epoch_secrets_from_joiner`),
and need :func:`welcome_secret` before they can read the GroupContext inside
the Welcome. Also here: the external key pair (§8), exporters (§8.5) and the
confirmation tag (§6.1, §8.1).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from townsquare.mls.ciphersuite import CipherSuite
from townsquare.mls.errors import ConfirmationTagMismatch
from townsquare.mls.group_context import GroupContext

__all__ = [
    "EpochSecrets",
    "confirmation_tag",
    "derive_epoch_secrets",
    "derive_epoch_secrets_from_joiner",
    "external_key_pair",
    "joiner_secret",
    "mls_exporter",
    "verify_confirmation_tag",
    "welcome_secret",
    "zero_secret",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochSecrets:
    """
    The secrets of one epoch (RFC 9420 §8, Table 4), with the secrets that led to them.

    Every field is secret except, in a narrow sense, ``epoch_authenticator``
    (§8.7), which members compare out of band; all are kept out of ``repr``.
    """

    #: Encrypted to new members in their Welcome (§12.4.3.1).
    joiner_secret: bytes = field(repr=False)
    #: Derives the key and nonce that encrypt the Welcome's GroupInfo (§12.4.3.1).
    welcome_secret: bytes = field(repr=False)
    #: The root of the epoch-derived secrets below.
    epoch_secret: bytes = field(repr=False)
    #: ``"sender data"``: keys that encrypt PrivateMessage sender data (§6.3.2).
    sender_data_secret: bytes = field(repr=False)
    #: ``"encryption"``: the root of the secret tree (§9).
    encryption_secret: bytes = field(repr=False)
    #: ``"exporter"``: input to the MLS-Exporter (§8.5).
    exporter_secret: bytes = field(repr=False)
    #: ``"external"``: derives the external HPKE key pair (§8, §8.3).
    external_secret: bytes = field(repr=False)
    #: ``"confirm"``: the MAC key of the confirmation tag (§6.1).
    confirmation_key: bytes = field(repr=False)
    #: ``"membership"``: the MAC key of PublicMessage membership tags (§6.2).
    membership_key: bytes = field(repr=False)
    #: ``"resumption"``: this epoch's resumption PSK (§8.6).
    resumption_psk: bytes = field(repr=False)
    #: ``"authentication"``: the epoch authenticator (§8.7).
    epoch_authenticator: bytes = field(repr=False)
    #: ``"init"``: the init secret the next epoch starts from.
    init_secret: bytes = field(repr=False)


def zero_secret(suite: CipherSuite) -> bytes:
    """
    The all-zero vector of length ``KDF.Nh`` (RFC 9420 §8): no PSKs, or a Commit with no path.

    :param suite: the group's cipher suite.
    :returns: ``KDF.Nh`` zero bytes.
    """
    # RFC 9420 §8: "0 represents an all-zero byte string of length KDF.Nh."
    return bytes(suite.hash_length)


def joiner_secret(
    suite: CipherSuite,
    *,
    init_secret: bytes,
    commit_secret: bytes | None,
    group_context: GroupContext,
) -> bytes:
    """
    Derive the joiner secret of a new epoch (RFC 9420 §8).

    :param suite: the group's cipher suite.
    :param init_secret: the previous epoch's init secret (random for epoch 0, §11; the external
        init secret for an external commit, §8.3).
    :param commit_secret: the commit secret of the UpdatePath, or ``None`` when the Commit has
        no path.
    :param group_context: the new epoch's GroupContext.
    :returns: ``ExpandWithLabel(KDF.Extract(init_secret, commit_secret), "joiner",
        GroupContext, KDF.Nh)``.
    """
    # RFC 9420 §12.4.2: "If the path value is not populated, define
    # commit_secret as the all-zero vector of length KDF.Nh".
    ikm = zero_secret(suite) if commit_secret is None else commit_secret
    prk = suite.kdf_extract(init_secret, ikm)
    return suite.expand_with_label(prk, b"joiner", group_context.encode(), suite.hash_length)


def _member_secret(suite: CipherSuite, joiner: bytes, psk_secret: bytes | None) -> bytes:
    # The output of the second KDF.Extract in Figure 22, from which both the
    # welcome secret and the epoch secret are derived. RFC 9420 §8.4: "if
    # there are no PreSharedKey proposals in a given Commit, then the
    # resulting psk_secret is psk_secret_[0], the all-zero vector."
    ikm = zero_secret(suite) if psk_secret is None else psk_secret
    return suite.kdf_extract(joiner, ikm)


def welcome_secret(suite: CipherSuite, joiner_secret: bytes, psk_secret: bytes | None) -> bytes:
    """
    Derive the welcome secret from a joiner secret (RFC 9420 §8).

    A new member needs it before it knows the GroupContext: it decrypts the
    GroupInfo that carries the GroupContext (§12.4.3.1).

    :param suite: the group's cipher suite.
    :param joiner_secret: the joiner secret (from the Welcome's GroupSecrets).
    :param psk_secret: the PSK secret (§8.4), or ``None`` when there are no PSKs.
    :returns: ``DeriveSecret(KDF.Extract(joiner_secret, psk_secret), "welcome")``.
    """
    return suite.derive_secret(_member_secret(suite, joiner_secret, psk_secret), b"welcome")


def derive_epoch_secrets_from_joiner(
    suite: CipherSuite,
    *,
    joiner_secret: bytes,
    psk_secret: bytes | None,
    group_context: GroupContext,
) -> EpochSecrets:
    """
    Derive an epoch's secrets from its joiner secret, as a new member does (RFC 9420 §8, §12.4.3.1).

    :param suite: the group's cipher suite.
    :param joiner_secret: the epoch's joiner secret.
    :param psk_secret: the PSK secret (§8.4), or ``None`` when there are no PSKs.
    :param group_context: the epoch's GroupContext.
    :returns: every secret of the epoch.
    """
    member = _member_secret(suite, joiner_secret, psk_secret)
    epoch = suite.expand_with_label(member, b"epoch", group_context.encode(), suite.hash_length)

    def derive(label: bytes) -> bytes:
        return suite.derive_secret(epoch, label)

    # RFC 9420 §8, Table 4: the labels of the epoch-derived secrets.
    return EpochSecrets(
        joiner_secret=joiner_secret,
        welcome_secret=suite.derive_secret(member, b"welcome"),
        epoch_secret=epoch,
        sender_data_secret=derive(b"sender data"),
        encryption_secret=derive(b"encryption"),
        exporter_secret=derive(b"exporter"),
        external_secret=derive(b"external"),
        confirmation_key=derive(b"confirm"),
        membership_key=derive(b"membership"),
        resumption_psk=derive(b"resumption"),
        epoch_authenticator=derive(b"authentication"),
        init_secret=derive(b"init"),
    )


def derive_epoch_secrets(
    suite: CipherSuite,
    *,
    init_secret: bytes,
    commit_secret: bytes | None,
    psk_secret: bytes | None,
    group_context: GroupContext,
) -> EpochSecrets:
    """
    Derive a new epoch's secrets, as the committer and members processing its Commit do (§8).

    The arguments are keyword-only because all of them are byte strings of the
    same length: passing them in the wrong order would go unnoticed.

    :param suite: the group's cipher suite.
    :param init_secret: the previous epoch's init secret (random for epoch 0, §11; the external
        init secret for an external commit, §8.3).
    :param commit_secret: the commit secret of the UpdatePath, or ``None`` when the Commit has
        no path.
    :param psk_secret: the PSK secret (§8.4), or ``None`` when there are no PSKs.
    :param group_context: the new epoch's GroupContext.
    :returns: every secret of the new epoch, including the next ``init_secret``.
    """
    return derive_epoch_secrets_from_joiner(
        suite,
        joiner_secret=joiner_secret(
            suite,
            init_secret=init_secret,
            commit_secret=commit_secret,
            group_context=group_context,
        ),
        psk_secret=psk_secret,
        group_context=group_context,
    )


def external_key_pair(suite: CipherSuite, external_secret: bytes) -> tuple[bytes, bytes]:
    """
    Derive the group's external HPKE key pair (RFC 9420 §8).

    :param suite: the group's cipher suite.
    :param external_secret: the epoch's external secret.
    :returns: ``(external_priv, external_pub) = KEM.DeriveKeyPair(external_secret)``, both
        serialized as HPKE keys.
    :raises InvalidKey: if no valid key pair can be derived (probability about 2^-256).
    """
    return suite.hpke_derive_key_pair(external_secret)


def mls_exporter(
    suite: CipherSuite, exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """
    Export a secret for use outside MLS (RFC 9420 §8.5).

    :param suite: the group's cipher suite.
    :param exporter_secret: the epoch's exporter secret.
    :param label: the exporter label (registered in RFC 9420 §17.8), without any prefix.
    :param context: application context; it is hashed first.
    :param length: the number of bytes to export (at most 65535, the KDFLabel's ``uint16``).
    :returns: ``ExpandWithLabel(DeriveSecret(exporter_secret, Label), "exported",
        Hash(Context), Length)``.
    :raises UsageError: if ``length`` does not fit the KDFLabel or the KDF's output limit.
    """
    secret = suite.derive_secret(exporter_secret, label)
    return suite.expand_with_label(secret, b"exported", suite.hash(context), length)


def confirmation_tag(
    suite: CipherSuite, confirmation_key: bytes, confirmed_transcript_hash: bytes
) -> bytes:
    """
    Compute a confirmation tag (RFC 9420 §6.1, §8.1).

    :param suite: the group's cipher suite.
    :param confirmation_key: the new epoch's confirmation key.
    :param confirmed_transcript_hash: the new epoch's confirmed transcript hash.
    :returns: ``MAC(confirmation_key, GroupContext.confirmed_transcript_hash)``.
    """
    return suite.mac(confirmation_key, confirmed_transcript_hash)


def verify_confirmation_tag(
    suite: CipherSuite, confirmation_key: bytes, confirmed_transcript_hash: bytes, tag: bytes
) -> None:
    """
    Check a received confirmation tag (RFC 9420 §6.1, §12.4.2, §12.4.3.1).

    :param suite: the group's cipher suite.
    :param confirmation_key: the new epoch's confirmation key.
    :param confirmed_transcript_hash: the new epoch's confirmed transcript hash.
    :param tag: the confirmation tag received in a Commit or GroupInfo.
    :raises ConfirmationTagMismatch: if ``tag`` is not the expected MAC.
    """
    expected = confirmation_tag(suite, confirmation_key, confirmed_transcript_hash)
    # RFC 9420 §12.4.2: "Use the confirmation_key for the new epoch to
    # compute the confirmation tag for this message ... and verify that it is
    # the same as the confirmation_tag field". §12.4.3.1 asks the same of a
    # GroupInfo. The comparison is constant-time so that a forger learns
    # nothing from how long the rejection took.
    if not hmac.compare_digest(expected, tag):
        raise ConfirmationTagMismatch("confirmation tag does not match the epoch's secrets")
