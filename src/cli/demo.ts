import { type ChildProcess, spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { DEFAULT_MAX_PRICE } from '../coordinator/intake.ts';
import { DEFAULT_PACK, packEpochs } from '../coordinator/pack.ts';
import { studyEstimate } from '../coordinator/pricing.ts';
import { DEFAULT_TRUST } from '../coordinator/reputation.ts';
import { DEFAULT_OFFPEAK_GRACE_MS } from '../coordinator/scheduler.ts';
import { formatSim, MICRO_PER_SIM } from '../ledger/accounts.ts';
import type { JournalEntry } from '../ledger/posting.ts';
import type { SubmitRequest } from '../models/api.ts';
import { expandStudy } from '../study/expand.ts';
import { loadOrCreateIdentity } from '../transport/identity.ts';
import { PUBLIC_OWNER } from '../transport/permissions.ts';
import { dockerAvailable } from '../worker/executors/docker.ts';
import { buildImages } from '../worker/images.ts';
import { commonsText } from './commons.ts';
import { type Connection, DEFAULT_DATA_DIR, openClient } from './connection.ts';
import { startCoordinator } from './coordinator.ts';
import { type LoadedKey, loadKeyFile, loadOrCreateUserKey, loadWorkerKey } from './keys.ts';
import { balanceSum, simText } from './ledger.ts';
import { intOption } from './options.ts';
import { writeStudyResults } from './results.ts';
import { statusLine } from './status.ts';
import { follow, progressReporter, requestFromFile } from './submit.ts';
import { acceptedText, verifyStudy } from './verify.ts';
import { type ExecutorKind, executorOption, workerArgv } from './worker.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLE = join(root, 'examples', 'mechanism-comparison.json');
const COMMONS_EXAMPLE = join(root, 'examples', 'commons-village.json');
const CLI = join(root, 'bin', 'plurigrid.js');

interface Options {
  out: string;
  workers: number;
  executor: ExecutorKind;
}

const say = (line: string) => process.stdout.write(`${line}\n`);

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What each demo provider bonds: it loses some of it if it is outvoted. */
const WORKER_STAKE = '20';
/** What demo providers ask inside their off-peak window (SIM per CPU-second; their usual ask is 0.001). */
const OFFPEAK_PRICE = 0.0005;
/** What each of the public good's three funders gives, and what a sponsor puts in the matching pool (SIM). */
const GIFTS = ['1', '2', '3'];
const SPONSOR = '20';
/** Epochs the demo re-runs locally to check the accepted results. */
const VERIFY_SAMPLE = 12;

/** What a study must escrow at the default max price, each job run by `quorum` providers (µSIM), as intake prices it. */
function estimateOf(req: SubmitRequest, quorum: number): number {
  const study = req.study!;
  const epochs = expandStudy(study, study.scenario);
  const jobs = packEpochs(epochs, {
    ...DEFAULT_PACK,
    ...(req.target_job_seconds !== undefined ? { targetSeconds: req.target_job_seconds } : {}),
  }).map((batch) => ({ epochs: batch }));
  return studyEstimate(jobs, DEFAULT_MAX_PRICE, quorum);
}

/**
 * Who was paid what, from the journal: the submitter's escrow, what went to providers and its refund; each provider's
 * earnings (paid and off-peak public-goods work) and any slash; then the check that the journal re-walks and its
 * balances sum to zero, and how each study's jobs were verified.
 */
async function ledgerSummary(
  api: ApiClient,
  studyId: string,
  publicGood: string,
  submitter: LoadedKey,
  workers: readonly { name: string; key: LoadedKey }[],
): Promise<void> {
  // Settlement follows a study's end: its refund comes after every payment, so wait for both.
  let entries: JournalEntry[] = [];
  const deadline = Date.now() + 30_000;
  const refundOf = (id: string) =>
    entries.find((e) => e.posting.kind === 'refund' && e.posting.refs.study_id === id);
  do {
    entries = await api.allJournal();
    if (!refundOf(studyId) || !refundOf(publicGood)) await new Promise((r) => setTimeout(r, 200));
  } while ((!refundOf(studyId) || !refundOf(publicGood)) && Date.now() < deadline);
  const creditTo = (e: JournalEntry, account: string) =>
    e.posting.entries.find((x) => x.account === account && x.amount > 0)?.amount ?? 0;
  const ofStudy = entries.filter((e) => e.posting.refs.study_id === studyId);
  const escrowed = ofStudy.find((e) => e.posting.kind === 'escrow');
  const escrowAmount = escrowed ? creditTo(escrowed, `escrow:${studyId}`) : 0;
  const refund = refundOf(studyId);
  const refundAmount = refund ? creditTo(refund, `key:${submitter.key}`) : 0;
  const pays = entries.filter((e) => e.posting.kind === 'pay');
  const paid = pays
    .filter((e) => e.posting.refs.study_id === studyId)
    .reduce((s, e) => s + creditTo(e, `key:${e.posting.refs.key}`), 0);
  const check = await api.ledger({ limit: 1, verify: true });
  const balances = await Promise.all(
    [submitter, ...workers.map((w) => w.key)].map((k) => api.balance(k.key)),
  );
  const width = Math.max(9, ...workers.map((w) => w.name.length));
  say('ledger:');
  say(
    `  ${'submitter'.padEnd(width)} ${submitter.key.slice(0, 9)}…  escrowed ${simText(escrowAmount)}, paid ${simText(paid)} to providers, ${refund ? `${simText(refundAmount)} refunded` : 'refund pending'}; available ${simText(balances[0]!.available)}`,
  );
  workers.forEach((w, i) => {
    const own = pays.filter((e) => e.posting.refs.key === w.key.key);
    const earned = own.reduce((s, e) => s + creditTo(e, `key:${w.key.key}`), 0);
    const offpeak = own
      .filter((e) => e.posting.refs.study_id === publicGood)
      .reduce((s, e) => s + creditTo(e, `key:${w.key.key}`), 0);
    const slashed = entries
      .filter((e) => e.posting.kind === 'slash' && e.posting.refs.key === w.key.key)
      .reduce((s, e) => s + Math.abs(e.posting.entries.find((x) => x.amount < 0)?.amount ?? 0), 0);
    const b = balances[i + 1]!;
    say(
      `  ${w.name.padEnd(width)} ${w.key.key.slice(0, 9)}…  earned ${simText(earned)} for ${own.length} executions (${simText(offpeak)} of it off-peak, for the public good)${slashed ? `, slashed ${simText(slashed)}` : ''}; stake ${simText(b.stake)}; available ${simText(b.available)}`,
    );
  });
  const sum = balanceSum(check.balances);
  say(
    `  journal: ${check.postings} postings; ${sum === 0 ? 'every balance sums to 0' : `balances sum to ${formatSim(sum)} SIM, not 0!`}; chain re-walked: ${check.check?.ok ? 'ok' : `NOT ok (${check.check?.problems.join('; ')})`}`,
  );
  // And the results themselves: a sample re-run on this machine, as `plurigrid verify` does.
  let verified = true;
  for (const [label, id] of [
    ['paid study', studyId],
    ['public good', publicGood],
  ] as const) {
    const report = await verifyStudy(api, id, { sample: VERIFY_SAMPLE, seed: 1 });
    const { summary, epochs } = report;
    verified &&= report.ok;
    say(
      `verification (${label}): ${summary.jobs} jobs, accepted ${acceptedText(summary)}; ${summary.with_outvoted ? `${summary.with_outvoted} with an outvoted provider` : 'no provider outvoted'}; ${epochs.checked} sampled epochs re-run here: ${epochs.mismatching ? `${epochs.matching} match, ${epochs.mismatching} DO NOT` : 'all match'}`,
    );
  }
  if (sum !== 0 || !check.check?.ok) throw new Error('the ledger does not check out (see above)');
  if (!verified) throw new Error('the results do not verify (see above)');
}

/** Executions of a study that were preempted, and whether any of them was paid (never: the ledger says so). */
async function preemptions(api: ApiClient, studyId: string): Promise<{ preempted: number; paid: number }> {
  const jobs = await api.allProvenance(studyId);
  const stopped = jobs.flatMap((j) =>
    j.executions.filter((e) => e.ended === 'preempted').map((e) => `pay:${j.job_id}:${e.attempt}`),
  );
  const ops = new Set((await api.allJournal()).map((e) => e.posting.op_id));
  return { preempted: stopped.length, paid: stopped.filter((op) => ops.has(op)).length };
}

/**
 * An off-peak window around now on this machine's clock (now to four hours on), so that the demo shows public goods
 * backfilling idle capacity at any hour; a real provider declares its own (`worker --offpeak 22-06 --tz …`).
 */
function windowAroundNow(): { offpeak: string; tz: string } {
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC';
  const hour = Number(
    new Intl.DateTimeFormat('en-GB', { timeZone: tz, hour: '2-digit', hourCycle: 'h23' }).format(new Date()),
  );
  return { offpeak: `${hour}-${(hour + 4) % 24}`, tz };
}

function spawnWorker(
  name: string,
  url: string,
  dataDir: string,
  executor: Options['executor'],
  window: { offpeak: string; tz: string },
): ChildProcess {
  const args = workerArgv({
    name,
    nats: url,
    dataDir,
    executor,
    slots: 1,
    heartbeatMs: 500,
    logLevel: 'warn',
    offpeak: window.offpeak,
    tz: window.tz,
    offpeakPrice: OFFPEAK_PRICE,
  });
  return spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * The whole marketplace loop on one machine: an embedded nats-server, the coordinator, two provider workers
 * (Docker where an engine answers, else child processes), the mechanism-comparison study submitted, followed,
 * compared and reported, then everything shut down.
 */
export async function runDemo(opts: Options): Promise<void> {
  const dataDir = resolve(DEFAULT_DATA_DIR, 'demo');
  await rm(dataDir, { recursive: true, force: true });
  let executor: 'docker' | 'process' = 'process';
  let image: string | undefined;
  if (opts.executor !== 'process' && (await dockerAvailable())) {
    say('building images (the first time takes a minute)…');
    image = (await buildImages()).gridEpoch;
    executor = 'docker';
  } else if (opts.executor === 'docker') {
    throw new Error('--executor docker: no Docker engine is reachable');
  } else if (opts.executor === 'auto') {
    process.stderr.write(
      'warning: no Docker engine reachable; workers run jobs as child processes (process executor)\n',
    );
  }
  const coordinator = await startCoordinator({
    dataDir,
    maxAttempts: 3,
    leaseGraceS: 30,
    trustAfter: DEFAULT_TRUST.trustAfter,
    commons: 'offpeak',
    offpeakGraceS: DEFAULT_OFFPEAK_GRACE_MS / 1000,
    // The demo runs its funding round itself, once the funders have given.
    roundEveryS: 0,
    logLevel: 'warn',
    ...(image ? { image } : {}),
  });
  const children: ChildProcess[] = [];
  let client: Connection | undefined;
  try {
    say(`coordinator up, NATS at ${coordinator.url}; starting ${opts.workers} ${executor} workers`);
    // The submitter is a client like any other: its own NATS user (its key), with a client's rights only.
    client = await openClient({ nats: coordinator.url, dataDir }, 'plurigrid-demo-client');
    const api = new ApiClient(client.nc);
    // Everyone's key first: the submitter's own, and each worker's (made here, loaded by the worker when it starts),
    // so each provider can bond stake before it takes work. SIM comes from the faucet, every request signed by its key.
    const submitter = await loadOrCreateUserKey(dataDir);
    const workers: { name: string; key: LoadedKey }[] = [];
    for (let i = 1; i <= opts.workers; i++) {
      const name = `demo-${i}`;
      await loadOrCreateIdentity(join(dataDir, 'workers', name));
      workers.push({ name, key: await loadWorkerKey(dataDir, name) });
    }
    // The public good's three funders and a sponsor of the matching pool: keys of their own, SIM from the faucet.
    const funders = await Promise.all(
      ['funder-1', 'funder-2', 'funder-3', 'sponsor'].map((n) =>
        loadKeyFile(join(dataDir, 'keys', `${n}.nk`), { create: true }),
      ),
    );
    const sponsor = funders.pop()!;
    const grant = (await api.ledgerOp('faucet', {}, submitter.keyPair)).balance.available;
    for (const k of [...funders, sponsor]) await api.ledgerOp('faucet', {}, k.keyPair);
    for (const w of workers) {
      await api.ledgerOp('faucet', {}, w.key.keyPair);
      await api.ledgerOp('stake', { amount: WORKER_STAKE }, w.key.keyPair);
    }
    say(
      `ledger: ${simText(grant)} from the faucet to the submitter, three funders, a sponsor and each worker; each worker staked ${WORKER_STAKE} SIM`,
    );
    const window = windowAroundNow();
    for (const w of workers) children.push(spawnWorker(w.name, coordinator.url, dataDir, executor, window));
    const deadline = Date.now() + 30_000;
    while (coordinator.coordinator.registry.live().length < opts.workers) {
      if (children.some((c) => c.exitCode !== null))
        throw new Error('a worker exited during start-up (see its log above)');
      if (Date.now() > deadline) throw new Error('workers did not connect within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    say(
      `workers offer their idle capacity off-peak, ${window.offpeak} h ${window.tz} (a window around now, so the demo backfills at any hour), at ${OFFPEAK_PRICE} SIM per CPU-second`,
    );
    // Every job run by two distinct workers whose outputs must agree (one worker cannot make a quorum of two).
    const quorum = Math.min(2, opts.workers);

    // The public good first: funded by the community, matched from the pool, run on the idle workers.
    const pgReq = await requestFromFile(COMMONS_EXAMPLE, {
      publicGood: 'Winter village: which mechanism serves it best?',
      description:
        'bills, fairness and peak import under three settlement mechanisms, for the village to decide',
    });
    pgReq.target_job_seconds = 0.02;
    pgReq.verification = { quorum, adaptive: true };
    const pg = await api.submitSigned(pgReq, submitter.keyPair);
    say(
      `public good ${pg.study_id} (${pg.name}): ${pg.epochs} epochs in ${pg.jobs} jobs, submitted to the commons`,
    );
    for (const [i, k] of funders.entries())
      await api.ledgerOp('fund', { to: pg.study_id, amount: GIFTS[i] }, k.keyPair);
    await api.ledgerOp('fund', { to: 'pool', amount: SPONSOR }, sponsor.keyPair);
    const round = await coordinator.coordinator.commons!.round();
    const match = round?.matches.find((m) => m.study_id === pg.study_id)?.amount ?? 0;
    say(
      `  ${funders.length} funders gave ${GIFTS.join(' + ')} SIM, a sponsor ${SPONSOR} SIM to the matching pool; funding round ${round?.round ?? '–'} matched ${simText(match)} to it by quadratic funding`,
    );
    await waitFor(
      async () => (await api.status(pg.study_id)).jobs.running > 0,
      30_000,
      'the public good to start',
    );
    say('  it runs on the idle workers; now a paid study arrives and takes their slots');

    const req = await requestFromFile(EXAMPLE);
    // Small jobs, so the two workers share the study and the progress bar moves.
    req.target_job_seconds = 0.02;
    req.verification = { quorum, adaptive: true };
    // A budget that covers the estimate (whole SIM, at least 1): what is not paid out comes back at the end.
    const estimate = estimateOf(req, quorum);
    const budget = Math.max(1, Math.ceil(estimate / MICRO_PER_SIM)) * MICRO_PER_SIM;
    req.budget = formatSim(budget, { trim: true });
    const reply = await api.submitSigned(req, submitter.keyPair);
    say(`submitted ${reply.study_id}: ${reply.epochs} epochs in ${reply.jobs} jobs`);
    say(
      `  each job run by ${quorum} worker${quorum > 1 ? 's' : ''} (quorum ${quorum}); budget ${simText(budget)} escrowed from the submitter (estimate ${simText(estimate)} at ${DEFAULT_MAX_PRICE} SIM per CPU-second)`,
    );
    const started = performance.now();
    let progress = progressReporter();
    const final = await follow(client.nc, api, reply.study_id, submitter.key, progress.update);
    progress.stop();
    say(`${statusLine(final)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    if (final.state !== 'done') throw new Error(`the study ended ${final.state}`);
    await writeStudyResults(api, reply.study_id, opts.out);

    // The public good resumes on the capacity the paid study left idle.
    progress = progressReporter();
    const pgFinal = await follow(client.nc, api, pg.study_id, PUBLIC_OWNER, progress.update);
    progress.stop();
    if (pgFinal.state !== 'done') throw new Error(`the public good ended ${pgFinal.state}`);
    // The public good's answer, beside the paid study's (its results are public).
    await writeStudyResults(api, pg.study_id, join(dirname(opts.out), pg.name));
    const stopped = await preemptions(api, pg.study_id);
    say(
      `public good: ${statusLine(pgFinal)}; ${stopped.preempted} of its executions were preempted by paid work and requeued (${stopped.paid} of those paid)`,
    );
    await ledgerSummary(api, reply.study_id, pg.study_id, submitter, workers);
    process.stdout.write(commonsText(await api.commons({ funder: funders[0]!.key })));
    if (stopped.paid > 0) throw new Error('preempted work was paid (see above)');
  } finally {
    await Promise.all(children.map(stopWorker));
    await client?.close();
    await coordinator.close();
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'the marketplace loop on this machine: embedded NATS, coordinator, two workers, a public good on their idle capacity and the paid example study',
    )
    .option('--out <dir>', 'output directory', 'out/mechanism-comparison')
    .option('--workers <n>', 'workers to start', intOption('--workers', 1, 16), 2)
    .addOption(executorOption())
    .action((opts: Options) => runDemo(opts));
}
