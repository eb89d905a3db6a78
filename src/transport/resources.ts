/**
 * The JetStream resources Plurigrid keeps its durable state in, and their idempotent creation.
 *
 * | resource         | kind         | what                                                                      |
 * | ---------------- | ------------ | ------------------------------------------------------------------------- |
 * | `RESULTS`        | stream       | `plurigrid.results.>`: signed result batches, deduplicated by Msg-Id      |
 * | `EVENTS`         | stream       | `plurigrid.events.>`: study/job lifecycle events, kept 24 h               |
 * | `LEDGER`         | stream       | `plurigrid.ledger.postings`: the SIM journal, kept forever, no deletes    |
 * | `OUTPUTS`        | stream       | `plurigrid.outputs.<worker>.>`: outputs over {@link LARGE_OUTPUT_BYTES}, in parts |
 * | `jobs`           | KV           | job state, from a job's first transition on (the coordinator's truth)     |
 * | `studies`        | KV           | study records                                                             |
 * | `idempotency`    | KV           | request id → response, for retried API calls                              |
 * | `workers`        | KV (ttl 30s) | last advert per worker; an entry disappears when heartbeats stop          |
 * | `reputation`     | KV           | per provider: its run of valid results, for adaptive replication          |
 * | `jobspecs`       | object store | per study, its jobs as queued at submit (written once, before the study)  |
 * | `enrollments`    | KV           | enrollment tokens used (one-time: a token's id is created once)           |
 * | `leader`         | KV (ttl 6s)  | the coordinator lease: which coordinator is active (leadership.ts)        |
 *
 * {@link ensureResources} creates what is missing and updates what differs, and may run concurrently from several
 * processes and on every start.
 */

import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Stream,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { type KV, Kvm, type KvOptions } from '@nats-io/kv';
import { type ObjectStore, Objm } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { nanos } from '@nats-io/transport-node';
import { watchStatus } from './status.ts';
import { subjects } from './subjects.ts';

/** Outputs larger than this go to the OUTPUTS stream in parts; the result envelope carries a reference. */
export const LARGE_OUTPUT_BYTES = 512 * 1024;
/** Largest message the RESULTS stream accepts (also the default nats-server max_payload). */
export const MAX_RESULT_MSG_BYTES = 1024 * 1024;
/** A publish retried with the same `Nats-Msg-Id` within this window is dropped by RESULTS. */
export const RESULTS_DUPLICATE_WINDOW_MS = 2 * 60 * 1000;
/** How long EVENTS keeps an event. */
export const EVENTS_MAX_AGE_MS = 24 * 60 * 60 * 1000;
/** A worker's entry in the `workers` bucket expires this long after its last heartbeat. */
export const WORKERS_TTL_MS = 30 * 1000;
/** The coordinator lease (KV `leader`) is gone this long after its last renewal: a standby then takes over. */
export const LEADER_TTL_MS = 6 * 1000;
/** A journal entry retried with the same `Nats-Msg-Id` (its op id) within this window is dropped by LEDGER. */
export const LEDGER_DUPLICATE_WINDOW_MS = 2 * 60 * 1000;

export const STREAMS = {
  results: 'RESULTS',
  events: 'EVENTS',
  ledger: 'LEDGER',
  outputs: 'OUTPUTS',
} as const;
export const BUCKETS = {
  jobs: 'jobs',
  studies: 'studies',
  idempotency: 'idempotency',
  workers: 'workers',
  reputation: 'reputation',
  enrollments: 'enrollments',
  leader: 'leader',
} as const;
export type BucketKey = keyof typeof BUCKETS;
export const OBJECT_STORES = { jobspecs: 'jobspecs' } as const;
/** Largest part of a large output a worker publishes (worker-bus.ts sends 256 KiB parts). */
export const MAX_OUTPUT_PART_BYTES = 512 * 1024;

export type StreamDefinition = Pick<
  StreamConfig,
  | 'name'
  | 'description'
  | 'subjects'
  | 'storage'
  | 'retention'
  | 'discard'
  | 'max_age'
  | 'max_msg_size'
  | 'duplicate_window'
  | 'num_replicas'
> &
  Partial<Pick<StreamConfig, 'deny_delete' | 'deny_purge'>>;

/** Stream definitions (exported for inspection and tests; `ensureResources` applies them). */
export const streamDefinitions: Record<keyof typeof STREAMS, StreamDefinition> = {
  results: {
    name: STREAMS.results,
    description: 'Plurigrid job results (signed batches), deduplicated by Nats-Msg-Id',
    subjects: [subjects.resultsAll],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: 0,
    max_msg_size: MAX_RESULT_MSG_BYTES,
    duplicate_window: nanos(RESULTS_DUPLICATE_WINDOW_MS),
    num_replicas: 1,
  },
  events: {
    name: STREAMS.events,
    description: 'Plurigrid study and job lifecycle events',
    subjects: [subjects.eventsAll],
    // Lifecycle events are a live feed for followers and dashboards; the durable truth is the job state in KV, so
    // memory storage spares the store a disk write per event.
    storage: StorageType.Memory,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(EVENTS_MAX_AGE_MS),
    max_msg_size: -1,
    duplicate_window: nanos(RESULTS_DUPLICATE_WINDOW_MS),
    num_replicas: 1,
  },
  outputs: {
    name: STREAMS.outputs,
    description: "Plurigrid large job outputs, in parts, each on its worker's own subject",
    subjects: [subjects.outputsAll],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: 0,
    max_msg_size: MAX_OUTPUT_PART_BYTES,
    duplicate_window: nanos(RESULTS_DUPLICATE_WINDOW_MS),
    num_replicas: 1,
  },
  ledger: {
    name: STREAMS.ledger,
    description: 'Plurigrid SIM ledger: hash-chained journal entries, deduplicated by op id',
    subjects: [subjects.ledger],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: 0,
    max_msg_size: 64 * 1024,
    duplicate_window: nanos(LEDGER_DUPLICATE_WINDOW_MS),
    num_replicas: 1,
    // Append-only: the server refuses to delete or purge entries (and these cannot be turned off again).
    deny_delete: true,
    deny_purge: true,
  },
};

type BucketDefinition = Pick<KvOptions, 'description' | 'history' | 'storage' | 'ttl'>;

/** KV bucket definitions; `ttl` is in milliseconds (0 = keep forever). */
export const bucketDefinitions: Record<BucketKey, BucketDefinition> = {
  jobs: {
    description: 'Plurigrid job state (changes as a job runs)',
    history: 1,
    storage: StorageType.File,
    ttl: 0,
  },
  studies: { description: 'Plurigrid study records', history: 1, storage: StorageType.File, ttl: 0 },
  idempotency: {
    description: 'Plurigrid API request ids and their responses',
    history: 1,
    storage: StorageType.File,
    ttl: 0,
  },
  workers: {
    description: 'Plurigrid worker adverts; an entry expires when its heartbeats stop',
    history: 1,
    storage: StorageType.File,
    ttl: WORKERS_TTL_MS,
  },
  reputation: {
    description: 'Plurigrid provider reputations (runs of valid results; adaptive replication)',
    history: 1,
    storage: StorageType.File,
    ttl: 0,
  },
  enrollments: {
    description: 'Plurigrid enrollment tokens used (each good once)',
    history: 1,
    storage: StorageType.File,
    ttl: 0,
  },
  leader: {
    description: 'Plurigrid coordinator lease: one active coordinator, the others on standby',
    history: 1,
    storage: StorageType.File,
    ttl: LEADER_TTL_MS,
  },
};

/** How many copies a clustered JetStream keeps of each stream, bucket and object store (1 on a single server). */
export interface ResourceOptions {
  replicas?: number;
}

/** The stream definitions with `replicas` copies each. */
export function definitionsFor(replicas = 1): Record<keyof typeof STREAMS, StreamDefinition> {
  const out = {} as Record<keyof typeof STREAMS, StreamDefinition>;
  for (const [k, def] of Object.entries(streamDefinitions)) {
    out[k as keyof typeof STREAMS] = { ...def, num_replicas: replicas };
  }
  return out;
}

/** Typed handles on every resource. */
export interface Resources {
  /** Copies kept of each (what they were ensured with). */
  replicas: number;
  js: JetStreamClient;
  jsm: JetStreamManager;
  streams: { results: Stream; events: Stream };
  kv: {
    jobs: KV;
    studies: KV;
    idempotency: KV;
    workers: KV;
    reputation: KV;
    enrollments: KV;
    leader: KV;
  };
  jobspecs: ObjectStore;
}

/** A resource exists with a setting that cannot be changed in place (e.g. memory instead of file storage). */
export class ResourceConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ResourceConflictError';
  }
}

/** "stream name already in use with a different configuration" (a concurrent create won the race). */
const API_STREAM_NAME_IN_USE = 10058;
const API_SUBJECTS_OVERLAP = 10065;

function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
}

function isStreamNotFound(err: unknown): boolean {
  return apiCode(err) === JetStreamApiCodes.StreamNotFound;
}

function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && [...a].sort().join('\u0000') === [...b].sort().join('\u0000');
  }
  return (a ?? null) === (b ?? null);
}

/** Keys of `want` whose value differs in `have`. */
function differences(have: object, want: object): string[] {
  const h = have as Record<string, unknown>;
  return Object.entries(want)
    .filter(([k, v]) => !sameValue(h[k], v))
    .map(([k]) => k);
}

/**
 * Creates the stream, or updates it when its settings differ from `def`. Safe under concurrency: when another process
 * creates the stream between our lookup and our create, we look again and update if needed.
 */
export async function ensureStream(jsm: JetStreamManager, def: StreamDefinition): Promise<StreamInfo> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    let info: StreamInfo | undefined;
    try {
      info = await jsm.streams.info(def.name);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    if (!info) {
      try {
        return await jsm.streams.add({ ...def });
      } catch (err) {
        // A concurrent creator may win with the same name (10058) or, mid-creation, its subjects (10065).
        if (apiCode(err) !== API_STREAM_NAME_IN_USE && apiCode(err) !== API_SUBJECTS_OVERLAP) throw err;
        lastError = err; // created concurrently: look again
        await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
        continue;
      }
    }
    const diff = differences(info.config, def);
    if (diff.length === 0) return info;
    for (const fixed of ['storage', 'retention'] as const) {
      if (diff.includes(fixed)) {
        throw new ResourceConflictError(
          `stream ${def.name} exists with ${fixed} ${JSON.stringify(info.config[fixed])} but plurigrid needs ` +
            `${JSON.stringify(def[fixed])}; this cannot be changed in place — delete the stream (losing its data) ` +
            `or use a fresh NATS store`,
        );
      }
    }
    const { name: _name, storage: _storage, retention: _retention, ...updatable } = def;
    return await jsm.streams.update(def.name, updatable);
  }
  throw lastError;
}

async function ensureBucket(
  kvm: Kvm,
  jsm: JetStreamManager,
  name: string,
  def: BucketDefinition,
  replicas: number,
): Promise<KV> {
  const kv = await kvm.create(name, { ...def, replicas });
  // Kvm.create only opens an existing bucket; bring its limits in line with the definition.
  const status = await kv.status();
  const config = status.streamInfo.config;
  const want = {
    max_msgs_per_subject: def.history,
    max_age: nanos(def.ttl ?? 0),
    num_replicas: replicas,
  };
  if (config.storage !== def.storage) {
    throw new ResourceConflictError(
      `KV bucket ${name} exists with ${config.storage} storage but plurigrid needs ${def.storage}; ` +
        'delete the bucket (losing its data) or use a fresh NATS store',
    );
  }
  if (differences(config, want).length > 0) await jsm.streams.update(config.name, want);
  return kv;
}

/** Fails with a message that names the cause when the server has no JetStream. */
async function manager(nc: NatsConnection): Promise<JetStreamManager> {
  try {
    return await jetstreamManager(nc);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(
      `the NATS server at ${nc.getServer()} does not offer JetStream (${message}); plurigrid needs a server ` +
        'started with JetStream enabled (nats-server -js)',
      { cause: err },
    );
  }
}

/**
 * Creates or updates every stream, bucket and object store, then returns handles on them. Idempotent: call it on
 * every start, from as many processes at once as you like.
 */
export async function ensureResources(nc: NatsConnection, options: ResourceOptions = {}): Promise<Resources> {
  const replicas = options.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new RangeError(`replicas must be 1..5, got ${replicas}`);
  }
  const jsm = await manager(nc);
  const js = jetstream(nc);
  const kvm = new Kvm(js);
  const objm = new Objm(js);

  await Promise.all(Object.values(definitionsFor(replicas)).map((def) => ensureStream(jsm, def)));
  const [jobs, studies, idempotency, workers, reputation, enrollments, leader] = await Promise.all(
    (['jobs', 'studies', 'idempotency', 'workers', 'reputation', 'enrollments', 'leader'] as const).map(
      (key) => ensureBucket(kvm, jsm, BUCKETS[key], bucketDefinitions[key], replicas),
    ),
  );
  const jobspecs = await objm.create(OBJECT_STORES.jobspecs, {
    description: 'Plurigrid jobs of each study as queued at submit',
    storage: StorageType.File,
    replicas,
  });
  // Objm.create only opens an existing store: bring its copies in line.
  const objStream = `OBJ_${OBJECT_STORES.jobspecs}`;
  if ((await jsm.streams.info(objStream)).config.num_replicas !== replicas) {
    await jsm.streams.update(objStream, { num_replicas: replicas });
  }
  const [results, events] = await Promise.all([
    js.streams.get(STREAMS.results),
    js.streams.get(STREAMS.events),
  ]);
  return {
    replicas,
    js,
    jsm,
    streams: { results, events },
    kv: {
      jobs: jobs!,
      studies: studies!,
      idempotency: idempotency!,
      workers: workers!,
      reputation: reputation!,
      enrollments: enrollments!,
      leader: leader!,
    },
    jobspecs,
  };
}

/** What {@link keepStreams} logs through (a pino logger fits). */
export interface StreamKeeperLog {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface StreamKeeper {
  /** Stops watching; an ensure under way finishes, no retry follows. */
  stop(): void;
}

/** How long after a reconnect we keep retrying a stream that cannot be ensured yet (JetStream still starting). */
const KEEP_RETRY_MS = 60_000;

/**
 * Re-ensures the stream definitions every time `nc` reconnects. nats-server 2.9 does not restore memory streams
 * (EVENTS) after a restart, and without this nothing would recreate them until a plurigrid process restarts, so
 * events published meanwhile would be dropped. Runs are serialised; a reconnect during a run queues one more.
 */
export function keepStreams(
  nc: NatsConnection,
  jsm: JetStreamManager,
  log?: StreamKeeperLog,
  definitions: readonly StreamDefinition[] = Object.values(streamDefinitions),
): StreamKeeper {
  let stopped = false;
  let running = false;
  let again = false;

  /** Ensures one stream; false when it is worth trying again (JetStream not answering yet). */
  const ensureOne = async (def: StreamDefinition, attempt: number): Promise<boolean> => {
    try {
      let lost = false;
      try {
        await jsm.streams.info(def.name);
      } catch (err) {
        if (!isStreamNotFound(err)) throw err;
        lost = true;
      }
      await ensureStream(jsm, def);
      if (lost) log?.warn({ stream: def.name }, 'the NATS server had lost a stream; recreated it');
      return true;
    } catch (err) {
      if (err instanceof ResourceConflictError) {
        log?.error({ stream: def.name, err: err.message }, 'cannot restore the stream');
        return true;
      }
      if (attempt === 0) {
        log?.warn(
          { stream: def.name, err: (err as Error).message },
          'cannot restore the stream yet; retrying',
        );
      }
      return false;
    }
  };

  const ensureAll = async (): Promise<void> => {
    const deadline = Date.now() + KEEP_RETRY_MS;
    let pending = [...definitions];
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (stopped || nc.isClosed()) return;
      const done = await Promise.all(pending.map((def) => ensureOne(def, attempt)));
      pending = pending.filter((_, i) => !done[i]);
      if (pending.length > 0 && Date.now() > deadline) {
        log?.error(
          { streams: pending.map((d) => d.name) },
          'gave up restoring streams until the next reconnect',
        );
        return;
      }
      if (pending.length > 0) await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
    }
  };

  const run = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await ensureAll();
      } while (again && !stopped);
    } finally {
      running = false;
    }
  };

  const watch = watchStatus(nc, (status) => {
    if (status.type === 'reconnect') void run();
  });
  return {
    stop: () => {
      stopped = true;
      watch.stop();
    },
  };
}
