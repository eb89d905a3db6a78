import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planRound, type WindowView } from '../../src/coordinator/backfill.ts';
import {
  DEFAULT_RETRY,
  endExecution,
  isTerminal,
  type JobTerms,
  newJobRecord,
  startExecution,
  wanted,
} from '../../src/coordinator/job-state.ts';
import type { WorkerView } from '../../src/coordinator/placement.ts';
import {
  byWorkerYoungestFirst,
  chooseVictims,
  type Preemptible,
  preemptibleOf,
  windowClosures,
} from '../../src/coordinator/preempt.ts';
import { jobWork, payFor } from '../../src/coordinator/pricing.ts';
import { Job, ResourceLimits } from '../../src/models/job.ts';
import type { JobRecord } from '../../src/models/job-record.ts';
import { Study } from '../../src/models/study.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { workerView } from '../fixtures/placement.ts';
import { baseScenario } from './arbitraries.ts';

const epochs = expandStudy(Study.parse({ name: 's', scenario: {}, runs: 1 }), baseScenario());
const job = (id: string, study: string): Job =>
  Job.parse({
    job_id: id,
    study_id: study,
    image: 'sha256:img',
    input_digest: 'a'.repeat(64),
    epochs,
    limits: ResourceLimits.parse({}),
  });
const terms = (publicGood: boolean): JobTerms => ({
  quorum: 1,
  max_results: 1,
  adaptive: false,
  max_price: 0.01,
  public_good: publicGood,
});
/** Every job here has the same epochs, so the same estimated work. */
const WORK = jobWork(job('any', 'any'));
const paidJob = (id: string, at = 0) => newJobRecord(job(id, 'paid'), at, DEFAULT_RETRY, terms(false));
const commonsJob = (id: string, at = 0) => newJobRecord(job(id, 'pg'), at, DEFAULT_RETRY, terms(true));
const rich = () =>
  new Map([
    ['paid', 1e12],
    ['pg', 1e12],
  ]);
const open = (price = 0.0004, leftS: number | null = 3600): WindowView => ({
  open: true,
  left_s: leftS,
  price,
});

function plan(
  o: {
    paid?: JobRecord[];
    commons?: JobRecord[];
    workers?: WorkerView[];
    windows?: Map<string, WindowView>;
    preemptible?: Preemptible[];
    policy?: 'offpeak' | 'idle';
    funds?: Map<string, number>;
  } = {},
) {
  return planRound({
    now: 1000,
    paid: () => o.paid ?? [],
    commons: () => o.commons ?? [],
    workers: o.workers ?? [],
    windows: o.windows ?? new Map(),
    preemptible: o.preemptible ?? [],
    policy: o.policy ?? 'offpeak',
    established: () => false,
    funds: o.funds ?? rich(),
    rand: () => 0,
  });
}

describe('backfill: public goods on idle off-peak slots', () => {
  it('places public goods only on workers whose window is open, at the off-peak price', () => {
    const r = plan({
      commons: [commonsJob('c1'), commonsJob('c2')],
      workers: [workerView('wOpen', { slots_free: 1 }), workerView('wClosed', { slots_free: 1 })],
      windows: new Map([['wOpen', open(0.0004)]]),
    });
    expect(r.placements).toEqual([
      expect.objectContaining({ job_id: 'c1', worker_id: 'wOpen', pay: payFor(WORK, 0.0004) }),
    ]);
    expect(r.commons).toBe(1);
  });

  it('under the idle policy, also on any idle slot at the usual price', () => {
    const r = plan({
      commons: [commonsJob('c1')],
      workers: [workerView('w', { slots_free: 1, price_per_cpu_s: 0.001 })],
      policy: 'idle',
    });
    expect(r.placements).toEqual([expect.objectContaining({ worker_id: 'w', pay: payFor(WORK, 0.001) })]);
  });

  it('never on a window that closes before the job would end', () => {
    const r = plan({
      commons: [commonsJob('c1')],
      workers: [workerView('w', { slots_free: 1 })],
      windows: new Map([['w', open(0.0004, 0.001)]]),
    });
    expect(r.placements).toEqual([]);
  });

  it('paid work first: public goods get only what paid work left', () => {
    const r = plan({
      paid: [paidJob('p1')],
      commons: [commonsJob('c1'), commonsJob('c2')],
      workers: [workerView('w1', { slots_free: 1 }), workerView('w2', { slots_free: 1 })],
      windows: new Map([
        ['w1', open()],
        ['w2', open()],
      ]),
    });
    expect(r.placements.map((p) => p.job_id)).toEqual(['p1', 'c1']);
  });

  it('a public good its funds cannot cover waits (nothing runs unpaid)', () => {
    const r = plan({
      commons: [commonsJob('c1')],
      workers: [workerView('w', { slots_free: 1 })],
      windows: new Map([['w', open(0.0004)]]),
      funds: new Map([['pg', payFor(WORK, 0.0004) - 1]]),
    });
    expect(r.placements).toEqual([]);
  });
});

describe('preemption', () => {
  const running = (id: string, worker: string, at: number): Preemptible => ({
    job_id: id,
    attempt: 1,
    worker_id: worker,
    assigned_at: at,
  });

  it('paid work without a free slot takes the youngest public-goods execution', () => {
    const r = plan({
      paid: [paidJob('p1')],
      workers: [workerView('w', { slots: 2, slots_free: 0 })],
      preemptible: [running('old', 'w', 10), running('young', 'w', 500)],
    });
    expect(r.placements).toEqual([
      expect.objectContaining({ job_id: 'p1', worker_id: 'w', preempts: [{ job_id: 'young', attempt: 1 }] }),
    ]);
    expect(r.preempting).toBe(1);
  });

  it('does not preempt when a free slot will do', () => {
    const r = plan({
      paid: [paidJob('p1')],
      workers: [workerView('w1', { slots_free: 0 }), workerView('w2', { slots_free: 1 })],
      preemptible: [running('c', 'w1', 10)],
    });
    expect(r.placements).toEqual([expect.objectContaining({ job_id: 'p1', worker_id: 'w2' })]);
    expect(r.placements[0]!.preempts).toBeUndefined();
  });

  it('preempts no more executions than paid work wants', () => {
    const r = plan({
      paid: [paidJob('p1')],
      workers: [workerView('w1', { slots_free: 0 }), workerView('w2', { slots_free: 0 })],
      preemptible: [running('a', 'w1', 10), running('b', 'w2', 20)],
    });
    expect(r.preempting).toBe(1);
  });

  it('chooses victims youngest first on each worker, and drops a placement without one', () => {
    const victims = [running('a', 'w', 1), running('b', 'w', 3), running('c', 'w', 2), running('x', 'v', 9)];
    expect(
      byWorkerYoungestFirst(victims)
        .get('w')!
        .map((v) => v.job_id),
    ).toEqual(['b', 'c', 'a']);
    const placed = chooseVictims(
      [
        { job_id: 'p1', worker_id: 'w', pay: 0, unreplicated: false },
        { job_id: 'p2', worker_id: 'w', pay: 0, unreplicated: false },
        { job_id: 'p3', worker_id: 'u', pay: 0, unreplicated: false },
      ],
      victims,
    );
    expect(placed.map((p) => [p.job_id, p.preempts?.[0]?.job_id])).toEqual([
      ['p1', 'b'],
      ['p2', 'c'],
    ]);
  });

  it('a closed window preempts after its grace; one without any window from the execution start', () => {
    const ex = [running('a', 'w1', 0), running('b', 'w2', 0), running('c', 'w3', 0), running('d', 'w4', 900)];
    const closed = new Map<string, number | null>([
      ['w1', 60_000],
      ['w2', 400_000],
      ['w4', null],
    ]);
    expect(windowClosures(ex, closed, 1000, 300_000).map((p) => p.job_id)).toEqual(['b']);
    expect(windowClosures(ex, closed, 400_000, 300_000).map((p) => p.job_id)).toEqual(['b', 'd']);
  });

  it('lists only live public-goods executions, less those being stopped', () => {
    const pg = startExecution(commonsJob('c1'), 'w', 5, 1000);
    const paid = startExecution(paidJob('p1'), 'w', 5, 1000);
    expect(preemptibleOf([pg, paid])).toEqual([running('c1', 'w', 5)]);
    expect(preemptibleOf([pg], (k) => k === 'c1#1')).toEqual([]);
  });

  it('a preempted execution uses no attempt, is not avoided, and the job wants a new one at once', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), (times) => {
        let rec = commonsJob('c1');
        for (let i = 0; i < times; i++) {
          rec = startExecution(rec, `w${i % 3}`, i * 10, 1000);
          rec = endExecution(
            rec,
            rec.attempts,
            `w${i % 3}`,
            'preempted',
            'paid work',
            i * 10 + 5,
            DEFAULT_RETRY,
          );
        }
        expect(rec.status).toBe('queued');
        expect(isTerminal(rec)).toBe(false);
        expect(rec.failures).toBe(0);
        expect(rec.free_ends).toBe(0);
        expect(rec.not_before).toBeLessThanOrEqual((times - 1) * 10 + 5);
        expect(wanted(rec)).toBe(1);
        expect(rec.executions.every((e) => e.ended === 'preempted' && e.verdict === null)).toBe(true);
      }),
    );
  });
});
