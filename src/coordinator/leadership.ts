/**
 * One active coordinator among several: a lease in KV `leader`, taken with `create` (only one can), kept with
 * `update` on its revision every `renewMs`, and lost when it is not renewed within the bucket's TTL (the entry ages
 * out). The revision that took the lease is the leader's **term**.
 *
 * Fencing, so a deposed leader that wakes up cannot write:
 * - by itself: it writes only while its lease is surely still its own, i.e. within `ttl/2` of sending its last
 *   successful renewal (the server's entry lives `ttl` from that renewal's write, which came later), measured on the
 *   monotonic clock, so a pause of any length ends its writes (`check`). A renewal that cannot get through (the bus
 *   failing over) only suspends writes; one refused on its revision (someone else took the lease, or it lapsed)
 *   loses it for good;
 * - by the server: a new leader revokes the previous leader's NATS user (each coordinator process connects as a user
 *   of its own), so nats-server disconnects it and refuses its every write from then on, whatever its clock says.
 */
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import { z } from 'zod';
import { isConflict } from './cas.ts';

export const LEASE_KEY = 'coordinator';

/** What the lease says about its holder. */
export const LeaseValue = z.strictObject({
  /** The holding process (host and pid), for people. */
  holder: z.string(),
  /** The holder's NATS user key: what a successor revokes. */
  user_key: z.string().nullable(),
  /** ms since the epoch, the holder's clock, when it took the lease. */
  since: z.number(),
});
export type LeaseValue = z.infer<typeof LeaseValue>;

/** A write attempted by a coordinator that no longer surely holds the lease. Match on the class. */
export class FencedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FencedError';
  }
}

export interface LeadershipOptions {
  kv: KV;
  self: LeaseValue;
  /** The bucket's TTL: a lease not renewed for this long is gone. */
  ttlMs: number;
  renewMs?: number;
  /** How often a standby looks whether the lease is free. */
  pollMs?: number;
  log: Logger;
  /** Called once when the lease is lost (a renewal refused or too late): the process must stop writing. */
  onLost(reason: string): void;
  /**
   * Whether a holder is known to be gone (say, a dead process on this machine): its lease is then taken at once
   * rather than after the TTL. Default: never known.
   */
  gone?(holder: LeaseValue): boolean;
  /** Called once if another coordinator holds the lease when this one asks (it waits as a standby). */
  onStandby?(holder: string | null): void;
  /** Monotonic ms (default performance.now). */
  now?: () => number;
}

export interface Term {
  /** The KV revision that took the lease. */
  term: number;
  /** Who held it before, if anyone was seen holding it (to revoke). */
  previous: LeaseValue | null;
}

export class Leadership {
  private readonly o: LeadershipOptions;
  private readonly now: () => number;
  private revision = 0;
  private taken = 0;
  /** Monotonic time until which writes are allowed. */
  private writableUntil = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  private stopped = false;
  /** Past its write deadline without a renewal yet (logged once per spell). */
  private suspended = false;

  constructor(o: LeadershipOptions) {
    this.o = o;
    this.now = o.now ?? (() => performance.now());
  }

  /** Waits (as a standby) until this process holds the lease; resolves with its term. */
  async acquire(signal?: AbortSignal): Promise<Term> {
    const { kv, log } = this.o;
    let previous: LeaseValue | null = null;
    let waiting = false;
    for (;;) {
      signal?.throwIfAborted();
      const sentAt = this.now();
      try {
        this.revision = await kv.create(LEASE_KEY, JSON.stringify(this.o.self));
        this.taken = this.revision;
        this.writableUntil = sentAt + this.o.ttlMs / 2;
        this.timer = setInterval(() => void this.renew(), this.o.renewMs ?? Math.max(100, this.o.ttlMs / 6));
        log.info({ term: this.revision, previous: previous?.holder ?? null }, 'took the coordinator lease');
        return { term: this.revision, previous };
      } catch (e) {
        // The bus away (a failover, a restart) is no reason for a standby to give up: it asks again.
        if (!isConflict(e)) log.warn({ err: (e as Error).message }, 'cannot reach the lease yet; retrying');
      }
      const held = await kv.get(LEASE_KEY).catch(() => null);
      if (held?.operation === 'PUT') {
        const v = LeaseValue.safeParse(safeJson(held.string()));
        if (v.success) previous = v.data;
        if (v.success && this.o.gone?.(v.data)) {
          log.info({ holder: v.data.holder }, 'the lease holder is gone; taking over now');
          await kv.delete(LEASE_KEY, { previousSeq: held.revision }).catch(() => {});
          continue;
        }
        if (!waiting) {
          waiting = true;
          log.info({ holder: previous?.holder ?? null }, 'standby: another coordinator holds the lease');
          this.o.onStandby?.(previous?.holder ?? null);
        }
      }
      await new Promise((r) => setTimeout(r, this.o.pollMs ?? 250));
    }
  }

  /** Throws a FencedError unless writes are still surely this leader's. */
  check(): void {
    if (this.lost || this.now() > this.writableUntil) {
      if (!this.lost && !this.suspended) {
        this.suspended = true;
        this.o.log.warn({}, 'lease not renewed in time: no writes until it is');
      }
      throw new FencedError('this coordinator does not surely hold the lease now: it may not write');
    }
    this.suspended = false;
  }

  /** The revision that took the lease (again, after a lapse nobody else used). */
  get term(): number {
    return this.taken;
  }

  private async renew(): Promise<void> {
    if (this.lost || this.stopped) return;
    const sentAt = this.now();
    try {
      this.revision = await this.o.kv.update(LEASE_KEY, JSON.stringify(this.o.self), this.revision);
      if (sentAt > this.writableUntil)
        this.o.log.info({ term: this.revision }, 'lease renewed: writing again');
      this.writableUntil = sentAt + this.o.ttlMs / 2;
    } catch (e) {
      if (isConflict(e)) await this.retake(sentAt);
      // Otherwise the bus is away (a stream changing leader takes seconds): `check` refuses writes once the deadline
      // passes, and the next renewal that gets through on our revision proves nobody held the lease meanwhile.
    }
  }

  /**
   * The lease is not ours on our revision: taken by another, or aged out while the bus was away (a failover longer
   * than the TTL). Taking it again is safe only if nobody held it meanwhile: the bucket's sequence counts every
   * lease write, so a fresh `create` that lands right after our last write (revision + 1) proves nobody did, and what
   * this process holds in memory is current. Anything else loses the lease for good.
   */
  private async retake(sentAt: number): Promise<void> {
    try {
      const rev = await this.o.kv.create(LEASE_KEY, JSON.stringify(this.o.self));
      if (rev === this.revision + 1) {
        this.revision = rev;
        this.taken = rev;
        this.writableUntil = sentAt + this.o.ttlMs / 2;
        this.o.log.warn(
          { term: rev },
          'the lease lapsed while the bus was away; taken again (nobody held it meanwhile)',
        );
        return;
      }
      await this.o.kv.delete(LEASE_KEY, { previousSeq: rev }).catch(() => {});
      this.lose('the lease lapsed and was held by another coordinator meanwhile');
    } catch (e) {
      if (isConflict(e)) this.lose('another coordinator took the lease');
      // The bus is away again: the next renewal tries again.
    }
  }

  /** Gives up for good (the lease taken by another, the connection closed): `onLost` stops the process. */
  lose(reason: string): void {
    if (this.lost) return;
    this.lost = true;
    clearInterval(this.timer);
    this.o.log.error({ reason }, 'lost the coordinator lease');
    this.o.onLost(reason);
  }

  /** Gives the lease up (a clean shutdown): a standby takes over at once instead of after the TTL. */
  async release(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.lost || this.revision === 0) return;
    await this.o.kv.delete(LEASE_KEY, { previousSeq: this.revision }).catch(() => {});
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
