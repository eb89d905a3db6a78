import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { createUser, fromSeed, type KeyPair } from '@nats-io/nkeys';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { InputError } from '../models/errors.ts';
import { loadCredentials } from '../transport/auth.ts';
import { addConnectionOptions, type ConnectionFlags } from './connection.ts';

/**
 * The user's own key: an nkeys user seed in `<data-dir>/keys/user.nk` (mode 0600), made on first use. Its public key
 * (U…) is the ledger account that requests signed with it act on. The seed is read here and nowhere printed.
 */
export const USER_KEY_FILE = join('keys', 'user.nk');

/** Where a worker keeps its key (see transport/identity.ts `loadOrCreateIdentity`). */
export const workerKeyFile = (dataDir: string, name: string): string =>
  join(resolve(dataDir), 'workers', name, 'worker.nk');

export const userKeyFile = (dataDir: string): string => join(resolve(dataDir), USER_KEY_FILE);

/** `--key` / `--worker`: which key signs (default: the user's own). */
export interface KeyFlags extends ConnectionFlags {
  key?: string;
  worker?: string;
}

export interface LoadedKey {
  keyPair: KeyPair;
  /** The public user nkey. */
  key: string;
  file: string;
  /** Whether the seed file was made just now. */
  created: boolean;
}

const decoder = new TextDecoder();

function keyPairFrom(seed: string, file: string): KeyPair {
  let kp: KeyPair;
  try {
    kp = fromSeed(new TextEncoder().encode(seed.trim()));
  } catch {
    // Never the content: it may be a seed with a typo.
    throw new InputError('cannot use key file', [`${file}: not an nkeys seed`]);
  }
  if (!kp.getPublicKey().startsWith('U')) {
    throw new InputError('cannot use key file', [`${file}: not a user seed (expected one starting with SU)`]);
  }
  return kp;
}

/**
 * The key pair in the seed file `file`. Missing, it is made (a fresh user key, mode 0600, never overwriting one that
 * appeared meanwhile) when `create` is set, and is an InputError otherwise.
 */
export async function loadKeyFile(
  file: string,
  { create = false, missing }: { create?: boolean; missing?: string } = {},
): Promise<LoadedKey> {
  const path = resolve(file);
  let seed: string | undefined;
  try {
    seed = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new InputError('cannot read key file', [`${path}: ${code ?? String(e)}`]);
    if (!create)
      throw new InputError('no key file', [`${path}: no such file${missing ? ` (${missing})` : ''}`]);
  }
  if (seed !== undefined) {
    const kp = keyPairFrom(seed, path);
    await warnIfReadable(path);
    return { keyPair: kp, key: kp.getPublicKey(), file: path, created: false };
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const kp = createUser();
  try {
    await writeFile(path, `${decoder.decode(kp.getSeed())}\n`, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    // Made by another process in the meantime: use that one.
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return loadKeyFile(path);
    throw e;
  }
  await chmod(path, 0o600);
  return { keyPair: kp, key: kp.getPublicKey(), file: path, created: true };
}

async function warnIfReadable(path: string): Promise<void> {
  if (process.platform === 'win32') return;
  const { mode } = await stat(path);
  if (mode & 0o077) {
    process.stderr.write(
      `warning: ${path} can be read by other users; it holds a secret key (chmod 600 ${path})\n`,
    );
  }
}

/** The user's own key in `<data-dir>/keys/user.nk`, made on first use. */
export function loadOrCreateUserKey(dataDir: string): Promise<LoadedKey> {
  return loadKeyFile(userKeyFile(dataDir), { create: true });
}

/** A worker's key, which its worker made on first start. */
export function loadWorkerKey(dataDir: string, name: string): Promise<LoadedKey> {
  return loadKeyFile(workerKeyFile(dataDir, name), {
    missing: `start \`plurigrid worker --name ${name}\` once with this --data-dir to make it`,
  });
}

/**
 * The key a command signs with: `--key <file>`, or `--worker <name>`'s, or `--creds <file>`'s, else the user's own
 * (made on first use).
 * `createKeyFile` lets `--key` name a file to be made (for `plurigrid keys`).
 */
export async function signerKey(flags: KeyFlags, { createKeyFile = false } = {}): Promise<LoadedKey> {
  if (flags.key) return loadKeyFile(flags.key, { create: createKeyFile });
  if (flags.worker) return loadWorkerKey(flags.dataDir, flags.worker);
  // A client's key is its ledger account: with a credentials file, the key it connects as is the one it signs with.
  if (flags.creds) {
    const c = await loadCredentials(flags.creds);
    return { keyPair: c.keyPair, key: c.key, file: resolve(flags.creds), created: false };
  }
  return loadOrCreateUserKey(flags.dataDir);
}

function workerNameOption(value: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value)) {
    throw new InvalidArgumentError(
      `--worker: expected a worker name (letters, digits, ".", "_", "-"), got "${value}"`,
    );
  }
  return value;
}

/** `--key <file>` and `--worker <name>` (one or the other). */
export function addKeyOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--key <file>',
        'nkeys user seed file to sign with (default: <data-dir>/keys/user.nk, made on first use)',
      ).conflicts('worker'),
    )
    .addOption(
      new Option('--worker <name>', 'act as worker <name>: its key <data-dir>/workers/<name>/worker.nk')
        .argParser(workerNameOption)
        .conflicts('key'),
    );
}

export function registerKeys(program: Command): void {
  addKeyOptions(
    addConnectionOptions(
      program
        .command('keys')
        .description('show your public key (U…), making your key on first use; the seed is never printed')
        .option('--json', 'print {key, file, created} as JSON'),
    ),
  ).action(async (opts: KeyFlags & { json?: boolean }) => {
    const k = await signerKey(opts, { createKeyFile: true });
    if (opts.json) {
      process.stdout.write(`${JSON.stringify({ key: k.key, file: k.file, created: k.created })}\n`);
      return;
    }
    const who = opts.worker ? `worker ${opts.worker}'s key` : 'key';
    process.stdout.write(`${k.key}\n`);
    process.stderr.write(
      `${k.created ? 'made a new' : 'your'} ${who}; its seed is in ${k.file} (keep it private: it moves your SIM)\n`,
    );
  });
}
