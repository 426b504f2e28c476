#!/usr/bin/env node
// ts-mls timings for bench/mls_groups.py: one ts-mls member joins the Python
// group, creates commits with a path and processes Python's commits, each
// timed inside Node (performance.now()), so that neither the line protocol nor
// hex encoding is counted.
//
// It uses the ts-mls that tests/interop installs (`npm ci` there, with its
// patches; see docs/interop.md) and holds one member. One JSON request per line
// on stdin, one JSON response per line on stdout (bytes as hex):
//
//   {"op": "info"}                         -> {ts_mls, node, patches}
//   {"op": "key_package", "suite", "identity"}
//                                          -> {key_package}            (MLSMessage)
//   {"op": "join", "welcome", "ratchet_tree"?, "runs", "budget_s"}
//                                          -> {times_ms, cpu_ms, epoch_authenticator, leaf_index}
//   {"op": "update", "runs", "budget_s"}   -> {times_ms, cpu_ms, commit, epoch_authenticator}
//   {"op": "process", "message", "runs", "budget_s"}
//                                          -> {times_ms, cpu_ms, epoch_authenticator}
//   {"op": "memory"}                       -> {max_rss_bytes, heap_used_bytes, rss_bytes}
//
// `join` repeats joinGroup on the same Welcome (ts-mls states are immutable
// values) and keeps the last state; `update` repeats createCommit with no
// proposals (so with a path) from the same state and never applies it;
// `process` repeats processPublicMessage of one commit from the same state and
// never applies it. Each stops after `runs` runs or once `budget_s` seconds
// have passed, whichever comes first, but always runs at least once. With
// node --expose-gc a full collection runs before each timed run. times_ms is
// wall time (performance.now()), cpu_ms the process's CPU time over the same
// span (process.cpuUsage(): user + system, all threads, so V8's helper
// threads count too).

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const tsMlsRoot = new URL(
  '../tests/interop/node_modules/ts-mls/',
  import.meta.url,
);
const src = new URL('dist/src/', tsMlsRoot);
const load = (module) => import(new URL(module, src).href);

const {
  createCommit,
  decodeMlsMessage,
  defaultLifetime,
  encodeMlsMessage,
  generateKeyPackage,
  getCiphersuiteImpl,
  joinGroup,
  makePskIndex,
  processPublicMessage,
} = await load('index.js');
const { defaultClientConfig } = await load('clientConfig.js');
const { ciphersuites, getCiphersuiteFromId } = await load(
  'crypto/ciphersuite.js',
);
const { decodeRatchetTree } = await load('ratchetTree.js');

const tsMlsVersion = JSON.parse(
  readFileSync(new URL('package.json', tsMlsRoot), 'utf8'),
).version;

// The same markers as tests/interop/tsmls-peer.mjs: the patches must be applied.
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
const patches = Object.fromEntries(
  Object.entries(PATCHES).map(([name, [file, marker]]) => [
    name,
    readFileSync(fileURLToPath(new URL(file, src)), 'utf8').includes(marker),
  ]),
);

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

function decodeAll(decoder, bytes, what) {
  const decoded = decoder(bytes, 0);
  if (decoded === undefined) throw new Error(`${what} does not decode`);
  const [value, end] = decoded;
  if (end !== bytes.length)
    throw new Error(`${what}: ${bytes.length - end} trailing bytes`);
  return value;
}

// The member: its cipher suite, its KeyPackage, and its state once joined.
const me = { cs: undefined, keyPackage: undefined, state: undefined };

async function timed(req, fn) {
  const runs = Math.max(1, req.runs ?? 1);
  const budgetMs = (req.budget_s ?? 60) * 1000;
  const times = [];
  const cpu = [];
  let last;
  const start = performance.now();
  while (times.length < runs) {
    if (globalThis.gc) globalThis.gc();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    last = await fn();
    times.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    if (performance.now() - start > budgetMs) break;
  }
  return { times, cpu, last };
}

const ops = {
  async info() {
    return { ts_mls: tsMlsVersion, node: process.version, patches };
  },

  async key_package(req) {
    me.cs = await getCiphersuiteImpl(getCiphersuiteFromId(req.suite));
    const capabilities = {
      versions: ['mls10'],
      ciphersuites: Object.keys(ciphersuites),
      extensions: [],
      proposals: [],
      credentials: ['basic', 'x509'],
    };
    me.keyPackage = await generateKeyPackage(
      { credentialType: 'basic', identity: unhex(req.identity) },
      capabilities,
      defaultLifetime,
      [],
      me.cs,
    );
    return {
      key_package: hex(
        encodeMlsMessage({
          version: 'mls10',
          wireformat: 'mls_key_package',
          keyPackage: me.keyPackage.publicPackage,
        }),
      ),
    };
  },

  async join(req) {
    const message = decodeAll(decodeMlsMessage, unhex(req.welcome), 'welcome');
    const tree =
      req.ratchet_tree === undefined
        ? undefined
        : decodeAll(decodeRatchetTree, unhex(req.ratchet_tree), 'tree');
    const { times, cpu, last } = await timed(req, () =>
      joinGroup(
        message.welcome,
        me.keyPackage.publicPackage,
        me.keyPackage.privatePackage,
        makePskIndex(undefined, {}),
        me.cs,
        tree,
        undefined,
        defaultClientConfig,
      ),
    );
    me.state = last;
    return {
      times_ms: times,
      cpu_ms: cpu,
      epoch_authenticator: hex(last.keySchedule.epochAuthenticator),
      leaf_index: last.privatePath.leafIndex,
    };
  },

  async update(req) {
    const state = me.state;
    const { times, cpu, last } = await timed(req, () =>
      createCommit(
        { state, cipherSuite: me.cs, pskIndex: makePskIndex(state, {}) },
        { wireAsPublicMessage: true, extraProposals: [] },
      ),
    );
    return {
      times_ms: times,
      cpu_ms: cpu,
      commit: hex(encodeMlsMessage(last.commit)),
      epoch_authenticator: hex(last.newState.keySchedule.epochAuthenticator),
    };
  },

  async process(req) {
    const state = me.state;
    const message = decodeAll(decodeMlsMessage, unhex(req.message), 'message');
    const { times, cpu, last } = await timed(req, () =>
      processPublicMessage(
        state,
        message.publicMessage,
        makePskIndex(state, {}),
        me.cs,
      ),
    );
    return {
      times_ms: times,
      cpu_ms: cpu,
      epoch_authenticator: hex(last.newState.keySchedule.epochAuthenticator),
    };
  },

  async memory() {
    const usage = process.memoryUsage();
    return {
      max_rss_bytes: process.resourceUsage().maxRSS * 1024,
      rss_bytes: usage.rss,
      heap_used_bytes: usage.heapUsed,
    };
  },
};

const lines = createInterface({ input: process.stdin, terminal: false });
for await (const line of lines) {
  if (!line.trim()) continue;
  let req;
  let response;
  try {
    req = JSON.parse(line);
    const op = ops[req.op];
    if (op === undefined) throw new Error(`unknown op ${req.op}`);
    response = { result: await op(req) };
  } catch (err) {
    response = {
      error: `${err?.name ?? 'Error'}: ${err?.message ?? String(err)}`,
    };
    if (process.env.TSMLS_BENCH_DEBUG === '1') console.error(err);
  }
  process.stdout.write(JSON.stringify(response) + '\n');
}
