// Who may publish and subscribe to what, checked the way nats-server checks it: subjects against allow lists with
// NATS wildcards. Pure: no server (test/integration/permissions.test.ts has a real one refuse forged actions).
import { createUser } from '@nats-io/nkeys';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  inboxOwner,
  inboxPrefix,
  PUBLIC_OWNER,
  type Rights,
  ROLES,
  RoleKeyError,
  rightsFor,
} from '../../src/transport/permissions.ts';
import { subjects } from '../../src/transport/subjects.ts';

/** NATS subject matching: `*` is exactly one token, `>` (last only) one or more trailing tokens. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

const mayPublish = (r: Rights, subject: string) => r.pub.allow.some((p) => matches(p, subject));
const maySubscribe = (r: Rights, subject: string) => r.sub.allow.some((p) => matches(p, subject));

const key = () => createUser().getPublicKey();

describe('matches (the NATS wildcard semantics these tests rely on)', () => {
  it('takes * as one token and > as one or more trailing tokens', () => {
    expect(matches('a.*.c', 'a.b.c')).toBe(true);
    expect(matches('a.*.c', 'a.b.x.c')).toBe(false);
    expect(matches('a.*', 'a')).toBe(false);
    expect(matches('a.>', 'a.b')).toBe(true);
    expect(matches('a.>', 'a.b.c.d')).toBe(true);
    expect(matches('a.>', 'a')).toBe(false);
    expect(matches('>', 'anything.at.all')).toBe(true);
    expect(matches('a.b', 'a.b')).toBe(true);
    expect(matches('a.b', 'a.b.c')).toBe(false);
    expect(matches('a.b.c', 'a.b')).toBe(false);
  });
});

describe('rightsFor', () => {
  /** Subjects only the coordinator may publish: the JetStream API, job/study state, the ledger. */
  const coordinatorOnlyPublish = [
    '$JS.API.INFO',
    '$JS.API.STREAM.DELETE.RESULTS',
    '$JS.API.CONSUMER.CREATE.EVENTS',
    '$KV.jobs.job-1',
    '$KV.jobs.x.y',
    subjects.ledger,
  ];
  const api = ['submit', 'status', 'cancel', 'enroll', 'faucet'] as const;

  it('gives the coordinator everything', () => {
    const r = rightsFor('coordinator', key());
    for (const s of [...coordinatorOnlyPublish, subjects.api('submit')]) expect(mayPublish(r, s)).toBe(true);
    expect(maySubscribe(r, subjects.api('submit'))).toBe(true);
  });

  it('lets no other role publish to the JetStream API, job state or the ledger, nor serve the API', () => {
    for (const role of ROLES.filter((r) => r !== 'coordinator')) {
      const r = rightsFor(role, key());
      for (const s of coordinatorOnlyPublish) expect(mayPublish(r, s), `${role} publishes ${s}`).toBe(false);
      for (const op of api) {
        expect(maySubscribe(r, subjects.api(op)), `${role} subscribes ${op}`).toBe(false);
      }
      expect(r.sub.allow.some((p) => matches(p, 'plurigrid.api.anything'))).toBe(false);
    }
  });

  it("names only the worker's own key in a worker's subjects", () => {
    const w = key();
    const r = rightsFor('worker', w);
    for (const pattern of [...r.pub.allow, ...r.sub.allow]) {
      if (pattern === subjects.apiAll) continue; // a provider is a client too: stake, unstake, balance
      expect(pattern.split('.'), pattern).toContain(w);
    }
    for (const s of [
      subjects.heartbeat(w),
      subjects.results(w),
      subjects.workerAdvert(w),
      subjects.outputPart(w, 'job-1', 0, 3),
      subjects.api('stake'),
    ]) {
      expect(mayPublish(r, s), s).toBe(true);
    }
    for (const s of [subjects.assign(w), subjects.cancel(w), `${inboxPrefix(w)}.abc`]) {
      expect(maySubscribe(r, s), s).toBe(true);
    }
    expect(maySubscribe(r, subjects.heartbeatAll)).toBe(false);
    expect(r.resp).toEqual({ max: 1, ttl: 60e9 });
  });

  it('lets a client call the API and read only its own inbox, its own events and public ones', () => {
    const c = key();
    const other = key();
    const r = rightsFor('client', c);
    expect(mayPublish(r, subjects.api('submit'))).toBe(true);
    expect(mayPublish(r, subjects.heartbeat(c))).toBe(false);
    expect(maySubscribe(r, `${inboxPrefix(c)}.x`)).toBe(true);
    expect(maySubscribe(r, subjects.studyEvents(c, 's1'))).toBe(true);
    expect(maySubscribe(r, subjects.studyEvents(PUBLIC_OWNER, 's1'))).toBe(true);
    expect(maySubscribe(r, subjects.studyEvents(other, 's1'))).toBe(false);
    expect(maySubscribe(r, `${inboxPrefix(other)}.x`)).toBe(false);
    expect(maySubscribe(r, '_INBOX.x')).toBe(false);
  });

  it("gives the dashboard the API's read endpoints only, and enrollment the enroll endpoint only", () => {
    const d = rightsFor('dashboard', key());
    for (const op of ['status', 'list', 'results', 'workers', 'balance'] as const)
      expect(mayPublish(d, subjects.api(op)), op).toBe(true);
    for (const op of ['submit', 'cancel', 'faucet', 'transfer', 'stake', 'enroll'] as const)
      expect(mayPublish(d, subjects.api(op)), op).toBe(false);
    expect(maySubscribe(d, subjects.heartbeat(key()))).toBe(true);

    const e = rightsFor('enroll', key());
    expect(mayPublish(e, subjects.api('enroll'))).toBe(true);
    for (const op of ['submit', 'status', 'faucet'] as const)
      expect(mayPublish(e, subjects.api(op))).toBe(false);
    expect(maySubscribe(e, subjects.eventsOf(PUBLIC_OWNER))).toBe(false);
  });

  it('refuses a key that is not a public user nkey', () => {
    const account = 'A'.padEnd(56, 'B');
    for (const bad of ['', 'U123', account, createUser().getPublicKey().toLowerCase(), `${key()}.>`]) {
      expect(() => rightsFor('client', bad)).toThrow(RoleKeyError);
    }
  });
});

describe('inboxOwner', () => {
  it('reads the key of a keyed inbox, and null for anything else', () => {
    const k = key();
    expect(inboxOwner(`${inboxPrefix(k)}.abc.1`)).toBe(k);
    expect(inboxOwner(`${inboxPrefix(k)}`)).toBe(k);
    // nats.js's own inboxes, without a key (a server without authentication)
    expect(inboxOwner('_INBOX.A6Y4JZ2KWJ1GQPL3N0XBMN.1')).toBeNull();
    expect(inboxOwner(undefined)).toBeNull();
    expect(inboxOwner('')).toBeNull();
    expect(inboxOwner('_INBOX.')).toBeNull();
    expect(inboxOwner('plurigrid.api.submit')).toBeNull();
    expect(inboxOwner(`x._INBOX.${k}.1`)).toBeNull();
    expect(inboxOwner(`_INBOX.${k.slice(0, 40)}.1`)).toBeNull();
    expect(inboxOwner(`_INBOX.${k.toLowerCase()}.1`)).toBeNull();
  });
});

describe("one worker's rights never reach another's subjects", () => {
  // Keys made by nkeys; fast-check picks pairs from them (and varies the rest), so a failure replays.
  const pool = Array.from({ length: 32 }, key);
  const pair = fc.uniqueArray(fc.constantFrom(...pool), { minLength: 2, maxLength: 2 });
  const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/);

  it('A publishes none of B’s heartbeat, results, advert or output subjects, nor reads B’s assignments or inbox', () => {
    fc.assert(
      fc.property(pair, token, fc.nat(99), fc.nat(999), token, ([a, b], job, attempt, part, reply) => {
        const ra = rightsFor('worker', a!);
        for (const s of [
          subjects.heartbeat(b!),
          subjects.results(b!),
          subjects.workerAdvert(b!),
          subjects.outputPart(b!, job, attempt, part),
        ]) {
          expect(mayPublish(ra, s), s).toBe(false);
        }
        for (const s of [subjects.assign(b!), subjects.cancel(b!), `${inboxPrefix(b!)}.${reply}`]) {
          expect(maySubscribe(ra, s), s).toBe(false);
        }
        // and a client A never reads B's studies' events
        expect(maySubscribe(rightsFor('client', a!), subjects.studyEvents(b!, job))).toBe(false);
      }),
      { numRuns: 200 },
    );
  });
});
