#!/usr/bin/env node
// A ts-mls peer for Townsquare's MLS interop tests.
//
// It reads JSON requests, one per line, from stdin and writes exactly one JSON
// response per request, one per line, to stdout, in request order:
//
//   request:  {"id": <any>, "op": "<name>", ...fields}
//   success:  {"id": <same>, "result": {...}}
//   failure:  {"id": <same>, "error": {"type": "<kind>", "message": "<text>"}}
//
// All byte strings are lowercase hex (input may be either case). It holds any
// number of named members, each with its own ts-mls client state (one group per
// member). Handshake messages it creates are PublicMessages; application
// messages are PrivateMessages (RFC 9420 §6: application data MUST be private).
// Every op, field and error type is documented in docs/interop.md. Nothing but
// responses is written to stdout; set TSMLS_PEER_DEBUG=1 to trace ops on stderr.
// The process exits when stdin closes, after answering every request.

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import {
  createApplicationMessage,
  createCommit,
  createGroup,
  createGroupInfoWithExternalPub,
  createGroupInfoWithExternalPubAndRatchetTree,
  createProposal,
  decodeMlsMessage,
  defaultLifetime,
  encodeMlsMessage,
  generateKeyPackage,
  generateKeyPackageWithKey,
  getCiphersuiteImpl,
  joinGroup,
  joinGroupExternal,
  makePskIndex,
  mlsExporter,
  processPrivateMessage,
  processPublicMessage,
} from 'ts-mls';
import { makeProposalRef } from 'ts-mls/authenticatedContent.js';
import { defaultClientConfig } from 'ts-mls/clientConfig.js';
import {
  ciphersuites,
  getCiphersuiteFromId,
} from 'ts-mls/crypto/ciphersuite.js';
import { makeKeyPackageRef } from 'ts-mls/keyPackage.js';
import { MlsError } from 'ts-mls/mlsError.js';
import { decodeProposal } from 'ts-mls/proposal.js';
import { decodeRatchetTree, encodeRatchetTree } from 'ts-mls/ratchetTree.js';

const DEBUG = process.env.TSMLS_PEER_DEBUG === '1';

// ---------------------------------------------------------------------------
// Setup: the patches under patches/ must be applied (npm ci runs patch-package).

const tsMlsSrc = fileURLToPath(new URL('.', import.meta.resolve('ts-mls')));
const tsMlsVersion = JSON.parse(
  readFileSync(
    new URL('../../package.json', import.meta.resolve('ts-mls')),
    'utf8',
  ),
).version;

// Each patch leaves a marker in the file it changes; see docs/interop.md.
const PATCHES = {
  '001-ecdsa-uncompressed-keys': [
    'crypto/implementation/default/makeNobleSignatureImpl.js',
    'p256.getPublicKey(signKey, false)',
  ],
  '002-unmerged-leaves-check': [
    'clientState.js',
    'Townsquare patch (RFC 9420 §12.4.3.1)',
  ],
  '003-optional-presence-octet': [
    'codec/optional.js',
    'Townsquare patch (RFC 9420 §2.1.1)',
  ],
  '004-minimal-varint': [
    'codec/variableLength.js',
    'Townsquare patch (RFC 9420 §2.1.2)',
  ],
  '005-external-pub-struct': [
    'createCommit.js',
    'Townsquare patch (RFC 9420 §12.4.3.2)',
  ],
};

const patchesApplied = Object.fromEntries(
  Object.entries(PATCHES).map(([name, [file, marker]]) => [
    name,
    readFileSync(tsMlsSrc + file, 'utf8').includes(marker),
  ]),
);
const missingPatches = Object.entries(patchesApplied)
  .filter(([, applied]) => !applied)
  .map(([name]) => name);
const allowUnpatched = process.env.TSMLS_PEER_ALLOW_UNPATCHED === '1';
if (missingPatches.length > 0) {
  process.stderr.write(
    `tsmls-peer: ts-mls patches not applied: ${missingPatches.join(', ')}; ` +
      'run `npm ci` in tests/interop' +
      (allowUnpatched ? ' (continuing: TSMLS_PEER_ALLOW_UNPATCHED=1)\n' : '\n'),
  );
}

// ---------------------------------------------------------------------------
// Errors

/** An error the peer reports with a stable `type` (see docs/interop.md). */
class PeerError extends Error {
  constructor(type, message) {
    super(message);
    this.type = type;
  }
}

const badRequest = (message) => new PeerError('BadRequest', message);

function errorBody(err) {
  if (err instanceof PeerError) return { type: err.type, message: err.message };
  // ts-mls errors: ValidationError, CryptoVerificationError, CodecError,
  // UsageError, DependencyError, CryptoError, InternalError.
  if (err instanceof MlsError) return { type: err.name, message: err.message };
  // Anything else is a bug in ts-mls or in this peer, or a crypto library error.
  const name = err instanceof Error ? err.name : typeof err;
  const message = err instanceof Error ? err.message : String(err);
  return { type: 'Exception', message: `${name}: ${message}` };
}

// ---------------------------------------------------------------------------
// Request fields

function field(req, name, check, what) {
  const value = req[name];
  if (value === undefined) throw badRequest(`missing field "${name}"`);
  if (!check(value)) throw badRequest(`field "${name}" must be ${what}`);
  return value;
}

function optional(req, name, check, what, fallback) {
  if (req[name] === undefined || req[name] === null) return fallback;
  return field(req, name, check, what);
}

const isString = (v) => typeof v === 'string';
const isBool = (v) => typeof v === 'boolean';
const isUint = (v) => Number.isSafeInteger(v) && v >= 0;
const isHex = (v) =>
  typeof v === 'string' && v.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(v);

const HEX = 'hex (an even number of hex digits)';

function hexToBytes(hex) {
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

function toHex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

const hexField = (req, name) => hexToBytes(field(req, name, isHex, HEX));
const optionalHex = (req, name) => {
  const value = optional(req, name, isHex, HEX, undefined);
  return value === undefined ? undefined : hexToBytes(value);
};
const memberName = (req) =>
  field(
    req,
    'member',
    (v) => isString(v) && v.length > 0,
    'a non-empty string',
  );

// ---------------------------------------------------------------------------
// Codec: whole-input decoding (no trailing bytes), MLSMessage wrapping.

function decodeAll(decoder, bytes, what) {
  let decoded;
  try {
    decoded = decoder(bytes, 0);
  } catch (err) {
    throw new PeerError(
      'DecodeError',
      `${what} does not decode: ${errorBody(err).message}`,
    );
  }
  if (decoded === undefined)
    throw new PeerError('DecodeError', `${what} does not decode`);
  const [value, end] = decoded;
  if (end !== bytes.length) {
    throw new PeerError(
      'DecodeError',
      `${what}: ${bytes.length - end} trailing bytes`,
    );
  }
  return value;
}

function decodeMessage(bytes, what, ...wireformats) {
  const message = decodeAll(decodeMlsMessage, bytes, what);
  if (wireformats.length > 0 && !wireformats.includes(message.wireformat)) {
    throw new PeerError(
      'DecodeError',
      `${what}: expected an MLSMessage with wire format ${wireformats.join(' or ')}, got ${message.wireformat}`,
    );
  }
  return message;
}

const mlsMessage = (wireformat, key, value) =>
  toHex(encodeMlsMessage({ version: 'mls10', wireformat, [key]: value }));

function decodeTree(bytes) {
  return decodeAll(decodeRatchetTree, bytes, 'ratchet_tree');
}

// ---------------------------------------------------------------------------
// Cipher suites

const suiteImpls = new Map();

function suiteId(name) {
  return ciphersuites[name];
}

async function suiteImpl(id) {
  if (!suiteImpls.has(id)) {
    const suite = getCiphersuiteFromId(id);
    if (suite === undefined)
      throw new PeerError('Unsupported', `unknown cipher suite ${id}`);
    const pending = getCiphersuiteImpl(suite);
    suiteImpls.set(id, pending);
    pending.catch(() => suiteImpls.delete(id));
  }
  return suiteImpls.get(id);
}

async function supportedSuites() {
  const supported = [];
  for (let id = 1; id <= 7; id++) {
    try {
      const cs = await suiteImpl(id);
      await cs.signature.keygen();
      await cs.hpke.generateKeyPair();
      supported.push(id);
    } catch {
      // A suite whose optional dependency is missing is simply not listed.
    }
  }
  return supported;
}

// ---------------------------------------------------------------------------
// Members

/**
 * A named member: its cipher suite, its unused KeyPackages (with their private
 * keys), and its ts-mls ClientState once it is in a group.
 */
class Member {
  constructor(name, suite, cs) {
    this.name = name;
    this.suite = suite;
    this.cs = cs;
    this.keyPackages = []; // {ref: hex, publicPackage, privatePackage}
    this.state = undefined;
  }

  group() {
    if (this.state === undefined)
      throw new PeerError('NoGroup', `member "${this.name}" is not in a group`);
    return this.state;
  }
}

const members = new Map();

function existingMember(req) {
  const name = memberName(req);
  const member = members.get(name);
  if (member === undefined)
    throw new PeerError('UnknownMember', `no member "${name}"`);
  return member;
}

async function memberWithSuite(req, suite) {
  const name = memberName(req);
  const member = members.get(name);
  if (member !== undefined) {
    if (member.suite !== suite) {
      throw new PeerError(
        'UsageError',
        `member "${name}" uses cipher suite ${member.suite}, not ${suite}`,
      );
    }
    return member;
  }
  // Registered by the op (keep()) only once it succeeds: a failed request
  // changes nothing.
  return new Member(name, suite, await suiteImpl(suite));
}

function keep(member) {
  members.set(member.name, member);
}

// ---------------------------------------------------------------------------
// Key packages

// Capabilities as ts-mls's defaultCapabilities() makes them, minus its random
// GREASE (RFC 9420 §13.5), so runs are reproducible. Request fields:
// "grease": true adds one fixed GREASE value to each list; "extension_types" and
// "proposal_types" (lists of numbers) are advertised in addition, for groups
// whose GroupContext carries non-default extensions (RFC 9420 §7.2).
function capabilities(req) {
  const grease = optional(req, 'grease', isBool, 'a boolean', false);
  const isTypes = (v) =>
    Array.isArray(v) && v.every((t) => isUint(t) && t <= 0xffff);
  const extensionTypes = optional(
    req,
    'extension_types',
    isTypes,
    'a list of uint16',
    [],
  );
  const proposalTypes = optional(
    req,
    'proposal_types',
    isTypes,
    'a list of uint16',
    [],
  );
  const caps = {
    versions: ['mls10'],
    ciphersuites: Object.keys(ciphersuites),
    extensions: [...extensionTypes],
    proposals: [...proposalTypes],
    credentials: ['basic', 'x509'],
  };
  if (grease) {
    caps.ciphersuites.push(String(0x0a0a));
    caps.extensions.push(0x1a1a);
    caps.proposals.push(0x2a2a);
    caps.credentials.push(String(0x3a3a));
  }
  return caps;
}

function lifetime(req) {
  const value = optional(
    req,
    'lifetime',
    (v) => typeof v === 'object',
    'an object',
    undefined,
  );
  if (value === undefined) return defaultLifetime;
  const bound = (name) => {
    const v = value[name];
    if (!(isUint(v) || (isString(v) && /^[0-9]+$/.test(v)))) {
      throw badRequest(
        `lifetime.${name} must be a non-negative integer (or decimal string)`,
      );
    }
    return BigInt(v);
  };
  return { notBefore: bound('not_before'), notAfter: bound('not_after') };
}

// ---------------------------------------------------------------------------
// Group state in responses

function leaves(tree) {
  const result = [];
  for (let nodeIndex = 0; nodeIndex < tree.length; nodeIndex += 2) {
    const node = tree[nodeIndex];
    if (node?.nodeType === 'leaf') result.push([nodeIndex / 2, node.leaf]);
  }
  return result;
}

function credentialIdentity(credential) {
  return credential.credentialType === 'basic'
    ? toHex(credential.identity)
    : null;
}

function summary(state) {
  const gc = state.groupContext;
  return {
    group_id: toHex(gc.groupId),
    suite: suiteId(gc.cipherSuite),
    epoch: Number(gc.epoch),
    epoch_authenticator: toHex(state.keySchedule.epochAuthenticator),
    tree_hash: toHex(gc.treeHash),
    confirmed_transcript_hash: toHex(gc.confirmedTranscriptHash),
    own_leaf_index: state.privatePath.leafIndex,
    status:
      state.groupActiveState.kind === 'removedFromGroup'
        ? 'removed'
        : state.groupActiveState.kind,
    members: leaves(state.ratchetTree).map(([leafIndex, leaf]) => ({
      leaf_index: leafIndex,
      identity: credentialIdentity(leaf.credential),
      credential_type: leaf.credential.credentialType,
      signature_key: toHex(leaf.signaturePublicKey),
      encryption_key: toHex(leaf.hpkePublicKey),
    })),
    pending_proposals: Object.keys(state.unappliedProposals).map((ref) =>
      toHex(Buffer.from(ref, 'base64')),
    ),
  };
}

/** A GroupInfo signed by this member, with external_pub (RFC 9420 §12.4.3.1). */
async function groupInfoFor(state, cs, withTreeExtension) {
  const make = withTreeExtension
    ? createGroupInfoWithExternalPubAndRatchetTree
    : createGroupInfoWithExternalPub;
  const groupInfo = await make(state, [], cs);
  return {
    group_info: mlsMessage('mls_group_info', 'groupInfo', groupInfo),
    ratchet_tree: toHex(encodeRatchetTree(state.ratchetTree)),
  };
}

async function epochResult(state, cs, withTreeExtension) {
  return {
    epoch: Number(state.groupContext.epoch),
    epoch_authenticator: toHex(state.keySchedule.epochAuthenticator),
    tree_hash: toHex(state.groupContext.treeHash),
    own_leaf_index: state.privatePath.leafIndex,
    ...(await groupInfoFor(state, cs, withTreeExtension)),
  };
}

// ---------------------------------------------------------------------------
// Commits

function proposalByValue(item, index) {
  if (item === null || typeof item !== 'object')
    throw badRequest(`proposals[${index}] must be an object`);
  switch (item.type) {
    case 'add': {
      const bytes = hexField(item, 'key_package');
      const message = decodeMessage(
        bytes,
        `proposals[${index}].key_package`,
        'mls_key_package',
      );
      return { proposalType: 'add', add: { keyPackage: message.keyPackage } };
    }
    case 'remove':
      return {
        proposalType: 'remove',
        remove: { removed: field(item, 'leaf_index', isUint, 'a leaf index') },
      };
    case 'raw':
      return decodeAll(
        decodeProposal,
        hexField(item, 'proposal'),
        `proposals[${index}].proposal`,
      );
    default:
      throw badRequest(
        `proposals[${index}].type must be "add", "remove" or "raw"`,
      );
  }
}

/** Keep only the pending proposals named by `refs` (all of them if omitted). */
function withPending(state, refs) {
  if (refs === undefined) return state;
  const unappliedProposals = {};
  for (const refHex of refs) {
    const key = Buffer.from(refHex, 'hex').toString('base64');
    const pending = state.unappliedProposals[key];
    if (pending === undefined)
      throw new PeerError('UnknownProposal', `no pending proposal ${refHex}`);
    unappliedProposals[key] = pending;
  }
  return { ...state, unappliedProposals };
}

async function commit(member, req, proposals, defaultRefs) {
  const state = member.group();
  const refs = optional(
    req,
    'refs',
    (v) => Array.isArray(v) && v.every(isHex),
    `a list of ${HEX}`,
    defaultRefs,
  );
  const path = optional(req, 'path', isBool, 'a boolean', undefined);
  const treeExtension = optional(
    req,
    'ratchet_tree_extension',
    isBool,
    'a boolean',
    false,
  );
  const apply = optional(req, 'apply', isBool, 'a boolean', true);
  const authenticatedData =
    optionalHex(req, 'authenticated_data') ?? new Uint8Array();

  // ts-mls always commits every pending proposal by reference; narrowing the
  // pending set on a copy of the (immutable) state selects which ones.
  const result = await createCommit(
    {
      state: withPending(state, refs),
      cipherSuite: member.cs,
      pskIndex: makePskIndex(state, {}),
    },
    {
      wireAsPublicMessage: true,
      extraProposals: proposals,
      ratchetTreeExtension: treeExtension,
      authenticatedData,
    },
  );
  const hasPath = result.commit.publicMessage.content.commit.path !== undefined;
  if (path !== undefined && path !== hasPath) {
    // ts-mls 1.6.4 adds a path exactly when RFC 9420 §12.4 requires one (ts-mls-notes
    // item 8: it cannot add an optional one). Nothing has changed: state is immutable.
    throw new PeerError(
      'Unsupported',
      `ts-mls would ${hasPath ? 'include' : 'omit'} the path for these proposals; "path": ${path} cannot be honoured`,
    );
  }
  const response = {
    commit: mlsMessage(
      'mls_public_message',
      'publicMessage',
      result.commit.publicMessage,
    ),
    welcome:
      result.welcome === undefined
        ? null
        : mlsMessage('mls_welcome', 'welcome', result.welcome),
    has_path: hasPath,
    applied: apply,
    ...(await epochResult(result.newState, member.cs, treeExtension)),
  };
  // With "apply": false the member stays in the old epoch and the commit is
  // forgotten: ts-mls cannot later process its own commit.
  if (apply) member.state = result.newState;
  return response;
}

// ---------------------------------------------------------------------------
// Ops

async function opInfo() {
  return {
    ts_mls: tsMlsVersion,
    node: process.version,
    suites: await supportedSuites(),
    patches: patchesApplied,
    members: [...members.keys()],
  };
}

async function opKeyPackage(req) {
  const suite = field(req, 'suite', isUint, 'a cipher suite number');
  const identity = hexField(req, 'identity');
  const member = await memberWithSuite(req, suite);
  const { publicPackage, privatePackage } = await generateKeyPackage(
    { credentialType: 'basic', identity },
    capabilities(req),
    lifetime(req),
    [],
    member.cs,
  );
  const ref = toHex(await makeKeyPackageRef(publicPackage, member.cs.hash));
  member.keyPackages.push({ ref, publicPackage, privatePackage });
  keep(member);
  return {
    key_package: mlsMessage('mls_key_package', 'keyPackage', publicPackage),
    key_package_ref: ref,
    signature_key: toHex(publicPackage.leafNode.signaturePublicKey),
  };
}

async function opCreateGroup(req) {
  const suite = field(req, 'suite', isUint, 'a cipher suite number');
  const identity = hexField(req, 'identity');
  const groupId = hexField(req, 'group_id');
  const member = await memberWithSuite(req, suite);
  const { publicPackage, privatePackage } = await generateKeyPackage(
    { credentialType: 'basic', identity },
    capabilities(req),
    lifetime(req),
    [],
    member.cs,
  );
  member.state = await createGroup(
    groupId,
    publicPackage,
    privatePackage,
    [],
    member.cs,
    defaultClientConfig,
  );
  keep(member);
  return summary(member.state);
}

async function opJoinWelcome(req) {
  const member = existingMember(req);
  const welcome = decodeMessage(
    hexField(req, 'welcome'),
    'welcome',
    'mls_welcome',
  ).welcome;
  const treeBytes = optionalHex(req, 'ratchet_tree');
  const tree = treeBytes === undefined ? undefined : decodeTree(treeBytes);
  const newMembers = new Set(welcome.secrets.map((s) => toHex(s.newMember)));
  const index = member.keyPackages.findIndex((kp) => newMembers.has(kp.ref));
  if (index < 0) {
    throw new PeerError(
      'NoMatchingKeyPackage',
      `the Welcome is for none of "${member.name}"'s KeyPackages`,
    );
  }
  const kp = member.keyPackages[index];
  member.state = await joinGroup(
    welcome,
    kp.publicPackage,
    kp.privatePackage,
    makePskIndex(member.state, {}),
    member.cs,
    tree,
    undefined,
    defaultClientConfig,
  );
  // RFC 9420 §10: a KeyPackage is used once.
  member.keyPackages.splice(index, 1);
  return summary(member.state);
}

async function opSend(req) {
  const member = existingMember(req);
  const data = hexField(req, 'data');
  const authenticatedData =
    optionalHex(req, 'authenticated_data') ?? new Uint8Array();
  const result = await createApplicationMessage(
    member.group(),
    data,
    member.cs,
    authenticatedData,
  );
  member.state = result.newState;
  return {
    message: mlsMessage(
      'mls_private_message',
      'privateMessage',
      result.privateMessage,
    ),
  };
}

async function opProcess(req) {
  const member = existingMember(req);
  const state = member.group();
  const message = decodeMessage(
    hexField(req, 'message'),
    'message',
    'mls_public_message',
    'mls_private_message',
  );
  const pskIndex = makePskIndex(state, {});

  if (message.wireformat === 'mls_public_message') {
    const pm = message.publicMessage;
    const contentType = pm.content.contentType;
    if (contentType === 'application') {
      // RFC 9420 §6: "Applications MUST use PrivateMessage to encrypt application messages".
      throw new PeerError(
        'ValidationError',
        'application data in a PublicMessage',
      );
    }
    const result = await processPublicMessage(state, pm, pskIndex, member.cs);
    member.state = result.newState;
    if (contentType === 'proposal') {
      const ref = await makeProposalRef(
        {
          wireformat: 'mls_public_message',
          content: pm.content,
          auth: pm.auth,
        },
        member.cs.hash,
      );
      return {
        kind: 'proposal',
        proposal_ref: toHex(ref),
        proposal_type: pm.content.proposal.proposalType,
        sender: senderJson(pm.content.sender),
      };
    }
    return commitProcessed(member, pm.content.sender);
  }

  const before = new Set(Object.keys(state.unappliedProposals));
  const result = await processPrivateMessage(
    state,
    message.privateMessage,
    pskIndex,
    member.cs,
  );
  member.state = result.newState;
  if (result.kind === 'applicationMessage') {
    return { kind: 'application', data: toHex(result.message) };
  }
  if (
    result.newState.groupContext.epoch === state.groupContext.epoch &&
    result.newState.groupActiveState.kind === state.groupActiveState.kind
  ) {
    const added = Object.keys(result.newState.unappliedProposals).filter(
      (k) => !before.has(k),
    );
    return {
      kind: 'proposal',
      proposal_ref:
        added.length === 1 ? toHex(Buffer.from(added[0], 'base64')) : null,
    };
  }
  return commitProcessed(member, undefined);
}

function senderJson(sender) {
  return sender.senderType === 'member'
    ? { type: 'member', leaf_index: sender.leafIndex }
    : { type: sender.senderType };
}

function commitProcessed(member, sender) {
  const state = member.state;
  return {
    kind: 'commit',
    ...(sender === undefined ? {} : { sender: senderJson(sender) }),
    removed: state.groupActiveState.kind === 'removedFromGroup',
    epoch: Number(state.groupContext.epoch),
    epoch_authenticator: toHex(state.keySchedule.epochAuthenticator),
    tree_hash: toHex(state.groupContext.treeHash),
  };
}

async function opCommit(req) {
  const member = existingMember(req);
  const items = optional(req, 'proposals', Array.isArray, 'a list', []);
  return commit(member, req, items.map(proposalByValue), undefined);
}

async function opUpdate(req) {
  const member = existingMember(req);
  if (req.proposals !== undefined)
    throw badRequest('"update" takes no proposals; use "commit"');
  return commit(member, req, [], []);
}

async function opRemove(req) {
  const member = existingMember(req);
  const leafIndices =
    req.leaf_indices !== undefined
      ? field(
          req,
          'leaf_indices',
          (v) => Array.isArray(v) && v.length > 0 && v.every(isUint),
          'a non-empty list of leaf indices',
        )
      : [field(req, 'leaf_index', isUint, 'a leaf index')];
  const proposals = leafIndices.map((removed) => ({
    proposalType: 'remove',
    remove: { removed },
  }));
  return commit(member, req, proposals, []);
}

async function propose(member, proposal) {
  const result = await createProposal(
    member.group(),
    true,
    proposal,
    member.cs,
  );
  member.state = result.newState;
  const pm = result.message.publicMessage;
  const ref = await makeProposalRef(
    { wireformat: 'mls_public_message', content: pm.content, auth: pm.auth },
    member.cs.hash,
  );
  return {
    proposal: mlsMessage('mls_public_message', 'publicMessage', pm),
    proposal_ref: toHex(ref),
  };
}

async function opProposeAdd(req) {
  const member = existingMember(req);
  const keyPackage = decodeMessage(
    hexField(req, 'key_package'),
    'key_package',
    'mls_key_package',
  ).keyPackage;
  return propose(member, { proposalType: 'add', add: { keyPackage } });
}

async function opProposeRemove(req) {
  const member = existingMember(req);
  const removed = field(req, 'leaf_index', isUint, 'a leaf index');
  return propose(member, { proposalType: 'remove', remove: { removed } });
}

async function opJoinExternal(req) {
  const groupInfo = decodeMessage(
    hexField(req, 'group_info'),
    'group_info',
    'mls_group_info',
  ).groupInfo;
  const treeBytes = optionalHex(req, 'ratchet_tree');
  const tree = treeBytes === undefined ? undefined : decodeTree(treeBytes);
  const resync = optional(req, 'resync', isBool, 'a boolean', false);
  const suite = suiteId(groupInfo.groupContext.cipherSuite);
  if (suite === undefined)
    throw new PeerError(
      'Unsupported',
      "the GroupInfo's cipher suite is unknown to ts-mls",
    );
  const member = await memberWithSuite(req, suite);
  const cs = member.cs;

  let keyPackage;
  if (resync) {
    // Rejoin with the same signature key and credential: ts-mls finds the old
    // leaf to remove by comparing signature keys (keyPackageEqualityConfig).
    const state = member.group();
    const own = state.ratchetTree[state.privatePath.leafIndex * 2];
    if (own?.nodeType !== 'leaf')
      throw new PeerError('UsageError', 'own leaf not found in own state');
    // ts-mls prefers the GroupInfo's ratchet_tree extension to the tree passed in.
    const treeForCheck = ratchetTreeFromGroupInfo(groupInfo) ?? tree;
    const stillThere = leaves(treeForCheck ?? []).some(([, leaf]) =>
      Buffer.from(leaf.signaturePublicKey).equals(
        Buffer.from(own.leaf.signaturePublicKey),
      ),
    );
    if (treeForCheck !== undefined && !stillThere) {
      throw new PeerError(
        'UsageError',
        "resync: the group's tree has no leaf with this member's signature key",
      );
    }
    keyPackage = await generateKeyPackageWithKey(
      own.leaf.credential,
      own.leaf.capabilities,
      defaultLifetime,
      [],
      {
        signKey: state.signaturePrivateKey,
        publicKey: own.leaf.signaturePublicKey,
      },
      cs,
    );
  } else {
    const identity = hexField(req, 'identity');
    keyPackage = await generateKeyPackage(
      { credentialType: 'basic', identity },
      capabilities(req),
      lifetime(req),
      [],
      cs,
    );
  }
  const treeExtension = optional(
    req,
    'ratchet_tree_extension',
    isBool,
    'a boolean',
    false,
  );
  const authenticatedData =
    optionalHex(req, 'authenticated_data') ?? new Uint8Array();
  const result = await joinGroupExternal(
    groupInfo,
    keyPackage.publicPackage,
    keyPackage.privatePackage,
    resync,
    cs,
    tree,
    defaultClientConfig,
    authenticatedData,
  );
  member.state = result.newState;
  keep(member);
  return {
    commit: mlsMessage(
      'mls_public_message',
      'publicMessage',
      result.publicMessage,
    ),
    welcome: null,
    has_path: result.publicMessage.content.commit.path !== undefined,
    applied: true,
    ...(await epochResult(member.state, cs, treeExtension)),
  };
}

function ratchetTreeFromGroupInfo(groupInfo) {
  const ext = groupInfo.extensions.find(
    (e) => e.extensionType === 'ratchet_tree',
  );
  return ext === undefined ? undefined : decodeTree(ext.extensionData);
}

async function opState(req) {
  return summary(existingMember(req).group());
}

async function opGroupInfo(req) {
  const member = existingMember(req);
  const treeExtension = optional(
    req,
    'ratchet_tree_extension',
    isBool,
    'a boolean',
    false,
  );
  return groupInfoFor(member.group(), member.cs, treeExtension);
}

async function opExport(req) {
  const member = existingMember(req);
  const label = field(req, 'label', isString, 'a string');
  const context = hexField(req, 'context');
  const length = field(
    req,
    'length',
    (v) => isUint(v) && v <= 0xffff,
    'a length (0..65535)',
  );
  const secret = await mlsExporter(
    member.group().keySchedule.exporterSecret,
    label,
    context,
    length,
    member.cs,
  );
  return { secret: toHex(secret) };
}

async function opForget(req) {
  const name = memberName(req);
  return { forgotten: members.delete(name) };
}

const OPS = {
  info: opInfo,
  key_package: opKeyPackage,
  create_group: opCreateGroup,
  join_welcome: opJoinWelcome,
  send: opSend,
  process: opProcess,
  commit: opCommit,
  update: opUpdate,
  remove: opRemove,
  propose_add: opProposeAdd,
  propose_remove: opProposeRemove,
  join_external: opJoinExternal,
  state: opState,
  group_info: opGroupInfo,
  export_secret: opExport,
  forget: opForget,
};

// ---------------------------------------------------------------------------
// The line loop: requests are handled one at a time, in order.

function write(response) {
  let text;
  try {
    text = JSON.stringify(response);
  } catch (err) {
    // A result that cannot be serialised is a peer bug; still answer.
    text = JSON.stringify({ id: response.id, error: errorBody(err) });
  }
  process.stdout.write(text + '\n');
}

async function handle(line) {
  let id = null;
  try {
    let req;
    try {
      req = JSON.parse(line);
    } catch (err) {
      throw badRequest(`not JSON: ${err.message}`);
    }
    if (req === null || typeof req !== 'object' || Array.isArray(req)) {
      throw badRequest('a request must be a JSON object');
    }
    id = req.id ?? null;
    if (missingPatches.length > 0 && !allowUnpatched && req.op !== 'info') {
      throw new PeerError(
        'SetupError',
        `ts-mls patches not applied (${missingPatches.join(', ')}); run npm ci`,
      );
    }
    const op = OPS[req.op];
    if (
      typeof req.op !== 'string' ||
      op === undefined ||
      !Object.hasOwn(OPS, req.op)
    ) {
      throw new PeerError('UnknownOp', `unknown op ${JSON.stringify(req.op)}`);
    }
    const started = DEBUG ? performance.now() : 0;
    const result = await op(req);
    if (DEBUG) {
      process.stderr.write(
        `tsmls-peer: ${req.op} ${req.member ?? ''} ${(performance.now() - started).toFixed(1)} ms\n`,
      );
    }
    write({ id, result });
  } catch (err) {
    if (DEBUG) process.stderr.write(`tsmls-peer: error ${err?.stack ?? err}\n`);
    write({ id, error: errorBody(err) });
  }
}

// Nothing may take the peer down: a stray rejection is reported, not fatal.
// Only losing stdout (the driver went away) ends it.
process.stdout.on('error', () => process.exit(0));
process.on('uncaughtException', (err) =>
  write({ id: null, error: errorBody(err) }),
);
process.on('unhandledRejection', (err) =>
  write({ id: null, error: errorBody(err) }),
);

let queue = Promise.resolve();
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (line.trim() === '') return;
  // handle() answers every request itself; the catch only keeps the chain alive.
  queue = queue
    .then(() => handle(line))
    .catch((err) => process.stderr.write(`tsmls-peer: ${err?.stack ?? err}\n`));
});
