// Self-test of tsmls-peer.mjs: ts-mls members in two peer processes, driven
// through the line protocol exactly as the Python interop test drives it.
//
//   node --test tests/interop/selftest.mjs     (or: node tests/interop/selftest.mjs)
//
// Exits non-zero on any failure. TSMLS_SUITES=1,2 limits the cipher suites.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const PEER = fileURLToPath(new URL('./tsmls-peer.mjs', import.meta.url));
const ALL_SUITES = [1, 2, 3, 4, 5, 6, 7];
const SUITES = process.env.TSMLS_SUITES
  ? process.env.TSMLS_SUITES.split(',').map(Number)
  : ALL_SUITES;

// RFC 9420 §5.1.1: Ed25519/Ed448 keys as in RFC 8032; ECDSA keys uncompressed.
const SIGNATURE_KEY_LENGTH = {
  1: 32,
  2: 65,
  3: 32,
  4: 57,
  5: 133,
  6: 57,
  7: 97,
};

const hex = (text) => Buffer.from(text, 'utf8').toString('hex');

/** A tsmls-peer child process, spoken to over its stdin/stdout line protocol. */
class Peer {
  constructor(label) {
    this.label = label;
    this.nextId = 1;
    this.pending = new Map();
    this.stderr = '';
    this.child = spawn(process.execPath, [PEER], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr.on('data', (chunk) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code) => resolve(code)),
    );
    this.child.on('exit', (code) => {
      for (const { reject } of this.pending.values()) {
        reject(
          new Error(
            `${label} exited (${code}) with requests pending; stderr: ${this.stderr}`,
          ),
        );
      }
      this.pending.clear();
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const response = JSON.parse(line); // The peer must only ever write JSON lines.
      const waiter = this.pending.get(response.id);
      assert.ok(waiter, `${label}: response to no request: ${line}`);
      this.pending.delete(response.id);
      waiter.resolve(response);
    });
  }

  /** Send one raw line; resolves to the parsed response with the given id. */
  rawLine(line, id) {
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(line + '\n');
    });
  }

  /** The whole response ({id, result} or {id, error}). */
  request(op, fields = {}) {
    const id = this.nextId++;
    return this.rawLine(JSON.stringify({ id, op, ...fields }), id);
  }

  /** The result; an error response fails the test. */
  async call(op, fields = {}) {
    const response = await this.request(op, fields);
    if (response.error !== undefined) {
      throw new Error(
        `${this.label} ${op} ${fields.member ?? ''}: ${response.error.type}: ${response.error.message}`,
      );
    }
    return response.result;
  }

  /** The error; a success fails the test. */
  async callError(op, fields = {}) {
    const response = await this.request(op, fields);
    assert.equal(response.result, undefined, `${op} should have failed`);
    assert.equal(typeof response.error.type, 'string');
    assert.equal(typeof response.error.message, 'string');
    return response.error;
  }

  async close() {
    this.child.stdin.end();
    assert.equal(
      await this.exited,
      0,
      `${this.label} exit code; stderr: ${this.stderr}`,
    );
  }
}

/** A named member living in one peer process. */
class Member {
  constructor(peer, name) {
    this.peer = peer;
    this.name = name;
  }

  call(op, fields = {}) {
    return this.peer.call(op, { member: this.name, ...fields });
  }

  callError(op, fields = {}) {
    return this.peer.callError(op, { member: this.name, ...fields });
  }
}

/** Every member's view agrees, and matches what the committer reported. */
async function assertAgree(members, commitResult) {
  const states = await Promise.all(members.map((m) => m.call('state')));
  const [first] = states;
  for (const [i, s] of states.entries()) {
    const who = members[i].name;
    assert.equal(s.status, 'active', `${who} status`);
    assert.equal(s.epoch, first.epoch, `${who} epoch`);
    assert.equal(
      s.epoch_authenticator,
      first.epoch_authenticator,
      `${who} epoch_authenticator`,
    );
    assert.equal(s.tree_hash, first.tree_hash, `${who} tree_hash`);
    assert.equal(
      s.confirmed_transcript_hash,
      first.confirmed_transcript_hash,
      `${who} transcript`,
    );
    assert.deepEqual(s.members, first.members, `${who} members`);
  }
  if (commitResult !== undefined) {
    assert.equal(commitResult.epoch, first.epoch);
    assert.equal(commitResult.epoch_authenticator, first.epoch_authenticator);
    assert.equal(commitResult.tree_hash, first.tree_hash);
  }
  // The exporter (RFC 9420 §8.5) agrees too.
  const exported = await Promise.all(
    members.map((m) =>
      m.call('export_secret', { label: 'selftest', context: '00', length: 32 }),
    ),
  );
  for (const e of exported) assert.equal(e.secret, exported[0].secret);
  return first;
}

/** `from` sends `text`; every member of `to` decrypts it. */
async function assertDelivered(from, to, text) {
  const { message } = await from.call('send', { data: hex(text) });
  for (const m of to) {
    const got = await m.call('process', { message });
    assert.deepEqual(
      got,
      { kind: 'application', data: hex(text) },
      `${m.name} receives ${text}`,
    );
  }
}

/** Every member of `to` applies a commit; returns their results. */
async function deliverCommit(commit, to) {
  const results = [];
  for (const m of to) {
    const r = await m.call('process', { message: commit });
    assert.equal(r.kind, 'commit', `${m.name} processes a commit`);
    results.push(r);
  }
  return results;
}

const identities = (state) =>
  state.members.map((m) => [
    m.leaf_index,
    Buffer.from(m.identity, 'hex').toString(),
  ]);

const peers = [];
function newPeer(label) {
  const peer = new Peer(label);
  peers.push(peer);
  return peer;
}
after(async () => {
  await Promise.all(peers.map((p) => p.close()));
});

test('info lists suites 1-7 and the applied patches', async () => {
  const info = await newPeer('info').call('info');
  assert.equal(info.ts_mls, '1.6.4');
  assert.deepEqual(info.suites, ALL_SUITES);
  assert.deepEqual(info.patches, {
    '001-ecdsa-uncompressed-keys': true,
    '002-unmerged-leaves-check': true,
    '003-optional-presence-octet': true,
    '004-minimal-varint': true,
    '005-external-pub-struct': true,
  });
});

describe('group lifecycle', { concurrency: true }, () => {
  for (const suite of SUITES) {
    test(`suite ${suite}`, async () => {
      const p1 = newPeer(`suite ${suite} peer 1`);
      const p2 = newPeer(`suite ${suite} peer 2`);
      const alice = new Member(p1, 'alice');
      const bob = new Member(p2, 'bob');
      const carol = new Member(p1, 'carol');
      const dave = new Member(p2, 'dave');
      const groupId = randomBytes(16).toString('hex');

      // Create the group.
      const created = await alice.call('create_group', {
        suite,
        identity: hex('alice'),
        group_id: groupId,
      });
      assert.equal(created.epoch, 0);
      assert.equal(created.suite, suite);
      assert.equal(
        created.members[0].signature_key.length / 2,
        SIGNATURE_KEY_LENGTH[suite],
      );

      // Add bob by KeyPackage (ratchet tree out of band).
      const bobKp = await bob.call('key_package', {
        suite,
        identity: hex('bob'),
      });
      assert.equal(bobKp.signature_key.length / 2, SIGNATURE_KEY_LENGTH[suite]);
      const addBob = await alice.call('commit', {
        proposals: [{ type: 'add', key_package: bobKp.key_package }],
      });
      assert.equal(addBob.has_path, false);
      assert.ok(addBob.welcome);
      assert.ok(addBob.group_info);
      await bob.call('join_welcome', {
        welcome: addBob.welcome,
        ratchet_tree: addBob.ratchet_tree,
      });
      const s1 = await assertAgree([alice, bob], addBob);
      assert.equal(s1.epoch, 1);

      // Application messages both ways.
      await assertDelivered(alice, [bob], 'hello bob');
      await assertDelivered(bob, [alice], 'hello alice');

      // bob updates: an empty commit with a path.
      const update = await bob.call('update');
      assert.equal(update.has_path, true);
      assert.equal(update.welcome, null);
      await deliverCommit(update.commit, [alice]);
      await assertAgree([alice, bob], update);

      // bob proposes carol; alice commits the proposal by reference; carol joins
      // with the tree in the Welcome's ratchet_tree extension.
      const carolKp = await carol.call('key_package', {
        suite,
        identity: hex('carol'),
      });
      const proposal = await bob.call('propose_add', {
        key_package: carolKp.key_package,
      });
      const received = await alice.call('process', {
        message: proposal.proposal,
      });
      assert.equal(received.kind, 'proposal');
      assert.equal(received.proposal_type, 'add');
      assert.equal(received.proposal_ref, proposal.proposal_ref);
      assert.deepEqual((await alice.call('state')).pending_proposals, [
        proposal.proposal_ref,
      ]);
      const addCarol = await alice.call('commit', {
        refs: [proposal.proposal_ref],
        ratchet_tree_extension: true,
      });
      assert.ok(addCarol.welcome);
      await deliverCommit(addCarol.commit, [bob]);
      await carol.call('join_welcome', { welcome: addCarol.welcome });
      await assertAgree([alice, bob, carol], addCarol);
      await assertDelivered(carol, [alice, bob], 'hello from carol');

      // dave joins by external commit, from the GroupInfo alice's commit returned.
      const daveJoin = await dave.call('join_external', {
        group_info: addCarol.group_info,
        ratchet_tree: addCarol.ratchet_tree,
        identity: hex('dave'),
      });
      assert.equal(daveJoin.has_path, true);
      const seen = await deliverCommit(daveJoin.commit, [alice, bob, carol]);
      assert.deepEqual(seen[0].sender, { type: 'new_member_commit' });
      const s4 = await assertAgree([alice, bob, carol, dave], daveJoin);
      assert.deepEqual(identities(s4), [
        [0, 'alice'],
        [1, 'bob'],
        [2, 'carol'],
        [3, 'dave'],
      ]);
      await assertDelivered(dave, [alice, bob, carol], 'hello from dave');

      // alice removes bob.
      const bobLeaf = (await bob.call('state')).own_leaf_index;
      const removeBob = await alice.call('remove', { leaf_index: bobLeaf });
      assert.equal(removeBob.has_path, true);
      await deliverCommit(removeBob.commit, [carol, dave]);
      const bobSees = await bob.call('process', { message: removeBob.commit });
      assert.equal(bobSees.removed, true);
      assert.equal((await bob.call('state')).status, 'removed');
      const s5 = await assertAgree([alice, carol, dave], removeBob);
      assert.deepEqual(identities(s5), [
        [0, 'alice'],
        [2, 'carol'],
        [3, 'dave'],
      ]);

      // dave resyncs by external commit (tree in the GroupInfo extension),
      // replacing its old leaf.
      const { group_info: groupInfo } = await carol.call('group_info', {
        ratchet_tree_extension: true,
      });
      const resync = await dave.call('join_external', {
        group_info: groupInfo,
        resync: true,
      });
      await deliverCommit(resync.commit, [alice, carol]);
      const s6 = await assertAgree([alice, carol, dave], resync);
      assert.deepEqual(identities(s6), [
        [0, 'alice'],
        [1, 'dave'],
        [2, 'carol'],
      ]);
      await assertDelivered(dave, [alice, carol], 'back again');
      await assertDelivered(alice, [carol, dave], 'welcome back');
    });
  }
});

describe('protocol', () => {
  test('bad requests get error responses, and the peer keeps going', async () => {
    const peer = newPeer('protocol');
    const member = new Member(peer, 'alice');
    assert.equal(
      (await peer.rawLine('not json', null)).error.type,
      'BadRequest',
    );
    assert.equal((await peer.rawLine('[1,2]', null)).error.type, 'BadRequest');
    assert.equal((await peer.callError('no_such_op')).type, 'UnknownOp');
    assert.equal(
      (await peer.callError('state', { member: 'nobody' })).type,
      'UnknownMember',
    );
    assert.equal(
      (await peer.callError('key_package', { member: 'x', suite: 1 })).type,
      'BadRequest',
    );
    assert.equal(
      (
        await peer.callError('key_package', {
          member: 'x',
          suite: 1,
          identity: 'abc',
        })
      ).type,
      'BadRequest',
    );
    assert.equal(
      (
        await peer.callError('key_package', {
          member: 'x',
          suite: 999,
          identity: '00',
        })
      ).type,
      'Unsupported',
    );

    await member.call('create_group', {
      suite: 1,
      identity: hex('alice'),
      group_id: '0102',
    });
    assert.equal(
      (await member.callError('process', { message: '0001' })).type,
      'DecodeError',
    );
    const { message } = await member.call('send', { data: '00' });
    assert.equal(
      (await member.callError('process', { message: message + '00' })).type,
      'DecodeError',
    );
    assert.equal(
      (await member.callError('join_welcome', { welcome: message })).type,
      'DecodeError',
    );
    assert.equal(
      (await member.callError('commit', { refs: ['00'] })).type,
      'UnknownProposal',
    );
    assert.equal(
      (await member.callError('commit', { proposals: [{ type: 'nope' }] }))
        .type,
      'BadRequest',
    );

    // ts-mls cannot add a path to an add-only commit (ts-mls-notes item 8):
    // the request fails and the member's state is untouched.
    const kp = await peer.call('key_package', {
      member: 'bob',
      suite: 1,
      identity: hex('bob'),
    });
    const before = await member.call('state');
    const forced = await member.callError('commit', {
      proposals: [{ type: 'add', key_package: kp.key_package }],
      path: true,
    });
    assert.equal(forced.type, 'Unsupported');
    assert.deepEqual(await member.call('state'), before);

    // A Welcome for someone else's KeyPackage.
    const added = await member.call('commit', {
      proposals: [{ type: 'add', key_package: kp.key_package }],
    });
    await peer.call('key_package', {
      member: 'carol',
      suite: 1,
      identity: hex('carol'),
    });
    const wrong = await peer.callError('join_welcome', {
      member: 'carol',
      welcome: added.welcome,
    });
    assert.equal(wrong.type, 'NoMatchingKeyPackage');

    // A commit from a past epoch is rejected and changes nothing.
    await peer.call('join_welcome', {
      member: 'bob',
      welcome: added.welcome,
      ratchet_tree: added.ratchet_tree,
    });
    const first = await member.call('update');
    await peer.call('process', { member: 'bob', message: first.commit });
    const bobBefore = await peer.call('state', { member: 'bob' });
    const stale = await peer.callError('process', {
      member: 'bob',
      message: first.commit,
    });
    assert.equal(stale.type, 'ValidationError');
    assert.deepEqual(await peer.call('state', { member: 'bob' }), bobBefore);

    // A KeyPackage with GREASE values (RFC 9420 §13.5) and extra capabilities is accepted.
    const greasy = await peer.call('key_package', {
      member: 'dave',
      suite: 1,
      identity: hex('dave'),
      grease: true,
      extension_types: [0xff00],
      proposal_types: [0xff01],
    });
    const addDave = await member.call('commit', {
      proposals: [{ type: 'add', key_package: greasy.key_package }],
    });
    await peer.call('process', { member: 'bob', message: addDave.commit });
    await peer.call('join_welcome', {
      member: 'dave',
      welcome: addDave.welcome,
      ratchet_tree: addDave.ratchet_tree,
    });
    await assertAgree(
      [member, new Member(peer, 'bob'), new Member(peer, 'dave')],
      addDave,
    );

    // A failed request creates no member.
    const { group_info } = await member.call('group_info');
    const noIdentity = await peer.callError('join_external', {
      member: 'ghost',
      group_info,
    });
    assert.equal(noIdentity.type, 'BadRequest');
    const ghost = await peer.callError('state', { member: 'ghost' });
    assert.equal(ghost.type, 'UnknownMember');

    assert.equal((await peer.call('info')).members.length, 4);
  });

  // Patches 003 and 004: ts-mls 1.6.4 decoded both of these without complaint.
  test('malformed encodings are rejected', async () => {
    const peer = newPeer('malformed');
    const alice = new Member(peer, 'alice');
    const bob = new Member(peer, 'bob');
    await alice.call('create_group', {
      suite: 1,
      identity: hex('alice'),
      group_id: '0102',
    });
    const kp = await bob.call('key_package', {
      suite: 1,
      identity: hex('bob'),
    });
    const added = await alice.call('commit', {
      proposals: [{ type: 'add', key_package: kp.key_package }],
    });
    await bob.call('join_welcome', {
      welcome: added.welcome,
      ratchet_tree: added.ratchet_tree,
    });

    // RFC 9420 §2.1.1: an add-only commit has no path, so its optional<UpdatePath>
    // octet is 0x00. With suite 1 it sits before the Ed25519 signature<V> (2 + 64
    // bytes), confirmation_tag<V> and membership_tag<V> (1 + 32 bytes each).
    const carolKp = await peer.call('key_package', {
      member: 'carol',
      suite: 1,
      identity: hex('carol'),
    });
    const addCarol = await alice.call('commit', {
      proposals: [{ type: 'add', key_package: carolKp.key_package }],
      apply: false,
    });
    const commit = Buffer.from(addCarol.commit, 'hex');
    const pathOctet = commit.length - 33 - 33 - 66 - 1;
    assert.equal(commit[pathOctet], 0x00);
    for (const octet of [0x02, 0x10, 0xff]) {
      const bad = Buffer.from(commit);
      bad[pathOctet] = octet;
      const error = await bob.callError('process', {
        message: bad.toString('hex'),
      });
      assert.equal(error.type, 'DecodeError', `presence octet ${octet}`);
    }
    // The unmodified commit is fine (and proves the offset is right).
    assert.equal(
      (await bob.call('process', { message: addCarol.commit })).kind,
      'commit',
    );

    // RFC 9420 §2.1.2: the 2-byte length header 0x40 0x02 for group_id<V> (2 bytes)
    // is not minimal.
    const { message } = await alice.call('send', { data: hex('hi') });
    const bytes = Buffer.from(message, 'hex');
    assert.deepEqual([...bytes.subarray(4, 7)], [0x02, 0x01, 0x02]);
    const nonMinimal = Buffer.concat([
      bytes.subarray(0, 4),
      Buffer.from([0x40]),
      bytes.subarray(4),
    ]);
    assert.equal(
      (await bob.callError('process', { message: nonMinimal.toString('hex') }))
        .type,
      'DecodeError',
    );
    assert.deepEqual(await bob.call('process', { message }), {
      kind: 'application',
      data: hex('hi'),
    });
  });

  // ts-mls-notes item 1, fixed by patches/ts-mls+1.6.4+002+unmerged-leaves-check.patch:
  // a joiner must accept a tree whose root lists unmerged leaves [1, 5] while a
  // non-blank intermediate node on leaf 5's path lists only [5] (RFC 9420 §12.4.3.1).
  test('welcome into a tree with uneven unmerged leaves', async () => {
    const peer = newPeer('unmerged');
    const suite = 1;
    const m = (name) => new Member(peer, name);
    const names = ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'];
    const [m0, , , , m4] = names.map(m);
    await m0.call('create_group', {
      suite,
      identity: hex('m0'),
      group_id: 'aa',
    });
    const kps = [];
    for (const name of names.slice(1)) {
      kps.push(
        (await m(name).call('key_package', { suite, identity: hex(name) }))
          .key_package,
      );
    }
    const addAll = await m0.call('commit', {
      proposals: kps.map((key_package) => ({ type: 'add', key_package })),
    });
    await m4.call('join_welcome', {
      welcome: addAll.welcome,
      ratchet_tree: addAll.ratchet_tree,
    });

    // m4 removes leaves 1 and 5: its path sets node 11 and the root, node 9 stays blank.
    const removal = await m4.call('remove', { leaf_indices: [1, 5] });
    await deliverCommit(removal.commit, [m0]);

    // Two joiners land in leaves 1 and 5: root unmerged [1, 5], node 11 unmerged [5].
    const x = m('x');
    const y = m('y');
    const xKp = await x.call('key_package', { suite, identity: hex('x') });
    const yKp = await y.call('key_package', { suite, identity: hex('y') });
    const addXY = await m0.call('commit', {
      proposals: [
        { type: 'add', key_package: xKp.key_package },
        { type: 'add', key_package: yKp.key_package },
      ],
    });
    await deliverCommit(addXY.commit, [m4]);
    await x.call('join_welcome', {
      welcome: addXY.welcome,
      ratchet_tree: addXY.ratchet_tree,
    });
    await y.call('join_welcome', {
      welcome: addXY.welcome,
      ratchet_tree: addXY.ratchet_tree,
    });
    const s = await assertAgree([m0, m4, x, y], addXY);
    assert.deepEqual(
      s.members.map((mm) => mm.leaf_index),
      [0, 1, 2, 3, 4, 5, 6, 7],
    );
    // And an external joiner validates the same tree.
    const z = m('z');
    const zJoin = await z.call('join_external', {
      group_info: addXY.group_info,
      ratchet_tree: addXY.ratchet_tree,
      identity: hex('z'),
    });
    await deliverCommit(zJoin.commit, [m0, m4, x, y]);
    await assertAgree([m0, m4, x, y, z], zJoin);
  });
});
