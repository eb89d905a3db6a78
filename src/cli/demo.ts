import { type ChildProcess, spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { DEFAULT_MAX_PRICE } from '../coordinator/intake.ts';
import { DEFAULT_PACK, packEpochs } from '../coordinator/pack.ts';
import { studyEstimate } from '../coordinator/pricing.ts';
import { DEFAULT_TRUST } from '../coordinator/reputation.ts';
import { formatSim, MICRO_PER_SIM } from '../ledger/accounts.ts';
import type { JournalEntry } from '../ledger/posting.ts';
import type { SubmitRequest } from '../models/api.ts';
import { expandStudy } from '../study/expand.ts';
import { loadOrCreateIdentity } from '../transport/identity.ts';
import { dockerAvailable } from '../worker/executors/docker.ts';
import { buildImages } from '../worker/images.ts';
import { type Connection, DEFAULT_DATA_DIR, openClient } from './connection.ts';
import { startCoordinator } from './coordinator.ts';
import { type LoadedKey, loadOrCreateUserKey, loadWorkerKey } from './keys.ts';
import { balanceSum, simText } from './ledger.ts';
import { intOption } from './options.ts';
import { writeStudyResults } from './results.ts';
import { statusLine } from './status.ts';
import { follow, progressReporter, requestFromFile } from './submit.ts';
import { acceptedText, verifyStudy } from './verify.ts';
import { type ExecutorKind, executorOption, workerArgv } from './worker.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLE = join(root, 'examples', 'mechanism-comparison.json');
const CLI = join(root, 'bin', 'plurigrid.js');

interface Options {
  out: string;
  workers: number;
  executor: ExecutorKind;
}

const say = (line: string) => process.stdout.write(`${line}\n`);

/** What each demo provider bonds: it loses some of it if it is outvoted. */
const WORKER_STAKE = '20';
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

/** The whole journal, page by page. */
async function journal(api: ApiClient): Promise<JournalEntry[]> {
  const entries: JournalEntry[] = [];
  for (;;) {
    const page = await api.ledger({ from: entries.length + 1, limit: 1000 });
    entries.push(...page.entries);
    if (page.entries.length === 0 || entries.length >= page.postings) return entries;
  }
}

/**
 * Who was paid what for the study, from the journal: each provider's earnings (and any slash), the escrow and its
 * refund; then the check that the journal re-walks and its balances sum to zero, and how the jobs were verified.
 */
async function ledgerSummary(
  api: ApiClient,
  studyId: string,
  submitter: LoadedKey,
  workers: readonly { name: string; key: LoadedKey }[],
): Promise<void> {
  // Settlement follows the study's end: its refund comes after every payment, so wait for that.
  let entries: JournalEntry[] = [];
  const deadline = Date.now() + 30_000;
  const refunded = () =>
    entries.find((e) => e.posting.kind === 'refund' && e.posting.refs.study_id === studyId);
  do {
    entries = await journal(api);
    if (!refunded()) await new Promise((r) => setTimeout(r, 200));
  } while (!refunded() && Date.now() < deadline);
  const creditTo = (e: JournalEntry, account: string) =>
    e.posting.entries.find((x) => x.account === account && x.amount > 0)?.amount ?? 0;
  const ofStudy = entries.filter((e) => e.posting.refs.study_id === studyId);
  const escrowed = ofStudy.find((e) => e.posting.kind === 'escrow');
  const escrowAmount = escrowed ? creditTo(escrowed, `escrow:${studyId}`) : 0;
  const refund = refunded();
  const refundAmount = refund ? creditTo(refund, `key:${submitter.key}`) : 0;
  const pays = ofStudy.filter((e) => e.posting.kind === 'pay');
  const paid = pays.reduce((s, e) => s + creditTo(e, `key:${e.posting.refs.key}`), 0);
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
    const slashed = entries
      .filter((e) => e.posting.kind === 'slash' && e.posting.refs.key === w.key.key)
      .reduce((s, e) => s + Math.abs(e.posting.entries.find((x) => x.amount < 0)?.amount ?? 0), 0);
    const b = balances[i + 1]!;
    say(
      `  ${w.name.padEnd(width)} ${w.key.key.slice(0, 9)}…  earned ${simText(earned)} for ${own.length} executions${slashed ? `, slashed ${simText(slashed)}` : ''}; stake ${simText(b.stake)}; available ${simText(b.available)}`,
    );
  });
  const sum = balanceSum(check.balances);
  say(
    `  journal: ${check.postings} postings; ${sum === 0 ? 'every balance sums to 0' : `balances sum to ${formatSim(sum)} SIM, not 0!`}; chain re-walked: ${check.check?.ok ? 'ok' : `NOT ok (${check.check?.problems.join('; ')})`}`,
  );
  // And the results themselves: a sample re-run on this machine, as `plurigrid verify` does.
  const report = await verifyStudy(api, studyId, { sample: VERIFY_SAMPLE, seed: 1 });
  const { summary, epochs } = report;
  say(
    `verification: ${summary.jobs} jobs, accepted ${acceptedText(summary)}; ${summary.with_outvoted ? `${summary.with_outvoted} with an outvoted provider` : 'no provider outvoted'}; ${epochs.checked} sampled epochs re-run here: ${epochs.mismatching ? `${epochs.matching} match, ${epochs.mismatching} DO NOT` : 'all match'}`,
  );
  if (sum !== 0 || !check.check?.ok) throw new Error('the ledger does not check out (see above)');
  if (!report.ok) throw new Error('the results do not verify (see above)');
}

function spawnWorker(
  name: string,
  url: string,
  dataDir: string,
  executor: Options['executor'],
): ChildProcess {
  const args = workerArgv({
    name,
    nats: url,
    dataDir,
    executor,
    slots: 1,
    heartbeatMs: 500,
    logLevel: 'warn',
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
    const grant = (await api.ledgerOp('faucet', {}, submitter.keyPair)).balance.available;
    for (const w of workers) {
      await api.ledgerOp('faucet', {}, w.key.keyPair);
      await api.ledgerOp('stake', { amount: WORKER_STAKE }, w.key.keyPair);
    }
    say(
      `ledger: ${simText(grant)} from the faucet to the submitter and to each worker; each worker staked ${WORKER_STAKE} SIM`,
    );
    for (const w of workers) children.push(spawnWorker(w.name, coordinator.url, dataDir, executor));
    const deadline = Date.now() + 30_000;
    while (coordinator.coordinator.registry.live().length < opts.workers) {
      if (children.some((c) => c.exitCode !== null))
        throw new Error('a worker exited during start-up (see its log above)');
      if (Date.now() > deadline) throw new Error('workers did not connect within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const req = await requestFromFile(EXAMPLE);
    // Small jobs, so the two workers share the study and the progress bar moves.
    req.target_job_seconds = 0.02;
    // Every job run by two distinct workers whose outputs must agree (one worker cannot make a quorum of two).
    const quorum = Math.min(2, opts.workers);
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
    const progress = progressReporter();
    const final = await follow(client.nc, api, reply.study_id, submitter.key, progress.update);
    progress.stop();
    say(`${statusLine(final)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    if (final.state !== 'done') throw new Error(`the study ended ${final.state}`);
    await writeStudyResults(api, reply.study_id, opts.out);
    await ledgerSummary(api, reply.study_id, submitter, workers);
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
      'the marketplace loop on this machine: embedded NATS, coordinator, two workers, the example study',
    )
    .option('--out <dir>', 'output directory', 'out/mechanism-comparison')
    .option('--workers <n>', 'workers to start', intOption('--workers', 1, 16), 2)
    .addOption(executorOption())
    .action((opts: Options) => runDemo(opts));
}
