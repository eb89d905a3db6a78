import { createUser } from '@nats-io/nkeys';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  AuthError,
  type AuthErrorCode,
  MAX_TTL_MS,
  NonceGuard,
  requestOpId,
  type SignedRequest,
  signRequest,
  verifyRequest,
} from '../../src/ledger/signed.ts';

const NOW = 1_750_000_000_000;
const alice = createUser();
const mallory = createUser();
const body = { to: createUser().getPublicKey(), amount: 1_500_000 };

function refused(code: AuthErrorCode, fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(AuthError);
  expect((caught as AuthError).code).toBe(code);
}

describe('signed requests', () => {
  it('accepts a good signature once, from a key pair or its seed', () => {
    const guard = new NonceGuard();
    const req = signRequest(alice, 'transfer', body, NOW);
    expect(req.key).toBe(alice.getPublicKey());
    expect(req.nonce.length).toBeGreaterThanOrEqual(16);
    const ok = verifyRequest(JSON.parse(JSON.stringify(req)), 'transfer', NOW + 1000, guard);
    expect(ok.body).toEqual(body);
    expect(requestOpId(ok)).toBe(`req:${req.key}:${req.nonce}`);

    const fromSeed = signRequest(new TextDecoder().decode(alice.getSeed()), 'transfer', body, NOW);
    expect(verifyRequest(fromSeed, 'transfer', NOW, guard).key).toBe(alice.getPublicKey());
    expect(fromSeed.nonce).not.toBe(req.nonce);
  });

  it('refuses a tampered body, another key, a changed expiry or a garbled signature', () => {
    const req = signRequest(alice, 'transfer', body, NOW);
    const guard = new NonceGuard();
    refused('bad-signature', () =>
      verifyRequest({ ...req, body: { ...body, amount: 15_000_000 } }, 'transfer', NOW, guard),
    );
    refused('bad-signature', () =>
      verifyRequest({ ...req, key: mallory.getPublicKey() }, 'transfer', NOW, guard),
    );
    refused('bad-signature', () =>
      verifyRequest({ ...req, expires_at: req.expires_at + 1 }, 'transfer', NOW, guard),
    );
    refused('bad-signature', () => verifyRequest({ ...req, nonce: `${req.nonce}x` }, 'transfer', NOW, guard));
    const other = signRequest(mallory, 'transfer', body, NOW);
    refused('bad-signature', () =>
      verifyRequest({ ...req, signature: other.signature }, 'transfer', NOW, guard),
    );
    refused('malformed', () => verifyRequest({ ...req, signature: undefined }, 'transfer', NOW, guard));
    refused('malformed', () => verifyRequest({ ...req, key: 'UABC' }, 'transfer', NOW, guard));
    refused('malformed', () => verifyRequest('nope', 'transfer', NOW, guard));
    expect(guard.size).toBe(0); // refused requests take no room
    // The untouched request is still good.
    expect(verifyRequest(req, 'transfer', NOW, guard).key).toBe(alice.getPublicKey());
  });

  it('refuses an expired request, one valid too far ahead, a replay and another action', () => {
    const guard = new NonceGuard();
    const req = signRequest(alice, 'transfer', body, NOW, 60_000);
    refused('expired', () => verifyRequest(req, 'transfer', NOW + 60_000, guard));
    refused('wrong-action', () => verifyRequest(req, 'escrow', NOW, guard));
    verifyRequest(req, 'transfer', NOW, guard);
    refused('replayed', () => verifyRequest(req, 'transfer', NOW + 1, guard));
    // A clock far behind the signer's: the request would need remembering beyond the longest validity.
    refused('not-yet-valid', () =>
      verifyRequest(signRequest(alice, 'transfer', body, NOW), 'transfer', NOW - MAX_TTL_MS, guard),
    );
    expect(() => signRequest(alice, 'transfer', body, NOW, MAX_TTL_MS + 1)).toThrow(RangeError);
  });

  it('checks the body against a schema', () => {
    const Transfer = z.strictObject({ to: z.string(), amount: z.number().int().positive() });
    const guard = new NonceGuard();
    const ok = verifyRequest(signRequest(alice, 'transfer', body, NOW), 'transfer', NOW, guard, Transfer);
    expect(ok.body.amount).toBe(1_500_000);
    const bad = signRequest(alice, 'transfer', { ...body, amount: -1 }, NOW);
    refused('malformed', () => verifyRequest(bad, 'transfer', NOW, guard, Transfer));
  });

  it('forgets nonces once their requests expire, and refuses rather than forget when full', () => {
    const guard = new NonceGuard({ capacity: 3 });
    const reqs: SignedRequest[] = Array.from({ length: 4 }, () =>
      signRequest(alice, 'transfer', body, NOW, 1000),
    );
    for (const r of reqs.slice(0, 3)) verifyRequest(r, 'transfer', NOW, guard);
    refused('nonce-capacity', () => verifyRequest(reqs[3], 'transfer', NOW, guard));
    refused('replayed', () => verifyRequest(reqs[0], 'transfer', NOW + 999, guard));
    const later = signRequest(alice, 'transfer', body, NOW + 1000, 1000);
    verifyRequest(later, 'transfer', NOW + 1000, guard); // the first three expired: room again
    expect(guard.size).toBe(1);
  });
});
