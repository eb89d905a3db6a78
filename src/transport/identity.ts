import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createUser, fromSeed, type KeyPair, Prefix } from '@nats-io/nkeys';
import { Codec } from '@nats-io/nkeys/lib/codec.js';
import type { SignedClaim } from '../models/api.ts';
import { canonicalJson } from '../models/digest.ts';

/** A worker's ed25519 key, kept in its data dir; the public key (an nkey starting with U) is the worker id. */
export interface Identity {
  readonly workerId: string;
  /** Signs a batch's claims (see ResultBatch). */
  sign(claims: readonly SignedClaim[]): string;
}

const KEY_FILE = 'worker.nk';

// nkeys encodes keys (base32 with a role prefix and CRC); the signing itself is plain ed25519, done here by
// node:crypto (OpenSSL), which is some hundred times faster than the pure-JS tweetnacl inside nkeys. The
// signatures are the same bytes either way. DER prefixes wrap the raw 32-byte keys for KeyObject.
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

/** The node:crypto private key of an nkey pair (signs the same bytes as nkeys, a hundred times faster). */
export function privateKeyOf(kp: KeyPair): KeyObject {
  const raw = (kp as KeyPair & { getRawSeed(): Uint8Array }).getRawSeed();
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, raw]), format: 'der', type: 'pkcs8' });
}

const publicKeys = new Map<string, KeyObject>();
/** The node:crypto public key of a public user nkey (cached); throws when it is not one. */
export function publicKeyOf(workerId: string): KeyObject {
  let key = publicKeys.get(workerId);
  if (!key) {
    const raw = Codec.decode(Prefix.User, new TextEncoder().encode(workerId));
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: 'der', type: 'spki' });
    if (publicKeys.size > 10_000) publicKeys.clear();
    publicKeys.set(workerId, key);
  }
  return key;
}

/** Loads the worker's key from `<dataDir>/worker.nk`, creating it (mode 0600) on first start. */
export async function loadOrCreateIdentity(dataDir: string): Promise<Identity> {
  return identityFrom(await loadOrCreateKeyPair(dataDir));
}

/** The worker's key pair in `<dataDir>/worker.nk`, made (mode 0600) on first start. */
export async function loadOrCreateKeyPair(dataDir: string): Promise<KeyPair> {
  const path = join(dataDir, KEY_FILE);
  let kp: KeyPair;
  try {
    kp = fromSeed(new TextEncoder().encode((await readFile(path, 'utf8')).trim()));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot load worker key ${path}: ${(e as Error).message}`);
    }
    await mkdir(dataDir, { recursive: true });
    kp = createUser();
    await writeFile(path, `${new TextDecoder().decode(kp.getSeed())}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(path, 0o600);
  }
  return kp;
}

export function identityFrom(kp: KeyPair): Identity {
  const key = privateKeyOf(kp);
  return {
    workerId: kp.getPublicKey(),
    sign: (claims) => sign(null, Buffer.from(canonicalJson(claims)), key).toString('base64'),
  };
}

/** Checks a batch's signature against the worker id that says it signed it. */
export function verifyClaims(workerId: string, claims: readonly SignedClaim[], signature: string): boolean {
  try {
    return verify(
      null,
      Buffer.from(canonicalJson(claims)),
      publicKeyOf(workerId),
      Buffer.from(signature, 'base64'),
    );
  } catch {
    return false;
  }
}
