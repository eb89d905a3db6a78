/**
 * The bus as the coordinator sees it: its connection (from the client's status events) and, every few seconds, each
 * stream's JetStream info (its leader, and how many of its replicas are current). Every change is logged once — a
 * stream that becomes unavailable, its leader moving, it coming back — and the latest view is served by the API's
 * `health` endpoint (`plurigrid health`).
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { BusHealth, StreamHealth } from '../models/api.ts';
import { type StatusWatch, watchStatus } from './status.ts';

export interface HealthLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export class BusMonitor {
  private readonly streams = new Map<string, StreamHealth>();
  private connected = true;
  private timer: NodeJS.Timeout | undefined;
  private watch: StatusWatch | undefined;
  private checking = false;
  private checkedAt = 0;

  private readonly nc: NatsConnection;
  private readonly jsm: JetStreamManager;
  private readonly names: readonly string[];
  private readonly log: HealthLog;
  private readonly now: () => number;

  constructor(
    nc: NatsConnection,
    jsm: JetStreamManager,
    names: readonly string[],
    log: HealthLog,
    now: () => number = Date.now,
  ) {
    this.nc = nc;
    this.jsm = jsm;
    this.names = names;
    this.log = log;
    this.now = now;
  }

  start(everyMs = 5_000): void {
    this.watch = watchStatus(this.nc, (s) => {
      if (s.type === 'disconnect') this.connected = false;
      if (s.type === 'reconnect') {
        this.connected = true;
        void this.check();
      }
    });
    this.timer = setInterval(() => void this.check(), everyMs);
    this.timer.unref();
    void this.check();
  }

  stop(): void {
    clearInterval(this.timer);
    this.watch?.stop();
  }

  /** Looks at every stream now (at most one look at a time). */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      await Promise.all(this.names.map((name) => this.checkOne(name)));
      this.checkedAt = this.now();
    } finally {
      this.checking = false;
    }
  }

  private async checkOne(name: string): Promise<void> {
    const before = this.streams.get(name);
    let next: StreamHealth;
    try {
      const info = await this.jsm.streams.info(name);
      const replicas = info.config.num_replicas || 1;
      const followers = info.cluster?.replicas ?? [];
      const leader = info.cluster?.leader ?? null;
      const current = (leader || replicas === 1 ? 1 : 0) + followers.filter((r) => r.current).length;
      next = {
        name,
        ok: leader !== null || replicas === 1,
        replicas,
        current,
        leader,
        messages: info.state.messages,
        error: null,
        since: before?.ok === true ? before.since : this.now(),
      };
    } catch (e) {
      next = {
        name,
        ok: false,
        replicas: before?.replicas ?? 0,
        current: 0,
        leader: null,
        messages: null,
        error: (e as Error).message,
        since: before?.ok === false ? before.since : this.now(),
      };
    }
    this.streams.set(name, next);
    if (before?.ok !== false && !next.ok) {
      this.log.warn({ stream: name, err: next.error }, 'stream unavailable');
    } else if (before?.ok === false && next.ok) {
      this.log.info(
        { stream: name, leader: next.leader, down_ms: this.now() - before.since },
        'stream available again',
      );
    } else if (before?.ok && next.ok && before.leader !== next.leader) {
      this.log.info({ stream: name, from: before.leader, to: next.leader }, 'stream leader moved');
    }
  }

  snapshot(): BusHealth {
    return {
      connected: this.connected && !this.nc.isClosed(),
      server: this.connected ? this.nc.getServer() : null,
      servers: [
        ...new Set([this.nc.getServer(), ...((this.nc.info?.connect_urls as string[] | undefined) ?? [])]),
      ],
      streams: [...this.streams.values()].sort((a, b) => a.name.localeCompare(b.name)),
      checked_at: this.checkedAt,
    };
  }
}
