/**
 * Which NATS credentials a command connects with, and enrollment. In order: `--creds <file>`; the file enrollment
 * wrote in the data dir (`client.creds`, or a worker's `worker.creds`); on the coordinator's own machine, a JWT
 * issued on the spot by the operator keys in the data dir (whoever can read those keys is the operator); else none,
 * which only a server without authentication accepts.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { decode as decodeJwt, fmtCreds } from '@nats-io/jwt';
import type { KeyPair } from '@nats-io/nkeys';
import { ApiClient } from '../coordinator/client.ts';
import type { EnrollReply } from '../coordinator/enrollment.ts';
import {
  AuthStore,
  type LoadedCredentials,
  loadCredentials,
  parseCredentials,
  parseToken,
} from '../transport/auth.ts';
import { connectNats, type TlsFiles } from '../transport/connect.ts';
import type { Role } from '../transport/permissions.ts';

export const CREDS_ENV = 'PLURIGRID_CREDS';
/** Where `plurigrid enroll` keeps a client's credentials. */
export const clientCredsFile = (dataDir: string): string => join(resolve(dataDir), 'client.creds');
/** Where `plurigrid worker --enroll` keeps a worker's credentials. */
export const workerCredsFile = (workerDir: string): string => join(resolve(workerDir), 'worker.creds');

async function exists(file: string): Promise<boolean> {
  try {
    await readFile(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * The credentials for `role` and key pair `kp`: `explicit` (a file), else `saved` (a file enrollment wrote), else
 * issued by the local operator keys in `dataDir`, else undefined.
 */
export async function credentialsFor(
  role: Role,
  kp: KeyPair,
  where: { explicit?: string; saved: string; dataDir: string },
): Promise<LoadedCredentials | undefined> {
  if (where.explicit) return loadCredentials(where.explicit);
  if (await exists(where.saved)) return loadCredentials(where.saved);
  if (!(await AuthStore.exists(where.dataDir))) return undefined;
  const store = await AuthStore.open(where.dataDir);
  const issued = await store.credentials(role, kp);
  return parseCredentials(new TextEncoder().encode(issued.creds), `${role} credentials`);
}

/** Writes a `.creds` file (mode 0600; never printed). */
export async function writeCredentials(file: string, jwt: string, kp: KeyPair): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, fmtCreds(jwt, kp), { mode: 0o600 });
  await chmod(file, 0o600);
}

/**
 * Trades a one-time enrollment token for credentials of `kp`: connects with the token's bearer JWT (which may only
 * call `enroll`), sends the public key, and writes the JWT it gets with `kp`'s seed to `file`.
 */
export async function enroll(
  token: string,
  url: string,
  kp: KeyPair,
  file: string,
  tls?: TlsFiles,
): Promise<EnrollReply> {
  const parsed = parseToken(token);
  const bootstrap = decodeJwt(parsed.jwt).sub;
  const nc = await connectNats({
    url,
    name: 'plurigrid-enroll',
    firstConnectTimeoutMs: 10_000,
    tls,
    bearer: { jwt: parsed.jwt, key: bootstrap },
  });
  try {
    const reply = await new ApiClient(nc, 10_000).enroll({ token, key: kp.getPublicKey() });
    await writeCredentials(file, reply.jwt, kp);
    return reply;
  } finally {
    await nc.close().catch(() => {});
  }
}
