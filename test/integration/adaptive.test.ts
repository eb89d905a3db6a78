// Adaptive replication step by step (the harness: real store, scheduler, dispatcher and results consumer against a
// real nats-server, a hand-moved clock, fake workers, and the audit draw in the test's hands).
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_TRUST } from '../../src/coordinator/reputation.ts';
import type { JobResult } from '../../src/models/api.ts';
import { digestOf } from '../../src/models/digest.ts';
import { outputDigest } from '../../src/models/job.ts';
import { jobIdOf } from '../../src/models/study-record.ts';
import { type FakeWorker, Harness, tinyStudy } from '../fixtures/harness.ts';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

/** A self-consistent lie: the first epoch's load halved, every digest recomputed (the worker signs it as its own). */
function forge(r: JobResult): JobResult {
  const results = r.results!.map((e, i) => {
    if (i > 0) return e;
    const { digest: _d, ...body } = e.result;
    const forged = { ...body, metrics: { ...body.metrics, load_kwh: body.metrics.load_kwh / 2 } };
    return { ...e, result: { ...forged, digest: digestOf(forged) } };
  });
  return { ...r, results, output_digest: outputDigest({ job_id: r.job_id, results }) };
}

/** Runs rounds and lets `respond` answer whatever each worker runs, until nothing runs and the job is terminal. */
async function drive(workers: FakeWorker[], respond: (w: FakeWorker, jobId: string) => Promise<unknown>) {
  for (let i = 0; i < 20; i++) {
    for (const w of workers) w.beat();
    await h!.round();
    const running = workers.flatMap((w) => [...w.running.values()].map((a) => [w, a.job.job_id] as const));
    if (running.length === 0) return;
    for (const [w, id] of running) await respond(w, id);
    await h!.settle();
  }
}

describe('adaptive replication', () => {
  it('runs a trusted provider’s jobs alone; an audit that catches it resets its trust and re-verifies its recent solo results', async () => {
    let draw = 0.99; // ≥ the audit probability: no audit
    h = await Harness.start({
      trust: { ...DEFAULT_TRUST, trustAfter: 2, minStake: 0, minAudit: 0.05 },
      rand: () => draw,
    });
    const a = await h.worker('a');
    const b = await h.worker('b');
    const c = await h.worker('c');
    // Each earns its standing in turn (the others away): two valid results of an unreplicated study.
    for (const w of [a, b, c]) {
      h.clock.advance(20_000);
      const warm = await h.submit(tinyStudy(2));
      await drive([w], (x, id) => x.finish(id));
      await h.until(() => h!.coordinator.store.study(warm.study_id)?.summary != null, 'a warm-up to close');
      expect(h.coordinator.standing.reputation(w.id)).toMatchObject({ consecutive_valid: 2 });
    }

    h.clock.advance(20_000); // b and c away
    a.beat();
    const { study_id } = await h.submit(tinyStudy(3, { verification: { quorum: 2, adaptive: true } }));
    const job = (n: number) => jobIdOf(study_id, n);
    // Jobs 0 and 1 run on a alone (trusted, not audited; b and c are away); it answers job 0 honestly and lies
    // about job 1. Job 2 waits its turn: a has one slot.
    for (const n of [0, 1]) {
      h.clock.advance(20_000);
      a.beat();
      await h.round();
      expect(h.job(job(n))).toMatchObject({ status: 'assigned' });
      expect(h.job(job(n))!.executions.filter((e) => e.ended === null)).toEqual([
        expect.objectContaining({ worker_id: a.id, solo: true }),
      ]);
      if (n === 1) draw = 0; // from here on every fresh job is audited (job 2 is placed as job 1 finishes)
      await a.finish(job(n), n === 1 ? { tamper: forge } : {});
      await h.until(() => h!.job(job(n))?.status === 'done', `job ${n} accepted alone`);
    }
    expect(h.job(job(1))!.result).toMatchObject({ worker_id: a.id, agreed: 1 });

    // Job 2 went to a as well, but audited: a replica is wanted. b and c are back; a lies again and is outvoted once
    // the third provider breaks the tie.
    expect(h.job(job(2))).toMatchObject({ status: 'queued' });
    expect(h.job(job(2))!.executions).toEqual([expect.objectContaining({ worker_id: a.id, solo: false })]);
    await drive([a, b, c], (w, id) => w.finish(id, w === a ? { tamper: forge } : {}));
    await h.until(() => h!.coordinator.store.study(study_id)?.summary != null, 'the study to close');

    // Caught: a's trust is gone, and job 1 — accepted on its word alone — was reopened and decided by others.
    expect(h.coordinator.standing.reputation(a.id)).toMatchObject({ consecutive_valid: 0, invalid: 2 });
    const j1 = h.job(job(1))!;
    expect(j1).toMatchObject({ status: 'done', quorum: 2 });
    expect(j1.result!.worker_id).not.toBe(a.id);
    expect(j1.executions.find((e) => e.worker_id === a.id)!.verdict).toBe('invalid');
    // Job 0's honest solo result was confirmed by the re-verification and stays valid.
    const j0 = h.job(job(0))!;
    expect(j0).toMatchObject({ status: 'done', quorum: 2, result: { worker_id: a.id, agreed: 2 } });
    expect(h.coordinator.studies.status(study_id).state).toBe('done');
  });
});
