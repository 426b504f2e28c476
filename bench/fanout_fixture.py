"""
A relay holding one MLS group of n registered devices, built once and cached for the benchmark.

For the relay to push a message to n devices, they must be devices registered
on it and members (leaves) of a real MLS group it has checked. Building that
is the slow part of the benchmark (at 5,000 members, about a minute), so it
is done once, against the real ``townsquare serve``, and the result kept
under ``bench/.cache/relay-fanout-n<n>-v<FORMAT>/``:

1. **Devices.** n device keys (and an account key each), registered with
   ``POST /v1/accounts``, signed as every client signs (``auth.sign_request``).
2. **The group.** Device 0, the sender, creates it (``Group.create``,
   ``POST /v1/groups``) and adds the others by value, in real commits of at
   most :data:`ADDS_PER_COMMIT` Adds: each carries its Welcome and the new
   epoch's GroupInfo, stays under the 128 KiB message and 256 KiB body
   limits, and is checked by the relay like any commit
   (``POST /v1/groups/{id}/messages``). The sender merges each accepted commit.
3. **The cache.** The relay is stopped cleanly, and its data folder
   (``relay-data/``: SQLite with the accounts, the group, its log and its
   public view) is kept with the device keys (``device-keys.bin``, 32 bytes
   each, the sender's first), each device's leaf HPKE private key
   (``leaf-keys.bin``) and the creator's group state (``sender.sqlite``, a
   ``SqliteGroupStore`` as a device keeps it).

Every member can send. A member's ``Group`` is built as
``bench/group_fixtures.py`` builds its members: the creator's current epoch
(context, secrets, tree) with the member's own leaf and leaf key, and the
member's signature key. Processing its Welcome and the later commits would
give that member exactly this epoch, at the cost of a tree check per member
(minutes at 5,000); what it encrypts is a real PrivateMessage that every
member decrypts, which :meth:`Fixture.check_members` verifies on one.
Spreading the sends over the members keeps each device under the relay's
post quota (``Limits.posts_per_window``), as in a busy group.

Each benchmark run copies the data folder and starts a fresh relay on the
copy, so a run never changes the cache. Delete ``bench/.cache/`` (or pass
``--rebuild``) to build again; bump :data:`FORMAT` when this layout changes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from fanout_servers import relay_process
from townsquare import auth
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.group import ApplicationMessage, Group, GroupConfig, PendingCommit
from townsquare.mls.group_store import GroupPersistence
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add
from townsquare.mls.tree_math import LeafIndex
from townsquare.mls.treekem import TreeKEMPrivate
from townsquare.storage.sqlite_group_store import SqliteGroupStore, connect

#: Where fixtures are cached (git-ignored).
CACHE = Path(__file__).resolve().parent / ".cache"
#: Bump when the fixture's construction or layout changes.
FORMAT = 2
#: Adds per commit: about 90 KB of commit and 160 KB of request body at 250.
ADDS_PER_COMMIT = 250
#: Registrations in flight at once while building.
REGISTRATIONS_IN_FLIGHT = 8
#: The relay's limits on one MLS message and on a request body (docs/protocol.md).
MAX_MLS_MESSAGE_BYTES = 128 * 1024
MAX_BODY_BYTES = 256 * 1024

Log = Callable[[str], None]


def signed_headers(device_private: bytes, method: str, target: str, body: bytes) -> dict[str, str]:
    """
    :returns: the headers of a request signed by a device now, with a fresh nonce.
    """
    return {
        "content-type": "application/json",
        **auth.sign_request(
            device_private_key=device_private,
            method=method,
            target=target,
            body=body,
            timestamp=int(time.time()),
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        ),
    }


@dataclass(slots=True)
class Fixture:
    """
    A cached relay data folder with an n-member group, and what the devices hold.
    """

    n: int
    path: Path
    group_id: bytes
    epoch: int
    _members: dict[int, Group] = field(default_factory=dict, repr=False)
    _device_keys: bytes = field(default=b"", repr=False)

    @property
    def data_dir(self) -> Path:
        return self.path / "relay-data"

    @property
    def keys_path(self) -> Path:
        return self.path / "device-keys.bin"

    @property
    def group_text(self) -> str:
        return auth.encode_b64u(self.group_id)

    def device_key(self, index: int) -> bytes:
        """
        :returns: the private key of device ``index`` (0 is the sender).
        """
        if not self._device_keys:
            self._device_keys = self.keys_path.read_bytes()
        return self._device_keys[32 * index : 32 * index + 32]

    def sender(self) -> Group:
        """
        Load the sender's group state, as of the last commit.

        The cache is never written back: every run encrypts from the same ratchet
        generations. Nobody decrypts these messages and each run's relay is new, so
        the reuse costs nothing here; a real client saves after every encryption.
        """
        connection = connect(self.path / "sender.sqlite")
        try:
            return GroupPersistence.load(SqliteGroupStore(connection, self.group_id)).group
        finally:
            connection.close()

    def member(self, index: int) -> Group:
        """
        :returns: the ``Group`` of device ``index`` at the current epoch (see the module).
        """
        group = self._members.get(index)
        if group is not None:
            return group
        if not self._members:
            self._members[0] = self.sender()
        creator = self._members[0]
        if index not in self._members:
            device_key = self.device_key(index)
            public = auth.public_key(device_key)
            leaf = next(
                m.leaf_index for m in creator.members() if m.leaf_node.signature_key == public
            )
            with (self.path / "leaf-keys.bin").open("rb") as keys:
                keys.seek(32 * index)
                leaf_key = keys.read(32)
            epoch = creator._epoch
            self._members[index] = Group(
                suite=creator.cipher_suite,
                epoch=replace(
                    epoch,
                    private=TreeKEMPrivate(creator.cipher_suite, LeafIndex(leaf), leaf_key),
                    own_leaf=LeafIndex(leaf),
                ),
                signature_private_key=device_key,
                config=GroupConfig(),
            )
        return self._members[index]

    def check_members(self) -> None:
        """
        Check that a message of the last member decrypts and verifies at a fresh copy of the
        creator's state, as its sender's.

        :raises RuntimeError: if it does not.
        """
        if self.n < 2:
            return
        last = self.member(self.n - 1)
        received = self.sender().process(last.encrypt(b"check", rng=secrets.token_bytes))
        if not (
            isinstance(received, ApplicationMessage)
            and received.sender == last.own_leaf
            and received.data == b"check"
        ):
            raise RuntimeError(f"a member's message did not decrypt as its own: {received}")

    def copy_data(self, target: Path) -> Path:
        """
        :returns: a copy of the relay's data folder at ``target``, for one run.
        """
        shutil.copytree(self.data_dir, target)
        return target


def _bundle(device_private: bytes) -> KeyPackageBundle:
    # A device's KeyPackage: its leaf's signature key and credential are its device key,
    # as the relay requires (docs/protocol.md, "Devices are leaves").
    return generate_key_package(
        get_cipher_suite(1),
        credential=BasicCredential(auth.public_key(device_private)),
        signature_private_key=device_private,
        rng=secrets.token_bytes,
        lifetime=Lifetime(not_before=0, not_after=2**64 - 1),
    )


async def _register(http: httpx.AsyncClient, devices: list[bytes], log: Log) -> None:
    gate = asyncio.Semaphore(REGISTRATIONS_IN_FLIGHT)
    done = 0

    async def one(device_private: bytes) -> None:
        nonlocal done
        certificate = auth.certify_device(
            auth.generate_private_key(), auth.public_key(device_private), int(time.time())
        )
        body = json.dumps(
            {
                "certificate": {
                    "account_key": auth.encode_b64u(certificate.account_key),
                    "device_key": auth.encode_b64u(certificate.device_key),
                    "created_at": certificate.created_at,
                    "signature": auth.encode_b64u(certificate.signature),
                }
            }
        ).encode()
        async with gate:
            response = await http.post(
                "/v1/accounts",
                content=body,
                headers=signed_headers(device_private, "POST", "/v1/accounts", body),
            )
        if response.status_code != 201:
            raise RuntimeError(f"registration failed: {response.status_code} {response.text}")
        done += 1
        if done % 1000 == 0:
            log(f"    {done:,} devices registered")

    async with asyncio.TaskGroup() as tasks:
        for device_private in devices:
            tasks.create_task(one(device_private))


def _commit_body(pending_commit: PendingCommit) -> bytes:
    if pending_commit.welcome is None:
        raise RuntimeError("a commit that adds members carries a Welcome")
    return json.dumps(
        {
            "client_message_id": auth.encode_b64u(secrets.token_bytes(16)),
            "message": auth.encode_b64u(pending_commit.commit),
            "welcome": auth.encode_b64u(pending_commit.welcome),
            "group_info": auth.encode_b64u(pending_commit.group_info),
        }
    ).encode()


async def _build_group(
    http: httpx.AsyncClient, devices: list[bytes], leaf_keys: list[bytes], log: Log
) -> tuple[Group, float]:
    sender_key = devices[0]
    creator = _bundle(sender_key)
    leaf_keys.append(creator.encryption_private_key)
    group = Group.create(creator, group_id=secrets.token_bytes(32), rng=secrets.token_bytes)
    body = json.dumps({"group_info": auth.encode_b64u(group.group_info())}).encode()
    response = await http.post(
        "/v1/groups", content=body, headers=signed_headers(sender_key, "POST", "/v1/groups", body)
    )
    if response.status_code != 201:
        raise RuntimeError(f"group creation failed: {response.status_code} {response.text}")
    target = f"/v1/groups/{auth.encode_b64u(group.group_id)}/messages"
    start = time.perf_counter()
    bundles = [_bundle(device) for device in devices[1:]]
    leaf_keys.extend(bundle.encryption_private_key for bundle in bundles)
    log(f"    {len(bundles):,} KeyPackages in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    for offset in range(0, len(bundles), ADDS_PER_COMMIT):
        batch = bundles[offset : offset + ADDS_PER_COMMIT]
        pending = group.commit(
            rng=secrets.token_bytes,
            proposals=[Add(bundle.key_package) for bundle in batch],
            ratchet_tree_in_welcome=False,
        )
        body = _commit_body(pending)
        if len(pending.commit) > MAX_MLS_MESSAGE_BYTES or len(body) > MAX_BODY_BYTES:
            raise RuntimeError(f"a commit of {len(batch)} Adds is over the relay's limits")
        response = await http.post(
            target, content=body, headers=signed_headers(sender_key, "POST", target, body)
        )
        if response.status_code != 201:
            raise RuntimeError(f"commit refused: {response.status_code} {response.text}")
        group.merge(pending.staged)
    return group, time.perf_counter() - start


def _path(cache: Path, n: int) -> Path:
    return cache / f"relay-fanout-n{n}-v{FORMAT}"


def load_fixture(cache: Path, n: int) -> Fixture | None:
    """
    :returns: the cached fixture of ``n`` devices, or ``None`` if there is none.
    """
    path = _path(cache, n)
    try:
        meta = json.loads((path / "fixture.json").read_text())
    except (OSError, ValueError):
        return None
    return Fixture(n=n, path=path, group_id=bytes.fromhex(meta["group_id"]), epoch=meta["epoch"])


async def build_fixture(cache: Path, n: int, *, log: Log) -> Fixture:
    """
    Build the fixture of ``n`` devices against a real relay, and cache it.

    :param n: the group's size (the sender included).
    :param log: where progress goes.
    :returns: the fixture.
    """
    path = _path(cache, n)
    building = path.with_name(path.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    log(f"  building a {n:,}-device group on a relay (cached in {path})")
    devices = [auth.generate_private_key() for _ in range(n)]
    (building / "device-keys.bin").write_bytes(b"".join(devices))
    relay = relay_process(building / "relay-data", building / "relay.log")
    relay.start()
    try:
        async with httpx.AsyncClient(base_url=relay.url, timeout=120.0) as http:
            start = time.perf_counter()
            await _register(http, devices, log)
            log(f"    {n:,} devices registered in {time.perf_counter() - start:.1f} s")
            leaf_keys: list[bytes] = []
            group, seconds = await _build_group(http, devices, leaf_keys, log)
            (building / "leaf-keys.bin").write_bytes(b"".join(leaf_keys))
            log(
                f"    {n - 1:,} members added in {-(-(n - 1) // ADDS_PER_COMMIT)} commits "
                f"in {seconds:.1f} s (epoch {group.epoch})"
            )
    finally:
        relay.stop()
    connection = connect(building / "sender.sqlite")
    try:
        GroupPersistence(group, SqliteGroupStore(connection, group.group_id)).save()
    finally:
        connection.close()
    meta = {"n": n, "group_id": group.group_id.hex(), "epoch": group.epoch, "format": FORMAT}
    (building / "fixture.json").write_text(json.dumps(meta))
    shutil.rmtree(path, ignore_errors=True)
    building.rename(path)
    return Fixture(n=n, path=path, group_id=group.group_id, epoch=group.epoch)


async def fixture(n: int, *, cache: Path = CACHE, rebuild: bool, log: Log) -> Fixture:
    """
    :returns: the cached fixture of ``n`` devices, built first if missing or ``rebuild``.
    """
    cached = None if rebuild else load_fixture(cache, n)
    return cached if cached is not None else await build_fixture(cache, n, log=log)
