"""
MLS group operations at 100 to 10,000 members: cost, crypto-alone cost, and ts-mls (suite 1).

For each size, on a steady-state group (every parent node filled, see
``bench/group_fixtures.py``), with real ``Group`` calls:

* **commit**: ``Group.commit(force_path=True)`` by leaf 0 (an empty commit, so
  a full UpdatePath: about log2(n) seals) and saving the pending commit;
  then, reported apart, ``merge`` of that commit and saving the new epoch;
* **process**: leaf 1 (the committer's sibling: it decrypts at the lowest
  level and derives the most node keys, the worst case) ``process``es that
  commit, ``merge``s it and saves the new epoch;
* **join**: a new member ``Group.join``s from the Welcome of leaf 0's commit
  adding it (with a path, the ratchet tree in the GroupInfo), then saves its
  whole state.

"Save" is ``GroupPersistence.save`` to a ``MemoryGroupStore`` (so the CPU
cost of serialising, not disk I/O), each run on a group whose previous state
was saved before the clock started; if ``townsquare.mls.group_store`` is
missing the save columns say "n/a".

In the same run, the cryptographic operations those calls cannot avoid, called
directly on the same keys and byte strings (timed per run, median reported):

* commit: one leaf HPKE key generation, per path node one node key derivation
  (DeriveSecret "node" + DeriveKeyPair, and DeriveSecret "path"), one
  EncryptWithLabel per ciphertext of the UpdatePath, and three signatures:
  the leaf node, the FramedContent, and the GroupInfo that ``commit`` always
  returns (it carries the ratchet tree, so its signature hashes the tree);
* process: the FramedContent and leaf node signature checks, one
  DecryptWithLabel, and the node key derivations from there to the root;
* join: the HPKE open of the GroupSecrets, the GroupInfo signature check, one
  signature check per leaf, and the node key derivations from the common
  ancestor with the committer up.

The ratio is operation / crypto alone. "Other crypto" (key schedule, MACs,
transcript hashes, the external_pub derivation, and for a join the AEAD of the
GroupInfo, every tree-hash and parent-hash input hashed once and the private
keys checked against the tree) is timed too and shown apart, not in the ratio.

ts-mls 1.6.4 (the one ``tests/interop`` installs: ``cd tests/interop && npm
ci``) runs in Node through ``bench/tsmls_groups.mjs``, one process per size:
a ts-mls member joins the same group from a Welcome made for its KeyPackage
(so the group has n + 1 members), then creates commits with a path (an empty
commit, never applied) and processes a Python commit (not applied), each timed
inside Node. It is slow, so each op stops after ``--tsmls-runs`` runs or
``--tsmls-budget`` seconds, and sizes above ``--tsmls-max-size`` (default
5,000) are skipped. Epoch authenticators are compared both ways.

Times are CPU time of the Python process (``time.process_time``) and of the
Node process (``process.cpuUsage``), since the bench machine is shared;
``--clock wall`` uses wall time instead. One warm-up run is discarded and
``gc.collect()`` runs before each timed run.

Run: ``.venv/bin/python bench/mls_groups.py`` (all four sizes: the first run
builds and caches the fixtures in ``bench/.cache/``, several minutes; then a few
minutes). ``--quick`` for a smoke run at 100 and 1,000 members; ``--profile``
adds a profile of commit, process and join at the largest size (pyinstrument if
it is installed in the venv, else cProfile; kept in ``bench/.cache/profiles/``).
Prints one table per size, then a summary; appends to
``bench/results/mls_groups.jsonl``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from group_fixtures import CACHE, SeededRng, SteadyGroup, build_steady_group, new_bundle
from harness import Figure, machine, record
from townsquare.mls.ciphersuite import CipherSuite
from townsquare.mls.framing import AuthenticatedContentTBM, MLSMessage, PublicMessage
from townsquare.mls.group import Group, PendingCommit, StagedCommit
from townsquare.mls.key_package import key_package_ref
from townsquare.mls.key_schedule import (
    confirmation_tag,
    derive_epoch_secrets,
    derive_epoch_secrets_from_joiner,
    external_key_pair,
)
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.proposals import Add
from townsquare.mls.public_message import framed_content_tbs
from townsquare.mls.ratchet_tree import (
    TREE_HASH_INPUT,
    LeafNodeHashInput,
    ParentHashInput,
    ParentNode,
    ParentNodeHashInput,
)
from townsquare.mls.registries import LeafNodeSource, WireFormat
from townsquare.mls.tree_math import LeafIndex, NodeIndex, leaf_to_node, left, level, right
from townsquare.mls.treekem import derive_node_key_pair, next_path_secret
from townsquare.mls.welcome import GroupInfo, Welcome, welcome_key, welcome_nonce

try:
    from townsquare.mls.group_store import GroupPersistence, MemoryGroupStore
except ImportError:  # the persistence layer is not there yet
    GroupPersistence = None  # type: ignore[assignment,misc]
    MemoryGroupStore = None  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parent.parent
TSMLS_SCRIPT = Path(__file__).resolve().parent / "tsmls_groups.mjs"
TSMLS_MODULES = ROOT / "tests" / "interop" / "node_modules" / "ts-mls"

# Targets from the issue, printed beside the figures (not asserted).
TARGET_MS = {"commit": 5.0, "process": 4.0, "join": 1200.0}
TARGET_RATIO = {"commit": 3.0, "process": 3.0, "join": 1.5}
TARGET_SIZE = 10_000


# The clock every Python timing uses: CPU time of this process by default, since
# the bench machine is shared (``--clock wall`` for time.perf_counter).
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: Callable[[], float] = time.process_time


def clock() -> float:
    return _clock()


# Which of the Node script's timings matches the clock: "cpu_ms" or "times_ms" (wall).
TSMLS_KEY = "cpu_ms"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- Statistics ------------------------------------------------------------------------


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p99(samples: list[float]) -> float:
    # As bench/harness.py: the sample at the 99th percentile's rank.
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def figure(name: str, samples_ms: list[float], **params: object) -> Figure:
    return Figure(name, params, len(samples_ms), median(samples_ms) * 1e3, p99(samples_ms) * 1e3)


def ms(seconds: float) -> float:
    return seconds * 1e3


# -- Saving ----------------------------------------------------------------------------


class Saver:
    """
    Wraps ``GroupPersistence`` over a ``MemoryGroupStore``, or does nothing if there is none.
    """

    def __init__(self) -> None:
        self.available = GroupPersistence is not None
        self.reason = "" if self.available else "townsquare.mls.group_store not found"

    def attach(self, group: Group) -> Any:
        """
        :returns: a persistence that has saved ``group`` whole (untimed setup), or ``None``.
        """
        if not self.available:
            return None
        persistence = GroupPersistence(group, MemoryGroupStore())
        persistence.save()
        return persistence

    def save(self, persistence: Any) -> None:
        if persistence is not None:
            persistence.save()

    @staticmethod
    def stored_bytes(persistence: Any) -> tuple[int, int]:
        """
        :returns: total bytes (keys and values) and record count of the store.
        """
        records = persistence.store.scan("")
        return sum(len(k) + len(v) for k, v in records), len(records)


# -- Inputs of the crypto-alone measurements --------------------------------------------


def _public_message(data: bytes) -> PublicMessage:
    body = MLSMessage.decode(data).body
    assert isinstance(body, PublicMessage)
    return body


def _covers(node: NodeIndex, leaf: LeafIndex) -> bool:
    return abs(int(leaf_to_node(leaf)) - int(node)) < (1 << level(node))


class CommitInputs:
    """
    The byte strings and keys of one real commit from leaf 0, for the crypto-alone timings.
    """

    def __init__(self, steady: SteadyGroup, pending: PendingCommit, receiver: int) -> None:
        suite = steady.suite
        message = _public_message(pending.commit)
        content = message.content
        commit = content.content
        path = commit.path  # type: ignore[union-attr]
        assert path is not None
        new_tree = pending.staged._next.tree
        self.suite = suite
        self.sig_key = steady.bundles[0].signature_private_key
        self.sender_pub = steady.tree.leaf(LeafIndex(0)).signature_key  # type: ignore[union-attr]
        self.fc_tbs = framed_content_tbs(
            content, wire_format=WireFormat.MLS_PUBLIC_MESSAGE, group_context=steady.context
        ).encode()
        self.fc_signature = message.signature
        self.tbm = AuthenticatedContentTBM(
            content_tbs=framed_content_tbs(
                content, wire_format=WireFormat.MLS_PUBLIC_MESSAGE, group_context=steady.context
            ),
            signature=message.signature,
            confirmation_tag=message.confirmation_tag,
        ).encode()
        self.leaf_tbs = path.leaf_node.to_be_signed(steady.group_id, 0)
        self.leaf_signature = path.leaf_node.signature
        group_info = MLSMessage.decode(pending.group_info).body
        assert isinstance(group_info, GroupInfo)
        self.gi_tbs = group_info.to_be_signed()
        self.path_keys = [
            (key,)
            for key in (path.leaf_node.encryption_key, *(n.encryption_key for n in path.nodes))
        ]
        self.n_path = len(path.nodes)
        filtered = new_tree.filtered_direct_path(LeafIndex(0))
        self.recipients = [
            new_tree.encryption_key(r)
            for _, copath in filtered
            for r in new_tree.resolution(copath)
        ]
        self.n_ciphertexts = sum(len(n.encrypted_path_secret) for n in path.nodes)
        assert len(self.recipients) == self.n_ciphertexts, "recipients differ from the path's"
        provisional = replace(
            steady.context,
            epoch=steady.context.epoch + 1,
            tree_hash=pending.staged._next.context.tree_hash,
        )
        self.context_bytes = provisional.encode()
        self.new_context = pending.staged._next.context
        self.init_secret = steady.secrets.init_secret
        self.membership_key = steady.secrets.membership_key
        self.commit_bytes = len(pending.commit)
        self.group_info_bytes = len(pending.group_info)

        # The receiver's one decryption (RFC 9420 §7.5), found as decrypt_update_path does.
        private = steady.private(receiver)
        position = next(
            i for i, (_, copath) in enumerate(filtered) if _covers(copath, LeafIndex(receiver))
        )
        resolution = new_tree.resolution(filtered[position][1])
        index, key = next(
            (i, k) for i, node in enumerate(resolution) if (k := private.private_key(node))
        )
        ciphertext = path.nodes[position].encrypted_path_secret[index]
        self.receiver_key = key
        self.receiver_ct = (ciphertext.kem_output, ciphertext.ciphertext)
        self.receiver_derivations = len(filtered) - position
        self.receiver_level = level(filtered[position][0])
        # Checks the inputs are the real ones: this decrypts only with the right context.
        suite.decrypt_with_label(key, b"UpdatePathNode", self.context_bytes, *self.receiver_ct)


class JoinInputs:
    """
    The byte strings and keys a joiner's Welcome leads to, for the crypto-alone timing.
    """

    def __init__(self, steady: SteadyGroup, pending: PendingCommit, joiner: Any) -> None:
        suite = steady.suite
        self.suite = suite
        welcome = MLSMessage.decode(pending.welcome).body  # type: ignore[arg-type]
        assert isinstance(welcome, Welcome)
        entry = welcome.secrets[0]
        self.init_private = joiner.init_private_key
        self.encrypted_group_info = welcome.encrypted_group_info
        self.gs_ct = (
            entry.encrypted_group_secrets.kem_output,
            entry.encrypted_group_secrets.ciphertext,
        )
        next_epoch = pending.staged._next
        secrets = next_epoch.secrets
        self.welcome_secret = secrets.welcome_secret
        self.joiner_secret = secrets.joiner_secret
        self.context = next_epoch.context
        key, nonce = (
            welcome_key(suite, secrets.welcome_secret),
            welcome_nonce(suite, secrets.welcome_secret),
        )
        self.aead = (key, nonce)
        group_info = GroupInfo.decode(
            suite.aead_open(key, nonce, b"", welcome.encrypted_group_info)
        )
        self.gi_tbs = group_info.to_be_signed()
        self.gi_signature = group_info.signature
        tree = next_epoch.tree
        self.signer_pub = tree.leaf(LeafIndex(group_info.signer)).signature_key  # type: ignore[union-attr]
        self.leaves = []
        joiner_leaf = None
        for i, leaf in tree.leaves():
            if leaf.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
                tbs = leaf.to_be_signed()
                if leaf == joiner.key_package.leaf_node:
                    joiner_leaf = i
            else:
                tbs = leaf.to_be_signed(steady.group_id, i)
            self.leaves.append((leaf.signature_key, b"LeafNodeTBS", tbs, leaf.signature))
        assert joiner_leaf is not None
        self.joiner_leaf = joiner_leaf
        self.derivations = sum(
            1
            for node, _ in tree.filtered_direct_path(LeafIndex(group_info.signer))
            if _covers(node, joiner_leaf)
        )
        # Every tree-hash input (RFC 9420 §7.8) and two parent-hash inputs per
        # filled parent (§7.9.2 checks each parent against both children).
        self.tree_hash_inputs = []
        self.parent_hash_inputs = []
        for index in range(tree.node_width):
            node = NodeIndex(index)
            value = tree.node(node)
            if index % 2 == 0:
                self.tree_hash_inputs.append(
                    TREE_HASH_INPUT.encode(
                        LeafNodeHashInput(
                            leaf_index=index // 2,
                            leaf_node=value if isinstance(value, LeafNode) else None,
                        )
                    )
                )
                continue
            self.tree_hash_inputs.append(
                TREE_HASH_INPUT.encode(
                    ParentNodeHashInput(
                        parent_node=value,  # type: ignore[arg-type]
                        left_hash=tree.tree_hash(left(node)),
                        right_hash=tree.tree_hash(right(node)),
                    )
                )
            )
            if isinstance(value, ParentNode):
                for child in (left(node), right(node)):
                    self.parent_hash_inputs.append(
                        ParentHashInput(
                            encryption_key=value.encryption_key,
                            parent_hash=value.parent_hash,
                            original_sibling_tree_hash=tree.tree_hash(child),
                        ).encode()
                    )
        self.key_package_bytes = joiner.key_package
        self.welcome_bytes = len(pending.welcome)  # type: ignore[arg-type]
        self.tree_bytes = len(tree.encode())
        self.n_leaves = len(self.leaves)


# -- Crypto-alone timings -----------------------------------------------------------------


class Parts:
    """
    Per-run timings of named parts; the total per run is their sum.
    """

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.totals: list[float] = []
        self._run: dict[str, float] = {}

    def start_run(self) -> None:
        self._run = {}

    def add(self, name: str, fn: Callable[[], object]) -> None:
        start = clock()
        fn()
        self._run[name] = self._run.get(name, 0.0) + ms(clock() - start)

    def end_run(self) -> None:
        for name, value in self._run.items():
            self.samples.setdefault(name, []).append(value)
        self.totals.append(sum(self._run.values()))

    def medians(self) -> dict[str, float]:
        return {name: median(values) for name, values in self.samples.items()}


def _each(fn: Callable[..., object], calls: list[tuple[Any, ...]]) -> None:
    for arguments in calls:
        fn(*arguments)


def _derive_chain(suite: CipherSuite, secret: bytes, count: int) -> None:
    for _ in range(count):
        derive_node_key_pair(suite, secret)
        secret = next_path_secret(suite, secret)


def crypto_commit(c: CommitInputs, rng: SeededRng, runs: int) -> tuple[Parts, Parts]:
    suite = c.suite
    secret = rng(suite.hash_length)
    core, other = Parts(), Parts()
    for _ in range(runs):
        gc.collect()
        core.start_run()
        core.add("leaf HPKE keygen", lambda: suite.hpke_generate_key_pair(rng))
        core.add("node key derivations", lambda: _derive_chain(suite, secret, c.n_path))
        core.add(
            "HPKE seals",
            lambda: [
                suite.encrypt_with_label(key, b"UpdatePathNode", c.context_bytes, secret, rng)
                for key in c.recipients
            ],
        )
        core.add("sign leaf", lambda: suite.sign_with_label(c.sig_key, b"LeafNodeTBS", c.leaf_tbs))
        core.add(
            "sign FramedContent",
            lambda: suite.sign_with_label(c.sig_key, b"FramedContentTBS", c.fc_tbs),
        )
        core.add(
            "sign GroupInfo",
            lambda: suite.sign_with_label(c.sig_key, b"GroupInfoTBS", c.gi_tbs),
        )
        core.end_run()
        other.start_run()
        _other_epoch_crypto(other, c, secret)
        other.add("external_pub derivation", lambda: external_key_pair(suite, secret))
        other.end_run()
    return core, other


def _other_epoch_crypto(parts: Parts, c: CommitInputs, secret: bytes) -> None:
    suite = c.suite

    def key_schedule() -> None:
        secrets = derive_epoch_secrets(
            suite,
            init_secret=c.init_secret,
            commit_secret=secret,
            psk_secret=None,
            group_context=c.new_context,
        )
        confirmation_tag(suite, secrets.confirmation_key, secret)

    parts.add("key schedule + confirmation tag", key_schedule)
    parts.add("membership tag", lambda: suite.mac(c.membership_key, c.tbm))
    # Confirmed transcript hash (over about the signed content) and interim hash.
    parts.add("transcript hashes", lambda: (suite.hash(c.fc_tbs), suite.hash(secret * 2)))


def crypto_process(c: CommitInputs, runs: int) -> tuple[Parts, Parts]:
    suite = c.suite
    secret = bytes(suite.hash_length)
    core, other = Parts(), Parts()
    for _ in range(runs):
        gc.collect()
        core.start_run()
        core.add(
            "verify FramedContent",
            lambda: suite.verify_with_label(
                c.sender_pub, b"FramedContentTBS", c.fc_tbs, c.fc_signature
            ),
        )
        core.add(
            "verify leaf",
            lambda: suite.verify_with_label(
                c.sender_pub, b"LeafNodeTBS", c.leaf_tbs, c.leaf_signature
            ),
        )
        core.add(
            "HPKE open",
            lambda: suite.decrypt_with_label(
                c.receiver_key, b"UpdatePathNode", c.context_bytes, *c.receiver_ct
            ),
        )
        core.add(
            "node key derivations",
            lambda: _derive_chain(suite, secret, c.receiver_derivations),
        )
        core.end_run()
        other.start_run()
        _other_epoch_crypto(other, c, secret)
        other.add(
            "path keys validated",
            lambda: _each(suite.check_hpke_public_key, c.path_keys),
        )
        other.end_run()
    return core, other


def crypto_join(j: JoinInputs, runs: int) -> tuple[Parts, Parts]:
    suite = j.suite
    secret = bytes(suite.hash_length)
    core, other = Parts(), Parts()
    for _ in range(runs):
        gc.collect()
        core.start_run()
        core.add(
            "HPKE open GroupSecrets",
            lambda: suite.decrypt_with_label(
                j.init_private, b"Welcome", j.encrypted_group_info, *j.gs_ct
            ),
        )
        core.add(
            "verify GroupInfo",
            lambda: suite.verify_with_label(
                j.signer_pub, b"GroupInfoTBS", j.gi_tbs, j.gi_signature
            ),
        )
        core.add(
            "verify leaves",
            lambda: _each(
                suite.verify_with_label,
                j.leaves,
            ),
        )
        core.add("node key derivations", lambda: _derive_chain(suite, secret, j.derivations))
        core.end_run()
        other.start_run()
        other.add(
            "AEAD open GroupInfo",
            lambda: suite.aead_open(j.aead[0], j.aead[1], b"", j.encrypted_group_info),
        )
        other.add("tree hashes", lambda: [suite.hash(data) for data in j.tree_hash_inputs])
        other.add("parent hashes", lambda: [suite.hash(data) for data in j.parent_hash_inputs])
        other.add(
            "private keys vs tree",
            lambda: [suite.hpke_public_key(j.init_private) for _ in range(1 + j.derivations)],
        )
        other.add(
            "key schedule + KeyPackageRef",
            lambda: (
                derive_epoch_secrets_from_joiner(
                    suite, joiner_secret=j.joiner_secret, psk_secret=None, group_context=j.context
                ),
                key_package_ref(suite, j.key_package_bytes),
            ),
        )
        other.end_run()
    return core, other


# -- ts-mls ------------------------------------------------------------------------------


class TsMlsError(RuntimeError):
    pass


class TsMls:
    """
    ``node bench/tsmls_groups.mjs``: one ts-mls member, JSON lines, every read with a timeout.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
            # node from PATH, as tests/interop does.
            ["node", "--expose-gc", "--max-old-space-size=8192", str(TSMLS_SCRIPT)],  # noqa: S607
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=TSMLS_SCRIPT.parent,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line)
            del self._stderr[:-20]

    def call(self, op: str, **fields: object) -> dict[str, Any]:
        assert self._process.stdin is not None
        request = {
            "op": op,
            **{k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()},
        }
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        try:
            line = self._lines.get(timeout=self._timeout)
        except queue.Empty:
            self.close()
            raise TsMlsError(f"ts-mls {op}: no answer in {self._timeout:.0f} s") from None
        if line is None:
            raise TsMlsError(f"ts-mls exited during {op}: {''.join(self._stderr)}")
        response = json.loads(line)
        if "error" in response:
            raise TsMlsError(f"ts-mls {op}: {response['error']}")
        return response["result"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()


def tsmls_problem() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not TSMLS_MODULES.exists():
        return "tests/interop/node_modules/ts-mls is missing (cd tests/interop && npm ci)"
    return None


def bench_tsmls(steady: SteadyGroup, rng: SeededRng, args: argparse.Namespace) -> dict[str, Any]:
    """
    Time ts-mls joining, committing and processing in the same group. See the module docstring.
    """
    n = steady.n
    peer = TsMls(timeout=args.tsmls_timeout)
    out: dict[str, Any] = {}
    try:
        info = peer.call("info")
        missing = [name for name, ok in info["patches"].items() if not ok]
        if missing:
            raise TsMlsError(f"ts-mls patches not applied: {missing} (cd tests/interop && npm ci)")
        out["version"] = info["ts_mls"]
        key_package = bytes.fromhex(
            peer.call("key_package", suite=int(steady.suite.suite_id), identity=b"tsmls")[
                "key_package"
            ]
        )
        body = MLSMessage.decode(key_package).body
        creator = steady.member(0)
        add = creator.commit(rng=rng, proposals=[Add(body)], force_path=True)  # type: ignore[arg-type]
        runs, budget = args.tsmls_runs, args.tsmls_budget
        log(f"  ts-mls: join ({n + 1:,} members)")
        joined = peer.call("join", welcome=add.welcome, runs=runs, budget_s=budget)
        expected = add.staged._next.secrets.epoch_authenticator.hex()
        if joined["epoch_authenticator"] != expected:
            raise TsMlsError("ts-mls joined with another epoch authenticator")
        out["join"] = joined[TSMLS_KEY]
        creator.merge(add.staged)

        log("  ts-mls: commit with a path")
        update = peer.call("update", runs=runs, budget_s=budget)
        out["commit"] = update[TSMLS_KEY]
        # Python checks ts-mls's commit (not merged).
        staged = creator.process(bytes.fromhex(update["commit"]))
        assert isinstance(staged, StagedCommit)
        if staged._next.secrets.epoch_authenticator.hex() != update["epoch_authenticator"]:
            raise TsMlsError("Python processed ts-mls's commit to another epoch authenticator")

        log("  ts-mls: process a Python commit")
        pending = creator.commit(rng=rng, force_path=True)
        processed = peer.call("process", message=pending.commit, runs=runs, budget_s=budget)
        if (
            processed["epoch_authenticator"]
            != pending.staged._next.secrets.epoch_authenticator.hex()
        ):
            raise TsMlsError("ts-mls processed the Python commit to another epoch authenticator")
        out["process"] = processed[TSMLS_KEY]
        out["wall"] = {
            "join": joined["times_ms"],
            "commit": update["times_ms"],
            "process": processed["times_ms"],
        }
        out["max_rss"] = peer.call("memory")["max_rss_bytes"]
    finally:
        peer.close()
    return out


# -- One size ----------------------------------------------------------------------------


def traced_peak(fn: Callable[[], object]) -> int:
    """
    :returns: the peak of memory allocated by ``fn`` above what was allocated before, in bytes.
    """
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def bench_size(n: int, args: argparse.Namespace, saver: Saver) -> dict[str, Any]:
    log(f"\n{n:,} members: fixture")
    steady = build_steady_group(n, use_cache=not args.no_cache, log=log)
    suite = steady.suite
    rng = SeededRng(f"mls_groups/{n}")
    runs, join_runs = args.runs, args.join_runs
    result: dict[str, Any] = {"n": n, "leaves": steady.tree.leaf_count, "timings": steady.timings}

    # The commit everyone processes, and the Welcome everyone joins with; both checked.
    committer, receiver = 0, 1
    sample = steady.member(committer).commit(rng=rng, force_path=True)
    inputs = CommitInputs(steady, sample, receiver)
    check = steady.member(receiver).process(sample.commit)
    assert isinstance(check, type(sample.staged))
    assert (
        check._next.secrets.epoch_authenticator == sample.staged._next.secrets.epoch_authenticator
    )
    joiner = new_bundle(suite, b"joiner", SeededRng(f"joiner/{n}"))
    add = steady.member(committer).commit(
        rng=rng, proposals=[Add(joiner.key_package)], force_path=True
    )
    assert add.welcome is not None
    joined = Group.join(add.welcome, joiner)
    assert joined.epoch_authenticator == add.staged._next.secrets.epoch_authenticator
    join_inputs = JoinInputs(steady, add, joiner)

    # -- commit (+ save), then merge (+ save) ------------------------------------------
    log(f"  commit × {runs}")
    commit_parts: dict[str, list[float]] = {"commit": [], "save": [], "merge": [], "merge save": []}
    for i in range(runs + 1):
        group = steady.member(committer)
        persistence = saver.attach(group)
        gc.collect()
        t0 = clock()
        pending = group.commit(rng=rng, force_path=True)
        t1 = clock()
        saver.save(persistence)
        t2 = clock()
        group.merge(pending.staged)
        t3 = clock()
        saver.save(persistence)
        t4 = clock()
        if i == 0:
            continue  # warm-up
        for name, value in zip(commit_parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            commit_parts[name].append(ms(value))

    # -- process + merge (+ save) -------------------------------------------------------
    log(f"  process × {runs}")
    process_parts: dict[str, list[float]] = {"process": [], "merge": [], "save": []}
    state_bytes: tuple[int, int] | None = None
    for i in range(runs + 1):
        group = steady.member(receiver)
        persistence = saver.attach(group)
        if state_bytes is None and persistence is not None:
            state_bytes = saver.stored_bytes(persistence)
        gc.collect()
        t0 = clock()
        staged = group.process(sample.commit)
        t1 = clock()
        group.merge(staged)  # type: ignore[arg-type]
        t2 = clock()
        saver.save(persistence)
        t3 = clock()
        if i == 0:
            continue
        for name, value in zip(process_parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            process_parts[name].append(ms(value))

    # -- join (+ save) ------------------------------------------------------------------
    log(f"  join × {join_runs}")
    join_parts: dict[str, list[float]] = {"join": [], "save": []}
    joined_state: tuple[int, int] | None = None
    for i in range(join_runs + 1):
        gc.collect()
        t0 = clock()
        group = Group.join(add.welcome, joiner)
        t1 = clock()
        persistence = saver.attach(group)
        t2 = clock()
        if persistence is not None and joined_state is None:
            joined_state = saver.stored_bytes(persistence)
        del group, persistence
        if i == 0:
            continue
        join_parts["join"].append(ms(t1 - t0))
        join_parts["save"].append(ms(t2 - t1))

    # -- crypto alone, same run -----------------------------------------------------------
    log("  crypto alone")
    c_commit = crypto_commit(inputs, rng, runs)
    c_process = crypto_process(inputs, runs)
    c_join = crypto_join(join_inputs, join_runs)

    # -- memory ---------------------------------------------------------------------------
    log("  memory (tracemalloc)")

    def one_commit() -> None:
        group = steady.member(committer)
        persistence = saver.attach(group)
        pending = group.commit(rng=rng, force_path=True)
        saver.save(persistence)
        group.merge(pending.staged)
        saver.save(persistence)

    def one_process() -> None:
        group = steady.member(receiver)
        persistence = saver.attach(group)
        staged = group.process(sample.commit)
        group.merge(staged)  # type: ignore[arg-type]
        saver.save(persistence)

    def one_join() -> None:
        group = Group.join(add.welcome, joiner)  # type: ignore[arg-type]
        saver.attach(group)

    peaks = {
        "commit": traced_peak(one_commit),
        "process": traced_peak(one_process),
        "join": traced_peak(one_join),
    }

    # -- ts-mls ---------------------------------------------------------------------------
    tsmls: dict[str, Any] | None = None
    tsmls_note = ""
    if args.no_tsmls:
        tsmls_note = "not run (--no-tsmls)"
    elif n > args.tsmls_max_size:
        tsmls_note = f"skipped (> --tsmls-max-size {args.tsmls_max_size:,})"
    elif (problem := tsmls_problem()) is not None:
        tsmls_note = f"not run: {problem}"
    else:
        try:
            tsmls = bench_tsmls(steady, rng, args)
        except TsMlsError as exc:
            tsmls_note = f"failed: {exc}"
            log(f"  {tsmls_note}")

    result.update(
        commit=commit_parts,
        process=process_parts,
        join=join_parts,
        crypto={"commit": c_commit, "process": c_process, "join": c_join},
        inputs=inputs,
        join_inputs=join_inputs,
        state_bytes=state_bytes,
        joined_state=joined_state,
        tree_bytes=len(steady.tree.encode()),
        peaks=peaks,
        max_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        tsmls=tsmls,
        tsmls_note=tsmls_note,
        profile_state=(steady, sample, add, joiner) if args.profile else None,
    )
    return result


# -- Printing -----------------------------------------------------------------------------


def _sum_runs(parts: dict[str, list[float]], names: list[str]) -> list[float]:
    return [sum(values) for values in zip(*(parts[name] for name in names), strict=True)]


def _fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _mb(value: int) -> str:
    return f"{value / 2**20:,.1f} MB"


def operations(result: dict[str, Any], saver: Saver) -> dict[str, dict[str, Any]]:
    """
    :returns: per operation: samples (ms, per run, save included), save samples, crypto.
    """
    save = saver.available
    commit = result["commit"]
    process = result["process"]
    join = result["join"]
    crypto = result["crypto"]
    return {
        "commit": {
            "samples": _sum_runs(commit, ["commit", "save"] if save else ["commit"]),
            "save": commit["save"] if save else None,
            "crypto": crypto["commit"],
            "label": "commit with path" + (" + save" if save else ""),
        },
        "merge": {
            "samples": _sum_runs(commit, ["merge", "merge save"] if save else ["merge"]),
            "save": commit["merge save"] if save else None,
            "crypto": None,
            "label": "merge own commit" + (" + save" if save else ""),
        },
        "process": {
            "samples": _sum_runs(
                process, ["process", "merge", "save"] if save else ["process", "merge"]
            ),
            "save": process["save"] if save else None,
            "crypto": crypto["process"],
            "label": "process + merge" + (" + save" if save else ""),
        },
        "join": {
            "samples": _sum_runs(join, ["join", "save"] if save else ["join"]),
            "save": join["save"] if save else None,
            "crypto": crypto["join"],
            "label": "join by Welcome" + (" + save" if save else ""),
        },
    }


def print_size(result: dict[str, Any], saver: Saver) -> None:
    n = result["n"]
    inputs: CommitInputs = result["inputs"]
    join_inputs: JoinInputs = result["join_inputs"]
    ops = operations(result, saver)
    tsmls = result["tsmls"]
    print(
        f"\n## {n:,} members ({result['leaves']:,} leaves; commit path {inputs.n_path} nodes, "
        f"{inputs.n_ciphertexts} HPKE seals; the receiver decrypts at level "
        f"{inputs.receiver_level} and derives {inputs.receiver_derivations} node keys; "
        f"the joiner derives {join_inputs.derivations})\n"
    )
    header = (
        "| operation | runs | median ms | p99 ms | save ms | crypto alone ms | ratio | "
        "other crypto ms | target | ts-mls median ms (p99, runs) |"
    )
    print(header)
    print("|---" * 10 + "|")
    for key, op in ops.items():
        samples = op["samples"]
        med = median(samples)
        save = "n/a" if op["save"] is None else _fmt_ms(median(op["save"]))
        crypto = op["crypto"]
        if crypto is not None:
            core, other = crypto
            c_med = median(core.totals)
            crypto_cell = _fmt_ms(c_med)
            ratio = f"{med / c_med:.2f}×"
            other_cell = _fmt_ms(median(other.totals))
        else:
            crypto_cell = ratio = other_cell = "–"
        target = ""
        if key in TARGET_RATIO:
            target = f"≤ {TARGET_RATIO[key]:g}×"
            if n == TARGET_SIZE:
                target = f"≤ {TARGET_MS[key]:g} ms, " + target
        ts_cell = "–"
        if key in ("commit", "process", "join"):
            if tsmls is not None and key in tsmls:
                t = tsmls[key]
                ts_cell = f"{_fmt_ms(median(t))} ({_fmt_ms(p99(t))}, {len(t)})"
            elif result["tsmls_note"]:
                ts_cell = result["tsmls_note"]
        print(
            f"| {op['label']} | {len(samples)} | {_fmt_ms(med)} | {_fmt_ms(p99(samples))} | "
            f"{save} | {crypto_cell} | {ratio} | {other_cell} | {target} | {ts_cell} |"
        )
    # Breakdowns.
    print()
    commit_detail = result["commit"]
    process_detail = result["process"]
    print(
        "- parts (median ms): commit "
        + ", ".join(f"{k} {_fmt_ms(median(v))}" for k, v in commit_detail.items())
        + "; process "
        + ", ".join(f"{k} {_fmt_ms(median(v))}" for k, v in process_detail.items())
        + "; join "
        + ", ".join(f"{k} {_fmt_ms(median(v))}" for k, v in result["join"].items())
    )
    for key in ("commit", "process", "join"):
        core, other = result["crypto"][key]
        print(
            f"- crypto alone, {key} (median ms): "
            + ", ".join(f"{k} {_fmt_ms(v)}" for k, v in core.medians().items())
            + " | other crypto: "
            + ", ".join(f"{k} {_fmt_ms(v)}" for k, v in other.medians().items())
        )
    state = result["state_bytes"]
    joined = result["joined_state"]
    state_cell = (
        "n/a (no group_store)"
        if state is None
        else f"{state[0]:,} B in {state[1]:,} records (member); joiner {joined[0]:,} B"
    )
    print(
        f"- bytes: commit {inputs.commit_bytes:,}, GroupInfo returned by commit "
        f"{inputs.group_info_bytes:,}, Welcome {join_inputs.welcome_bytes:,}, ratchet tree "
        f"{result['tree_bytes']:,}, saved state {state_cell}"
    )
    peaks = result["peaks"]
    ts_rss = (
        f"; ts-mls Node max RSS {_mb(tsmls['max_rss'])}"
        if tsmls is not None and "max_rss" in tsmls
        else ""
    )
    print(
        "- memory: tracemalloc peak above baseline: commit+merge+saves "
        f"{_mb(peaks['commit'])}, process+merge+save {_mb(peaks['process'])}, join+save "
        f"{_mb(peaks['join'])}; Python max RSS so far {_mb(result['max_rss'])}{ts_rss}"
    )
    timings = result["timings"]
    print(
        "- fixture: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + (f" ({timings['fill'] / n * 1e3:.2f} ms per path)" if "fill" in timings else "")
    )
    sys.stdout.flush()


def print_summary(results: list[dict[str, Any]], saver: Saver, args: argparse.Namespace) -> None:
    print("\n## Summary (median ms, p99 in brackets; ratio to crypto alone)\n")
    save = "save included" if saver.available else "save: n/a"
    print(
        f"| members | commit ({save}) | × crypto | process + merge | × crypto | join | × crypto | "
        f"Welcome B | state B | ts-mls commit | ts-mls process | ts-mls join |"
    )
    print("|---" * 12 + "|")
    for result in results:
        ops = operations(result, saver)
        cells = []
        for key in ("commit", "process", "join"):
            samples = ops[key]["samples"]
            core, _ = ops[key]["crypto"]
            med = median(samples)
            cells.append(f"{_fmt_ms(med)} ({_fmt_ms(p99(samples))})")
            cells.append(f"{med / median(core.totals):.2f}× of {_fmt_ms(median(core.totals))}")
        tsmls = result["tsmls"]
        ts_cells = []
        for key in ("commit", "process", "join"):
            if tsmls is not None and key in tsmls:
                runs = len(tsmls[key])
                ts_cells.append(f"{_fmt_ms(median(tsmls[key]))} ({runs} run{'s' * (runs != 1)})")
            else:
                ts_cells.append(result["tsmls_note"] or "–")
        state = result["state_bytes"]
        print(
            f"| {result['n']:,} | "
            + " | ".join(cells)
            + f" | {result['join_inputs'].welcome_bytes:,} | "
            + ("n/a" if state is None else f"{state[0]:,}")
            + " | "
            + " | ".join(ts_cells)
            + " |"
        )
    print(
        f"\nts-mls: at most {args.tsmls_runs} runs or {args.tsmls_budget:g} s per operation, "
        f"sizes up to {args.tsmls_max_size:,} (--tsmls-max-size); ts-mls's member joins as "
        "member n + 1, so its figures are for a group of n + 1."
    )


def _clock_name() -> str:
    return next(name for name, fn in CLOCKS.items() if fn is _clock)


def figures_for(result: dict[str, Any], saver: Saver) -> list[Figure]:
    n = result["n"]
    base = {"members": n, "suite": 1, "save": saver.available, "clock": _clock_name()}
    out = []
    state = result["state_bytes"]
    for key, op in operations(result, saver).items():
        params: dict[str, object] = dict(base)
        if key == "join":
            params.update(
                welcome_bytes=result["join_inputs"].welcome_bytes,
                state_bytes=None if state is None else state[0],
                tree_bytes=result["tree_bytes"],
                tracemalloc_peak_bytes=result["peaks"]["join"],
                max_rss_bytes=result["max_rss"],
            )
        elif key in result["peaks"]:
            params["tracemalloc_peak_bytes"] = result["peaks"][key]
        if key == "commit":
            params.update(
                commit_bytes=result["inputs"].commit_bytes,
                group_info_bytes=result["inputs"].group_info_bytes,
            )
        out.append(figure(f"group_{key}", op["samples"], **params))
        if op["save"] is not None:
            out.append(figure(f"group_{key}_save", op["save"], **base))
        if op["crypto"] is not None:
            core, other = op["crypto"]
            out.append(figure(f"group_{key}_crypto", core.totals, **base))
            out.append(figure(f"group_{key}_other_crypto", other.totals, **base))
    tsmls = result["tsmls"]
    if tsmls is not None:
        for key in ("commit", "process", "join"):
            if key in tsmls:
                out.append(
                    figure(
                        f"tsmls_{key}",
                        tsmls[key],
                        members=n + 1,
                        suite=1,
                        clock=_clock_name(),
                        ts_mls=tsmls.get("version"),
                        max_rss_bytes=tsmls.get("max_rss"),
                    )
                )
    return out


# -- Profiles -------------------------------------------------------------------------------


class _Profiler:
    """
    pyinstrument (sampling, little overhead) if installed, else cProfile (deterministic).

    cProfile charges a timer call to every function call, so on this codec-heavy code it
    inflates Python-level work several times over crypto (a 50 ms commit takes about
    0.5 s under it); pyinstrument's proportions are the trustworthy ones.
    """

    def __init__(self) -> None:
        try:
            import pyinstrument  # noqa: PLC0415 - optional, for --profile only
        except ImportError:
            self.kind = "cProfile"
            self._cprofile: cProfile.Profile | None = cProfile.Profile(_clock)
        else:
            self.kind = f"pyinstrument {pyinstrument.__version__}"
            self._cprofile = None
        self._sessions: list[Any] = []
        self._sampler: Any = None

    def enable(self) -> None:
        if self._cprofile is not None:
            self._cprofile.enable()
            return
        from pyinstrument import Profiler  # noqa: PLC0415

        self._sampler = Profiler(interval=0.0002)
        self._sampler.start()

    def disable(self) -> None:
        if self._cprofile is not None:
            self._cprofile.disable()
            return
        self._sessions.append(self._sampler.stop())

    def report(self, title: str, path: Path, top: int) -> None:
        if self._cprofile is not None:
            self._cprofile.dump_stats(path.with_suffix(".prof"))
            for sort in ("tottime", "cumulative"):
                text = io.StringIO()
                stats = pstats.Stats(self._cprofile, stream=text)
                stats.strip_dirs().sort_stats(sort).print_stats(top)
                lines = [line for line in text.getvalue().splitlines() if line.strip()]
                start = next(i for i, line in enumerate(lines) if "ncalls" in line)
                print(f"\n### {title}, cProfile by {sort} ({_clock_name()} clock)\n\n```")
                print("\n".join(lines[start:]))
                print("```")
            return
        from pyinstrument.renderers import ConsoleRenderer  # noqa: PLC0415
        from pyinstrument.session import Session  # noqa: PLC0415

        session = self._sessions[0]
        for other in self._sessions[1:]:
            session = Session.combine(session, other)
        session.save(str(path.with_suffix(".pyisession")))
        tree = ConsoleRenderer(
            time="percent_of_total",
            processor_options={"filter_threshold": 0.02},
        ).render(session)
        # Drop pyinstrument's banner; keep the call tree.
        lines = tree.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("Profile at")), -1)
        print(
            f"\n### {title}, {self.kind}: call tree (nodes ≥ 2%; {session.sample_count:,} "
            f"samples, {session.duration:.2f} s)\n\n```"
        )
        print("\n".join(line for line in lines[first + 1 :] if line.strip()))
        print("```")


def profile(result: dict[str, Any], saver: Saver, top: int) -> None:
    """
    Profile commit, process and join at this size; print the profiles, keep them in the cache.
    """
    steady, sample, add, joiner = result["profile_state"]
    rng = SeededRng("profile")
    out_dir = CACHE / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    profiler = _Profiler()

    def commit() -> None:
        group = steady.member(0)
        persistence = saver.attach(group)
        gc.collect()
        profiler.enable()
        pending = group.commit(rng=rng, force_path=True)
        saver.save(persistence)
        group.merge(pending.staged)
        saver.save(persistence)
        profiler.disable()

    def process() -> None:
        group = steady.member(1)
        persistence = saver.attach(group)
        gc.collect()
        profiler.enable()
        staged = group.process(sample.commit)
        group.merge(staged)
        saver.save(persistence)
        profiler.disable()

    def join() -> None:
        gc.collect()
        profiler.enable()
        group = Group.join(add.welcome, joiner)
        saver.attach(group)
        profiler.disable()

    for name, fn, repeat in (("commit", commit, 20), ("process", process, 20), ("join", join, 3)):
        profiler = _Profiler()
        for _ in range(repeat):
            fn()
        title = (
            f"Profile: {name} (with merge and save as timed above) at {result['n']:,} members, "
            f"{repeat} runs"
        )
        profiler.report(title, out_dir / f"{name}-n{result['n']}", top)
    print(f"\nprofiles kept in {out_dir.relative_to(ROOT)}/")


CLOCK_NAMES = {
    "cpu": "CPU time of the process (time.process_time; Node: process.cpuUsage)",
    "wall": "wall time (time.perf_counter; Node: performance.now)",
}


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# -- Main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=None, help="comma-separated sizes (default 100,1000,5000,10000)"
    )
    parser.add_argument("--runs", type=int, default=15, help="runs of commit and process")
    parser.add_argument("--join-runs", type=int, default=5, help="runs of join")
    parser.add_argument("--tsmls-max-size", type=int, default=5000)
    parser.add_argument("--tsmls-runs", type=int, default=5, help="ts-mls runs per operation")
    parser.add_argument(
        "--tsmls-budget", type=float, default=60.0, help="ts-mls seconds per operation"
    )
    parser.add_argument(
        "--tsmls-timeout", type=float, default=1800.0, help="seconds to wait for one ts-mls call"
    )
    parser.add_argument("--no-tsmls", action="store_true")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: process CPU time (default, robust on a shared machine); wall: perf_counter",
    )
    parser.add_argument("--no-cache", action="store_true", help="rebuild fixtures, keep no cache")
    parser.add_argument(
        "--profile", action="store_true", help="profile commit, process, join at the largest size"
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 members, few runs")
    parser.add_argument("--no-record", action="store_true", help="append nothing to results")
    args = parser.parse_args()
    if args.quick:
        args.sizes = args.sizes or "100,1000"
        args.runs, args.join_runs, args.tsmls_runs = 5, 2, 2
        args.no_record = True
    sizes = [int(s) for s in (args.sizes or "100,1000,5000,10000").split(",")]
    global _clock, TSMLS_KEY  # noqa: PLW0603 - set once, before any timing
    _clock = CLOCKS[args.clock]
    TSMLS_KEY = "cpu_ms" if args.clock == "cpu" else "times_ms"

    saver = Saver()
    print(f"# MLS group operations, suite 1 — {machine()}")
    print(
        f"steady-state groups (every parent node filled); median and p99 over {args.runs} runs "
        f"(join: {args.join_runs}), after one warm-up run; gc.collect() before each run; "
        f"clock: {CLOCK_NAMES[args.clock]}; load average at start {_load()}; "
        + (
            "save = GroupPersistence.save to a MemoryGroupStore"
            if saver.available
            else f"save: n/a ({saver.reason})"
        )
    )
    sys.stdout.flush()
    results = []
    for n in sizes:
        result = bench_size(n, args, saver)
        print_size(result, saver)
        results.append(result)
    print_summary(results, saver, args)
    print(f"load average at the end: {_load()}")
    if not args.no_record:
        figures = [f for result in results for f in figures_for(result, saver)]
        print(f"\nappended to {record('mls_groups', figures)}")
    if args.profile:
        largest = max(results, key=lambda r: r["n"])
        profile(largest, saver, args.profile_top)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
