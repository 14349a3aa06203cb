// Decisions of the built-in components under jco, checked against the expected answers.
import { cfg } from './host.js';
import * as az from './out/default-authorize/default-authorize.js';
import * as sudo from './out/default-sudo/default-sudo.js';
import * as src from './out/default-source/default-source.js';

const p = (name, groups = [], s = false) => ({ name, groups, sudo: s });
const dev = (name) => ({ name, id: '', tags: [] });
const req = (o = {}) => ({
  action: 'issue-session', requester: p('alice', ['ops']), subject: p('alice', ['ops']),
  device: dev('core-1'), protocol: 'ssh', access: 'full', ttlSeconds: 10, source: undefined,
  allowOnlyCidr: undefined, allowRfc1918: true, nowUnixMs: 0n, requestId: 'r1', ...o,
});
const allow = (g = {}) => ({ tag: 'allow', val: { obligations: [], ...g } });
const deny = (val) => ({ tag: 'deny', val });
// JSON with sorted keys, so field order does not matter.
const canon = (v) => JSON.stringify(v, (_, x) =>
  x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x);
let passed = 0, failed = 0;
const expect = (label, got, want) => {
  const ok = canon(got) === canon(want);
  ok ? passed++ : failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${label}${ok ? '' : `: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`}`);
};

expect('authorize without config', az.authorize(req()), deny('default-authorize: no `groups` configured'));
cfg.set('groups', JSON.stringify([
  { name: 'ops', devices: ['core-*'], access: 'full' },
  { name: 'viewers', devices: ['*'], access: 'read-only' },
]));
expect('authorize ops core-1', az.authorize(req()), allow({ access: 'full' }));
expect('authorize ops edge-1', az.authorize(req({ device: dev('edge-1') })),
  deny('user alice has no group that reaches device edge-1'));
expect('authorize viewers full', az.authorize(req({ subject: p('vic', ['viewers']), device: dev('edge-1') })),
  deny('user vic may reach device edge-1 only read-only, not with full access'));
expect('authorize viewers read-only',
  az.authorize(req({ subject: p('vic', ['viewers']), access: 'read-only', device: dev('edge-1') })),
  allow({ access: 'read-only' }));
const many = Array.from({ length: 10000 }, (_, i) => `g${i}`).concat(['ops']);
expect('authorize 10k groups, 100 KB name', az.authorize(req({ subject: p('x'.repeat(100000), many) })),
  allow({ access: 'full' }));
expect('sudo for oneself', sudo.sudo(req()), allow());
expect('sudo for another without sudo', sudo.sudo(req({ subject: p('bob') })),
  deny('alice may not issue for bob: issuing for another user needs a group with sudo'));
expect('sudo for another with sudo', sudo.sudo(req({ requester: p('admin', [], true), subject: p('bob') })), allow());
expect('source connect without source', src.checkSource(req({ action: 'connect' })), deny('no source address'));
expect('source connect RFC 1918', src.checkSource(req({ action: 'connect', source: '10.1.2.3', allowRfc1918: false })),
  deny('source 10.1.2.3 is a private (RFC 1918) address'));
expect('source connect outside CIDR',
  src.checkSource(req({ action: 'connect', source: '203.0.113.42', allowOnlyCidr: '198.51.100.10/32' })),
  deny('source 203.0.113.42 is outside the allowed 198.51.100.10/32'));
expect('source connect inside CIDR',
  src.checkSource(req({ action: 'connect', source: '198.51.100.10', allowOnlyCidr: '198.51.100.10/32' })), allow());
expect('source issuance', src.checkSource(req({ action: 'issue-transient', source: '10.0.0.1', allowRfc1918: false })),
  { tag: 'abstain' });

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
