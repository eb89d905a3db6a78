// TLS end to end: a CA made at test time with the openssl CLI, a coordinator whose embedded server requires client
// certificates signed by it (mutual TLS), a worker and a client that have one, and clients that do not.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_UNAVAILABLE } from '../../src/cli/errors.ts';
import { cliPath, root, runCli } from '../fixtures/cli.ts';

const exec = promisify(execFile);

/** A CA and certificates signed by it, made with `openssl` in `dir` (P-256 keys: quick to make). */
async function makeCa(dir: string, name: string): Promise<{ ca: string; issue: Issue }> {
  const openssl = (...args: string[]) => exec('openssl', args, { cwd: dir });
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl(
    'req',
    '-x509',
    ...newKey,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-days',
    '1',
    '-subj',
    `/CN=${name}`,
  );
  const issue: Issue = async (cert, subject, extensions) => {
    await openssl('req', ...newKey, '-keyout', `${cert}.key`, '-out', `${cert}.csr`, '-subj', subject);
    writeFileSync(join(dir, `${cert}.ext`), `${extensions.join('\n')}\n`);
    await openssl(
      'x509',
      '-req',
      '-in',
      `${cert}.csr`,
      '-CA',
      `${name}.pem`,
      '-CAkey',
      `${name}.key`,
      '-CAcreateserial',
      '-out',
      `${cert}.pem`,
      '-days',
      '1',
      '-extfile',
      `${cert}.ext`,
    );
    return { cert: join(dir, `${cert}.pem`), key: join(dir, `${cert}.key`) };
  };
  return { ca: join(dir, `${name}.pem`), issue };
}

type Issue = (name: string, subject: string, extensions: string[]) => Promise<{ cert: string; key: string }>;

/** `plurigrid <args>` as a long-running process, resolved once its stdout matches `ready`. */
function start(args: string[], ready: RegExp, logs: Map<ChildProcess, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cliPath, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  logs.set(child, '');
  const append = (d: Buffer) => logs.set(child, logs.get(child) + d.toString());
  child.stderr!.on('data', append);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`not ready in 20 s: ${args.join(' ')}\n${logs.get(child)}`)),
      20_000,
    );
    child.stdout!.on('data', (d: Buffer) => {
      append(d);
      if (ready.test(logs.get(child)!)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}: ${args.join(' ')}\n${logs.get(child)}`));
    });
  });
}

describe('TLS: a coordinator whose embedded server requires client certificates from its CA', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plurigrid-tls-'));
  const dataDir = join(dir, 'data');
  const logs = new Map<ChildProcess, string>();
  let ca: string;
  let client: { cert: string; key: string };
  let rogue: { cert: string; key: string };
  let clientFlags: string[];

  beforeAll(async () => {
    const pki = await makeCa(dir, 'test-ca');
    ca = pki.ca;
    // The coordinator also connects to its own server with this certificate: server and client authentication.
    const server = await pki.issue('server', '/CN=127.0.0.1', [
      'subjectAltName=IP:127.0.0.1',
      'extendedKeyUsage=serverAuth,clientAuth',
    ]);
    client = await pki.issue('client', '/CN=plurigrid test client', ['extendedKeyUsage=clientAuth']);
    // A client certificate from a CA the server does not know.
    rogue = await (await makeCa(dir, 'rogue-ca')).issue('rogue', '/CN=rogue', [
      'extendedKeyUsage=clientAuth',
    ]);
    clientFlags = ['--data-dir', dataDir, '--tls-ca', ca, '--tls-cert', client.cert, '--tls-key', client.key];
    await start(
      [
        'coordinator',
        ...['--data-dir', dataDir, '--log-level', 'warn'],
        ...['--tls-ca', ca, '--tls-cert', server.cert, '--tls-key', server.key],
      ],
      /coordinator ready/,
      logs,
    );
  }, 40_000);

  afterAll(async () => {
    await Promise.all(
      [...logs.keys()].map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }),
    );
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a study: a worker and a client with the CA and a client certificate get through', async () => {
    await start(
      [
        'worker',
        '--name',
        'w1',
        '--executor',
        'process',
        '--slots',
        '1',
        '--log-level',
        'warn',
        ...clientFlags,
      ],
      /worker w1 ready/,
      logs,
    );
    const study = join(dir, 'study.json');
    writeFileSync(
      study,
      JSON.stringify({
        name: 'small',
        scenario: join(root, 'examples', 'suburb-summer.json'),
        runs: 2,
        seed: 3,
        sweep: [{ name: 'market.mechanism', values: ['none', 'sdr'] }],
      }),
    );
    const sub = await runCli(['submit', study, '--follow', '--quorum', '1', ...clientFlags]);
    expect(sub.code, sub.stderr).toBe(0);
    expect(sub.stdout).toMatch(/small: done · epochs 4\/4 done/);
  }, 40_000);

  it('refuses a client and a worker without --tls-ca: the server certificate is not trusted', async () => {
    const noCa = ['--data-dir', dataDir, '--tls-cert', client.cert, '--tls-key', client.key];
    const r = await runCli(['status', ...noCa]);
    expect(r.code, r.stderr).toBe(EXIT_UNAVAILABLE);
    expect(r.stderr).toMatch(/presented a certificate this client does not trust/);
    expect(r.stderr).toMatch(/pass --tls-ca <file>/);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    // A worker exits too, rather than waiting forever with its runners up.
    const w = await runCli([
      'worker',
      '--name',
      'w2',
      '--executor',
      'process',
      '--log-level',
      'warn',
      ...noCa,
    ]);
    expect(w.code, w.stderr).toBe(EXIT_UNAVAILABLE);
    expect(w.stderr).toMatch(/does not trust/);
  });

  it('refuses a client with the CA but no client certificate, and one whose certificate another CA signed', async () => {
    const none = await runCli(['status', '--data-dir', dataDir, '--tls-ca', ca]);
    expect(none.code, none.stderr).toBe(EXIT_UNAVAILABLE);
    expect(none.stderr).toMatch(/requires a client certificate, and none was given/);
    expect(none.stderr).toMatch(/pass --tls-cert <file> and --tls-key <file>/);

    const other = await runCli([
      'status',
      ...['--data-dir', dataDir, '--tls-ca', ca, '--tls-cert', rogue.cert, '--tls-key', rogue.key],
    ]);
    expect(other.code, other.stderr).toBe(EXIT_UNAVAILABLE);
    expect(other.stderr).toMatch(/refused this client certificate/);

    // No TLS flags at all: the same refusal, not a hang.
    const plain = await runCli(['status', '--data-dir', dataDir]);
    expect(plain.code, plain.stderr).toBe(EXIT_UNAVAILABLE);
    expect(plain.stderr).toMatch(/requires a client certificate/);
  });

  it("shows in the server's log that TLS is required, on loopback only, and why it refused", () => {
    const log = readFileSync(join(dataDir, 'nats-server.log'), 'utf8');
    expect(log).toMatch(/TLS required for client connections/);
    expect(log).toMatch(/Listening for client connections on 127\.0\.0\.1:\d+/);
    expect(log).toMatch(/TLS handshake error: tls: client didn't provide a certificate/);
    expect(log).toMatch(/TLS handshake error: .*certificate signed by unknown authority/);
    expect(readFileSync(join(dataDir, 'nats-server.conf'), 'utf8')).toMatch(/verify: true/);
  });
});
