import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import type { Entry } from './load.ts';

/** A write failed for another reason than a conflict: nothing may act as if it happened. */
export class StoreWriteError extends Error {
  constructor(what: string, options: ErrorOptions) {
    super(`${what}: ${(options.cause as Error)?.message ?? options.cause}`, options);
    this.name = 'StoreWriteError';
  }
}

const MAX_CONFLICTS = 10;

/** A write refused because the stored revision is not the one expected (a KV `create` of a key that exists). */
export function isConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** How one kind of record is read, written and reloaded by {@link compareAndSet}. */
export interface CasOps<T> {
  get(): Entry<T> | undefined;
  /** Writes `next` if the stored revision is still `rev` (0: not stored yet); resolves with the new revision. */
  write(next: T, rev: number): Promise<number>;
  /** Reloads the stored record; false when it is gone. */
  reload(): Promise<boolean>;
  set(e: Entry<T>): void;
}

/**
 * Applies `fn` to a record and writes the result, compare-and-set on its KV revision (unless `fn` returns the record
 * unchanged). On a conflict the stored record is reloaded and `fn` applied again, so a transition is never dropped;
 * any other failure is a StoreWriteError. Resolves with the record as now stored, or undefined when there is none.
 */
export async function compareAndSet<T>(
  what: string,
  fn: (rec: T) => T,
  ops: CasOps<T>,
): Promise<T | undefined> {
  for (let conflicts = 0; ; conflicts++) {
    const e = ops.get();
    if (!e) return undefined;
    const next = fn(e.rec);
    if (next === e.rec) return e.rec;
    let rev: number;
    try {
      rev = await ops.write(next, e.rev);
    } catch (err) {
      if (!isConflict(err) || conflicts >= MAX_CONFLICTS)
        throw new StoreWriteError(`${what} not stored`, { cause: err });
      if (!(await ops.reload())) return undefined;
      continue;
    }
    ops.set({ rec: next, rev });
    return next;
  }
}
