/**
 * NATS decentralized authentication (operator → account → user JWTs signed with nkeys), as nats-server 2.9 runs it
 * with a memory resolver. The coordinator's data dir holds the keys in `auth/` (mode 0700, seeds 0600):
 *
 * - `operator.nk`: signs the account JWTs; the server trusts only this operator.
 * - `account.nk`: the Plurigrid account, where every user lives and JetStream is enabled; it signs user JWTs.
 * - `system.nk`: the system account, through which a new account JWT (a revocation) is pushed to running servers.
 * - `revocations.json`: revoked user keys and when; part of every account JWT made from now on.
 *
 * Users get credentials files in the standard `.creds` format (a user JWT and its nkey seed), whose rights are
 * derived from their role (permissions.ts). Nothing here prints a seed.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  type ClaimsData,
  decode as decodeJwt,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
  type User,
} from '@nats-io/jwt';
import {
  createAccount,
  createOperator,
  createUser,
  fromPublic,
  fromSeed,
  type KeyPair,
} from '@nats-io/nkeys';
import { z } from 'zod';
import { ROLES, type Role, rightsFor } from './permissions.ts';

const AUTH_DIR = 'auth';
const OPERATOR_NAME = 'plurigrid';
const ACCOUNT_NAME = 'plurigrid';
const SYSTEM_NAME = 'SYS';

/** No limit, in the claims' terms. */
const UNLIMITED = {
  conn: -1,
  subs: -1,
  data: -1,
  payload: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
  leaf: -1,
};
const JETSTREAM = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

/** A credential refused: a revoked key, an expired or foreign token. Match on `code`. */
export class CredentialError extends Error {
  readonly code: 'revoked' | 'invalid-token' | 'expired-token' | 'no-auth-store';
  constructor(code: CredentialError['code'], message: string) {
    super(message);
    this.name = 'CredentialError';
    this.code = code;
  }
}

const Revocations = z.record(z.string().regex(/^U[A-Z2-7]{55}$/), z.number().int().min(0));

async function loadOrCreateSeed(file: string, create: () => KeyPair, make: boolean): Promise<KeyPair> {
  try {
    return fromSeed(new TextEncoder().encode((await readFile(file, 'utf8')).trim()));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !make) throw e;
    const kp = create();
    // 'wx': two processes starting at once never overwrite each other's key; the loser reads the winner's.
    try {
      await writeFile(file, `${new TextDecoder().decode(kp.getSeed())}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateSeed(file, create, false);
      throw err;
    }
    return kp;
  }
}

/** A user's identity as a credentials file holds it. */
export interface UserCredentials {
  /** The public user key (U…). */
  key: string;
  jwt: string;
  /** The `.creds` text: the JWT and the seed (a secret: write it 0600, never print it). */
  creds: string;
}

/** A parsed `.creds` file. */
export interface LoadedCredentials {
  key: string;
  jwt: string;
  keyPair: KeyPair;
  claims: ClaimsData<User>;
  /** The credentials' text, for the connection's authenticator. */
  text: Uint8Array;
}

/** Reads a `.creds` file (JWT + seed); an InputError-like message names the file, never its content. */
export async function loadCredentials(file: string): Promise<LoadedCredentials> {
  const text = await readFile(resolve(file));
  return parseCredentials(text, file);
}

/** Parses `.creds` text (what `fmtCreds` and the `nats` tooling write). */
export function parseCredentials(text: Uint8Array, where = 'credentials'): LoadedCredentials {
  const s = new TextDecoder().decode(text);
  const jwt = /-{3,}BEGIN NATS USER JWT-{3,}\s*\n\s*(\S+)\s*\n/.exec(s)?.[1];
  const seed = /-{3,}BEGIN USER NKEY SEED-{3,}\s*\n\s*(SU[A-Z2-7]+)\s*\n/.exec(s)?.[1];
  if (!jwt || !seed) throw new CredentialError('invalid-token', `${where}: not a NATS credentials file`);
  const keyPair = fromSeed(new TextEncoder().encode(seed));
  const claims = decodeJwt<User>(jwt);
  if (claims.sub !== keyPair.getPublicKey()) {
    throw new CredentialError('invalid-token', `${where}: the JWT is for another key than the seed`);
  }
  return { key: keyPair.getPublicKey(), jwt, keyPair, claims, text };
}

/** The role a user JWT was issued for (its `tags`), or null. */
export function roleOf(claims: ClaimsData<User>): Role | null {
  const tag = (claims.nats.tags ?? []).find((t) => t.startsWith('role:'))?.slice(5);
  return (ROLES as readonly string[]).includes(tag ?? '') ? (tag as Role) : null;
}

/** Checks a JWT's ed25519 signature against its issuer (an nkey); true when it verifies. */
function signedBy(jwt: string, issuer: string): boolean {
  const [header, payload, sig] = jwt.split('.');
  if (!header || !payload || !sig) return false;
  try {
    return fromPublic(issuer).verify(
      new TextEncoder().encode(`${header}.${payload}`),
      Buffer.from(sig, 'base64url'),
    );
  } catch {
    return false;
  }
}

/** What a one-time enrollment token carries: a bearer JWT allowed to call `enroll` once, for one role. */
export const EnrollmentToken = z.strictObject({
  v: z.literal(1),
  role: z.enum(['worker', 'client']),
  jwt: z.string().min(20).max(4096),
});
export type EnrollmentToken = z.infer<typeof EnrollmentToken>;
const TOKEN_PREFIX = 'pgenroll1_';

export function formatToken(t: EnrollmentToken): string {
  return TOKEN_PREFIX + Buffer.from(JSON.stringify(t)).toString('base64url');
}

export function parseToken(token: string): EnrollmentToken {
  if (!token.startsWith(TOKEN_PREFIX))
    throw new CredentialError('invalid-token', 'not a plurigrid enrollment token');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(token.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8'));
  } catch {
    throw new CredentialError('invalid-token', 'the enrollment token is damaged');
  }
  const parsed = EnrollmentToken.safeParse(json);
  if (!parsed.success) throw new CredentialError('invalid-token', 'the enrollment token is damaged');
  return parsed.data;
}

/**
 * The operator's and account's keys and what they sign. `open` with `create` makes missing keys (the coordinator
 * on first start); without it a missing store is a {@link CredentialError} `no-auth-store`.
 */
export class AuthStore {
  readonly dir: string;
  private readonly operator: KeyPair;
  private readonly account: KeyPair;
  private readonly system: KeyPair;

  private constructor(dir: string, operator: KeyPair, account: KeyPair, system: KeyPair) {
    this.dir = dir;
    this.operator = operator;
    this.account = account;
    this.system = system;
  }

  static async open(dataDir: string, { create = false } = {}): Promise<AuthStore> {
    const dir = join(resolve(dataDir), AUTH_DIR);
    try {
      if (create) {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await chmod(dir, 0o700);
      }
      const [operator, account, system] = await Promise.all([
        loadOrCreateSeed(join(dir, 'operator.nk'), createOperator, create),
        loadOrCreateSeed(join(dir, 'account.nk'), createAccount, create),
        loadOrCreateSeed(join(dir, 'system.nk'), createAccount, create),
      ]);
      return new AuthStore(dir, operator, account, system);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new CredentialError(
          'no-auth-store',
          `no NATS operator keys in ${dir}: that is the coordinator's data dir, made on its first start`,
        );
      }
      throw e;
    }
  }

  /** Whether `dataDir` holds an auth store (without making one). */
  static async exists(dataDir: string): Promise<boolean> {
    try {
      await readFile(join(resolve(dataDir), AUTH_DIR, 'account.nk'));
      return true;
    } catch {
      return false;
    }
  }

  /** The Plurigrid account's public key (A…): every user's JWT is issued by it. */
  get accountKey(): string {
    return this.account.getPublicKey();
  }

  get systemAccountKey(): string {
    return this.system.getPublicKey();
  }

  async revocations(): Promise<Record<string, number>> {
    try {
      return Revocations.parse(JSON.parse(await readFile(join(this.dir, 'revocations.json'), 'utf8')));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw e;
    }
  }

  /** Revokes every JWT of `key` issued up to now (seconds, as JWTs count). Returns the account JWT to push. */
  async revoke(key: string, nowMs = Date.now()): Promise<string> {
    if (!/^U[A-Z2-7]{55}$/.test(key)) throw new CredentialError('invalid-token', `not a user key: ${key}`);
    const all = { ...(await this.revocations()), [key]: Math.floor(nowMs / 1000) };
    const file = join(this.dir, 'revocations.json');
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(all, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, file);
    return this.accountJwt(all);
  }

  operatorJwt(): Promise<string> {
    return encodeOperator(OPERATOR_NAME, this.operator, { system_account: this.system.getPublicKey() });
  }

  /** The account JWT, JetStream enabled, with the revocations (the stored ones unless given). */
  async accountJwt(revocations?: Record<string, number>): Promise<string> {
    return encodeAccount(
      ACCOUNT_NAME,
      this.account,
      { limits: { ...UNLIMITED, ...JETSTREAM }, revocations: revocations ?? (await this.revocations()) },
      { signer: this.operator },
    );
  }

  systemJwt(): Promise<string> {
    return encodeAccount(SYSTEM_NAME, this.system, { limits: UNLIMITED }, { signer: this.operator });
  }

  /**
   * The server's authentication block (nats-server configuration syntax): trust this operator, resolve accounts
   * from memory, preloaded with ours (as revoked now) and the system account.
   */
  async serverConfig(): Promise<string> {
    const [operator, account, system] = await Promise.all([
      this.operatorJwt(),
      this.accountJwt(),
      this.systemJwt(),
    ]);
    return [
      `operator: ${operator}`,
      `system_account: ${this.system.getPublicKey()}`,
      'resolver: MEMORY',
      'resolver_preload: {',
      `  ${this.account.getPublicKey()}: ${account}`,
      `  ${this.system.getPublicKey()}: ${system}`,
      '}',
      '',
    ].join('\n');
  }

  /**
   * A user JWT for `role` and the public key `key`, signed by the account. A revoked key gets none: a new JWT would
   * be issued after its revocation time and so undo it.
   */
  async userJwt(
    role: Role,
    key: string,
    opts: { name?: string; expiresInS?: number; bearer?: boolean } = {},
  ): Promise<string> {
    if ((await this.revocations())[key] !== undefined) {
      throw new CredentialError('revoked', `the key ${key} is revoked; make a new key`);
    }
    const rights = rightsFor(role, key);
    return encodeUser(
      opts.name ?? `${role}-${key.slice(0, 8)}`,
      key,
      this.account,
      { ...rights, tags: [`role:${role}`], ...(opts.bearer ? { bearer_token: true } : {}) },
      opts.expiresInS ? { exp: Math.floor(Date.now() / 1000) + opts.expiresInS } : {},
    );
  }

  /** Credentials for `role`: of the given key pair, or of a fresh one. */
  async credentials(role: Role, kp: KeyPair = createUser(), name?: string): Promise<UserCredentials> {
    const key = kp.getPublicKey();
    const jwt = await this.userJwt(role, key, name ? { name } : {});
    return { key, jwt, creds: new TextDecoder().decode(fmtCreds(jwt, kp)) };
  }

  /** Credentials of a system-account user (short-lived), to push account updates to the servers. */
  async systemCredentials(): Promise<Uint8Array> {
    const kp = createUser();
    const jwt = await encodeUser(
      'plurigrid-admin',
      kp,
      this.system,
      {},
      { exp: Math.floor(Date.now() / 1000) + 300 },
    );
    return fmtCreds(jwt, kp);
  }

  /** A one-time enrollment token for `role`, valid `ttlS` seconds: a bearer JWT that may only call `enroll`. */
  async enrollmentToken(
    role: 'worker' | 'client',
    ttlS: number,
  ): Promise<{ token: string; id: string; expires_at: number }> {
    const kp = createUser();
    const jwt = await this.userJwt('enroll', kp.getPublicKey(), {
      name: `enroll-${role}-${randomBytes(4).toString('hex')}`,
      expiresInS: ttlS,
      bearer: true,
    });
    const claims = decodeJwt<User>(jwt);
    return { token: formatToken({ v: 1, role, jwt }), id: claims.jti, expires_at: (claims.exp ?? 0) * 1000 };
  }

  /**
   * Checks a presented token: signed by our account, for the `enroll` role, not expired. Returns its id (the JWT's
   * jti, which the caller records so the token is good once) and role.
   */
  checkToken(token: EnrollmentToken, nowMs = Date.now()): { id: string; role: 'worker' | 'client' } {
    let claims: ClaimsData<User>;
    try {
      claims = decodeJwt<User>(token.jwt);
    } catch {
      throw new CredentialError('invalid-token', 'the enrollment token is damaged');
    }
    if (
      claims.iss !== this.accountKey ||
      !signedBy(token.jwt, this.accountKey) ||
      roleOf(claims) !== 'enroll'
    ) {
      throw new CredentialError('invalid-token', 'the enrollment token was not issued by this coordinator');
    }
    if (claims.exp !== undefined && claims.exp * 1000 <= nowMs) {
      throw new CredentialError('expired-token', 'the enrollment token has expired; ask for a new one');
    }
    return { id: claims.jti, role: token.role };
  }
}
