// The coordinator's loop, step by step, through the harness: real store, registry, reconciler, placement, dispatcher
// and results consumer against a real nats-server; a hand-moved clock and fake workers.
import { afterEach, describe, expect, it } from 'vitest';
import { jobKey, stateJson } from '../../src/coordinator/jobspecs.ts';
import { ARCHIVE_AFTER_MS } from '../../src/coordinator/studies.ts';
import { JobEvents, StudyEvent } from '../../src/models/api.ts';
import { jobIdOf } from '../../src/models/study-record.ts';
import { STREAMS } from '../../src/transport/resources.ts';
import { subjects } from '../../src/transport/subjects.ts';
import { workerBus } from '../../src/transport/worker-bus.ts';
import { Harness, tinyStudy } from '../fixtures/harness.ts';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

const first = (studyId: string) => jobIdOf(studyId, 0);

describe('the loop', () => {
  it('places, accepts a verified result, closes and archives the study; events follow the commits', async () => {
    h = await Harness.start();
    const w = await h.worker('a');
    const seen: string[] = [];
    const sub = h.nc.subscribe(subjects.eventsAll, {
      callback: (_e, m) => {
        const body = m.json();
        const ev = JobEvents.safeParse(body);
        if (ev.success) for (const e of ev.data.events) seen.push(`job ${e.status}`);
        const st = StudyEvent.safeParse(body);
        if (st.success) seen.push(`study ${st.data.state}`);
      },
    });
    const { study_id } = await h.submit(tinyStudy(1));
    await h.round();
    expect(h.job(first(study_id))).toMatchObject({ status: 'assigned', attempts: 1 });
    expect(w.running.size).toBe(1);
    await w.finish(first(study_id));
    await h.until(() => h!.coordinator.store.study(study_id)?.summary != null, 'the study to close');
    const status = h.coordinator.studies.status(study_id);
    expect(status).toMatchObject({ state: 'done', epochs: { total: 1, done: 1 } });
    // Closed at once; archived later: out of memory and out of KV, its records in its jobspecs object, its results
    // still there.
    expect(h.job(first(study_id))).toMatchObject({ status: 'done' });
    await h.coordinator.studies.archiveFinished();
    expect(h.coordinator.store.study(study_id)!.archived).toBe(false); // not yet: results are often read right away
    h.clock.advance(ARCHIVE_AFTER_MS);
    await h.coordinator.studies.archiveFinished();
    expect(h.coordinator.store.study(study_id)!.archived).toBe(true);
    expect(h.job(first(study_id))).toBeUndefined();
    expect(await h.resources.kv.jobs.get(`${study_id}.${first(study_id)}`)).toBeNull();
    const page = await h.coordinator.studies.results(study_id, 0, 10);
    expect(page.rows).toHaveLength(1);
    expect(page.study).not.toBeNull();
    expect((await h.coordinator.studies.results(study_id, 1, 10)).study).toBeNull();
    await h.until(() => seen.includes('study done'), 'the study event');
    expect(seen).toEqual(['study running', 'job assigned', 'job done', 'study done']);
    sub.unsubscribe();
  });

  it('a silent worker is lost after three heartbeats; its execution is reclaimed and runs elsewhere', async () => {
    h = await Harness.start();
    const a = await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(1));
    await h.round();
    const id = first(study_id);
    expect(h.job(id)!.executions[0]!.worker_id).toBe(a.id);
    const b = await h.worker('b');
    h.clock.advance(3000); // a stays silent; b keeps beating
    b.beat();
    await h.round();
    expect(h.job(id)!.status).toBe('assigned'); // not yet: 3 × 1 s + 250 ms
    h.clock.advance(500);
    b.beat();
    await h.round();
    const rec = h.job(id)!;
    expect(rec.executions[0]).toMatchObject({ ended: 'worker-lost', worker_id: a.id });
    expect(rec).toMatchObject({ status: 'queued', failures: 1 });
    h.clock.advance(1000); // the backoff
    b.beat();
    await h.round();
    expect(h.job(id)!.executions.at(-1)).toMatchObject({ worker_id: b.id, ended: null, attempt: 2 });
  });

  it('a live worker that keeps leaving an execution out of its adverts loses it (a lost assignment)', async () => {
    h = await Harness.start();
    const a = await h.worker('a', 2);
    const { study_id } = await h.submit(tinyStudy(2));
    await h.round();
    const [j0, j1] = [jobIdOf(study_id, 0), jobIdOf(study_id, 1)];
    expect(a.running.size).toBe(2);
    // j1's assignment is "lost": the worker forgets it and keeps saying so; j0 it keeps running.
    a.running.delete([...a.running.keys()].find((k) => k.startsWith(j1))!);
    for (let t = 0; t < 3; t++) {
      h.clock.advance(1000);
      a.beat();
      await h.round();
    }
    expect(h.job(j1)!.executions[0]!.ended).toBeNull(); // absent, but not for long enough yet
    for (let t = 0; t < 3; t++) {
      h.clock.advance(1000);
      a.beat();
      await h.round();
    }
    expect(h.job(j1)!.executions[0]).toMatchObject({ ended: 'worker-lost', reason: /assignment lost/ });
    expect(h.job(j0)!.executions[0]!.ended).toBeNull();
  });

  it('an expired lease is reclaimed, and the worker told to stop', async () => {
    h = await Harness.start({ leaseGraceMs: 1000 });
    const a = await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(1, { limits: { timeout_s: 1 } }));
    await h.round();
    h.clock.advance(1500);
    a.beat();
    await h.round();
    expect(h.job(first(study_id))!.executions[0]!.ended).toBeNull();
    h.clock.advance(600);
    a.beat();
    await h.round();
    expect(h.job(first(study_id))!.executions[0]).toMatchObject({ ended: 'lease-expired' });
    await h.until(() => a.cancelled.length === 1, 'the cancel');
    expect(a.cancelled).toEqual([`${first(study_id)}#1`]);
  });

  it('does not blame workers it has not heard from yet after a restart (the grace), then does', async () => {
    h = await Harness.start();
    const a = await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(1));
    await h.round();
    await h.stopCoordinator();
    await h.resources.kv.workers.purge(a.id).catch(() => {});
    await h.startCoordinator();
    await h.round();
    expect(h.job(first(study_id))).toMatchObject({ status: 'assigned' });
    h.clock.advance(4000);
    await h.round();
    expect(h.job(first(study_id))!.executions[0]).toMatchObject({ ended: 'worker-lost' });
  });

  it('after a restart, a worker known only from the bucket gets work once heard from; a bad stored advert is skipped', async () => {
    h = await Harness.start();
    const a = await h.worker('a');
    await h.resources.kv.workers.put(a.id, JSON.stringify(a.advert()));
    await h.resources.kv.workers.put('garbage', '{not json');
    await h.stopCoordinator();
    await h.startCoordinator();
    const { study_id } = await h.submit(tinyStudy(1));
    await h.round();
    expect(h.job(first(study_id))).toMatchObject({ status: 'queued', attempts: 0 });
    a.beat();
    await h.round();
    expect(h.job(first(study_id))).toMatchObject({ status: 'assigned', attempts: 1 });
  });

  it('a job no worker takes within its queue timeout fails, and its study closes as failed', async () => {
    h = await Harness.start();
    const { study_id } = await h.submit(tinyStudy(1, { queue_timeout_s: 1 }));
    await h.round();
    expect(h.job(first(study_id))).toMatchObject({ status: 'queued' });
    h.clock.advance(1000);
    await h.round();
    expect(h.job(first(study_id))).toMatchObject({ status: 'failed', reason: /queue timeout/ });
    await h.until(() => h!.coordinator.store.study(study_id)?.summary != null, 'the study to close');
    expect(h.coordinator.studies.status(study_id)).toMatchObject({
      state: 'failed',
      failures: [{ reasons: [expect.stringMatching(/queue timeout/)] }],
    });
  });

  it('a worker with nobody listening is lost at once, not declined in a loop', async () => {
    h = await Harness.start();
    const ghost = await h.worker('ghost');
    ghost.disconnect(); // heard from, but its assignment subject has no subscriber
    const { study_id } = await h.submit(tinyStudy(1));
    for (let i = 0; i < 20; i++) await h.round();
    const rec = h.job(first(study_id))!;
    expect(rec.attempts).toBe(1);
    // Nothing ran: no attempt used up, but the job backs off and the worker gets nothing until heard from again.
    expect(rec).toMatchObject({ failures: 0, free_ends: 1 });
    expect(rec.executions[0]).toMatchObject({ ended: 'worker-lost', reason: /not listening/ });
    expect(h.coordinator.registry.live()).toEqual([]);
  });

  it('a worker that declines again and again backs the job off, without using up attempts', async () => {
    h = await Harness.start();
    const w = await h.worker('picky');
    w.accept = () => false;
    const { study_id } = await h.submit(tinyStudy(1));
    for (let i = 0; i < 50; i++) await h.round(); // no time passes: only the first decline requeues at once
    const rec = h.job(first(study_id))!;
    expect(rec.attempts).toBe(2);
    expect(rec).toMatchObject({ status: 'queued', failures: 0, free_ends: 2 });
  });

  it('a cancel nobody asked for counts against the worker; a drain hand-back does not', async () => {
    h = await Harness.start();
    const w = await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(1, { max_attempts: 5 }));
    const id = first(study_id);
    await h.round();
    await w.finish(id, { status: 'cancelled', reason: 'cancelled by the coordinator' });
    await h.until(() => h!.job(id)!.status === 'queued', 'the requeue');
    expect(h.job(id)).toMatchObject({ failures: 1 });
    h.clock.advance(1000);
    w.beat();
    await h.round();
    w.draining = true;
    w.beat();
    await w.finish(id, { status: 'cancelled', reason: 'worker draining: handed back' });
    await h.until(() => h!.job(id)!.status === 'queued', 'the hand-back');
    expect(h.job(id)).toMatchObject({ failures: 1, free_ends: 1 });
  });

  it('a failed write neither loses the result nor acknowledges it: it is retried and accepted', async () => {
    h = await Harness.start();
    const w = await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(1));
    await h.round();
    const kv = h.resources.kv.jobs;
    const update = kv.update.bind(kv);
    let failures = 1;
    kv.update = (...args: Parameters<typeof kv.update>) =>
      failures-- > 0 ? Promise.reject(new Error('simulated storage timeout')) : update(...args);
    await w.finish(first(study_id));
    await h.until(() => h!.coordinator.store.study(study_id)?.state === 'done', 'the result after a retry');
    expect(failures).toBeLessThan(0);
  });

  it('a transient output read failure is retried, never blamed on the provider', async () => {
    h = await Harness.start();
    const w = await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(1));
    await h.round();
    const id = first(study_id);
    const jsm = h.resources.jsm;
    const getMessage = jsm.streams.getMessage.bind(jsm.streams);
    let failures = 2;
    jsm.streams.getMessage = ((stream: string, q: Parameters<typeof getMessage>[1]) =>
      stream === STREAMS.outputs && failures-- > 0
        ? Promise.reject(new Error('simulated read timeout'))
        : getMessage(stream, q)) as typeof jsm.streams.getMessage;
    await w.finish(id, {
      tamper: (r) => {
        // As a worker does with a large output: in parts on its own OUTPUTS subjects, referenced by their count.
        const bytes = new TextEncoder().encode(JSON.stringify({ job_id: id, results: r.results }));
        void workerBus(h!.nc, w.id).putOutput(id, r.attempt, bytes);
        return { ...r, results: null, output_object: { parts: 1, bytes: bytes.length } };
      },
    });
    await h.until(() => h!.coordinator.store.study(study_id)?.state === 'done', 'the result', 10_000);
    const status = h.coordinator.studies.status(study_id);
    expect(status.failures).toEqual([]);
  });

  it('cancel reaches every job even when a record changed underneath, and leaves a finished study alone', async () => {
    h = await Harness.start();
    await h.worker('a');
    const { study_id } = await h.submit(tinyStudy(3));
    await h.round();
    // Another writer bumps a job's revision: the store's next write conflicts, reloads and applies again.
    const rec = h.job(jobIdOf(study_id, 2))!;
    await h.resources.kv.jobs.put(jobKey(rec), stateJson(rec));
    const status = await h.coordinator.studies.cancel(study_id);
    expect(status).toMatchObject({ state: 'cancelled', jobs: { total: 3, cancelled: 3 } });

    // Every running execution was told to stop.
    await h.until(() => h!.workers[0]!.running.size === 0, 'the cancels');
    const done = await h.submit(tinyStudy(1));
    await h.round();
    await h.workers[0]!.finish(first(done.study_id));
    await h.until(() => h!.coordinator.store.study(done.study_id)?.state === 'done', 'the second study');
    expect((await h.coordinator.studies.cancel(done.study_id)).state).toBe('done');
    expect(h.coordinator.store.study(done.study_id)!.state).toBe('done');
  });

  it('a restart loads live studies with their states, archived ones as records, and resumes', async () => {
    h = await Harness.start();
    const w = await h.worker('a', 4);
    const finished = await h.submit(tinyStudy(1));
    await h.round();
    await w.finish(first(finished.study_id));
    await h.until(() => h!.coordinator.store.study(finished.study_id)?.summary != null, 'closing');
    h.clock.advance(ARCHIVE_AFTER_MS);
    await h.coordinator.studies.archiveFinished();
    w.beat();
    const live = await h.submit(tinyStudy(3));
    await h.round();
    await h.stopCoordinator();
    await h.startCoordinator();
    expect(h.coordinator.store.size()).toEqual({ jobs: 3, studies: 2 });
    expect(h.coordinator.studies.status(finished.study_id)).toMatchObject({ state: 'done' });
    expect(h.job(jobIdOf(live.study_id, 0))).toMatchObject({ status: 'assigned' });
    w.beat();
    for (const key of [...w.running.keys()]) await w.finish(key.split('#')[0]!);
    await h.until(() => h!.coordinator.store.study(live.study_id)?.state === 'done', 'the live study');
    expect((await h.coordinator.studies.results(finished.study_id, 0, 10)).rows).toHaveLength(1);
  });
});
