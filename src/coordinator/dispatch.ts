import { errors, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { type Assignment, AssignReply, type CancelJob, type ExecutionRef } from '../models/api.ts';
import type { JobRecord } from '../models/job-record.ts';
import { decode } from '../transport/connect.ts';
import { subjects } from '../transport/subjects.ts';
import type { Clock } from './clock.ts';
import { endExecution, expireQueued, liveExecution, type RetryPolicy, startExecution } from './job-state.ts';
import type { Placement } from './placement.ts';
import type { Action } from './reconcile.ts';
import type { Commit, StateStore } from './store.ts';
import type { WorkerRegistry } from './workers.ts';

/** Assignment requests stay well under NATS's 1 MiB message limit. */
const MAX_ASSIGN_BYTES = 512 * 1024;
const encoder = new TextEncoder();

export interface DispatchDeps {
  nc: NatsConnection;
  store: StateStore;
  registry: WorkerRegistry;
  clock: Clock;
  retry: RetryPolicy;
  /** Added to a job's timeout to form its lease: room for container start-up and result upload. */
  leaseGraceMs: number;
  /** How long a worker has to answer an assignment. */
  assignTimeoutMs: number;
  log: Logger;
  /** Closes a study whose jobs all ended. */
  close(studyId: string): Promise<void>;
  /** Sends the events of what was just stored along with the next request. */
  flushEvents(): void;
}

/**
 * The single applier of the scheduler's plans: reclaims and expiries through `store.update`, then placements as
 * executions recorded in the store before the worker is asked to take them (one request per worker and round), and
 * the worker's answers. Cancels to workers follow from committed changes (an execution ended under a worker that
 * may still run it), never ride along on a save.
 */
export class Dispatcher {
  /** Jobs being assigned right now, and to which workers (counted against their slots until recorded). */
  readonly inflight = new Map<string, Set<string>>();
  /** Public-goods executions (`<job_id>#<attempt>`) being preempted right now: no round picks them again. */
  readonly preempting = new Set<string>();
  private readonly d: DispatchDeps;

  constructor(deps: DispatchDeps) {
    this.d = deps;
  }

  /** Applies reconciler actions. */
  async apply(actions: readonly Action[]): Promise<void> {
    const { store, clock, retry } = this.d;
    const applied = await Promise.allSettled(
      actions.map(async (a) => {
        if (a.kind === 'close') return this.d.close(a.study_id);
        if (a.kind === 'expire')
          return void (await store.update(a.job_id, (r) => expireQueued(r, clock.now())));
        if (a.kind === 'preempt') return this.preempt(a, a.worker_id, a.reason);
        this.d.log.warn(
          { job_id: a.job_id, attempt: a.attempt, worker_id: a.worker_id, ended: a.ended },
          a.reason,
        );
        await store.update(a.job_id, (r) =>
          endExecution(r, a.attempt, a.worker_id, a.ended, a.reason, clock.now(), retry),
        );
      }),
    );
    const failed = applied.filter((a) => a.status === 'rejected');
    if (failed.length > 0) throw new Error(`${failed.length} of ${actions.length} actions not applied`);
  }

  /**
   * Ends a public-goods execution as `preempted`: no attempt used, nothing paid, the job back in the queue. The commit
   * tells its worker to stop it (`onCommit`); an assignment that takes its slot names it too.
   */
  private async preempt(e: ExecutionRef, workerId: string, reason: string): Promise<void> {
    const { store, clock, retry, log } = this.d;
    const key = `${e.job_id}#${e.attempt}`;
    this.preempting.add(key);
    try {
      log.info({ job_id: e.job_id, attempt: e.attempt, worker_id: workerId }, `preempted: ${reason}`);
      await store.update(e.job_id, (r) =>
        endExecution(r, e.attempt, workerId, 'preempted', reason, clock.now(), retry),
      );
    } finally {
      this.preempting.delete(key);
    }
  }

  /** Places executions: one assignment request per worker. */
  async place(placements: readonly Placement[]): Promise<void> {
    const perWorker = new Map<string, Placement[]>();
    for (const p of placements) {
      const list = perWorker.get(p.worker_id);
      if (list) list.push(p);
      else perWorker.set(p.worker_id, [p]);
    }
    await Promise.all([...perWorker].map(([w, ps]) => this.assign(w, ps)));
  }

  /**
   * Records the executions, then asks the worker to take them in one request. A decline puts a job back in the queue
   * without using up an attempt; a worker nobody answers for (no responders) is lost: its executions end as such
   * (nothing ran, so that does not use up an attempt either, but it backs off) and it gets nothing more until it is
   * heard from again. A request that times out leaves its executions to the reconciler (the worker may have taken
   * them).
   */
  private async assign(workerId: string, placements: readonly Placement[]): Promise<void> {
    const { store, clock } = this.d;
    for (const p of placements) {
      const ws = this.inflight.get(p.job_id);
      if (ws) ws.add(workerId);
      else this.inflight.set(p.job_id, new Set([workerId]));
    }
    try {
      // The public-goods executions these take the place of give way first, so the slot is free when the worker hears.
      await Promise.all(
        placements.flatMap((p) =>
          (p.preempts ?? []).map((v) =>
            this.preempt(v, workerId, `its slot went to paid job ${p.job_id}`).catch((e) =>
              this.d.log.error({ job_id: v.job_id, err: (e as Error).message }, 'preemption not recorded'),
            ),
          ),
        ),
      );
      const leased = await Promise.all(
        placements.map((p) =>
          store
            .update(p.job_id, (r) =>
              startExecution(r, workerId, clock.now(), r.job.limits.timeout_s * 1000 + this.d.leaseGraceMs, {
                pay: p.pay,
                unreplicated: p.unreplicated,
              }),
            )
            .catch((e) => {
              this.d.log.error({ job_id: p.job_id, err: (e as Error).message }, 'execution not recorded');
              return undefined;
            }),
        ),
      );
      const assignments: Assignment[] = [];
      leased.forEach((rec, i) => {
        const e = rec?.executions.find((x) => x.worker_id === workerId && x.ended === null);
        if (rec && e)
          assignments.push({
            job: rec.job,
            attempt: e.attempt,
            lease_until: e.lease_until,
            // The worker stops these first: the executions this one takes the slot of.
            preempts: [...(placements[i]!.preempts ?? [])],
          });
      });
      this.d.flushEvents(); // in the same socket write as the request
      for (const batch of byteBatches(assignments, MAX_ASSIGN_BYTES)) {
        // A job cancelled (or reclaimed) since its execution was recorded is not sent: its cancel went out already.
        const still = batch.filter(({ item: a }) => isLive(store.job(a.job.job_id), a.attempt, workerId));
        if (still.length > 0) await this.request(workerId, still);
      }
    } finally {
      for (const p of placements) {
        const ws = this.inflight.get(p.job_id);
        ws?.delete(workerId);
        if (ws?.size === 0) this.inflight.delete(p.job_id);
      }
    }
  }

  private async request(workerId: string, sent: { item: Assignment; json: string }[]): Promise<void> {
    const { store, clock, retry, log } = this.d;
    const batch = sent.map((s) => s.item);
    // An AssignRequest, from the assignments' JSON as measured.
    const body = `{"assignments":[${sent.map((s) => s.json).join(',')}]}`;
    const ended = new Map<string, { ended: 'declined' | 'worker-lost'; reason: string }>();
    try {
      const msg = await this.d.nc.request(subjects.assign(workerId), encoder.encode(body), {
        timeout: this.d.assignTimeoutMs,
      });
      const reply = decode(msg.data, AssignReply, 'assign reply');
      const answered = new Map(reply.answers.map((a) => [`${a.job_id}#${a.attempt}`, a]));
      for (const a of batch) {
        const answer = answered.get(`${a.job.job_id}#${a.attempt}`);
        if (!answer?.accepted)
          ended.set(a.job.job_id, { ended: 'declined', reason: answer?.reason ?? 'no answer for this job' });
      }
    } catch (err) {
      if (err instanceof errors.RequestError && err.isNoResponders()) {
        log.warn({ worker_id: workerId, jobs: batch.length }, 'worker does not answer assignments: lost');
        this.d.registry.markLost(workerId);
        for (const a of batch)
          ended.set(a.job.job_id, { ended: 'worker-lost', reason: `${workerId} is not listening` });
      } else {
        log.warn(
          { worker_id: workerId, err: (err as Error).message },
          'assignment unanswered; left to the reconciler',
        );
      }
    }
    await Promise.all(
      batch
        .filter((a) => ended.has(a.job.job_id))
        .map((a) => {
          const why = ended.get(a.job.job_id)!;
          return store
            .update(a.job.job_id, (r) =>
              endExecution(r, a.attempt, workerId, why.ended, why.reason, clock.now(), retry, {
                counted: false,
              }),
            )
            .catch((e) =>
              log.error({ job_id: a.job.job_id, err: (e as Error).message }, 'decline not recorded'),
            );
        }),
    );
  }

  /** An execution ended while its worker may still run it (cancelled, reclaimed): tell the worker to stop. */
  readonly onCommit = (c: Commit): void => {
    if (c.kind !== 'job') return;
    for (const e of c.before.executions) {
      if (e.ended !== null) continue;
      const now = c.after.executions.find((x) => x.attempt === e.attempt);
      const why = now?.ended ?? (c.after.status === 'cancelled' ? 'cancelled' : null);
      if (why !== 'cancelled' && why !== 'lease-expired' && why !== 'worker-lost' && why !== 'preempted')
        continue;
      try {
        this.d.nc.publish(
          subjects.cancel(e.worker_id),
          JSON.stringify({
            job_id: c.id,
            attempt: e.attempt,
            ...(why === 'preempted' && now?.reason ? { reason: `preempted: ${now.reason}` } : {}),
          } satisfies z.infer<typeof CancelJob>),
        );
      } catch {
        // The connection is closing; the worker's own lease and our reconciler cover it.
      }
    }
  };
}

const isLive = (rec: JobRecord | undefined, attempt: number, workerId: string) =>
  rec !== undefined && liveExecution(rec, attempt, workerId) !== undefined;

/**
 * Splits items into runs whose JSON stays under `limit` bytes (an item bigger than that goes alone), each item with
 * its JSON: measured once, and sent as it is.
 */
export function byteBatches<T>(items: readonly T[], limit: number): { item: T; json: string }[][] {
  const out: { item: T; json: string }[][] = [];
  let batch: { item: T; json: string }[] = [];
  let bytes = 0;
  for (const item of items) {
    const json = JSON.stringify(item);
    if (batch.length > 0 && bytes + json.length > limit) {
      out.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push({ item, json });
    bytes += json.length;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}
