// The operator's key store: user JWTs, revocations, enrollment tokens, credentials files, the server's auth block.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodeJwt, fmtCreds } from '@nats-io/jwt';
import { createUser } from '@nats-io/nkeys';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AuthStore,
  CredentialError,
  formatToken,
  parseCredentials,
  parseToken,
  roleOf,
} from '../../src/transport/auth.ts';

const dirs: string[] = [];
async function store(): Promise<AuthStore> {
  const dir = mkdtempSync(join(tmpdir(), 'plurigrid-auth-'));
  dirs.push(dir);
  return AuthStore.open(dir, { create: true });
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const encode = (s: string | Uint8Array) => (typeof s === 'string' ? new TextEncoder().encode(s) : s);

describe('AuthStore.userJwt', () => {
  it('issues a JWT for a key until it is revoked, then refuses with code "revoked"', async () => {
    const s = await store();
    const key = createUser().getPublicKey();
    const jwt = await s.userJwt('worker', key);
    const claims = decodeJwt(jwt);
    expect(claims.sub).toBe(key);
    expect(claims.iss).toBe(s.accountKey);

    await s.revoke(key);
    const refused = await s.userJwt('worker', key).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(CredentialError);
    expect((refused as CredentialError).code).toBe('revoked');
    // The revocation is on disk: the store opened again refuses too, and other keys are unaffected.
    const again = await AuthStore.open(join(s.dir, '..'));
    await expect(again.userJwt('client', key)).rejects.toMatchObject({ code: 'revoked' });
    await expect(again.userJwt('client', createUser().getPublicKey())).resolves.toMatch(/^eyJ/);
  });

  it('has no auth store to open where none was made', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plurigrid-auth-'));
    dirs.push(dir);
    await expect(AuthStore.open(dir)).rejects.toMatchObject({ code: 'no-auth-store' });
    expect(await AuthStore.exists(dir)).toBe(false);
  });
});

describe('AuthStore.checkToken', () => {
  it('accepts a fresh token once for its role, with its id', async () => {
    const s = await store();
    const t = await s.enrollmentToken('worker', 600);
    expect(s.checkToken(parseToken(t.token))).toEqual({ id: t.id, role: 'worker' });
  });

  it('refuses a token another coordinator issued', async () => {
    const [mine, theirs] = [await store(), await store()];
    const t = await theirs.enrollmentToken('client', 600);
    expect(() => mine.checkToken(parseToken(t.token))).toThrow(
      expect.objectContaining({ name: 'CredentialError', code: 'invalid-token' }),
    );
  });

  it('refuses a token once it has expired', async () => {
    const s = await store();
    const t = await s.enrollmentToken('client', 60);
    const token = parseToken(t.token);
    expect(s.checkToken(token, t.expires_at - 1_000).role).toBe('client');
    expect(() => s.checkToken(token, t.expires_at)).toThrow(
      expect.objectContaining({ code: 'expired-token' }),
    );
    expect(() => s.checkToken(token, t.expires_at + 86_400_000)).toThrow(
      expect.objectContaining({ code: 'expired-token' }),
    );
  });

  it('refuses a JWT of ours that is not an enrollment JWT, and a damaged token', async () => {
    const s = await store();
    const jwt = await s.userJwt('client', createUser().getPublicKey());
    expect(() => s.checkToken({ v: 1, role: 'worker', jwt })).toThrow(
      expect.objectContaining({ code: 'invalid-token' }),
    );
    expect(() => parseToken('pgenroll1_not-base64-json')).toThrow(
      expect.objectContaining({ code: 'invalid-token' }),
    );
    expect(() => parseToken(formatToken({ v: 1, role: 'client', jwt }).replace('pgenroll1_', 'x'))).toThrow(
      CredentialError,
    );
  });
});

describe('parseCredentials', () => {
  it('reads back what credentials() writes', async () => {
    const s = await store();
    const kp = createUser();
    const issued = await s.credentials('client', kp);
    const parsed = parseCredentials(encode(issued.creds));
    expect(parsed.key).toBe(kp.getPublicKey());
    expect(parsed.jwt).toBe(issued.jwt);
    expect(parsed.keyPair.getPublicKey()).toBe(kp.getPublicKey());
    expect(roleOf(parsed.claims)).toBe('client');
    expect(parsed.claims.nats.pub?.allow).toContain('plurigrid.api.>');
  });

  it('refuses a credentials file whose JWT is for another key than its seed, and one that is not a creds file', async () => {
    const s = await store();
    const jwtOfA = await s.userJwt('worker', createUser().getPublicKey());
    const mixed = fmtCreds(jwtOfA, createUser());
    expect(() => parseCredentials(mixed, 'mixed.creds')).toThrow(
      expect.objectContaining({ name: 'CredentialError', code: 'invalid-token' }),
    );
    expect(() => parseCredentials(mixed, 'mixed.creds')).toThrow(/mixed\.creds/);
    expect(() => parseCredentials(encode('not a creds file'))).toThrow(
      expect.objectContaining({ code: 'invalid-token' }),
    );
  });
});

describe('AuthStore.serverConfig', () => {
  it('trusts the operator and preloads both accounts into a memory resolver', async () => {
    const s = await store();
    const config = await s.serverConfig();
    // The operator JWT (each encoding has its own jti and iat: compare who it is for).
    const operator = /^operator: (eyJ\S+)$/m.exec(config)?.[1];
    expect(operator).toBeDefined();
    expect(decodeJwt(operator!).sub).toBe(decodeJwt(await s.operatorJwt()).sub);
    expect(config).toMatch(/^resolver: MEMORY$/m);
    expect(config).toContain(`system_account: ${s.systemAccountKey}`);
    const preloaded = (k: string) => new RegExp(`^\\s+${k}: (eyJ\\S+)$`, 'm').exec(config)?.[1];
    for (const account of [s.accountKey, s.systemAccountKey]) {
      const jwt = preloaded(account);
      expect(jwt, account).toBeDefined();
      expect(decodeJwt(jwt!).sub).toBe(account);
    }
    // No seed ever goes into the server's configuration.
    expect(config).not.toMatch(/\bS[OAU][A-Z2-7]{50,}/);
  });
});
