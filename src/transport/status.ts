import type { NatsConnection, QueuedIterator, Status } from '@nats-io/transport-node';

/** A running watch on a connection's status; it also ends by itself when the connection closes. */
export interface StatusWatch {
  stop(): void;
  /** Settles once the watch has ended. */
  readonly done: Promise<void>;
}

/**
 * Follows `nc.status()` with `onStatus` until `stop()` or the connection closes. Each watch has its own iterator,
 * so several can follow one connection.
 */
export function watchStatus(nc: NatsConnection, onStatus: (status: Status) => void): StatusWatch {
  const statuses = nc.status();
  let stopped = false;
  const done = (async () => {
    for await (const status of statuses) {
      if (stopped) break;
      onStatus(status);
    }
  })();
  return {
    stop: () => {
      stopped = true;
      // nats.js hands out a QueuedIterator; stopping it ends the loop now rather than at the next status.
      (statuses as Partial<QueuedIterator<Status>>).stop?.();
    },
    done,
  };
}
