import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { type Command, Option } from 'commander';
import Dockerode from 'dockerode';
import { COMMONS_POLICIES, type CommonsPolicy } from '../coordinator/backfill.ts';
import { systemClock } from '../coordinator/clock.ts';
import { DEFAULT_ROUND_EVERY_MS } from '../coordinator/commons.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { Enrollment } from '../coordinator/enrollment.ts';
import { DEFAULT_RETRY } from '../coordinator/job-state.ts';
import { Leadership } from '../coordinator/leadership.ts';
import { DEFAULT_TRUST } from '../coordinator/reputation.ts';
import { DEFAULT_OFFPEAK_GRACE_MS } from '../coordinator/scheduler.ts';
import { serveApi } from '../coordinator/service.ts';
import { Bank } from '../ledger/bank.ts';
import { authorityOf, Journal } from '../ledger/journal.ts';
import { logConnectionStatus } from '../transport/connect.ts';
import { BusMonitor } from '../transport/health.ts';
import { LEADER_TTL_MS, STREAMS } from '../transport/resources.ts';
import { revokeUser } from '../transport/revoke.ts';
import { VERSION } from '../version.ts';
import { GRID_EPOCH_REPO } from '../worker/images.ts';
import { addConnectionOptions, type ConnectionFlags, openServerSide, tlsFiles } from './connection.ts';
import { loadKeyFile } from './keys.ts';
import { createLogger, logLevelOption } from './log.ts';
import { intOption } from './options.ts';
import { onShutdown } from './shutdown.ts';

interface Options extends ConnectionFlags {
  image?: string;
  maxAttempts: number;
  leaseGraceS: number;
  trustAfter: number;
  queueTimeoutS?: number;
  replicas?: number;
  commons: CommonsPolicy;
  offpeakGraceS: number;
  roundEveryS: number;
  logLevel?: string;
}

/** The grid-epoch image jobs pin: the local image's ID when Docker has it, else its tag (process workers). */
export async function defaultImage(): Promise<string> {
  const tag = `${GRID_EPOCH_REPO}:${VERSION}`;
  try {
    const info = await new Dockerode().getImage(tag).inspect();
    return info.Id;
  } catch {
    return tag;
  }
}

export interface RunningCoordinator {
  coordinator: Coordinator;
  url: string;
  nc: NatsConnection;
  close(): Promise<void>;
}

export async function startCoordinator(
  opts: Options,
  hooks: { onStandby?: (holder: string | null) => void } = {},
): Promise<RunningCoordinator> {
  const log = createLogger('coordinator', opts.logLevel);
  const transport = await openServerSide(opts, 'plurigrid-coordinator');
  // One active coordinator: the others wait on the lease, then load the state as a restart does (leadership.ts).
  const lease = new Leadership({
    kv: transport.resources.kv.leader,
    self: { holder: `${hostname()}:${process.pid}`, user_key: transport.userKey ?? null, since: Date.now() },
    ttlMs: LEADER_TTL_MS,
    log,
    onStandby: hooks.onStandby,
    // A coordinator on this machine that died (kill -9, a crash) gives its lease up now, not after the TTL.
    gone: (h) => {
      const [host, pid] = h.holder.split(':');
      return host === hostname() && Number(pid) !== process.pid && !pidAlive(Number(pid));
    },
    onLost: () => {
      // Fail-stop: whatever this process holds in memory may be stale; a supervisor restarts it as a standby.
      process.exitCode = 1;
      setImmediate(() => process.exit(1));
    },
  });
  const { previous } = await lease.acquire();
  if (previous?.user_key && previous.user_key !== transport.userKey && transport.auth) {
    // Fence the previous leader at the server: its connection is closed and its writes refused from now on.
    await revokeUser(transport.auth, previous.user_key, { url: transport.url, tls: tlsFiles(opts) }).then(
      () => log.info({ holder: previous.holder }, 'revoked the previous coordinator'),
      (e) => log.warn({ err: (e as Error).message }, 'could not revoke the previous coordinator'),
    );
  }
  const fence = () => lease.check();
  let closing = false;
  // A connection closed under us (a revoked user: a successor fenced us off) ends this coordinator too.
  void transport.nc.closed().then(() => {
    if (!closing) lease.lose('the NATS connection closed (revoked by a successor, or refused)');
  });
  // The ledger authority: the coordinator's own key signs every entry it appends, and only such entries count.
  const ledgerKey = await loadKeyFile(join(resolve(opts.dataDir), 'keys', 'ledger.nk'), { create: true });
  const journal = await Journal.open(transport.resources, {
    log,
    authority: authorityOf(ledgerKey.keyPair),
    fence,
  });
  const bank = new Bank({ journal, jsm: transport.resources.jsm, now: Date.now });
  await bank.genesis();
  const coordinator = new Coordinator(transport.nc, transport.resources, {
    bank,
    image: opts.image ?? (await defaultImage()),
    retry: {
      ...DEFAULT_RETRY,
      maxAttempts: opts.maxAttempts,
      queueTimeoutMs: opts.queueTimeoutS === undefined ? null : opts.queueTimeoutS * 1000,
    },
    leaseGraceMs: opts.leaseGraceS * 1000,
    trust: { ...DEFAULT_TRUST, trustAfter: opts.trustAfter },
    commonsPolicy: opts.commons,
    offpeakGraceMs: opts.offpeakGraceS * 1000,
    roundEveryMs: opts.roundEveryS === 0 ? null : opts.roundEveryS * 1000,
    fence,
    log,
  });
  const status = logConnectionStatus(transport.nc, log);
  await coordinator.start();
  // With the operator keys at hand, new machines can enroll with a one-time token.
  const enrollment =
    transport.auth &&
    new Enrollment({
      auth: transport.auth,
      used: transport.resources.kv.enrollments,
      clock: systemClock,
      log,
    });
  const bus = new BusMonitor(transport.nc, transport.resources.jsm, Object.values(STREAMS), log);
  bus.start();
  const since = Date.now();
  const service = await serveApi(transport.nc, coordinator.studies, VERSION, log, {
    authenticated: transport.userKey !== undefined,
    bank,
    enroll: enrollment,
    ...(coordinator.commons ? { commons: coordinator.commons } : {}),
    health: () => ({
      coordinator: { holder: `${hostname()}:${process.pid}`, term: lease.term, since },
      bus: bus.snapshot(),
    }),
  });
  log.info(
    { nats: transport.url, embedded: transport.embedded, authenticated: transport.auth !== undefined },
    'coordinator listening',
  );
  return {
    coordinator,
    url: transport.url,
    nc: transport.nc,
    close: async () => {
      closing = true;
      await service.stop().catch(() => {});
      await coordinator.stop();
      bus.stop();
      await lease.release();
      status.stop();
      await transport.close();
    },
  };
}

export function registerCoordinator(program: Command): void {
  addConnectionOptions(
    program
      .command('coordinator')
      .description('run the coordinator (starts an embedded nats-server unless --nats is given)')
      .option('--image <id>', 'grid-epoch image ID jobs pin (default: the local plurigrid/grid-epoch image)')
      .option('--max-attempts <n>', 'attempts per job before it fails', intOption('--max-attempts', 1, 20), 3)
      .option(
        '--lease-grace-s <s>',
        "seconds a job's lease runs past its timeout (start-up, upload) before it is reclaimed",
        intOption('--lease-grace-s', 1, 3600),
        30,
      )
      .option(
        '--queue-timeout-s <s>',
        'fail a job no provider could take for this long (a study may set its own; default: wait)',
        intOption('--queue-timeout-s', 1, 7 * 86_400),
      )
      .option(
        '--replicas <n>',
        'copies of every stream and bucket on a JetStream cluster (default: 3 on a cluster, 1 on one server)',
        intOption('--replicas', 1, 5),
      )
      .option(
        '--trust-after <n>',
        'consecutive valid results after which a provider is established (with stake: trusted to run unreplicated)',
        intOption('--trust-after', 1, 100_000),
        DEFAULT_TRUST.trustAfter,
      )
      .addOption(
        new Option(
          '--commons <policy>',
          "where public-goods work runs: idle slots inside providers' off-peak windows, or any idle slot",
        )
          .choices(COMMONS_POLICIES)
          .default('offpeak'),
      )
      .option(
        '--offpeak-grace-s <s>',
        "how long public-goods work may finish after a provider's off-peak window closed, before it is preempted",
        intOption('--offpeak-grace-s', 0, 86_400),
        DEFAULT_OFFPEAK_GRACE_MS / 1000,
      )
      .option(
        '--round-every-s <s>',
        'a quadratic-funding round this often: the matching pool is matched to what public goods were given (0: never)',
        intOption('--round-every-s', 0, 30 * 86_400),
        DEFAULT_ROUND_EVERY_MS / 1000,
      )
      .addOption(logLevelOption()),
  ).action(async (opts: Options) => {
    const running = await startCoordinator(opts, {
      onStandby: (holder) =>
        process.stdout.write(`coordinator standby: ${holder ?? 'another coordinator'} holds the lease\n`),
    });
    process.stdout.write(`coordinator ready; NATS at ${running.url}\n`);
    onShutdown(() => running.close());
    await new Promise(() => {});
  });
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return true; // unknown: assume it lives
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
