"""
The delivery service: groups, their ordered logs, and who may read and write them.

Framework-free: the HTTP routes and the WebSocket call it with authenticated
devices and bytes; it checks MLS with the group's public view
(:class:`~townsquare.mls.public_group.PublicGroup`), lets the store decide
order and exactly-once, and publishes notices to the fan-out.

Device identity in MLS. Townsquare choice: a device's Ed25519 key *is* its
leaf's ``signature_key``, and (for now) its credential is a BasicCredential
whose identity is that key (:func:`device_credential`). So the relay maps
leaves to devices without any secret: the members it delivers to are the
leaves' signature keys, recomputed from the public view after every commit.
Cipher suite 1 (``MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519``) only, the
suite whose signature scheme is the device key's.

Posting a message (``POST /v1/groups/{id}/messages``), with the request's
nonce and the device's post quota (a charge of one) handed in by the route::

    peek the framing ──▶ group id = path?
         400 malformed-mls   400 group-mismatch       (refused here: record the nonce)
         400 unexpected-message
      │
      ├─ PrivateMessage, application ──▶ store, in one transaction: nonce new? sent before?
      │                                   member? epoch current? quota left? next seq, count
      │       409 replayed-request, (200, duplicate), 403 not-a-member, 409 stale-epoch, 429
      │
      └─ PublicMessage, proposal or commit: record the nonce (409 replayed-request), then
         under the group's lock:
           load group ──▶ sent before? ──▶ quota left? ──▶ member? ──▶ epoch current?
           404            (200)            429             403         409 commit-conflict
                                                                       (a past epoch's:
                                                                       carries the winner)
                                                                       409 stale-epoch
           ──▶ sender's leaf?
               403 sender-mismatch
           ──▶ PublicGroup.process ──▶ policy hook ──▶ (commit) GroupInfo of the new epoch,
               400 invalid-commit/-proposal            Welcome to exactly the added members
                                                       400 invalid-group-info, welcome-mismatch
           ──▶ store atomically (the epoch and quota are checked again inside the
               transaction, which counts the post)
           ──▶ publish a notice

An external commit (sender ``new_member_commit``) skips the member and sender
checks: it needs a current invite of the group and the invite key's signature
over the commit (``docs/protocol.md``, Invites), or must be a member's resync
of its own leaf; it may remove no other leaf, and its new leaf is the posting
device's key. The store takes the invite's use in the commit's transaction.

A refused message changes nothing in the store but its request's nonce, which
is recorded whatever the outcome, so that a replay is refused as one. An
application message, the relay's hot path, costs one store transaction.

The public view of each group is kept in memory (an LRU of
``Limits.public_group_cache_size``) and checked against the store on every
handshake: the store's epoch says whether it is current, and proposals stored
by other relay processes are replayed into it, so several processes sharing
one database agree.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from dataclasses import dataclass
from typing import Protocol

from townsquare import auth
from townsquare.auth import invites
from townsquare.mls import errors as mls_errors
from townsquare.mls.framing import MemberSender, MLSMessage, NewMemberCommitSender
from townsquare.mls.public_group import (
    MessageHeader,
    PublicCommit,
    PublicGroup,
    PublicProposal,
    peek,
)
from townsquare.mls.registries import ContentType, WireFormat
from townsquare.mls.welcome import Welcome
from townsquare.server.authority import AdminPolicy, admins_of, policy_of
from townsquare.server.clock import Clock
from townsquare.server.config import (
    MAX_GROUP_ID_BYTES,
    MAX_JOIN_NOTE_BYTES,
    MIN_GROUP_ID_BYTES,
    Limits,
)
from townsquare.server.directory import check_key_package, device_credential
from townsquare.server.errors import (
    ApprovalNotRequired,
    ApprovalRequired,
    CommitConflict,
    ExternalCommitRefused,
    GroupMismatch,
    InvalidCommit,
    InvalidGroupInfo,
    InvalidNewGroup,
    InvalidProposal,
    InvalidRequest,
    InviteExpired,
    InviteNotFound,
    InviteSignatureInvalid,
    InviteUsedUp,
    JoinRequestNotFound,
    MalformedMLS,
    MessageIdReused,
    MLSRejected,
    NotAMember,
    NotAnAdmin,
    SenderMismatch,
    ServerError,
    StaleEpoch,
    UnexpectedMessage,
    WelcomeMismatch,
)
from townsquare.server.fanout import Fanout, MessageNotice
from townsquare.server.storage import (
    Appended,
    Device,
    GroupMember,
    GroupRecord,
    GroupSnapshot,
    InviteRecord,
    JoinRequest,
    LogEntry,
    LogPage,
    MessageKind,
    NewCommit,
    NewGroup,
    NewInvite,
    NewMessage,
    PendingWelcome,
    Storage,
)
from townsquare.server.storage.interface import NonceUse, QuotaCharge

__all__ = [
    "SUPPORTED_CIPHER_SUITE",
    "AnyMemberPolicy",
    "CommitPolicy",
    "DeliveryService",
    "Post",
    "device_credential",
]


#: A sealed note is at least a nonce and a ChaCha20-Poly1305 tag.
NOTE_MIN_BYTES = 12 + 16

#: Townsquare choice: the one cipher suite groups use for now, whose signature scheme
#: (Ed25519) is the device key's (RFC 9420 §17.1, MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519).
SUPPORTED_CIPHER_SUITE = 1


class CommitPolicy(Protocol):
    """
    HOOK(admins): who may change a group, beyond what MLS itself checks.

    The delivery service calls it after the public view has verified a handshake
    message and before anything is stored. The admin work implements it from the
    group's admin extension (a GroupContext extension listing admin keys and
    policy flags): refuse Add, Remove and GroupContextExtensions from non-admins
    unless the policy allows, always allow a member's own removal proposal.
    """

    def check_commit(self, group: PublicGroup, commit: PublicCommit, *, committer: bytes) -> None:
        """
        Decide whether a verified commit may be stored.

        :param group: the public view at the commit's epoch (before it).
        :param commit: the staged commit.
        :param committer: the committing device's key.
        :raises Forbidden: (a subclass) to refuse it.
        """
        ...

    def check_proposal(
        self, group: PublicGroup, proposal: PublicProposal, *, sender: bytes
    ) -> None:
        """
        Decide whether a verified proposal may be stored.

        :param group: the public view (already holding the proposal).
        :param proposal: the proposal.
        :param sender: the proposing device's key.
        :raises Forbidden: (a subclass) to refuse it.
        """
        ...


class AnyMemberPolicy:
    """
    The policy until admins land: any member may commit or propose what MLS allows.
    """

    def check_commit(self, group: PublicGroup, commit: PublicCommit, *, committer: bytes) -> None:
        """
        Allow every verified commit.
        """
        del group, commit, committer

    def check_proposal(
        self, group: PublicGroup, proposal: PublicProposal, *, sender: bytes
    ) -> None:
        """
        Allow every verified proposal.
        """
        del group, proposal, sender


@dataclass(frozen=True, slots=True, kw_only=True)
class Post:
    """
    A message as a device posts it: the MLS message and, for a commit, what goes with it.
    """

    #: The device's id for the message, the key of exactly-once delivery.
    client_message_id: bytes
    #: The encoded MLSMessage: a PublicMessage (proposal, commit) or a PrivateMessage.
    message: bytes
    #: A commit's MLSMessage(Welcome), required when it adds members.
    welcome: bytes | None = None
    #: A commit's MLSMessage(GroupInfo) of the new epoch, required with every commit.
    group_info: bytes | None = None
    #: With an external commit that joins by invite: the invite's key (its id).
    invite_key: bytes | None = None
    #: And the invite key's signature over the commit (:mod:`townsquare.auth.invites`).
    invite_signature: bytes | None = None


@dataclass(slots=True)
class _View:
    # The public view of a group at ``epoch``, with every proposal of that epoch
    # up to the log's ``applied_seq`` held.
    public: PublicGroup
    epoch: int
    applied_seq: int


@dataclass(frozen=True, slots=True)
class _CommitPlan:
    # What a verified commit changes, computed from the merged public view.
    members: tuple[GroupMember, ...]
    ratchet_tree: bytes
    removed: tuple[bytes, ...]
    welcomed: tuple[bytes, ...]


class DeliveryService:
    """
    Creates groups, orders their messages and serves them to member devices.
    """

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        fanout: Fanout,
        limits: Limits,
        *,
        policy: CommitPolicy | None = None,
    ) -> None:
        """
        :param storage: the store, which decides order and exactly-once.
        :param clock: the relay's clock.
        :param fanout: where notices of appended entries go.
        :param limits: the limits to enforce.
        :param policy: who may change a group (default: the group's own admin policy,
            :class:`~townsquare.server.authority.AdminPolicy`).
        """
        self._storage = storage
        self._clock = clock
        self._fanout = fanout
        self._limits = limits
        self._policy: CommitPolicy = policy if policy is not None else AdminPolicy()
        self._views: collections.OrderedDict[bytes, _View] = collections.OrderedDict()
        # One lock per group while anyone holds it, so that one process checks one
        # handshake of a group at a time; the store still decides across processes.
        self._locks: weakref.WeakValueDictionary[bytes, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- Groups ------------------------------------------------------------------------

    async def create_group(
        self, device: Device, *, group_info: bytes, ratchet_tree: bytes | None
    ) -> GroupRecord:
        """
        Create a group from its epoch-0 GroupInfo, with the creating device as its only member.

        :param device: the creating device.
        :param group_info: the encoded MLSMessage(GroupInfo) of epoch 0.
        :param ratchet_tree: the encoded ratchet tree, if the GroupInfo does not carry it.
        :returns: the stored group.
        :raises MalformedMLS: if the GroupInfo or tree does not decode.
        :raises UnexpectedMessage: if the message is not a GroupInfo.
        :raises InvalidNewGroup: if the group is not at epoch 0, of the supported suite,
            with a group id of the allowed length and the device as its only member.
        :raises InvalidGroupInfo: if the GroupInfo or tree fails a check (signature, tree
            hash, leaf nodes, credentials).
        :raises GroupExists: if a group has this id.
        """
        header = _peek(group_info)
        if header.wire_format != WireFormat.MLS_GROUP_INFO or header.group_id is None:
            raise UnexpectedMessage("group_info must be an MLSMessage(GroupInfo)")
        group_id = header.group_id
        if not MIN_GROUP_ID_BYTES <= len(group_id) <= MAX_GROUP_ID_BYTES:
            raise InvalidNewGroup(
                f"a group id is {MIN_GROUP_ID_BYTES} to {MAX_GROUP_ID_BYTES} bytes,"
                f" not {len(group_id)}"
            )
        if header.epoch != 0:
            raise InvalidNewGroup(f"a new group is at epoch 0, not {header.epoch}")
        now = self._clock.now()
        public = await asyncio.to_thread(_public_group_from, group_info, ratchet_tree, now=now)
        if public.cipher_suite.suite_id != SUPPORTED_CIPHER_SUITE:
            raise InvalidNewGroup(
                f"groups use cipher suite {SUPPORTED_CIPHER_SUITE}, not"
                f" {int(public.cipher_suite.suite_id)}"
            )
        members = public.members()
        if len(members) != 1 or members[0].signature_key != device.device_key:
            raise InvalidNewGroup(
                "a new group has one member, the creating device (its leaf's signature key)"
            )
        record = await self._storage.create_group(
            NewGroup(
                group_id=group_id,
                group_info=group_info,
                ratchet_tree=public.ratchet_tree(),
                members=(GroupMember(device.device_key, members[0].leaf_index),),
                created_at=now,
            )
        )
        self._remember(group_id, _View(public=public, epoch=0, applied_seq=0))
        return record

    async def group_info(self, device: Device, group_id: bytes) -> GroupRecord:
        """
        Read a group's current GroupInfo and ratchet tree, for a member device.

        :returns: the group.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """
        return await self.check_member(device.device_key, group_id)

    async def check_member(self, device_key: bytes, group_id: bytes) -> GroupRecord:
        """
        Check that a device is a member of a group.

        :returns: the group.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """
        snapshot = await self._storage.load_group(
            group_id, device_key=device_key, proposals_after=None
        )
        if snapshot.member is None:
            raise NotAMember("the device is not a member of this group")
        return snapshot.group

    # -- Posting -------------------------------------------------------------------------

    async def post(
        self,
        device: Device,
        group_id: bytes,
        post: Post,
        *,
        nonce: NonceUse | None = None,
        quota: QuotaCharge | None = None,
    ) -> Appended:
        """
        Check a message and append it to the group's log exactly once.

        The nonce is recorded whatever the outcome (but a replay's, or a failure of the
        store's own): with an application message, in the append's transaction; with a
        handshake message, first; with a message refused before either, before the
        refusal propagates.

        :param device: the posting device.
        :param group_id: the group named in the path.
        :param post: the message (and a commit's Welcome and GroupInfo).
        :param nonce: the request's nonce, not yet recorded (``None``: recorded already).
        :param quota: the device's post quota, checked and charged for a new entry only
            (``None``: not limited).
        :returns: the stored entry, or the original one if the device sent this client
            message id before (``duplicate``).
        :raises ReplayedRequest: if the nonce was used before.
        :raises RateLimited: if a new entry would pass the quota.
        :raises MalformedMLS: if a message does not decode.
        :raises UnexpectedMessage: if a message is not of the kind its field takes.
        :raises GroupMismatch: if the message is for another group.
        :raises InvalidRequest: if a commit lacks its GroupInfo, or another kind of
            message carries a Welcome or GroupInfo.
        :raises MessageIdReused: if the id was used for a message of another group or kind.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises SenderMismatch: if a handshake message is not signed by the device's leaf.
        :raises ExternalCommitRefused: for an external commit that neither carries a
            current invite nor resyncs the posting member's own leaf, or that removes
            another member's leaf.
        :raises InviteNotFound: if the invite is not the group's (or was reset).
        :raises InviteExpired: if the invite has expired.
        :raises InviteUsedUp: if its uses are all taken.
        :raises InviteSignatureInvalid: if the invite key's signature does not verify.
        :raises CommitConflict: if another commit ended the commit's epoch.
        :raises StaleEpoch: if the message is not for the current epoch.
        :raises InvalidCommit: if a commit fails the public view's checks.
        :raises InvalidProposal: if a proposal fails them.
        :raises InvalidGroupInfo: if the GroupInfo does not describe the commit's epoch.
        :raises WelcomeMismatch: if the Welcome is missing, superfluous, or not addressed to
            exactly the added members.
        :raises UnknownMemberDevice: if a commit adds a leaf whose key is not a device here.
        :raises Forbidden: (a subclass) if the commit policy refuses a handshake message.
        """
        try:
            header = _peek(post.message)
            kind = _kind_of(header)
            _check_post_fields(header, kind, group_id, post)
            message = (
                self._new_message(device, header, kind, post)
                if kind is MessageKind.APPLICATION
                else None
            )
        except ServerError:
            # Refused before the store was asked: the nonce is spent all the same, so
            # that a replay of this request is refused as a replay.
            await self._use_nonce(nonce)
            raise
        if message is not None:
            # The store records the nonce, checks for a retry, then checks and charges
            # the quota, all in the append's own transaction.
            appended = await self._storage.append_message(message, nonce=nonce, quota=quota)
            if not appended.duplicate:
                await self._publish(appended.entry)
            return appended
        # Handshake messages are rare and their checks expensive: the nonce is
        # recorded on its own first, so every refusal below leaves it spent.
        await self._use_nonce(nonce)
        async with self._lock(group_id):
            return await self._post_handshake(device, group_id, header, kind, post, quota=quota)

    async def _use_nonce(self, nonce: NonceUse | None) -> None:
        if nonce is not None:
            await self._storage.use_nonce(
                nonce.device_key, nonce.nonce, expires_at=nonce.expires_at
            )

    async def _check_quota(self, quota: QuotaCharge | None) -> None:
        # Refuses a device over its quota before the MLS work; the append checks
        # again, and counts, in its transaction.
        if quota is not None:
            await self._storage.check_quota(
                quota.subject,
                quota.action,
                now=quota.now,
                window_seconds=quota.window_seconds,
                limit=quota.limit,
                amount=quota.amount,
            )

    async def _post_handshake(
        self,
        device: Device,
        group_id: bytes,
        header: MessageHeader,
        kind: MessageKind,
        post: Post,
        *,
        quota: QuotaCharge | None,
    ) -> Appended:
        cached = self._views.get(group_id)
        snapshot = await self._storage.load_group(
            group_id,
            device_key=device.device_key,
            proposals_after=0 if cached is None else cached.applied_seq,
        )
        group = snapshot.group
        # A retry is answered with the original, before any check that its success
        # would now fail (its own commit ended the epoch, its quota is spent). Read
        # after the group, so that an original that moved the epoch on is seen here.
        original = await self._storage.find_message(device.device_key, post.client_message_id)
        if original is not None:
            return _duplicate(original, group_id, kind)
        await self._check_quota(quota)
        member = snapshot.member
        sender = header.sender
        if isinstance(sender, NewMemberCommitSender):
            # An external commit: a newcomer's join by invite (not a member yet), or a
            # member's resync of its own leaf.
            if post.invite_key is not None:
                await self._check_invite(group_id, post)
                view = await self._current_view(cached, snapshot)
                policy = policy_of(view.public)
                if policy is not None and policy.approval_required and member is None:
                    raise ApprovalRequired(
                        "the group requires an admin's approval: send a join request"
                    )
            elif member is None:
                raise ExternalCommitRefused(
                    "an external commit from a non-member needs a current invite"
                )
            if header.epoch != group.epoch:
                await self._refuse_epoch(group, header, kind)
            view = await self._current_view(cached, snapshot)
            return await self._post_commit(device, view, header, post, snapshot, quota=quota)
        if member is None:
            raise NotAMember("the device is not a member of this group")
        if header.epoch != group.epoch:
            await self._refuse_epoch(group, header, kind)
        if not isinstance(sender, MemberSender) or sender.leaf_index != member.leaf_index:
            raise SenderMismatch("a device posts only handshake messages its own leaf signed")
        view = await self._current_view(cached, snapshot)
        if kind is MessageKind.COMMIT:
            return await self._post_commit(device, view, header, post, snapshot, quota=quota)
        return await self._post_proposal(device, view, header, post, snapshot, quota=quota)

    async def _check_invite(self, group_id: bytes, post: Post) -> None:
        # Answers the clear refusals before the MLS work; the store checks expiry and
        # uses again, and takes the use, in the commit's own transaction.
        invite_key, signature = post.invite_key, post.invite_signature
        if invite_key is None or signature is None:  # pragma: no cover - checked in post()
            raise InvalidRequest("invite_key and invite_signature go together")
        invite = await self._storage.get_invite(invite_key)
        if invite is None or invite.group_id != group_id:
            raise InviteNotFound("the group has no invite with this key")
        if invite.expires_at <= self._clock.now():
            raise InviteExpired("the invite has expired")
        if invite.uses >= invite.max_uses:
            raise InviteUsedUp("the invite is used up")
        try:
            invites.verify_external_commit(invite_key, post.message, signature)
        except auth.VerificationError as exc:
            raise InviteSignatureInvalid(
                "the invite signature over the commit does not verify"
            ) from exc

    # -- Invites -------------------------------------------------------------------------

    async def create_invite(
        self,
        device: Device,
        group_id: bytes,
        *,
        invite_key: bytes,
        sealed_group_info: bytes,
        expires_at: int,
        max_uses: int,
    ) -> InviteRecord:
        """
        Create an invite of a group, for a member device.

        :raises InvalidRequest: if the key is not an Ed25519 key, the expiry is past,
            the use count is under 1, or the sealed GroupInfo too short to be one.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises NotAnAdmin: if the group has admins and the device is not one.
        :raises InviteExists: if an invite has this key.
        """
        try:
            auth.check_public_key(invite_key)
        except auth.VerificationError as exc:
            raise InvalidRequest("invite_key is not an Ed25519 public key") from exc
        now = self._clock.now()
        if expires_at <= now:
            raise InvalidRequest("expires_at is not in the future")
        if max_uses < 1:
            raise InvalidRequest("max_uses is at least 1")
        _check_sealed(sealed_group_info)
        await self._require_admin(device, group_id)
        return await self._storage.create_invite(
            NewInvite(
                group_id=group_id,
                invite_key=invite_key,
                created_by=device.device_key,
                sealed_group_info=sealed_group_info,
                expires_at=expires_at,
                max_uses=max_uses,
                created_at=now,
            )
        )

    async def update_invite(
        self, device: Device, group_id: bytes, invite_key: bytes, *, sealed_group_info: bytes
    ) -> InviteRecord:
        """
        Replace an invite's sealed GroupInfo, for a member device (after each commit).

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises InviteNotFound: if the group has no invite with this key.
        """
        _check_sealed(sealed_group_info)
        return await self._storage.update_invite(
            group_id,
            invite_key,
            device_key=device.device_key,
            sealed_group_info=sealed_group_info,
            now=self._clock.now(),
        )

    async def get_invite(self, group_id: bytes, invite_key: bytes) -> InviteRecord:
        """
        Read an invite, for any registered device (a newcomer holding the link).

        :raises InviteNotFound: if the group has no invite with this key.
        :raises InviteExpired: if it has expired.
        :raises InviteUsedUp: if its uses are all taken.
        """
        invite = await self._storage.get_invite(invite_key)
        if invite is None or invite.group_id != group_id:
            raise InviteNotFound("the group has no invite with this key")
        if invite.expires_at <= self._clock.now():
            raise InviteExpired("the invite has expired")
        if invite.uses >= invite.max_uses:
            raise InviteUsedUp("the invite is used up")
        return invite

    async def reset_invites(self, device: Device, group_id: bytes) -> int:
        """
        Revoke every invite of a group, for a member device.

        :returns: how many were revoked.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises NotAnAdmin: if the group has admins and the device is not one.
        """
        await self._require_admin(device, group_id)
        return await self._storage.reset_invites(group_id, device_key=device.device_key)

    async def set_invite_settings(
        self, device: Device, group_id: bytes, *, reset_invites_on_remove: bool
    ) -> None:
        """
        Set whether removing a member revokes the group's invites, for a member device.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises NotAnAdmin: if the group has admins and the device is not one.
        """
        await self._require_admin(device, group_id)
        await self._storage.set_reset_invites_on_remove(
            group_id, device_key=device.device_key, enabled=reset_invites_on_remove
        )

    async def _view_for(self, device: Device, group_id: bytes) -> tuple[_View, GroupSnapshot]:
        """
        The group's current public view, and the device's membership, from one snapshot.
        """
        async with self._lock(group_id):
            cached = self._views.get(group_id)
            snapshot = await self._storage.load_group(
                group_id,
                device_key=device.device_key,
                proposals_after=0 if cached is None else cached.applied_seq,
            )
            return await self._current_view(cached, snapshot), snapshot

    async def _require_admin(self, device: Device, group_id: bytes) -> None:
        # Managing invites is an admin's act where the group has admins (its policy
        # extension); anyone may still reseal an invite after a commit.
        view, snapshot = await self._view_for(device, group_id)
        if snapshot.member is None:
            raise NotAMember("the device is not a member of this group")
        admins = admins_of(view.public)
        if admins is not None and device.device_key not in admins:
            raise NotAnAdmin("only an admin of the group may manage its invites")

    async def request_to_join(
        self,
        device: Device,
        group_id: bytes,
        *,
        invite_key: bytes,
        key_package: bytes,
        sealed_note: bytes,
        invite_signature: bytes,
    ) -> JoinRequest:
        """
        Keep a newcomer's request to join a group that requires an admin's approval.

        :raises InviteNotFound: if the group has no invite with this key.
        :raises InviteExpired: if it has expired.
        :raises InviteUsedUp: if its uses are all taken.
        :raises InviteSignatureInvalid: if the invite key's signature does not verify.
        :raises InvalidKeyPackage: if the KeyPackage is not the device's, or not valid.
        :raises InvalidRequest: if the device is a member already, or the note is malformed.
        :raises ApprovalNotRequired: if the group lets newcomers join by external commit.
        :raises JoinRequestsFull: if too many requests wait.
        """
        if not NOTE_MIN_BYTES <= len(sealed_note) <= MAX_JOIN_NOTE_BYTES:
            raise InvalidRequest(f"sealed_note is {NOTE_MIN_BYTES} to {MAX_JOIN_NOTE_BYTES} bytes")
        await self.get_invite(group_id, invite_key)
        try:
            invites.verify_join_request(
                invite_key, group_id, key_package, sealed_note, invite_signature
            )
        except auth.VerificationError as exc:
            raise InviteSignatureInvalid(
                "the invite signature over the join request does not verify"
            ) from exc
        check_key_package(key_package, device_key=device.device_key, now=self._clock.now())
        view, snapshot = await self._view_for(device, group_id)
        policy = policy_of(view.public)
        if policy is None or not policy.approval_required:
            raise ApprovalNotRequired("the group does not require approval: join by invite")
        if snapshot.member is not None:
            raise InvalidRequest("the device is a member of the group already")
        return await self._storage.put_join_request(
            JoinRequest(
                group_id=group_id,
                device_key=device.device_key,
                invite_key=invite_key,
                key_package=key_package,
                sealed_note=sealed_note,
                created_at=self._clock.now(),
            ),
            max_pending=self._limits.max_join_requests_per_group,
        )

    async def join_requests(self, device: Device, group_id: bytes) -> tuple[JoinRequest, ...]:
        """
        The join requests waiting for the group's admins, for an admin device.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises NotAnAdmin: if the group has admins and the device is not one.
        """
        await self._require_admin(device, group_id)
        return await self._storage.join_requests(group_id)

    async def join_request(self, device: Device, group_id: bytes, device_key: bytes) -> JoinRequest:
        """
        Read one waiting join request: the asking device its own, an admin any.

        :returns: the request.
        :raises UnknownGroup: if there is no such group.
        :raises NotAnAdmin: if the group has admins and the device is neither one nor the
            asking device.
        :raises JoinRequestNotFound: if no request waits from that device.
        """
        if device.device_key != device_key:
            await self._require_admin(device, group_id)
        request = await self._storage.get_join_request(group_id, device_key)
        if request is None:
            raise JoinRequestNotFound(
                "no request to join waits from this device: never made, withdrawn, denied,"
                " or answered by adding it"
            )
        return request

    async def delete_join_request(self, device: Device, group_id: bytes, device_key: bytes) -> bool:
        """
        Answer (delete) a join request: an admin denies it, or after adding the device; the
        asking device withdraws it.

        :returns: whether there was such a request.
        :raises NotAnAdmin: if the group has admins and the device is neither one nor the
            asking device.
        """
        if device.device_key != device_key:
            await self._require_admin(device, group_id)
        return await self._storage.delete_join_request(group_id, device_key)

    async def invite_tree(self, group_id: bytes) -> tuple[int, bytes]:
        """
        :returns: the group's current epoch and ratchet tree, for a newcomer holding an
            invite (the sealed GroupInfo leaves the tree out: the relay has it anyway).
        :raises UnknownGroup: if there is no such group.
        """
        snapshot = await self._storage.load_group(group_id, device_key=b"", proposals_after=None)
        return snapshot.group.epoch, snapshot.group.ratchet_tree

    async def _refuse_epoch(
        self, group: GroupRecord, header: MessageHeader, kind: MessageKind
    ) -> None:
        epoch = header.epoch if header.epoch is not None else -1
        if kind is MessageKind.COMMIT and 0 <= epoch < group.epoch:
            winner = await self._storage.get_commit(group.group_id, epoch)
            if winner is not None:
                raise CommitConflict(
                    f"epoch {epoch} was ended by the commit at seq {winner.seq}",
                    epoch=group.epoch,
                    winner_seq=winner.seq,
                    winner_epoch=winner.epoch,
                    winner=winner.message,
                )
        raise StaleEpoch(
            f"the message is for epoch {epoch}; the group is at epoch {group.epoch}",
            epoch=group.epoch,
        )

    async def _post_commit(
        self,
        device: Device,
        view: _View,
        header: MessageHeader,
        post: Post,
        snapshot: GroupSnapshot,
        *,
        quota: QuotaCharge | None,
    ) -> Appended:
        public = view.public
        group_info = post.group_info
        if group_info is None:  # pragma: no cover - checked in post()
            raise InvalidRequest("a commit carries the new epoch's group_info")
        now = self._clock.now()
        staged = await asyncio.to_thread(_process, public, post.message, now, InvalidCommit)
        if not isinstance(staged, PublicCommit):  # pragma: no cover - peek said commit
            raise UnexpectedMessage("the message is not a commit")
        if staged.external:
            _check_external(staged, device.device_key, invited=post.invite_key is not None)
        self._policy.check_commit(public, staged, committer=device.device_key)
        welcomed = _check_welcome(public, staged, post.welcome)
        await asyncio.to_thread(_verify_group_info, public, staged, group_info)
        # Everything is checked; from here the view moves to the new epoch, and is
        # forgotten unless the store takes the commit.
        try:
            plan = await asyncio.to_thread(_merge, public, staged, welcomed=welcomed)
            if staged.external and GroupMember(device.device_key, staged.committer) not in (
                plan.members
            ):
                raise SenderMismatch("an external commit's new leaf is the posting device's key")
            appended = await self._storage.append_commit(
                NewCommit(
                    group_id=snapshot.group.group_id,
                    epoch=snapshot.group.epoch,
                    sender_device=device.device_key,
                    client_message_id=post.client_message_id,
                    message=post.message,
                    received_at=now,
                    group_info=group_info,
                    ratchet_tree=plan.ratchet_tree,
                    members=plan.members,
                    welcome=post.welcome,
                    welcome_recipients=plan.welcomed,
                    invite_key=post.invite_key if staged.resync is None else None,
                ),
                quota=quota,
            )
        except BaseException:
            self._forget(snapshot.group.group_id)
            raise
        if appended.duplicate:
            self._forget(snapshot.group.group_id)
            return appended
        self._remember(
            snapshot.group.group_id,
            _View(public=public, epoch=snapshot.group.epoch + 1, applied_seq=appended.entry.seq),
        )
        await self._publish(appended.entry, removed=plan.removed, welcomed=plan.welcomed)
        return appended

    async def _post_proposal(
        self,
        device: Device,
        view: _View,
        header: MessageHeader,
        post: Post,
        snapshot: GroupSnapshot,
        *,
        quota: QuotaCharge | None,
    ) -> Appended:
        public = view.public
        group_id = snapshot.group.group_id
        proposal = await asyncio.to_thread(
            _process, public, post.message, self._clock.now(), InvalidProposal
        )
        # From here the view holds the proposal; unless the store takes it, forget the view.
        try:
            if not isinstance(proposal, PublicProposal):  # pragma: no cover - peek said proposal
                raise UnexpectedMessage("the message is not a proposal")
            self._policy.check_proposal(public, proposal, sender=device.device_key)
            appended = await self._storage.append_message(
                self._new_message(device, header, MessageKind.PROPOSAL, post), quota=quota
            )
        except BaseException:
            self._forget(group_id)
            raise
        if appended.duplicate or appended.entry.seq != snapshot.group.last_seq + 1:
            # Another process appended in between: the view may miss its proposals.
            self._forget(group_id)
        else:
            view.applied_seq = appended.entry.seq
        if not appended.duplicate:
            await self._publish(appended.entry)
        return appended

    def _new_message(
        self, device: Device, header: MessageHeader, kind: MessageKind, post: Post
    ) -> NewMessage:
        if header.group_id is None or header.epoch is None:  # pragma: no cover - by _kind_of
            raise UnexpectedMessage("the message carries no group id or epoch")
        return NewMessage(
            group_id=header.group_id,
            epoch=header.epoch,
            kind=kind,
            sender_device=device.device_key,
            client_message_id=post.client_message_id,
            message=post.message,
            received_at=self._clock.now(),
        )

    # -- Reading -------------------------------------------------------------------------

    async def fetch(self, device: Device, group_id: bytes, *, after: int, limit: int) -> LogPage:
        """
        Read the log entries after ``after`` that a member device may see.

        :returns: the entries, oldest first, at most ``limit``.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """
        return await self._storage.fetch_messages(
            group_id, device_key=device.device_key, after=after, limit=limit
        )

    async def welcomes(self, device: Device, *, limit: int) -> tuple[PendingWelcome, ...]:
        """
        :returns: the Welcomes waiting for the device, oldest first.
        """
        return await self._storage.list_welcomes(device.device_key, limit=limit)

    async def ack(self, device: Device, group_id: bytes, *, seq: int) -> int:
        """
        Record that a member device has processed the log up to ``seq``.

        :returns: the device's cursor afterwards.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises CursorAhead: if ``seq`` is past the end of the log.
        """
        return await self._storage.ack_cursor(
            group_id, device_key=device.device_key, seq=seq, now=self._clock.now()
        )

    # -- The public views ------------------------------------------------------------------

    def _lock(self, group_id: bytes) -> asyncio.Lock:
        lock = self._locks.get(group_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[group_id] = lock
        return lock

    def _remember(self, group_id: bytes, view: _View) -> None:
        self._views[group_id] = view
        self._views.move_to_end(group_id)
        while len(self._views) > max(0, self._limits.public_group_cache_size):
            self._views.popitem(last=False)

    def _forget(self, group_id: bytes) -> None:
        self._views.pop(group_id, None)

    async def _current_view(self, cached: _View | None, snapshot: GroupSnapshot) -> _View:
        # The snapshot's proposals are those of the current epoch after the cached
        # view's applied_seq, which precedes every entry of a later epoch: so they
        # are exactly what a rebuilt view, or the cached one, still lacks.
        group = snapshot.group
        if cached is not None and cached.epoch == group.epoch:
            view = cached
        else:
            public = await asyncio.to_thread(
                _public_group_from, group.group_info, group.ratchet_tree, now=None
            )
            view = _View(public=public, epoch=group.epoch, applied_seq=0)
        try:
            if snapshot.proposals:
                await asyncio.to_thread(_replay, view.public, snapshot.proposals)
        except BaseException:
            self._forget(group.group_id)
            raise
        view.applied_seq = max(view.applied_seq, group.last_seq)
        self._remember(group.group_id, view)
        return view

    async def _publish(
        self,
        entry: LogEntry,
        *,
        removed: tuple[bytes, ...] = (),
        welcomed: tuple[bytes, ...] = (),
    ) -> None:
        inline = len(entry.message) <= self._limits.push_inline_max_bytes
        await self._fanout.publish(
            MessageNotice(
                group_id=entry.group_id,
                seq=entry.seq,
                epoch=entry.epoch,
                kind=entry.kind,
                message=entry.message if inline else None,
                removed_devices=removed,
                welcomed_devices=welcomed,
            )
        )


def _peek(message: bytes) -> MessageHeader:
    try:
        return peek(message)
    except mls_errors.ProtocolError as exc:
        raise MalformedMLS(f"not an MLSMessage: {exc}") from exc


def _kind_of(header: MessageHeader) -> MessageKind:
    # RFC 9420 §6: the wire format and content type are public. Townsquare:
    # handshake messages travel as PublicMessage, so that the relay can check
    # them; application data as PrivateMessage, which RFC 9420 §6 requires.
    match header.wire_format, header.content_type:
        case WireFormat.MLS_PUBLIC_MESSAGE, ContentType.COMMIT:
            return MessageKind.COMMIT
        case WireFormat.MLS_PUBLIC_MESSAGE, ContentType.PROPOSAL:
            return MessageKind.PROPOSAL
        case WireFormat.MLS_PRIVATE_MESSAGE, ContentType.APPLICATION:
            return MessageKind.APPLICATION
        case WireFormat.MLS_PRIVATE_MESSAGE, _:
            raise UnexpectedMessage(
                "a proposal or commit must be sent as a PublicMessage, for the relay to check"
            )
        case WireFormat.MLS_PUBLIC_MESSAGE, _:
            raise UnexpectedMessage("application data must be sent as a PrivateMessage")
        case _:
            raise UnexpectedMessage(
                f"a group message is a PublicMessage or PrivateMessage, not"
                f" {header.wire_format.name}"
            )


def _check_post_fields(
    header: MessageHeader, kind: MessageKind, group_id: bytes, post: Post
) -> None:
    # What a post carries must fit its message, before anything is read from the store.
    if header.group_id != group_id:
        raise GroupMismatch("the message's group id is not the group in the path")
    if kind is not MessageKind.COMMIT and (post.welcome is not None or post.group_info is not None):
        raise InvalidRequest("only a commit carries a welcome and a group_info")
    if kind is MessageKind.COMMIT and post.group_info is None:
        raise InvalidRequest("a commit carries the new epoch's group_info")
    if (post.invite_key is None) != (post.invite_signature is None):
        raise InvalidRequest("invite_key and invite_signature go together")
    if post.invite_key is not None and not isinstance(header.sender, NewMemberCommitSender):
        raise InvalidRequest("only an external commit carries an invite")


def _duplicate(original: LogEntry, group_id: bytes, kind: MessageKind) -> Appended:
    if original.group_id != group_id or original.kind is not kind:
        raise MessageIdReused(
            f"this device used this client message id for a {original.kind} of another group"
            if original.group_id != group_id
            else f"this device used this client message id for a {original.kind}"
        )
    return Appended(entry=original, duplicate=True)


def _rejected(error: type[MLSRejected], exc: mls_errors.ProtocolError, what: str) -> MLSRejected:
    return error(f"{what}: {exc}", mls_error=type(exc).__name__, rfc_section=exc.rfc_section)


def _public_group_from(
    group_info: bytes, ratchet_tree: bytes | None, *, now: int | None
) -> PublicGroup:
    # Runs on a worker thread: verifying a tree is O(members) signatures.
    try:
        return PublicGroup.from_group_info(
            group_info, ratchet_tree=ratchet_tree, credential_validator=device_credential, now=now
        )
    except mls_errors.DecodeError as exc:
        raise MalformedMLS(f"the GroupInfo or ratchet tree does not decode: {exc}") from exc
    except mls_errors.InvalidContentType as exc:
        raise UnexpectedMessage("group_info must be an MLSMessage(GroupInfo)") from exc
    except mls_errors.ProtocolError as exc:
        raise _rejected(InvalidGroupInfo, exc, "the GroupInfo is not valid") from exc


def _process(
    public: PublicGroup, message: bytes, now: int, error: type[MLSRejected]
) -> PublicProposal | PublicCommit:
    try:
        return public.process(message, now=now)
    except mls_errors.ProtocolError as exc:
        raise _rejected(error, exc, "the public view refuses the message") from exc


def _replay(public: PublicGroup, proposals: tuple[LogEntry, ...]) -> None:
    for entry in proposals:
        try:
            public.process(entry.message)
        except mls_errors.ProtocolError as exc:
            # Stored proposals passed these very checks; failing now is a bug or a
            # corrupt store, never the client's fault.
            raise ServerError(
                f"stored proposal at seq {entry.seq} no longer verifies: {type(exc).__name__}"
            ) from exc


def _check_sealed(sealed_group_info: bytes) -> None:
    if len(sealed_group_info) < invites.NONCE_BYTES + 16:
        raise InvalidRequest("sealed_group_info is shorter than a nonce and a tag")


def _check_external(staged: PublicCommit, device_key: bytes, *, invited: bool) -> None:
    # RFC 9420 §12.4.3.2: an external commit may remove only the joiner's own old
    # leaf (a resync). Townsquare: the posting device is the joiner; its new leaf's
    # key is checked after the merge, the removed leaf's key here.
    for removed in staged.removed:
        if removed.signature_key != device_key:
            raise ExternalCommitRefused("an external commit removes only the joiner's own leaf")
    if staged.resync is None and not invited:
        raise ExternalCommitRefused(
            "an external commit needs a current invite, or must resync the device's own leaf"
        )


def _check_welcome(
    public: PublicGroup, staged: PublicCommit, welcome_bytes: bytes | None
) -> tuple[bytes, ...]:
    if not staged.added:
        if welcome_bytes is not None:
            raise WelcomeMismatch("the commit adds no member but carries a Welcome")
        return ()
    if welcome_bytes is None:
        raise WelcomeMismatch("the commit adds members but carries no Welcome")
    try:
        message = MLSMessage.decode(welcome_bytes)
    except mls_errors.ProtocolError as exc:
        raise MalformedMLS(f"the Welcome is not an MLSMessage: {exc}") from exc
    welcome = message.body
    if not isinstance(welcome, Welcome):
        raise UnexpectedMessage("welcome must be an MLSMessage(Welcome)")
    if welcome.cipher_suite != public.cipher_suite.suite_id:
        raise WelcomeMismatch("the Welcome's cipher suite is not the group's")
    # RFC 9420 §12.4.3.1: each EncryptedGroupSecrets names its new member by
    # KeyPackageRef. Townsquare: the Welcome goes to exactly the added members,
    # once each, so that the relay hands it to the devices it names and no other.
    recipients = [entry.new_member for entry in welcome.secrets]
    expected = {added.key_package_ref for added in staged.added}
    if len(recipients) != len(set(recipients)) or set(recipients) != expected:
        raise WelcomeMismatch("the Welcome is not addressed to exactly the added members")
    return tuple(added.signature_key for added in staged.added)


def _verify_group_info(public: PublicGroup, staged: PublicCommit, group_info: bytes) -> None:
    # Runs on a worker thread; changes nothing.
    try:
        public.verify_group_info(group_info, staged=staged)
    except mls_errors.DecodeError as exc:
        raise MalformedMLS(f"the GroupInfo is not an MLSMessage: {exc}") from exc
    except mls_errors.InvalidContentType as exc:
        raise UnexpectedMessage("group_info must be an MLSMessage(GroupInfo)") from exc
    except mls_errors.ProtocolError as exc:
        raise _rejected(InvalidGroupInfo, exc, "the GroupInfo is not the commit's") from exc


def _merge(
    public: PublicGroup, staged: PublicCommit, *, welcomed: tuple[bytes, ...]
) -> _CommitPlan:
    # Runs on a worker thread: the members and tree of the new epoch are O(members).
    before = {member.signature_key for member in public.members()}
    public.merge(staged)
    after = public.members()
    keys = {member.signature_key for member in after}
    return _CommitPlan(
        members=tuple(GroupMember(m.signature_key, m.leaf_index) for m in after),
        ratchet_tree=public.ratchet_tree(),
        removed=tuple(sorted(before - keys)),
        welcomed=welcomed,
    )
