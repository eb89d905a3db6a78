import { randomInt } from 'node:crypto';
import Table from 'cli-table3';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import type { JobProvenance, ResultRow } from '../models/api.ts';
import { digestOf } from '../models/digest.ts';
import { InputError } from '../models/errors.ts';
import type { Study } from '../models/study.ts';
import { createRng } from '../sim/rng.ts';
import { type EpochSpec, expandStudy } from '../study/expand.ts';
import { runEpochsLocal } from '../study/run-local.ts';
import { verifyClaims } from '../transport/identity.ts';
import { addConnectionOptions, type ConnectionFlags, openClient } from './connection.ts';
import { intOption } from './options.ts';
import { progressBar } from './progress.ts';

interface Options extends ConnectionFlags {
  sample?: number;
  seed?: number;
  threads?: number;
  json?: boolean;
}

/** Compact table borders: no rule between rows. */
const COMPACT = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' };

/**
 * The epochs a study record stands for, by epoch id. A single-scenario submit is stored as a study of one run with
 * no sweep but keeps the scenario's own seed (see coordinator/intake.ts), so for that shape both readings are
 * offered: epoch ids are content addresses, and only the one the coordinator ran matches its results.
 */
export function expectedEpochs(study: Study): Map<string, EpochSpec> {
  if (typeof study.scenario === 'string') {
    throw new InputError('cannot verify', ['study.scenario: expected inline, the coordinator stores it so']);
  }
  const epochs = expandStudy(study, study.scenario);
  if (study.runs === 1 && study.sweep.length === 0) {
    const own = (study.scenario as { seed?: unknown }).seed;
    const seed = typeof own === 'number' ? own : 0;
    for (const e of expandStudy({ ...study, seed: 0 }, study.scenario)) {
      const scenario = { ...e.scenario, seed };
      epochs.push({ ...e, scenario, epoch_id: digestOf(scenario).slice(0, 16) });
    }
  }
  return new Map(epochs.map((e) => [e.epoch_id, e]));
}

/** `n` of `items` chosen by a seeded shuffle (all of them when n is at least their number), in their order. */
export function sampleOf<T>(items: readonly T[], n: number, seed: number): T[] {
  if (n >= items.length) return [...items];
  const rng = createRng(seed, 0);
  const idx = items.map((_, i) => i);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [idx[i], idx[j]] = [idx[j]!, idx[i]!];
  }
  return idx
    .slice(0, n)
    .sort((a, b) => a - b)
    .map((i) => items[i]!);
}

export interface Mismatch {
  epoch_id: string;
  subset: number;
  run: number;
  params: ResultRow['params'];
  worker_id: string;
  accepted: string;
  /** The digest of the local re-run; null when the epoch is not one of the study's. */
  local: string | null;
}

export interface JobSummary {
  job_id: string;
  status: JobProvenance['status'];
  quorum: number;
  agreed: number | null;
  /** Whether the accepted results' digests make up the output digest the providers signed (null: not accepted). */
  output_consistent: boolean | null;
  providers: {
    worker_id: string;
    attempt: number;
    ended: string | null;
    verdict: 'valid' | 'invalid' | null;
  }[];
}

export interface ProvenanceSummary {
  jobs: number;
  /** Accepted jobs by the number of distinct providers that agreed on the output. */
  accepted_by_agreed: Record<string, number>;
  not_accepted: number;
  /** Jobs where some provider's output was outvoted. */
  with_outvoted: number;
  /** Accepted jobs whose results do not add up to the output digest that was voted on. */
  inconsistent_outputs: number;
  /** Results whose provider's signature does not check out, or does not cover what the coordinator recorded. */
  bad_signatures: number;
  signatures_checked: number;
}

/** Per job: who ran it, the verdicts and how many agreed; and the counts over all jobs. */
export function summarizeProvenance(
  jobs: readonly JobProvenance[],
  rows: readonly ResultRow[] = [],
): { jobs: JobSummary[]; summary: ProvenanceSummary } {
  const digestOfEpoch = new Map(rows.map((r) => [r.epoch_id, r.digest]));
  const summary: ProvenanceSummary = {
    jobs: jobs.length,
    accepted_by_agreed: {},
    not_accepted: 0,
    with_outvoted: 0,
    inconsistent_outputs: 0,
    bad_signatures: 0,
    signatures_checked: 0,
  };
  const out = jobs.map((j): JobSummary => {
    let consistent: boolean | null = null;
    if (j.accepted) {
      const k = String(j.accepted.agreed);
      summary.accepted_by_agreed[k] = (summary.accepted_by_agreed[k] ?? 0) + 1;
      if (rows.length > 0) {
        const epochs = j.epoch_ids.map((id) => [id, digestOfEpoch.get(id) ?? null]);
        consistent = digestOf({ job_id: j.job_id, epochs }) === j.accepted.output_digest;
        if (!consistent) summary.inconsistent_outputs++;
      }
    } else summary.not_accepted++;
    if (j.executions.some((e) => e.verdict === 'invalid')) summary.with_outvoted++;
    for (const e of j.executions) {
      if (!e.signed) continue;
      summary.signatures_checked++;
      // The provider signed this very claim: this job, this attempt, this output digest.
      const claim = e.signed.claims.find((c) => c.job_id === j.job_id && c.attempt === e.attempt);
      const good =
        claim !== undefined &&
        claim.output_digest === e.output_digest &&
        verifyClaims(e.worker_id, e.signed.claims, e.signed.signature);
      if (!good) summary.bad_signatures++;
    }
    return {
      job_id: j.job_id,
      status: j.status,
      quorum: j.quorum,
      agreed: j.accepted?.agreed ?? null,
      output_consistent: consistent,
      providers: j.executions.map((e) => ({
        worker_id: e.worker_id,
        attempt: e.attempt,
        ended: e.ended,
        verdict: e.verdict,
      })),
    };
  });
  return { jobs: out, summary };
}

/** "12 by a quorum of 2, 3 by 1 provider alone (unreplicated)" */
export function acceptedText(s: ProvenanceSummary): string {
  const parts = Object.entries(s.accepted_by_agreed)
    .sort(([a], [b]) => Number(b) - Number(a))
    .map(([k, n]) =>
      k === '1' ? `${n} by a single provider` : `${n} by a quorum of ${k} agreeing providers`,
    );
  return parts.length ? parts.join(', ') : 'none';
}

export interface VerifyReport {
  study_id: string;
  name: string;
  epochs: { expected: number; accepted: number; checked: number; matching: number; mismatching: number };
  sample: { n: number; seed: number } | null;
  mismatches: Mismatch[];
  jobs: JobSummary[];
  summary: ProvenanceSummary;
  ok: boolean;
}

/** Fetches a study's results and provenance and re-runs its accepted epochs (or a sample) on this machine. */
export async function verifyStudy(
  api: ApiClient,
  studyId: string,
  opts: {
    sample?: number;
    seed: number;
    threads?: number;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<VerifyReport> {
  const { study, rows } = await api.allResults(studyId);
  if (!study) throw new InputError('cannot verify', [`${studyId}: the coordinator sent no study record`]);
  const provenance = await api.allProvenance(studyId, true);
  const expected = expectedEpochs(study);
  const expectedCount = study.runs * countPoints(study);
  const mismatches: Mismatch[] = [];
  const mismatch = (r: ResultRow, local: string | null) =>
    mismatches.push({
      epoch_id: r.epoch_id,
      subset: r.subset,
      run: r.run,
      params: r.params,
      worker_id: r.worker_id,
      accepted: r.digest,
      local,
    });
  // Whether every accepted epoch is one of the study's costs nothing to check, so it is checked for all of them.
  const known = rows.filter((r) => expected.has(r.epoch_id));
  for (const r of rows) if (!expected.has(r.epoch_id)) mismatch(r, null);
  const chosen = opts.sample === undefined ? known : sampleOf(known, opts.sample, opts.seed);
  const local =
    chosen.length === 0
      ? []
      : await runEpochsLocal(
          chosen.map((r) => expected.get(r.epoch_id)!),
          {
            ...(opts.threads ? { threads: opts.threads } : {}),
            ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
          },
        );
  let matching = 0;
  chosen.forEach((r, i) => {
    const digest = local[i]!.digest;
    if (digest === r.digest) matching++;
    else mismatch(r, digest);
  });
  const { jobs, summary } = summarizeProvenance(provenance, rows);
  const checked = chosen.length + (rows.length - known.length);
  return {
    study_id: studyId,
    name: study.name,
    epochs: {
      expected: expectedCount,
      accepted: rows.length,
      checked,
      matching,
      mismatching: mismatches.length,
    },
    sample: opts.sample === undefined ? null : { n: chosen.length, seed: opts.seed },
    mismatches,
    jobs,
    summary,
    ok: mismatches.length === 0 && summary.inconsistent_outputs === 0 && summary.bad_signatures === 0,
  };
}

/** Sweep points of a study (the product of its axes' lengths). */
function countPoints(study: Study): number {
  return study.sweep.reduce((n, axis) => n * axis.values.length, 1);
}

const short = (id: string, names: Map<string, string>) => names.get(id) ?? `${id.slice(0, 9)}…`;

function reportText(r: VerifyReport, names: Map<string, string>): string {
  const out: string[] = [];
  for (const m of r.mismatches) {
    const params = Object.entries(m.params)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ');
    out.push(
      m.local === null
        ? `MISMATCH epoch ${m.epoch_id} (from ${short(m.worker_id, names)}): not an epoch of this study`
        : `MISMATCH epoch ${m.epoch_id} (point ${m.subset}${params ? `: ${params}` : ''}, run ${m.run}): accepted ${m.accepted.slice(0, 16)}… from ${short(m.worker_id, names)}, re-run gives ${m.local.slice(0, 16)}…`,
    );
  }
  const t = new Table({
    head: ['job', 'status', 'quorum', 'agreed', 'providers (verdict)'],
    style: { head: [], border: [] },
    chars: COMPACT,
  });
  for (const j of r.jobs) {
    t.push([
      j.job_id,
      j.status,
      j.quorum,
      j.agreed ?? '–',
      j.providers
        .map((p) => `${short(p.worker_id, names)} ${p.verdict ?? p.ended ?? 'running'}`)
        .join(', ') || '–',
    ]);
  }
  if (r.jobs.length) out.push(t.toString());
  const e = r.epochs;
  const what = r.sample ? `a sample of ${r.sample.n} (seed ${r.sample.seed})` : 'all';
  out.push(
    `${r.study_id} ${r.name}: ${e.accepted} of ${e.expected} epochs accepted; re-ran ${what} on this machine`,
    `epochs: ${e.checked} checked, ${e.matching} matching, ${e.mismatching} mismatching`,
    `jobs: ${r.summary.jobs}; accepted ${acceptedText(r.summary)}; ${r.summary.not_accepted} not accepted; ${r.summary.with_outvoted} with an outvoted provider`,
    r.summary.inconsistent_outputs
      ? `outputs: ${r.summary.inconsistent_outputs} accepted jobs' results do not make up the output their providers signed`
      : "outputs: every accepted job's results make up the output digest its providers signed",
    r.summary.bad_signatures
      ? `signatures: ${r.summary.bad_signatures} of ${r.summary.signatures_checked} results are not signed by their provider as recorded`
      : `signatures: all ${r.summary.signatures_checked} results' provider signatures check out`,
    r.ok ? 'verified: the results are what this machine computes' : 'NOT VERIFIED',
  );
  return `${out.join('\n')}\n`;
}

export function registerVerify(program: Command): void {
  addConnectionOptions(
    program
      .command('verify')
      .description(
        "re-run a study's accepted epochs on this machine and compare digests; show who ran each job",
      )
      .argument('<study>', 'study id')
      .option(
        '--sample <n>',
        'check a random sample of n epochs (default: all)',
        intOption('--sample', 1, 1_000_000),
      )
      .option(
        '--seed <n>',
        'seed of the sample (default: random, printed)',
        intOption('--seed', 0, 0xffff_ffff),
      )
      .option('--threads <n>', 'worker threads (default: one per core)', intOption('--threads', 1, 256))
      .option('--json', 'print the report as JSON'),
  ).action(async (studyId: string, opts: Options) => {
    const transport = await openClient(opts, 'plurigrid-verify');
    const bar = opts.json ? { update: () => {}, stop: () => {} } : progressBar('re-running');
    try {
      const api = new ApiClient(transport.nc);
      const report = await verifyStudy(api, studyId, {
        ...(opts.sample !== undefined ? { sample: opts.sample } : {}),
        seed: opts.seed ?? randomInt(0, 2 ** 32),
        ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
        onProgress: bar.update,
      });
      bar.stop();
      if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else {
        const names = new Map<string, string>();
        const workers = await api.workers().catch(() => ({ workers: [] }));
        for (const w of workers.workers) names.set(w.worker_id, w.name);
        process.stdout.write(reportText(report, names));
      }
      if (!report.ok) process.exitCode = 1;
    } finally {
      bar.stop();
      await transport.close();
    }
  });
}
