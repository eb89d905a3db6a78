/**
 * The operator's commands, run on the coordinator's machine (they read its operator keys in `<data-dir>/auth`):
 * `creds` issues a credentials file, `enroll-token` prints a one-time token, `revoke` revokes a user at once, and
 * `auth server-config` prints the authentication block for a nats-server of your own. `enroll` is the other side: a
 * client trades a token for its credentials.
 */
import { resolve } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { AuthStore, parseCredentials } from '../transport/auth.ts';
import { ROLES, type Role } from '../transport/permissions.ts';
import { revokeUser } from '../transport/revoke.ts';
import { addConnectionOptions, type ConnectionFlags, clientUrl, tlsFiles } from './connection.ts';
import { clientCredsFile, enroll, writeCredentials } from './credentials.ts';
import { addKeyOptions, type KeyFlags, loadKeyFile, signerKey } from './keys.ts';

function durationOption(value: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`expected a duration such as 30m, 12h or 7d, got "${value}"`);
  const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as 's' | 'm' | 'h' | 'd'];
  if (n < 60 || n > 30 * 86_400) throw new InvalidArgumentError(`expected 1m to 30d, got "${value}"`);
  return n;
}

const userKeyArg = (value: string): string => {
  if (!/^U[A-Z2-7]{55}$/.test(value))
    throw new InvalidArgumentError(`expected a public user key (U…), got "${value}"`);
  return value;
};

export function registerAuth(program: Command): void {
  addConnectionOptions(
    program
      .command('creds')
      .description(
        "issue a NATS credentials file for a role (run on the coordinator's machine; the file is a secret)",
      )
      .addArgument(
        program
          .createArgument('<role>', 'coordinator, worker, client or dashboard')
          .choices(ROLES.filter((r) => r !== 'enroll')),
      )
      .requiredOption('--out <file>', 'where to write the credentials (mode 0600; never printed)')
      .option('--key <file>', 'nkeys user seed to issue them for (default: a fresh key)'),
  ).action(async (role: Role, opts: ConnectionFlags & { out: string; key?: string }) => {
    const store = await AuthStore.open(opts.dataDir);
    const kp = opts.key ? (await loadKeyFile(opts.key)).keyPair : createUser();
    const issued = await store.credentials(role, kp);
    const parsed = parseCredentials(new TextEncoder().encode(issued.creds));
    await writeCredentials(resolve(opts.out), parsed.jwt, kp);
    process.stdout.write(`${role} credentials for ${issued.key} written to ${resolve(opts.out)}\n`);
  });

  addConnectionOptions(
    program
      .command('enroll-token')
      .description("print a one-time enrollment token (run on the coordinator's machine)")
      .addOption(
        new Option('--role <role>', 'what the token enrolls').choices(['worker', 'client']).default('worker'),
      )
      .option('--ttl <duration>', 'how long the token is good for (e.g. 30m, 12h)', durationOption, 3600),
  ).action(async (opts: ConnectionFlags & { role: 'worker' | 'client'; ttl: number }) => {
    const store = await AuthStore.open(opts.dataDir);
    const t = await store.enrollmentToken(opts.role, opts.ttl);
    process.stderr.write(
      `one-time ${opts.role} enrollment token ${t.id}, good until ${new Date(t.expires_at).toISOString()}; ` +
        `on the new machine: plurigrid ${opts.role === 'worker' ? 'worker --enroll' : 'enroll'} <token> --nats <url>\n`,
    );
    // The token itself is for the person who asked: on stdout, alone, and logged nowhere.
    process.stdout.write(`${t.token}\n`);
  });

  addKeyOptions(
    addConnectionOptions(
      program
        .command('enroll')
        .description('trade a one-time token for client credentials (<data-dir>/client.creds) for your key')
        .argument('<token>', 'the token from `plurigrid enroll-token --role client`'),
    ),
  ).action(async (token: string, opts: KeyFlags) => {
    const signer = await signerKey(opts);
    const file = clientCredsFile(opts.dataDir);
    const reply = await enroll(token, clientUrl(opts), signer.keyPair, file, tlsFiles(opts));
    process.stdout.write(`enrolled ${reply.key} as a ${reply.role}; credentials in ${file}\n`);
  });

  addConnectionOptions(
    program
      .command('revoke')
      .description("revoke a user's credentials at once: it is disconnected and refused from now on")
      .argument('<key>', 'the public user key (U…) to revoke', userKeyArg),
  ).action(async (key: string, opts: ConnectionFlags) => {
    const store = await AuthStore.open(opts.dataDir);
    await revokeUser(store, key, { url: clientUrl(opts), tls: tlsFiles(opts) });
    process.stdout.write(`revoked ${key}\n`);
  });

  const auth = program.command('auth').description('NATS authentication for a server of your own');
  addConnectionOptions(
    auth
      .command('server-config')
      .description('print the nats-server authentication block (operator, accounts; public JWTs only)'),
  ).action(async (opts: ConnectionFlags) => {
    const store = await AuthStore.open(opts.dataDir, { create: true });
    process.stdout.write(await store.serverConfig());
  });
}
