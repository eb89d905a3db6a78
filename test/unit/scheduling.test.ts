import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  backoffMs,
  cancel,
  DEFAULT_RETRY,
  endExecution,
  expireQueued,
  failureReasons,
  liveExecution,
  newJobRecord,
  report,
  startExecution,
  workersToAvoid,
} from '../../src/coordinator/job-state.ts';
import { DEFAULT_PACK, packEpochs } from '../../src/coordinator/pack.ts';
import { fillableSlots, place } from '../../src/coordinator/placement.ts';
import { Job, ResourceLimits } from '../../src/models/job.ts';
import { MAX_ENDED_EXECUTIONS, StoredJobState } from '../../src/models/job-record.ts';
import { Study } from '../../src/models/study.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { pendingJob, workerView } from '../fixtures/placement.ts';
import { baseScenario } from './arbitraries.ts';

const limits = ResourceLimits.parse({});
const job = (id = 'j1'): Job =>
  Job.parse({
    job_id: id,
    study_id: 's1',
    image: 'sha256:img',
    input_digest: 'a'.repeat(64),
    epochs: expandStudy(Study.parse({ name: 's', scenario: {}, runs: 1 }), baseScenario()),
    limits,
  });

const policy = {
  ...DEFAULT_RETRY,
  maxAttempts: 3,
  backoffBaseMs: 100,
  backoffMaxMs: 1000,
  queueTimeoutMs: 5000,
};

describe('job state', () => {
  it('runs queued → assigned → done, recording the accepted result', () => {
    const q = newJobRecord(job(), 0, policy);
    expect(q.status).toBe('queued');
    expect(q.queue_deadline).toBe(5000);
    const a = startExecution(q, 'w1', 10, 1000);
    expect(a).toMatchObject({ status: 'assigned', attempts: 1, queue_deadline: null });
    expect(a.executions).toEqual([
      expect.objectContaining({ attempt: 1, worker_id: 'w1', lease_until: 1010, ended: null }),
    ]);
    expect(liveExecution(a, 1, 'w1')).toBeDefined();
    expect(liveExecution(a, 1, 'w2')).toBeUndefined();
    expect(liveExecution(a, 2, 'w1')).toBeUndefined();
    const d = report(a, 1, 'w1', { seq: 7, output_digest: 'x' }, 20, policy);
    expect(d).toMatchObject({ status: 'done', result: { seq: 7, attempt: 1, worker_id: 'w1' } });
    expect(d.executions[0]).toMatchObject({ ended: 'ok', seq: 7, output_digest: 'x' });
    expect(startExecution(d, 'w2', 30, 1000)).toBe(d);
    // A second result for the same execution, or one for another worker, changes nothing.
    expect(report(d, 1, 'w1', { seq: 8, output_digest: 'y' }, 21, policy)).toBe(d);
    expect(endExecution(a, 1, 'w2', 'failed', null, 20, policy)).toBe(a);
  });

  it('backs off exponentially and fails after max attempts with every reason kept', () => {
    let r = newJobRecord(job(), 0, policy);
    r = endExecution(startExecution(r, 'w1', 0, 1000), 1, 'w1', 'oom', 'exceeded 64 MiB', 100, policy);
    expect(r).toMatchObject({ status: 'queued', not_before: 200, failures: 1 });
    r = endExecution(
      startExecution(r, 'w2', 200, 1000),
      2,
      'w2',
      'timeout',
      'timed out after 1 s',
      300,
      policy,
    );
    expect(r).toMatchObject({ status: 'queued', not_before: 500, attempts: 2 });
    expect(workersToAvoid(r)).toEqual(['w1', 'w2']);
    r = endExecution(startExecution(r, 'w3', 500, 1000), 3, 'w3', 'worker-lost', null, 600, policy);
    expect(r.status).toBe('failed');
    expect(r.executions.map((e) => e.ended)).toEqual(['oom', 'timeout', 'worker-lost']);
    expect(failureReasons(r)[0]).toBe('attempt 1: oom (exceeded 64 MiB)');
    expect(backoffMs(10, policy)).toBe(1000);
  });

  it('does not count declines or drain hand-backs as attempts; repeated ones back off', () => {
    let r = newJobRecord(job(), 0, policy);
    const nb: number[] = [];
    for (let i = 0; i < 5; i++) {
      r = endExecution(startExecution(r, `w${i}`, i, 10), i + 1, `w${i}`, 'declined', 'busy', 1000, policy);
      nb.push(r.not_before - 1000);
    }
    expect(r).toMatchObject({ status: 'queued', failures: 0, free_ends: 5 });
    // The first decline requeues at once; the next ones wait longer and longer.
    expect(nb).toEqual([0, 100, 200, 400, 800]);
    r = endExecution(startExecution(r, 'w9', 9, 10), 6, 'w9', 'cancelled', 'worker draining', 9, policy);
    expect(r.status).toBe('queued');
    expect(workersToAvoid(r)).toEqual([]);
    // A counted end resets the run of free ones.
    r = endExecution(startExecution(r, 'w9', 9, 10), 7, 'w9', 'cancelled', 'not asked for', 9, policy, {
      counted: true,
    });
    expect(r).toMatchObject({ failures: 1, free_ends: 0 });
  });

  it('keeps a bounded history however often a job bounces', () => {
    let r = newJobRecord(job(), 0, policy);
    for (let i = 1; i <= 200; i++)
      r = endExecution(startExecution(r, 'w', i, 10), i, 'w', 'declined', null, i, policy);
    expect(r.attempts).toBe(200);
    expect(r.executions).toHaveLength(MAX_ENDED_EXECUTIONS);
    expect(r.executions.at(-1)!.attempt).toBe(200);
  });

  it('fails a job that waits past its queue timeout, and cancels any live job', () => {
    const q = newJobRecord(job(), 0, policy);
    expect(expireQueued(q, 4999)).toBe(q);
    expect(expireQueued(q, 5000)).toMatchObject({ status: 'failed', reason: /queue timeout/ });
    const running = cancel(startExecution(q, 'w', 0, 10), 1);
    expect(running.status).toBe('cancelled');
    expect(running.executions[0]).toMatchObject({ ended: 'cancelled' });
    const done = report(startExecution(q, 'w', 0, 10), 1, 'w', { seq: 1, output_digest: 'x' }, 1, policy);
    expect(cancel(done, 2)).toBe(done);
  });

  it('loads a record written before executions as one execution', () => {
    const rec = newJobRecord(job(), 0, policy);
    const {
      job: _j,
      executions: _e,
      attempts: _a,
      failures: _f,
      free_ends: _fe,
      reason: _r,
      ...common
    } = rec;
    const old = {
      ...common,
      status: 'assigned',
      attempt: 2,
      worker_id: 'w2',
      lease_until: 99,
      history: [{ attempt: 1, worker_id: 'w1', ended: 'oom', reason: 'big', at: 5 }],
    };
    const state = StoredJobState.parse(old);
    expect(state).toMatchObject({ status: 'assigned', attempts: 2, failures: 1 });
    expect(state.executions).toEqual([
      expect.objectContaining({ attempt: 1, worker_id: 'w1', ended: 'oom', reason: 'big' }),
      expect.objectContaining({ attempt: 2, worker_id: 'w2', lease_until: 99, ended: null }),
    ]);
  });

  it('never exceeds max attempts under any sequence of ends (property)', () => {
    const ends = fc.constantFrom(
      'failed',
      'timeout',
      'oom',
      'lease-expired',
      'worker-lost',
      'declined',
      'cancelled' as const,
    );
    fc.assert(
      fc.property(fc.array(ends, { maxLength: 30 }), fc.integer({ min: 1, max: 5 }), (seq, max) => {
        const p = { ...policy, maxAttempts: max };
        let r = newJobRecord(job(), 0, p);
        for (const e of seq) {
          if (r.status !== 'queued') break;
          r = startExecution(r, 'w', 0, 10);
          r = endExecution(r, r.attempts, 'w', e, null, 0, p);
        }
        expect(r.failures).toBeLessThanOrEqual(max);
        expect(r.status === 'failed').toBe(r.failures === max);
        expect(r.executions.length).toBeLessThanOrEqual(MAX_ENDED_EXECUTIONS);
      }),
    );
  });
});

const worker = workerView;
const pending = pendingJob;

describe('placement', () => {
  it('tops a worker up once an eighth of its slots is free, and a small worker at every free slot', () => {
    expect(fillableSlots(64, 7)).toBe(0);
    expect(fillableSlots(64, 8)).toBe(8);
    expect(fillableSlots(64, 64)).toBe(64);
    for (const slots of [1, 2, 4, 8, 15]) expect(fillableSlots(slots, 1)).toBe(1);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1024 }), fc.integer({ min: 0, max: 1024 }), (slots, f) => {
        const free = Math.min(slots, f);
        const n = fillableSlots(slots, free);
        // All or nothing, never more than is free, and never nothing when at least an eighth is free.
        expect(n === 0 || n === free).toBe(true);
        if (free * 8 >= slots && free > 0) expect(n).toBe(free);
      }),
    );
  });

  it('never overfills a worker and places by priority, then age', () => {
    const jobs = [
      pending('old', { enqueued_at: 1 }),
      pending('new', { enqueued_at: 5 }),
      pending('vip', { priority: 5, enqueued_at: 9 }),
    ];
    const out = place(jobs, [worker('a', { slots_free: 2 })], 10);
    expect(out.map((p) => p.job_id)).toEqual(['vip', 'old']);
  });

  it('filters infeasible workers: draining, too small, missing image on docker, backing-off jobs', () => {
    const ws = [
      worker('draining', { draining: true }),
      worker('small', { memory_mb: 128 }),
      worker('docker-cold', { executor: 'docker' }),
      worker('docker-warm', { executor: 'docker', images: ['sha256:img'], slots_free: 1 }),
    ];
    expect(place([pending('j'), pending('k'), pending('later', { not_before: 99 })], ws, 10)).toEqual([
      { job_id: 'j', worker_id: 'docker-warm', pay: 0, unreplicated: false },
    ]);
  });

  it('prefers cheaper and emptier workers, and steers retries away from workers that failed the job', () => {
    expect(
      place([pending('j')], [worker('dear', { price_per_cpu_s: 0.01 }), worker('cheap')], 0)[0]!.worker_id,
    ).toBe('cheap');
    expect(place([pending('j')], [worker('busy', { slots_free: 1 }), worker('idle')], 0)[0]!.worker_id).toBe(
      'idle',
    );
    expect(
      place(
        [pending('j', { avoid: ['cheap'] })],
        [worker('dear', { price_per_cpu_s: 0.01 }), worker('cheap')],
        0,
      )[0]!.worker_id,
    ).toBe('dear');
    expect(place([pending('j', { avoid: ['only'] })], [worker('only')], 0)[0]!.worker_id).toBe('only');
  });

  it('never places a job on a worker that already runs an execution of it (distinct workers)', () => {
    expect(place([pending('j', { exclude: ['only'] })], [worker('only')], 0)).toEqual([]);
    expect(place([pending('j', { exclude: ['a'] })], [worker('a'), worker('b')], 0)).toEqual([
      { job_id: 'j', worker_id: 'b', pay: 0, unreplicated: false },
    ]);
  });

  it('places min(jobs, free slots) when everything fits (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 6 }),
        fc.integer({ min: 0, max: 20 }),
        (slots, n) => {
          const ws = slots.map((s, i) => worker(`w${i}`, { slots: 4, slots_free: s }));
          const jobs = Array.from({ length: n }, (_, i) => pending(`j${i}`));
          const out = place(jobs, ws, 0);
          expect(out).toHaveLength(
            Math.min(
              n,
              slots.reduce((a, b) => a + b, 0),
            ),
          );
          for (const w of ws)
            expect(out.filter((p) => p.worker_id === w.worker_id).length).toBeLessThanOrEqual(w.slots_free);
          expect(new Set(out.map((p) => p.job_id)).size).toBe(out.length);
        },
      ),
    );
  });
});

describe('packing', () => {
  const epochs = expandStudy(
    Study.parse({
      name: 's',
      scenario: {},
      runs: 20,
      sweep: [{ name: 'market.mechanism', values: ['none', 'sdr'] }],
    }),
    baseScenario(),
  );

  it('keeps every epoch once, in order', () => {
    const batches = packEpochs(epochs, { ...DEFAULT_PACK, targetSeconds: 1e-4 });
    expect(batches.flat().map((e) => e.epoch_id)).toEqual(epochs.map((e) => e.epoch_id));
    expect(batches.length).toBeGreaterThan(1);
  });

  it('fills jobs up to the target seconds and the byte cap', () => {
    // 12 households × 24 intervals × 2e-7 s ≈ 5.8e-5 s per epoch.
    const bySeconds = packEpochs(epochs, { ...DEFAULT_PACK, targetSeconds: 2e-4 });
    expect(bySeconds[0]).toHaveLength(4);
    const one = JSON.stringify(epochs[0]).length;
    const byBytes = packEpochs(epochs, { ...DEFAULT_PACK, targetSeconds: 1e9, maxBytes: one * 3 + 10 });
    expect(byBytes[0]).toHaveLength(3);
    expect(packEpochs(epochs, { ...DEFAULT_PACK, targetSeconds: 1e9 })).toHaveLength(1);
  });
});
