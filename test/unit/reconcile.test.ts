import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_RETRY,
  endExecution,
  liveExecutions,
  newJobRecord,
  startExecution,
  wanted,
  workersToAvoid,
} from '../../src/coordinator/job-state.ts';
import { type PendingJob, place, type WorkerView } from '../../src/coordinator/placement.ts';
import {
  executionKey,
  lossWindowMs,
  type ReconcileInput,
  reconcile,
  type WorkerLiveness,
} from '../../src/coordinator/reconcile.ts';
import { Job, ResourceLimits } from '../../src/models/job.ts';
import type { JobRecord } from '../../src/models/job-record.ts';
import { Study } from '../../src/models/study.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { baseScenario } from './arbitraries.ts';

const limits = ResourceLimits.parse({});
const epochs = expandStudy(Study.parse({ name: 's', scenario: {}, runs: 1 }), baseScenario());
const job = (id: string): Job =>
  Job.parse({ job_id: id, study_id: 's1', image: 'img', input_digest: 'a'.repeat(64), epochs, limits });
const policy = { ...DEFAULT_RETRY, maxAttempts: 1000 };
const INTERVAL = 1000;
const MISSED = 3;
const WINDOW = lossWindowMs(INTERVAL, MISSED);

const worker = (id: string, seenAt: number, running: string[] = []): WorkerLiveness => ({
  worker_id: id,
  seen_at: seenAt,
  interval_ms: INTERVAL,
  running: new Set(running),
});

const input = (over: Partial<ReconcileInput>): ReconcileInput => ({
  now: 0,
  assigned: [],
  queued: [],
  settled: [],
  workers: new Map(),
  liveness_from: -1e9,
  missed_heartbeats: MISSED,
  absent_since: new Map(),
  inflight: new Set(),
  ...over,
});

/** A job with one live execution on `w`, assigned at `at` with a long lease. */
const running = (id: string, w: string, at: number, lease = 1e9): JobRecord =>
  startExecution(newJobRecord(job(id), at, policy), w, at, lease);

describe('reconcile', () => {
  it('reclaims exactly the executions of workers silent past the loss window (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ silentFor: fc.integer({ min: 0, max: 10_000 }), jobs: fc.integer({ min: 0, max: 3 }) }),
          {
            minLength: 1,
            maxLength: 6,
          },
        ),
        (ws) => {
          const now = 100_000;
          const workers = new Map<string, WorkerLiveness>();
          const assigned: JobRecord[] = [];
          ws.forEach((w, i) => {
            const id = `w${i}`;
            const jobs = Array.from({ length: w.jobs }, (_, j) => running(`j${i}-${j}`, id, 0));
            workers.set(
              id,
              worker(
                id,
                now - w.silentFor,
                jobs.map((r) => executionKey(r.job.job_id, 1)),
              ),
            );
            assigned.push(...jobs);
          });
          const { actions } = reconcile(input({ now, assigned, workers }));
          const reclaimed = new Set(actions.map((a) => (a.kind === 'reclaim' ? a.job_id : '')));
          ws.forEach((w, i) => {
            for (let j = 0; j < w.jobs; j++) expect(reclaimed.has(`j${i}-${j}`)).toBe(w.silentFor > WINDOW);
          });
          for (const a of actions) expect(a).toMatchObject({ kind: 'reclaim', ended: 'worker-lost' });
        },
      ),
    );
  });

  it('blames nobody during the grace after a start or a pause of its own (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: WINDOW }), fc.boolean(), (sinceStart, known) => {
        const now = 50_000;
        const rec = running('j', 'w', 0);
        const workers = known ? new Map([['w', worker('w', 0, ['j#1'])]]) : new Map();
        const { actions } = reconcile(
          input({ now, assigned: [rec], workers, liveness_from: now - sinceStart }),
        );
        expect(actions).toEqual([]);
      }),
    );
    // After the grace, the same silence is a loss.
    const out = reconcile(
      input({ now: 50_000, assigned: [running('j', 'w', 0)], liveness_from: 50_000 - WINDOW - 1 }),
    );
    expect(out.actions).toEqual([expect.objectContaining({ kind: 'reclaim', ended: 'worker-lost' })]);
  });

  it('reclaims an execution whose lease ran out, on a live worker, and nothing before (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20_000 }), fc.integer({ min: 0, max: 40_000 }), (lease, now) => {
        const rec = running('j', 'w', 0, lease);
        const workers = new Map([['w', worker('w', now, ['j#1'])]]);
        const { actions } = reconcile(input({ now, assigned: [rec], workers }));
        if (now > lease) expect(actions).toEqual([expect.objectContaining({ ended: 'lease-expired' })]);
        else expect(actions).toEqual([]);
      }),
    );
  });

  it('reclaims an execution its live worker keeps leaving out of its adverts, only after several beats', () => {
    const rec = running('j', 'w', 0);
    let absent = new Map<string, number>();
    const lost: number[] = [];
    for (let t = 1000; t <= 10_000; t += 1000) {
      const out = reconcile(
        input({ now: t, assigned: [rec], workers: new Map([['w', worker('w', t)]]), absent_since: absent }),
      );
      absent = out.absent_since;
      if (out.actions.length > 0) lost.push(t);
    }
    // The first advert that counts is 1.5 s after the assignment; then 3 beats + 1 s of absence.
    expect(lost[0]).toBe(6000);
    expect(
      reconcile(input({ now: 9000, assigned: [rec], workers: new Map([['w', worker('w', 9000, ['j#1'])]]) }))
        .actions,
    ).toEqual([]);
  });

  it('expires queued jobs past their deadline, leaves in-flight ones, and closes settled studies', () => {
    const q = newJobRecord(job('q'), 0, { ...policy, queueTimeoutMs: 100 });
    const f = newJobRecord(job('f'), 0, { ...policy, queueTimeoutMs: 100 });
    const study = { study_id: 's1', state: 'running', summary: null } as never;
    const { actions } = reconcile(
      input({ now: 100, queued: [q, f], inflight: new Set(['f']), settled: [study] }),
    );
    expect(actions).toEqual([
      { kind: 'expire', job_id: 'q' },
      { kind: 'close', study_id: 's1' },
    ]);
  });

  it('never runs two live executions of one job on the same worker, whatever happens (property)', () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('round' as const), dt: fc.integer({ min: 0, max: 3000 }) }),
      fc.record({ kind: fc.constant('beat' as const), w: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ kind: fc.constant('fail' as const), j: fc.integer({ min: 0, max: 3 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
        let now = 0;
        const jobs = Array.from({ length: 4 }, (_, i) => newJobRecord(job(`j${i}`), 0, policy));
        const seen = new Map<string, number>([0, 1, 2].map((i) => [`w${i}`, 0]));
        let absent = new Map<string, number>();
        for (const s of steps) {
          if (s.kind === 'beat') seen.set(`w${s.w}`, now);
          if (s.kind === 'fail') {
            const rec = jobs[s.j]!;
            const e = liveExecutions(rec)[0];
            if (e) jobs[s.j] = endExecution(rec, e.attempt, e.worker_id, 'failed', null, now, policy);
          }
          if (s.kind === 'round') {
            now += s.dt;
            const running = (w: string) =>
              jobs.flatMap((r) =>
                liveExecutions(r)
                  .filter((e) => e.worker_id === w)
                  .map((e) => executionKey(r.job.job_id, e.attempt)),
              );
            const workers = new Map([...seen].map(([w, t]) => [w, worker(w, t, running(w))]));
            const out = reconcile(
              input({
                now,
                assigned: jobs.filter((r) => r.status === 'assigned'),
                workers,
                absent_since: absent,
                liveness_from: 0,
              }),
            );
            absent = out.absent_since;
            for (const a of out.actions) {
              if (a.kind !== 'reclaim') continue;
              const i = jobs.findIndex((r) => r.job.job_id === a.job_id);
              jobs[i] = endExecution(jobs[i]!, a.attempt, a.worker_id, a.ended, a.reason, now, policy);
            }
            const views: WorkerView[] = [...workers.values()]
              .filter((w) => now - w.seen_at <= WINDOW)
              .map((w) => ({
                worker_id: w.worker_id,
                executor: 'process',
                slots: 2,
                slots_free: 2 - w.running.size,
                cpus: 2,
                memory_mb: 4096,
                images: [],
                price_per_cpu_s: 0,
                draining: false,
                established: false,
                trusted: false,
                audit: 1,
              }));
            const pending: PendingJob[] = jobs
              .filter((r) => r.status === 'queued')
              .map((r) => ({
                job_id: r.job.job_id,
                study_id: r.job.study_id,
                want: wanted(r),
                adaptive: false,
                needs_established: false,
                quorum: r.quorum,
                newcomers: 0,
                work: 1,
                max_price: null,
                window_s: 0,
                image: 'img',
                limits,
                priority: 0,
                enqueued_at: r.enqueued_at,
                not_before: r.not_before,
                avoid: workersToAvoid(r),
                exclude: liveExecutions(r).map((e) => e.worker_id),
              }));
            for (const p of place(pending, views, now)) {
              const i = jobs.findIndex((r) => r.job.job_id === p.job_id);
              jobs[i] = startExecution(jobs[i]!, p.worker_id, now, 5000);
            }
          }
          for (const r of jobs) {
            const live = liveExecutions(r).map((e) => e.worker_id);
            expect(new Set(live).size).toBe(live.length);
            expect(live.length).toBeLessThanOrEqual(1);
          }
        }
      }),
    );
  });
});
