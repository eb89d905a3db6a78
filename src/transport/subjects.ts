/**
 * Every NATS subject Plurigrid uses, in one place. Nothing else in the code base spells a subject by hand: build them
 * with `subjects.*` so a rename is one edit and ids are checked before they reach the wire.
 *
 * ```
 * plurigrid.api.<op>                  request/reply micro service "plurigrid" (studies, workers, provenance, the ledger)
 * plurigrid.api.enroll                one-time enrollment: a token's holder gets a worker's or client's JWT
 * plurigrid.worker.hb.<workerId>      worker heartbeat / advert
 * $KV.workers.<workerId>              the worker's last advert (KV `workers`, written by the worker itself)
 * plurigrid.worker.<workerId>.assign  coordinator → worker assignment (reply = accept/decline)
 * plurigrid.worker.<workerId>.cancel  coordinator → worker: stop an attempt
 * plurigrid.results.<workerId>        worker → RESULTS stream (signed result batches)
 * plurigrid.outputs.<workerId>.<job>.<attempt>.<part>   worker → OUTPUTS stream (a large output, in parts)
 * plurigrid.events.<owner>.study.<studyId>   study lifecycle events (EVENTS stream)
 * plurigrid.events.<owner>.jobs.<studyId>    a study's job transitions, batched (EVENTS stream)
 * plurigrid.ledger.postings           the SIM ledger's journal entries (LEDGER stream)
 * ```
 *
 * Every worker subject carries the worker's key, and every event subject its study's owner (the key that submitted
 * it, or `public`): that is what lets permissions.ts give each user only its own.
 */

export const ROOT = 'plurigrid';

/** Name of the NATS micro service (`@nats-io/services`) that serves the API. */
export const API_SERVICE_NAME = 'plurigrid';
/** The service group: endpoints are `plurigrid.api.<op>`. */
export const API_GROUP = `${ROOT}.api`;
export const API_OPS = [
  'submit',
  'status',
  'list',
  'cancel',
  'results',
  'workers',
  'provenance',
  'balance',
  'faucet',
  'transfer',
  'stake',
  'unstake',
  'ledger',
  'enroll',
  'health',
  'fund',
  'commons',
] as const;
export type ApiOp = (typeof API_OPS)[number];

/** Thrown when an id would not make a single, literal subject token. */
export class SubjectIdError extends Error {
  readonly kind: string;
  readonly id: unknown;
  constructor(kind: string, id: unknown, problem: string) {
    super(`invalid ${kind} ${JSON.stringify(id)} for a NATS subject: ${problem}`);
    this.name = 'SubjectIdError';
    this.kind = kind;
    this.id = id;
  }
}

/** Longest id accepted in a subject token (NATS has no hard limit; this keeps subjects and KV keys sane). */
export const MAX_ID_LENGTH = 256;

/**
 * Checks that `id` is usable as exactly one subject token: non-empty, at most {@link MAX_ID_LENGTH} characters, with
 * no `.` (token separator), `*` or `>` (wildcards), whitespace or control characters. Returns the id.
 */
export function checkId(kind: string, id: unknown): string {
  if (typeof id !== 'string') throw new SubjectIdError(kind, id, 'expected a string');
  if (id.length === 0) throw new SubjectIdError(kind, id, 'must not be empty');
  if (id.length > MAX_ID_LENGTH) {
    throw new SubjectIdError(kind, id, `longer than ${MAX_ID_LENGTH} characters`);
  }
  if (id.includes('.'))
    throw new SubjectIdError(kind, id, 'must not contain "." (it separates subject tokens)');
  if (/[*>]/.test(id)) throw new SubjectIdError(kind, id, 'must not contain the wildcards "*" or ">"');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\s\u0000-\u001f\u007f]/.test(id)) {
    throw new SubjectIdError(kind, id, 'must not contain spaces or control characters');
  }
  return id;
}

export const subjects = {
  /** `plurigrid.api.<op>` — one endpoint of the API service. */
  api(op: ApiOp): string {
    if (!(API_OPS as readonly string[]).includes(op)) {
      throw new SubjectIdError('api op', op, `expected one of ${API_OPS.join(', ')}`);
    }
    return `${API_GROUP}.${op}`;
  },
  /** `plurigrid.api.>` — every API endpoint. */
  apiAll: `${API_GROUP}.>`,

  /** `plurigrid.worker.hb.<workerId>` — a worker's heartbeat / advert. */
  heartbeat(workerId: string): string {
    return `${ROOT}.worker.hb.${checkId('worker id', workerId)}`;
  },
  /** `plurigrid.worker.hb.*` — every worker's heartbeat. */
  heartbeatAll: `${ROOT}.worker.hb.*`,

  /** `plurigrid.worker.<workerId>.assign` — coordinator → worker assignment request. */
  assign(workerId: string): string {
    return `${ROOT}.worker.${checkId('worker id', workerId)}.assign`;
  },
  /** `plurigrid.worker.<workerId>.cancel` — coordinator → worker cancellation. */
  cancel(workerId: string): string {
    return `${ROOT}.worker.${checkId('worker id', workerId)}.cancel`;
  },

  /** `plurigrid.results.<workerId>` — a worker's result batches, captured by the RESULTS stream. */
  results(workerId: string): string {
    return `${ROOT}.results.${checkId('worker id', workerId)}`;
  },
  /** `$KV.workers.<workerId>` — the worker's entry in the `workers` bucket (a plain publish, no JetStream API). */
  workerAdvert(workerId: string): string {
    return `$KV.workers.${checkId('worker id', workerId)}`;
  },

  /** `plurigrid.outputs.<workerId>.<jobId>.<attempt>.<part>` — one part of a large output (OUTPUTS stream). */
  outputPart(workerId: string, jobId: string, attempt: number, part: number): string {
    return `${ROOT}.outputs.${checkId('worker id', workerId)}.${checkId('job id', jobId)}.${attempt}.${part}`;
  },
  /** `plurigrid.outputs.<workerId>.>` — every output part of one worker. */
  outputChunks(workerId: string): string {
    return `${ROOT}.outputs.${checkId('worker id', workerId)}.>`;
  },
  /** `plurigrid.outputs.>` — the OUTPUTS stream's subjects. */
  outputsAll: `${ROOT}.outputs.>`,

  /** `plurigrid.results.>` — the RESULTS stream's subjects. */
  resultsAll: `${ROOT}.results.>`,

  /** `plurigrid.events.<owner>.study.<studyId>` — one study's lifecycle events. */
  studyEvents(owner: string, studyId: string): string {
    return `${ROOT}.events.${checkId('owner', owner)}.study.${checkId('study id', studyId)}`;
  },
  /** `plurigrid.events.<owner>.jobs.<studyId>` — a study's job transitions, batched (JobEvents). */
  jobEvents(owner: string, studyId: string): string {
    return `${ROOT}.events.${checkId('owner', owner)}.jobs.${checkId('study id', studyId)}`;
  },
  /** `plurigrid.events.<owner>.>` — the events of every study `owner` submitted. */
  eventsOf(owner: string): string {
    return `${ROOT}.events.${checkId('owner', owner)}.>`;
  },
  /** `plurigrid.events.*.jobs.*` — every study's job transitions. */
  jobEventsAll: `${ROOT}.events.*.jobs.*`,
  /** `plurigrid.events.>` — the EVENTS stream's subjects. */
  eventsAll: `${ROOT}.events.>`,

  /** `plurigrid.ledger.postings` — the SIM ledger's journal (LEDGER stream), one hash-chained entry per message. */
  ledger: `${ROOT}.ledger.postings`,
} as const;
