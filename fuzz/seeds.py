"""
The seed corpus: real encodings pulled from the IETF MLS test vectors (``tests/vectors/mls``).

:func:`load_seed_source` reads the vector files and sorts what they hold by
structure; each target's ``seeds`` function picks its inputs from the result.

* ``messages.json``: every ``MLSMessage`` field (Welcome, GroupInfo,
  KeyPackage, PublicMessage of each content type, PrivateMessage), the
  ``ratchet_tree`` and the KeyPackage inside ``add_proposal``.
* ``message-protection.json``: the PublicMessages and PrivateMessages.
* ``welcome.json`` and ``passive-client-*.json``: KeyPackages, Welcomes, the
  proposals and commits of each epoch, out-of-band ratchet trees, and the
  GroupInfo inside each Welcome, decrypted with the vector's ``init_priv``
  (and external PSKs): the only GroupInfos with real ``ratchet_tree``
  extensions.
* ``tree-validation.json``, ``treekem.json``, ``tree-operations.json``: trees.

Then the bodies of the ``MLSMessage`` seeds feed the Welcome, KeyPackage and
GroupInfo targets. Missing vector files are skipped, so a partial folder still
gives a corpus. ``fuzz/run.py --write-seeds DIR`` writes each target's seeds
to ``DIR/<target>/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.errors import DecodeError, MLSError
from townsquare.mls.framing import MLSMessage
from townsquare.mls.key_package import KeyPackage, key_package_ref
from townsquare.mls.key_schedule import welcome_secret
from townsquare.mls.proposals import Add
from townsquare.mls.psk import psk_secret
from townsquare.mls.ratchet_tree import RatchetTreeNodes
from townsquare.mls.registries import ExtensionType, ProtocolVersion, PSKType
from townsquare.mls.welcome import GroupInfo, Welcome, decrypt_group_info, decrypt_group_secrets

__all__ = [
    "GroupHistory",
    "SeedSource",
    "default_vector_dir",
    "load_seed_source",
    "seed_name",
    "write_corpus",
]

#: The ``messages.json`` fields that hold an ``MLSMessage``.
_MESSAGE_FIELDS = (
    "mls_welcome",
    "mls_group_info",
    "mls_key_package",
    "public_message_application",
    "public_message_proposal",
    "public_message_commit",
    "private_message",
)

#: The ``message-protection.json`` fields that hold an ``MLSMessage``.
_PROTECTION_FIELDS = (
    "proposal_pub",
    "proposal_priv",
    "commit_pub",
    "commit_priv",
    "application_priv",
)


@dataclass(frozen=True, slots=True)
class GroupHistory:
    """
    A group as a passive client of the vectors sees it: how it joined, then every message.

    What a ``PublicGroup`` target replays: build the group from the GroupInfo
    (and the out-of-band tree, if any), then process the messages in order.
    """

    #: The group's cipher suite.
    cipher_suite: int
    #: The GroupInfo decrypted from the Welcome, as an encoded MLSMessage(GroupInfo).
    group_info_message: bytes
    #: The encoded ratchet tree when it was given out of band, else ``None``.
    ratchet_tree: bytes | None
    #: The encoded MLSMessages, epoch by epoch: each epoch's proposals, then its commit.
    messages: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedSource:
    """
    Every encoding found in the vectors, sorted by structure, each list without repeats.
    """

    mls_messages: tuple[bytes, ...]
    welcomes: tuple[bytes, ...]
    key_packages: tuple[bytes, ...]
    group_infos: tuple[bytes, ...]
    ratchet_trees: tuple[bytes, ...]
    histories: tuple[GroupHistory, ...]


def default_vector_dir() -> Path:
    """
    :returns: ``tests/vectors/mls`` of this repository.
    """
    return Path(__file__).resolve().parents[1] / "tests" / "vectors" / "mls"


def _cases(vector_dir: Path, stem: str) -> list[Mapping[str, object]]:
    path = vector_dir / f"{stem}.json"
    if not path.is_file():
        return []
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _hex(case: Mapping[str, object], name: str) -> bytes | None:
    value = case.get(name)
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _unique(items: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(items))


def _open_welcome(case: Mapping[str, object], group_infos: list[bytes]) -> bytes | None:
    """
    Decrypt the GroupInfo of a ``welcome`` or ``passive-client`` case, as its joiner would.

    :returns: the encoded GroupInfo, or ``None`` if the case cannot be opened.
    """
    suite_id = case.get("cipher_suite")
    key_package_bytes = _hex(case, "key_package")
    welcome_bytes = _hex(case, "welcome")
    init_priv = _hex(case, "init_priv")
    if (
        not isinstance(suite_id, int)
        or key_package_bytes is None
        or welcome_bytes is None
        or init_priv is None
    ):
        return None
    external: dict[bytes, bytes] = {}
    raw_psks = case.get("external_psks")
    for entry in raw_psks if isinstance(raw_psks, list) else ():
        if isinstance(entry, dict):
            psk_id, psk = _hex(entry, "psk_id"), _hex(entry, "psk")
            if psk_id is not None and psk is not None:
                external[psk_id] = psk
    try:
        suite = get_cipher_suite(suite_id)
        key_package = MLSMessage.decode(key_package_bytes).body
        welcome = MLSMessage.decode(welcome_bytes).body
        if not isinstance(key_package, KeyPackage) or not isinstance(welcome, Welcome):
            return None
        secrets = decrypt_group_secrets(
            suite, welcome, key_package_ref(suite, key_package), init_priv
        )
        psks = []
        for wanted in secrets.psks:
            value = external.get(wanted.psk_id or b"")
            if wanted.psktype != PSKType.EXTERNAL or value is None:
                # Resumption PSKs need the old group's state, which no vector gives.
                return None
            psks.append((wanted, value))
        secret = welcome_secret(
            suite, secrets.joiner_secret, psk_secret(suite, psks) if psks else None
        )
        group_info = decrypt_group_info(suite, secret, welcome.encrypted_group_info).encode()
    except MLSError:
        return None
    group_infos.append(group_info)
    return group_info


def _passive_client(
    case: Mapping[str, object],
    messages: list[bytes],
    trees: list[bytes],
    group_infos: list[bytes],
) -> GroupHistory | None:
    for name in ("key_package", "welcome"):
        value = _hex(case, name)
        if value is not None:
            messages.append(value)
    tree = _hex(case, "ratchet_tree")
    if tree is not None:
        trees.append(tree)
    history: list[bytes] = []
    epochs = case.get("epochs")
    for epoch in epochs if isinstance(epochs, list) else ():
        if not isinstance(epoch, dict):
            continue
        proposals = epoch.get("proposals")
        for proposal in proposals if isinstance(proposals, list) else ():
            if isinstance(proposal, str):
                history.append(bytes.fromhex(proposal))
        commit = _hex(epoch, "commit")
        if commit is not None:
            history.append(commit)
    messages.extend(history)
    group_info = _open_welcome(case, group_infos)
    suite_id = case.get("cipher_suite")
    if group_info is None or not isinstance(suite_id, int):
        return None
    message = MLSMessage(ProtocolVersion.MLS10, GroupInfo.decode(group_info))
    return GroupHistory(
        cipher_suite=suite_id,
        group_info_message=message.encode(),
        ratchet_tree=tree,
        messages=tuple(history),
    )


def _sort_bodies(
    messages: Iterable[bytes],
    welcomes: list[bytes],
    key_packages: list[bytes],
    group_infos: list[bytes],
    trees: list[bytes],
) -> None:
    """
    File the body of every MLSMessage under its own structure.
    """
    for data in messages:
        try:
            body = MLSMessage.decode(data).body
        except DecodeError:
            continue
        if isinstance(body, Welcome):
            welcomes.append(body.encode())
        elif isinstance(body, KeyPackage):
            key_packages.append(body.encode())
        elif isinstance(body, GroupInfo):
            group_infos.append(body.encode())
    for data in list(group_infos):
        try:
            group_info = GroupInfo.decode(data)
        except DecodeError:
            continue
        for extension in group_info.extensions:
            if extension.extension_type != ExtensionType.RATCHET_TREE:
                continue
            try:
                RatchetTreeNodes.decode(extension.extension_data)
            except DecodeError:
                continue
            trees.append(extension.extension_data)


def load_seed_source(vector_dir: Path | None = None) -> SeedSource:
    """
    Read every vector file this corpus draws on.

    :param vector_dir: the folder of mls-implementations vector files (default: this
        repository's ``tests/vectors/mls``).
    :returns: the encodings found, by structure.
    """
    vector_dir = default_vector_dir() if vector_dir is None else vector_dir
    messages: list[bytes] = []
    key_packages: list[bytes] = []
    group_infos: list[bytes] = []
    welcomes: list[bytes] = []
    trees: list[bytes] = []
    histories: list[GroupHistory] = []

    for case in _cases(vector_dir, "messages"):
        messages.extend(v for name in _MESSAGE_FIELDS if (v := _hex(case, name)) is not None)
        tree = _hex(case, "ratchet_tree")
        if tree is not None:
            trees.append(tree)
        add = _hex(case, "add_proposal")
        if add is not None:
            with contextlib.suppress(DecodeError):
                key_packages.append(Add.decode(add).key_package.encode())
    for case in _cases(vector_dir, "message-protection"):
        messages.extend(v for name in _PROTECTION_FIELDS if (v := _hex(case, name)) is not None)
    for case in _cases(vector_dir, "welcome"):
        messages.extend(v for name in ("key_package", "welcome") if (v := _hex(case, name)))
        _open_welcome(case, group_infos)
    for stem in ("passive-client-welcome", "passive-client-handling-commit"):
        for case in _cases(vector_dir, stem):
            history = _passive_client(case, messages, trees, group_infos)
            if history is not None:
                histories.append(history)
    for case in _cases(vector_dir, "tree-validation"):
        trees.extend(v for v in (_hex(case, "tree"),) if v is not None)
    for case in _cases(vector_dir, "treekem"):
        trees.extend(v for v in (_hex(case, "ratchet_tree"),) if v is not None)
    for case in _cases(vector_dir, "tree-operations"):
        trees.extend(v for name in ("tree_before", "tree_after") if (v := _hex(case, name)))

    _sort_bodies(messages, welcomes, key_packages, group_infos, trees)
    return SeedSource(
        mls_messages=_unique(messages),
        welcomes=_unique(welcomes),
        key_packages=_unique(key_packages),
        group_infos=_unique(group_infos),
        ratchet_trees=_unique(trees),
        histories=tuple(histories),
    )


def seed_name(data: bytes) -> str:
    """
    :returns: the file name of a corpus entry: the SHA-1 of its content, as libFuzzer names them.
    """
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def write_corpus(seeds: Iterable[bytes], directory: Path) -> int:
    """
    Write seeds into a corpus folder, one file each, named by content.

    :param seeds: the inputs.
    :param directory: the folder (created if missing).
    :returns: how many distinct seeds it holds from this call.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = set()
    for data in seeds:
        name = seed_name(data)
        if name not in names:
            (directory / name).write_bytes(data)
            names.add(name)
    return len(names)
