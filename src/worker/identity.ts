import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createUser, fromPublic, fromSeed, type KeyPair } from '@nats-io/nkeys';
import type { SignedClaim } from '../models/api.ts';
import { canonicalJson } from '../sim/digest.ts';

/** A worker's ed25519 key, kept in its data dir; the public key (an nkey starting with U) is the worker id. */
export interface Identity {
  readonly workerId: string;
  sign(claim: SignedClaim): string;
}

const KEY_FILE = 'worker.nk';

/** Loads the worker's key from `<dataDir>/worker.nk`, creating it (mode 0600) on first start. */
export async function loadOrCreateIdentity(dataDir: string): Promise<Identity> {
  const path = join(dataDir, KEY_FILE);
  let kp: KeyPair;
  try {
    kp = fromSeed(new TextEncoder().encode((await readFile(path, 'utf8')).trim()));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new Error(`cannot load worker key ${path}: ${(e as Error).message}`);
    await mkdir(dataDir, { recursive: true });
    kp = createUser();
    await writeFile(path, `${new TextDecoder().decode(kp.getSeed())}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(path, 0o600);
  }
  return identityFrom(kp);
}

export function identityFrom(kp: KeyPair): Identity {
  return {
    workerId: kp.getPublicKey(),
    sign: (claim) => Buffer.from(kp.sign(new TextEncoder().encode(canonicalJson(claim)))).toString('base64'),
  };
}

/** Checks a claim's signature against the worker id that says it signed it. */
export function verifyClaim(workerId: string, claim: SignedClaim, signature: string): boolean {
  try {
    return fromPublic(workerId).verify(
      new TextEncoder().encode(canonicalJson(claim)),
      Buffer.from(signature, 'base64'),
    );
  } catch {
    return false;
  }
}
