import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { WorkerAd } from '../models/worker.ts';
import { decode } from '../transport/connect.ts';
import type { Resources } from '../transport/resources.ts';
import { subjects } from '../transport/subjects.ts';
import type { Clock } from './clock.ts';
import { readAll, safeJson } from './kv-read.ts';
import { lossWindowMs, type WorkerLiveness } from './reconcile.ts';

interface Known {
  ad: WorkerAd;
  seenAt: number;
  running: Set<string>;
  /** Heard from on the bus (not only read from the bucket): only such a worker is given work. */
  heard: boolean;
}

/**
 * The worker registry: what each worker last advertised and when it was heard from (the coordinator's clock, never
 * the worker's). On start it reads the `workers` bucket, where every worker keeps its last advert, so a restarted
 * coordinator knows its workers at once instead of after a heartbeat.
 */
export class WorkerRegistry {
  private readonly workers = new Map<string, Known>();
  private sub: Subscription | undefined;
  private readonly joined: (() => void)[] = [];
  private readonly clock: Clock;
  private readonly missed: number;
  private readonly log: Logger;

  constructor(opts: { clock: Clock; missedHeartbeats: number; log: Logger }) {
    this.clock = opts.clock;
    this.missed = opts.missedHeartbeats;
    this.log = opts.log;
  }

  async start(nc: NatsConnection, resources: Pick<Resources, 'kv'>): Promise<void> {
    const now = this.clock.now();
    const stored = await readAll(resources.kv.workers).catch((e) => {
      this.log.warn(
        { err: (e as Error).message },
        'stored worker adverts unreadable; waiting for heartbeats',
      );
      return [];
    });
    for (const e of stored) {
      const ad = WorkerAd.safeParse(safeJson(e.value));
      // Its age is unknown to our clock: counted from now, it is lost after the usual window if it is gone. Its
      // executions are judged by it, but it gets no new work until it is heard from: it may be long gone.
      if (ad.success) this.workers.set(ad.data.worker_id, known(ad.data, now, false));
    }
    this.sub = nc.subscribe(subjects.heartbeatAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          this.heard(decode(msg.data, WorkerAd, 'worker advert'), this.clock.now());
        } catch {
          // not a worker we can schedule on
        }
      },
    });
  }

  stop(): void {
    this.sub?.unsubscribe();
  }

  /** Called when a worker is heard from for the first time (or again after being lost). */
  onJoin(fn: () => void): void {
    this.joined.push(fn);
  }

  /** Handles one advert (exported for the harness, which has no worker processes). */
  heard(ad: WorkerAd, now: number): void {
    const before = this.workers.get(ad.worker_id);
    const isNew = !before?.heard || this.lost(before, now);
    this.workers.set(ad.worker_id, known(ad, now, true));
    if (isNew) for (const fn of this.joined) fn();
  }

  /** A worker that did not answer an assignment at all (no responders): lost until it is heard from again. */
  markLost(workerId: string): void {
    const w = this.workers.get(workerId);
    if (w) w.seenAt = Number.NEGATIVE_INFINITY;
  }

  private lost(w: Known, now: number): boolean {
    return now - w.seenAt > lossWindowMs(w.ad.interval_ms, this.missed);
  }

  /** What the reconciler needs of every worker heard from. */
  liveness(): Map<string, WorkerLiveness> {
    const out = new Map<string, WorkerLiveness>();
    for (const [id, w] of this.workers) {
      out.set(id, { worker_id: id, seen_at: w.seenAt, interval_ms: w.ad.interval_ms, running: w.running });
    }
    return out;
  }

  /** Adverts of the workers heard from and not lost, with how long ago each was heard from. */
  live(now = this.clock.now()): { ad: WorkerAd; ago: number }[] {
    const out: { ad: WorkerAd; ago: number }[] = [];
    for (const [id, w] of this.workers) {
      if (!w.heard || this.lost(w, now)) {
        // Long gone: forget it (it rejoins with its next heartbeat).
        if (now - w.seenAt > 10 * lossWindowMs(w.ad.interval_ms, this.missed)) this.workers.delete(id);
        continue;
      }
      out.push({ ad: w.ad, ago: now - w.seenAt });
    }
    return out;
  }

  isDraining(workerId: string): boolean {
    return this.workers.get(workerId)?.ad.draining ?? false;
  }

  /** Every image a live worker holds. */
  images(): Set<string> {
    const out = new Set<string>();
    for (const { ad } of this.live()) for (const i of ad.images) out.add(i);
    return out;
  }
}

const known = (ad: WorkerAd, seenAt: number, heard: boolean): Known => ({
  ad,
  seenAt,
  // What the worker accounts for: running, or its result stored and on its way to us.
  running: new Set([...ad.running, ...ad.reported]),
  heard,
});
