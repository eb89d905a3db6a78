import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_RETRY,
  endExecution,
  failureReasons,
  isTerminal,
  liveExecutions,
  newJobRecord,
  report,
  reverify,
  startExecution,
  tally,
  wanted,
} from '../../src/coordinator/job-state.ts';
import { type PendingJob, place, type WorkerView } from '../../src/coordinator/placement.ts';
import {
  auditProbability,
  DEFAULT_TRUST,
  newReputation,
  recordVerdict,
  suspect,
  trusted,
} from '../../src/coordinator/reputation.ts';
import { Job, ResourceLimits } from '../../src/models/job.ts';
import type { JobRecord } from '../../src/models/job-record.ts';
import { Study } from '../../src/models/study.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { pendingJob, workerView } from '../fixtures/placement.ts';
import { baseScenario } from './arbitraries.ts';

const limits = ResourceLimits.parse({});
const job = Job.parse({
  job_id: 'j1',
  study_id: 's1',
  image: 'sha256:img',
  input_digest: 'a'.repeat(64),
  epochs: expandStudy(Study.parse({ name: 's', scenario: {}, runs: 1 }), baseScenario()),
  limits,
});
const policy = { ...DEFAULT_RETRY, maxAttempts: 4, queueTimeoutMs: null };
const replicated = (quorum: number, max_results: number) =>
  newJobRecord(job, 0, policy, { quorum, max_results, adaptive: false, max_price: null });

/** Starts what the job wants, each on a provider it has not used. */
function fill(rec: JobRecord, next: () => string, now: number): JobRecord {
  let r = rec;
  for (let n = wanted(r); n > 0; n--) r = startExecution(r, next(), now, 1000);
  return r;
}

describe('replication with quorum', () => {
  it('accepts once two distinct providers agree; a dissenter is outvoted and a third breaks the tie', () => {
    let r = replicated(2, 4);
    expect(wanted(r)).toBe(2);
    r = startExecution(r, 'a', 0, 1000);
    expect(r.status).toBe('queued'); // one replica placed, one still wanted
    expect(startExecution(r, 'a', 0, 1000)).toBe(r); // never twice on one provider
    r = startExecution(r, 'b', 0, 1000);
    expect(r.status).toBe('assigned');
    r = report(r, 1, 'a', { seq: 1, output_digest: 'x' }, 1, policy);
    expect(r.status).toBe('assigned');
    r = report(r, 2, 'b', { seq: 2, output_digest: 'y' }, 2, policy);
    expect(r).toMatchObject({ status: 'queued', result: null });
    expect(wanted(r)).toBe(1);
    expect(startExecution(r, 'b', 3, 1000)).toBe(r); // b already returned a result for it
    r = report(startExecution(r, 'c', 3, 1000), 3, 'c', { seq: 3, output_digest: 'x' }, 4, policy);
    expect(r).toMatchObject({
      status: 'done',
      result: { attempt: 1, worker_id: 'a', output_digest: 'x', agreed: 2 },
    });
    expect(r.executions.map((e) => [e.worker_id, e.verdict])).toEqual([
      ['a', 'valid'],
      ['b', 'invalid'],
      ['c', 'valid'],
    ]);
  });

  it('fails with every execution digest when no quorum forms within the bound', () => {
    let r = replicated(2, 3);
    const digests = ['d1', 'd2', 'd3'];
    let w = 0;
    for (const d of digests) {
      r = fill(r, () => `w${w++}`, 0);
      const e = liveExecutions(r)[0]!;
      r = report(r, e.attempt, e.worker_id, { seq: e.attempt, output_digest: d }, 1, policy);
    }
    // The second replica of the first round is still running: the vote waits for it.
    while (!isTerminal(r)) {
      const e = liveExecutions(r)[0]!;
      r = report(
        r,
        e.attempt,
        e.worker_id,
        { seq: e.attempt, output_digest: `other${e.attempt}` },
        2,
        policy,
      );
    }
    expect(r.status).toBe('failed');
    expect(r.reason).toMatch(/no quorum of 2 within 3 results/);
    const reasons = failureReasons(r).join('\n');
    for (const e of r.executions.filter((x) => x.ended === 'ok')) expect(reasons).toContain(e.output_digest!);
  });

  it('holds its invariants under any order of results and failures (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.oneof(fc.constantFrom('x', 'x', 'y', 'z'), fc.constant(null)), {
          minLength: 1,
          maxLength: 40,
        }),
        (quorum, extra, script) => {
          let r = replicated(quorum, quorum + extra);
          let w = 0;
          let now = 0;
          for (const step of script) {
            if (isTerminal(r)) break;
            now = Math.max(now + 1, r.not_before);
            // Workers come from a small pool, in turn: the same ones are offered the job again and again, and only
            // those with nothing of it running or reported may take it.
            for (let n = wanted(r), tries = 0; n > 0 && tries < 20; tries++) {
              const next = startExecution(r, `w${w++ % 6}`, now, 1000);
              if (next !== r) n--;
              r = next;
            }
            const e = liveExecutions(r)[0];
            if (!e) continue;
            r =
              step === null
                ? endExecution(r, e.attempt, e.worker_id, 'failed', 'crashed', now, policy)
                : report(r, e.attempt, e.worker_id, { seq: e.attempt, output_digest: step }, now, policy);
            // Distinct providers: no worker holds two live-or-reported executions of the job.
            const used = r.executions
              .filter((x) => x.ended === null || x.ended === 'ok')
              .map((x) => x.worker_id);
            expect(new Set(used).size).toBe(used.length);
            expect(r.executions.filter((x) => x.ended === 'ok').length).toBeLessThanOrEqual(r.max_results);
          }
          const top = tally(r)[0];
          if (r.status === 'done') {
            // Never more executions than the vote needs: nothing is left running once it is decided.
            expect(liveExecutions(r)).toEqual([]);
            expect(top!.executions.length).toBeGreaterThanOrEqual(quorum);
            expect(r.result!.output_digest).toBe(top!.digest);
            for (const e of r.executions.filter((x) => x.ended === 'ok'))
              expect(e.verdict).toBe(e.output_digest === top!.digest ? 'valid' : 'invalid');
          } else {
            expect(r.executions.some((x) => x.verdict !== null)).toBe(false);
            expect((top?.executions.length ?? 0) < quorum).toBe(true);
          }
        },
      ),
    );
  });

  it('runs a fresh adaptive job alone on a trusted provider, and a caught provider’s solo result reopens', () => {
    const rec = newJobRecord(job, 0, policy, { quorum: 2, max_results: 4, adaptive: true, max_price: null });
    const solo = startExecution(rec, 'trusted', 0, 1000, { unreplicated: true });
    expect(solo).toMatchObject({ status: 'assigned', quorum: 2 });
    expect(solo.executions[0]!.solo).toBe(true);
    // A solo execution that fails leaves the job as fresh as before: it may go solo again, or be replicated.
    const failed = endExecution(solo, 1, 'trusted', 'failed', 'crashed', 1, policy);
    expect(wanted(failed)).toBe(2);
    const done = report(solo, 1, 'trusted', { seq: 1, output_digest: 'x' }, 1, policy);
    expect(done).toMatchObject({ status: 'done', result: { agreed: 1 } });
    const reopened = reverify(done, 5, policy);
    expect(reopened).toMatchObject({ status: 'queued', quorum: 2, result: null });
    expect(wanted(reopened)).toBe(1);
    const confirmed = report(
      startExecution(reopened, 'other', 6, 1000),
      2,
      'other',
      { seq: 2, output_digest: 'y' },
      7,
      policy,
    );
    expect(confirmed.status).toBe('queued'); // a disagreement: a third opinion is wanted
    // A non-adaptive job ignores the flag; a replicated done job is not reopened.
    expect(startExecution(replicated(2, 2), 't', 0, 10, { unreplicated: true }).executions[0]!.solo).toBe(
      false,
    );
    expect(reverify(confirmed, 8, policy)).toBe(confirmed);
  });
});

describe('reputation', () => {
  it('earns trust with a run of valid results, only with stake, and loses it all on one invalid', () => {
    const p = { ...DEFAULT_TRUST, trustAfter: 3, minStake: 100, recentKept: 2 };
    let rep = newReputation('w', 0);
    for (let i = 0; i < 3; i++) rep = recordVerdict(rep, 'valid', { job_id: `j${i}` }, i, p).rep;
    expect(trusted(rep, 100, p)).toBe(true);
    expect(trusted(rep, 99, p)).toBe(false);
    expect(rep.recent_unreplicated).toEqual(['j1', 'j2']);
    expect(auditProbability(rep, p)).toBeCloseTo(1 / 3);
    const caught = recordVerdict(rep, 'invalid', null, 9, p);
    expect(caught.reverify).toEqual(['j1', 'j2']);
    expect(caught.rep).toMatchObject({ consecutive_valid: 0, invalid: 1, valid: 3, recent_unreplicated: [] });
    expect(trusted(caught.rep, 1e9, p)).toBe(false);
  });

  it('cuts off a provider outvoted too often, not one outvoted now and then', () => {
    const rep = (valid: number, invalid: number) => ({ ...newReputation('w', 0), valid, invalid });
    expect(suspect(undefined)).toBe(false);
    expect(suspect(rep(0, 1))).toBe(false); // one mistake is not a pattern
    expect(suspect(rep(5, 2))).toBe(true);
    expect(suspect(rep(100, 2))).toBe(false);
    expect(suspect(rep(100, 12))).toBe(true);
    expect(place([pending('j', { want: 1 })], [worker('w', { suspect: true })], 0)).toEqual([]);
  });

  it('audits a trusted provider at 1/n, never below the floor', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100_000 }), (n) => {
        const a = auditProbability({ ...newReputation('w', 0), consecutive_valid: n }, DEFAULT_TRUST);
        expect(a).toBeGreaterThanOrEqual(DEFAULT_TRUST.minAudit);
        expect(a).toBeLessThanOrEqual(1);
        if (n > 1 && 1 / n >= DEFAULT_TRUST.minAudit) expect(a).toBeCloseTo(1 / n);
      }),
    );
  });
});

/** Four slots each, and jobs that want two replicas of ten CPU-seconds: replication's defaults. */
const worker = (id: string, over: Partial<WorkerView> = {}) =>
  workerView(id, { slots: 4, slots_free: 4, ...over });
const pending = (id: string, over: Partial<PendingJob> = {}) =>
  pendingJob(id, { want: 2, work: 10, ...over });

describe('placement with replication', () => {
  it('places each replica on a distinct worker, and a newcomer’s replica against an established one', () => {
    const cheap = worker('sybil', { price_per_cpu_s: 0 });
    const sybil2 = worker('sybil2', { price_per_cpu_s: 0 });
    const old = worker('old', { established: true });
    const plan = place([pending('j', { needs_established: true })], [cheap, sybil2, old], 0);
    expect(plan.map((p) => p.worker_id).sort()).toEqual(['old', 'sybil']);
    // Without an established provider anywhere, replicas still go to distinct workers.
    expect(new Set(place([pending('k')], [cheap, sybil2], 0).map((p) => p.worker_id)).size).toBe(2);
  });

  it('never lets newcomers make a quorum by themselves once anyone is established', () => {
    const sybils = [worker('s1', { price_per_cpu_s: 0 }), worker('s2', { price_per_cpu_s: 0 })];
    const busyOld = worker('old', { established: true, slots_free: 0 });
    // The established provider is full: one newcomer replica may run, the second waits for it.
    expect(place([pending('j', { needs_established: true })], [...sybils, busyOld], 0)).toHaveLength(1);
    // A job whose newcomer replica disagreed with the established one gets its third opinion from no newcomer.
    const third = pending('k', { want: 1, exclude: ['s1', 'old'], newcomers: 1 });
    expect(place([third], [...sybils, busyOld], 0)).toEqual([]);
    const old2 = worker('old2', { established: true });
    expect(place([third], [...sybils, busyOld, old2], 0).map((p) => p.worker_id)).toEqual(['old2']);
    // Quorum 1 (the submitter chose no replication) is not capped.
    expect(place([pending('m', { quorum: 1, want: 1 })], [...sybils, busyOld], 0)).toHaveLength(1);
  });

  it('runs an adaptive job alone on a trusted provider unless the draw audits it', () => {
    const t = worker('t', { established: true, trusted: true, audit: 0.1 });
    const other = worker('o');
    const jobs = [pending('j', { adaptive: true })];
    expect(place(jobs, [t, other], 0, new Map(), () => 0.5)).toEqual([
      { job_id: 'j', worker_id: 't', pay: 0, unreplicated: true },
    ]);
    expect(place(jobs, [t, other], 0, new Map(), () => 0.05)).toHaveLength(2);
  });

  it('pays each execution at its worker’s price and stops when the study cannot pay, saying so', () => {
    const w = [worker('a', { price_per_cpu_s: 0.001 }), worker('b', { price_per_cpu_s: 0.002 })];
    const funds = new Map([['s1', 25_000]]);
    const short = new Set<string>();
    const plan = place(
      [pending('j', { max_price: 0.002 }), pending('k', { max_price: 0.002 })],
      w,
      0,
      funds,
      () => 1,
      short,
    );
    // j: 10 CPU-s at 0.001 and 0.002 SIM = 10,000 + 20,000 µSIM > 25,000: only its first replica fits.
    expect(plan).toEqual([{ job_id: 'j', worker_id: 'a', pay: 10_000, unreplicated: false }]);
    expect(funds.get('s1')).toBe(15_000);
    expect([...short]).toEqual(['s1']);
    // A price above the study's max is infeasible.
    expect(place([pending('m', { max_price: 0.0005, want: 1 })], w, 0, new Map([['s1', 1e9]]))).toEqual([]);
  });
});
