import { z } from 'zod';
import { ExecStatus, ExecUsage } from './execution.ts';
import { Job, ResourceLimits } from './job.ts';
import { JobStatus } from './job-record.ts';
import { EpochMetrics, EpochResult } from './result.ts';
import { ParamValue, Study } from './study.ts';
import { WorkerAd } from './worker.ts';

/** One zod schema per wire message. Requests and replies of the coordinator's micro service (plurigrid.api.*). */

export const StudyId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'expected a study id');

/** An amount of SIM as a decimal string (at most 6 decimals: the ledger counts µSIM), e.g. "25" or "0.5". */
export const SimAmount = z
  .string()
  .regex(/^\d{1,9}(\.\d{1,6})?$/, 'expected SIM as a decimal, e.g. "25" or "0.5"');

/** How a study's results are verified: replicas on distinct providers and the quorum of equal outputs. */
export const Verification = z
  .strictObject({
    /** Equal outputs from distinct providers that make a result (1: no replication). */
    quorum: z.number().int().min(1).max(7).default(2),
    /** Results after which a job without a quorum fails (default: quorum + 2). */
    max_results: z.number().int().min(1).max(15).optional(),
    /** Whether trusted providers (a long run of valid results, stake at risk) may run jobs unreplicated. */
    adaptive: z.boolean().default(true),
  })
  .refine((v) => v.max_results === undefined || v.max_results >= v.quorum, {
    path: ['max_results'],
    message: 'expected at least the quorum',
  });
export type Verification = z.infer<typeof Verification>;

/**
 * Proof that the key which pays for a request asked for it: an ed25519 signature by `key` over the canonical JSON
 * of `{action, body, key, nonce, expires_at}`, where body is the request without this field.
 */
export const RequestAuth = z.strictObject({
  /** The public user nkey that signs, and whose SIM the request moves. */
  key: z.string().regex(/^U[A-Z2-7]{55}$/, 'expected a user nkey (U…)'),
  nonce: z
    .string()
    .min(16)
    .max(128)
    .regex(/^[A-Za-z0-9_-]+$/, 'expected base64url'),
  /** ms since the epoch; the request is refused from then on. */
  expires_at: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** base64 ed25519 signature by `key`. */
  signature: z
    .string()
    .max(200)
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'expected base64'),
});
export type RequestAuth = z.infer<typeof RequestAuth>;

/** What makes a study a public good: shown in the commons, readable by anyone, paid from community funds. */
export const PublicGood = z.strictObject({
  title: z.string().trim().min(1).max(200),
  description: z.string().max(5000).default(''),
});
export type PublicGood = z.infer<typeof PublicGood>;

export const SubmitRequest = z
  .strictObject({
    /** A repeated submit with the same key returns the first answer instead of starting a second study. */
    idempotency_key: z.string().min(1).max(200).optional(),
    /** A study whose `scenario` is inline (the CLI reads the files). */
    study: Study.optional(),
    /** Or a single scenario: a study of one epoch. */
    scenario: z.record(z.string(), z.unknown()).optional(),
    /** Image the jobs pin; must be one the coordinator knows (default: its grid-epoch image). */
    image: z.string().min(1).max(200).optional(),
    limits: ResourceLimits.partial().optional(),
    max_attempts: z.number().int().min(1).max(20).optional(),
    queue_timeout_s: z
      .number()
      .min(1)
      .max(7 * 86_400)
      .optional(),
    /** Seconds of work per job (how many epochs a container runs). */
    target_job_seconds: z.number().min(0).max(3600).optional(),
    priority: z.number().int().min(-100).max(100).optional(),
    verification: Verification.optional(),
    /**
     * SIM escrowed from the signer's account at submit; what is left returns when the study ends. For a public good:
     * the signer's first contribution (what is left returns to the matching pool).
     */
    budget: SimAmount.optional(),
    /** Submit as a public good: funded by the community, run on idle off-peak capacity, its results public. */
    public_good: PublicGood.optional(),
    /** The most the study pays a provider per CPU-second of estimated work, in SIM. */
    max_price: z.number().min(0).max(1000).optional(),
    /** Required with a budget: the payer's signature over the request. */
    auth: RequestAuth.optional(),
  })
  .superRefine((r, ctx) => {
    if (r.budget !== undefined && r.auth === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['auth'],
        message: 'a budget moves SIM: the request must be signed',
      });
    }
    if ((r.study === undefined) === (r.scenario === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'expected exactly one of "study" or "scenario"' });
    }
    if (r.study && typeof r.study.scenario === 'string') {
      ctx.addIssue({
        code: 'custom',
        path: ['study', 'scenario'],
        message: 'expected the scenario inline, not a path',
      });
    }
  });
export type SubmitRequest = z.infer<typeof SubmitRequest>;

export const SubmitReply = z.strictObject({
  study_id: StudyId,
  name: z.string(),
  epochs: z.number().int(),
  jobs: z.number().int(),
  /** True when this answers a repeated idempotency key. */
  duplicate: z.boolean(),
});
export type SubmitReply = z.infer<typeof SubmitReply>;

/** What went wrong, for a client to match on (never the message text). */
export const ErrorCode = z.enum([
  'invalid',
  /** A request that moves SIM whose signature, expiry or nonce does not check out. */
  'unauthorized',
  /** Someone else's study: only its owner may read or cancel it. */
  'forbidden',
  /** The account does not hold what the request moves. */
  'insufficient_funds',
  'not_found',
  'conflict',
  'unavailable',
  'internal',
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

export const ErrorReply = z.strictObject({
  error: z.strictObject({
    code: ErrorCode,
    message: z.string(),
    issues: z.array(z.string()),
  }),
});
export type ErrorReply = z.infer<typeof ErrorReply>;

export const StudyState = z.enum(['running', 'done', 'failed', 'cancelled']);

const Counts = z.strictObject({
  total: z.number().int(),
  done: z.number().int(),
  running: z.number().int(),
  queued: z.number().int(),
  failed: z.number().int(),
  cancelled: z.number().int(),
});

export const StudyStatus = z.strictObject({
  study_id: StudyId,
  name: z.string(),
  state: StudyState,
  submitted_at: z.number(),
  finished_at: z.number().nullable(),
  epochs: Counts,
  jobs: Counts,
  /** Reasons recorded for failed jobs (first few). */
  failures: z.array(z.strictObject({ job_id: z.string(), reasons: z.array(z.string()) })),
  /** Its escrow in µSIM: the budget, what executions placed so far may cost, and what is left to place more. */
  funds: z
    .strictObject({ budget: z.number().int(), committed: z.number().int(), available: z.number().int() })
    .nullable()
    .default(null),
  /** Why queued jobs are not being placed, when the coordinator knows (e.g. the escrow cannot cover the next one). */
  waiting: z.string().nullable().default(null),
});
export type StudyStatus = z.infer<typeof StudyStatus>;

export const StatusRequest = z.strictObject({ study_id: StudyId });
export const ListRequest = z.strictObject({ limit: z.number().int().min(1).max(1000).default(100) });
export const WorkersRequest = ListRequest;
export const ListReply = z.strictObject({ studies: z.array(StudyStatus) });
export const CancelRequest = z.strictObject({
  study_id: StudyId,
  /** Signed by the study's owner (action `cancel`, body `{study_id}`); needed for a study that has one. */
  auth: RequestAuth.optional(),
});

export const ResultsRequest = z.strictObject({
  study_id: StudyId,
  offset: z.number().int().min(0).default(0),
  limit: z.number().int().min(1).max(1000).default(200),
});

/** One accepted epoch of a study, as the study tables need it. */
export const ResultRow = z.strictObject({
  epoch_id: z.string(),
  subset: z.number().int(),
  run: z.number().int(),
  params: z.record(z.string(), ParamValue),
  metrics: EpochMetrics,
  digest: z.string(),
  worker_id: z.string(),
});
export type ResultRow = z.infer<typeof ResultRow>;

export const ResultsReply = z.strictObject({
  study_id: StudyId,
  /** The study as submitted: on the first page only (offset 0), so later pages do not repeat it. */
  study: Study.nullable(),
  total: z.number().int(),
  rows: z.array(ResultRow),
  next_offset: z.number().int().nullable(),
});
export type ResultsReply = z.infer<typeof ResultsReply>;

export const WorkersReply = z.strictObject({
  workers: z.array(WorkerAd.extend({ last_seen_ms_ago: z.number() })),
});

/** An execution, by its job and attempt. */
export const ExecutionRef = z.strictObject({ job_id: z.string(), attempt: z.number().int().min(1) });
export type ExecutionRef = z.infer<typeof ExecutionRef>;

/** One attempt of one job, leased to a worker until `lease_until`. */
export const Assignment = z.strictObject({
  job: Job,
  attempt: z.number().int().min(1),
  lease_until: z.number(),
  /** Public-goods executions on this worker to stop first: this (paid) one takes their slot. */
  preempts: z.array(ExecutionRef).max(64).default([]),
});
export type Assignment = z.infer<typeof Assignment>;

/** Coordinator → worker: run these attempts (one request per worker and scheduling round; reply: AssignReply). */
export const AssignRequest = z.strictObject({ assignments: z.array(Assignment).min(1) });
export type AssignRequest = z.infer<typeof AssignRequest>;

/** The worker's answer for each assignment: accepted, or declined with a reason (draining, no free slot…). */
export const AssignReply = z.strictObject({
  answers: z.array(
    z.strictObject({
      job_id: z.string(),
      attempt: z.number().int(),
      accepted: z.boolean(),
      reason: z.string().nullable(),
    }),
  ),
});
export type AssignReply = z.infer<typeof AssignReply>;

/** Coordinator → worker: stop an attempt (cancelled, reclaimed or preempted; `reason` says which, for its result). */
export const CancelJob = z.strictObject({
  job_id: z.string(),
  attempt: z.number().int(),
  reason: z.string().max(500).optional(),
});

/** What a worker signs for each attempt: "this image, on this input, produced this output" (or none). */
export const SignedClaim = z.strictObject({
  job_id: z.string(),
  attempt: z.number().int().min(1),
  image: z.string(),
  input_digest: z.string(),
  output_digest: z.string().nullable(),
});
export type SignedClaim = z.infer<typeof SignedClaim>;

/** How one attempt ended, as its worker reports it (inside a {@link ResultBatch}). */
export const JobResult = z.strictObject({
  job_id: z.string(),
  study_id: z.string(),
  attempt: z.number().int().min(1),
  image: z.string(),
  input_digest: z.string(),
  /** {@link outputDigest} of the JobOutput; null when the attempt produced none. */
  output_digest: z.string().nullable(),
  status: ExecStatus,
  reason: z.string().nullable(),
  exit_code: z.number().int().nullable(),
  /** Epoch results inline, or null when they went to the OUTPUTS stream (output_object). */
  results: z.array(z.strictObject({ epoch_id: z.string(), result: EpochResult })).nullable(),
  /** A large output, in `parts` messages on the worker's `plurigrid.outputs.<worker>.<job>.<attempt>.<part>`. */
  output_object: z
    .strictObject({
      parts: z.number().int().min(1).max(4096),
      bytes: z.number().int().min(0),
    })
    .nullable(),
  usage: ExecUsage,
  started_at: z.number(),
  finished_at: z.number(),
  stdout_tail: z.string(),
  stderr_tail: z.string(),
});
export type JobResult = z.infer<typeof JobResult>;

/**
 * Worker → RESULTS stream (subject plurigrid.results.<worker_id>, Nats-Msg-Id <batch_id>): the attempts a worker
 * finished at about the same time, signed once. Under load this turns a message, a signature check and an
 * acknowledgement per job into one per batch; an idle worker sends batches of one.
 */
export const ResultBatch = z.strictObject({
  batch_id: z.string().min(1),
  worker_id: z.string(),
  results: z.array(JobResult).min(1),
  /** ed25519 signature (base64), by the worker's key, of the canonical JSON of the results' claims in order. */
  signature: z.string(),
});
export type ResultBatch = z.infer<typeof ResultBatch>;

/** The claims a batch's signature covers, in the batch's order. */
export function claimsOf(results: readonly JobResult[]): SignedClaim[] {
  return results.map((r) => ({
    job_id: r.job_id,
    attempt: r.attempt,
    image: r.image,
    input_digest: r.input_digest,
    output_digest: r.output_digest,
  }));
}

/** One job's transition, as followers and progress bars see it. */
export const JobEvent = z.strictObject({
  job_id: z.string(),
  status: JobStatus,
  /** Executions started so far. */
  attempt: z.number().int(),
  /** The worker of the job's latest execution (null before the first). */
  worker_id: z.string().nullable(),
  epochs: z.number().int(),
  reason: z.string().nullable(),
  at: z.number(),
});
export type JobEvent = z.infer<typeof JobEvent>;

/**
 * Coordinator → plurigrid.events.jobs.<study_id> (EVENTS stream): a study's job transitions stored at about the same
 * time, in order, one message for all of them.
 */
export const JobEvents = z.strictObject({ study_id: z.string(), events: z.array(JobEvent).min(1) });
export type JobEvents = z.infer<typeof JobEvents>;

/**
 * Coordinator → plurigrid.events.study.<study_id> (EVENTS stream): a study's lifecycle — `running` once submitted,
 * then its final state.
 */
export const StudyEvent = z.strictObject({ study_id: StudyId, state: StudyState, at: z.number() });
export type StudyEvent = z.infer<typeof StudyEvent>;

export const ProvenanceRequest = z.strictObject({
  study_id: StudyId,
  offset: z.number().int().min(0).default(0),
  limit: z.number().int().min(1).max(1000).default(200),
  /** Include each result's signed batch claims, so the signatures can be checked by the reader (costs a read each). */
  signatures: z.boolean().default(false),
});

/** Who ran a job's epochs, what each returned, and the verdict: the evidence behind an accepted result. */
export const JobProvenance = z.strictObject({
  job_id: z.string(),
  status: JobStatus,
  epoch_ids: z.array(z.string()),
  quorum: z.number().int(),
  /** The accepted output and how many distinct providers agreed on it. */
  accepted: z.strictObject({ output_digest: z.string(), agreed: z.number().int() }).nullable(),
  executions: z.array(
    z.strictObject({
      attempt: z.number().int(),
      worker_id: z.string(),
      /** The output digest the provider signed (its batch's signature was checked on arrival). */
      output_digest: z.string().nullable(),
      /** Its signed result batch in the RESULTS stream. */
      seq: z.number().int().nullable(),
      ended: z.string().nullable(),
      verdict: z.enum(['valid', 'invalid']).nullable(),
      reason: z.string().nullable(),
      /** µSIM it is paid if valid. */
      pay: z.number().int(),
      /**
       * With `signatures`: the claims of the result batch it came in and the provider's ed25519 signature over their
       * canonical JSON (the claim for this execution is among them); null without, or when it has no result.
       */
      signed: z.strictObject({ claims: z.array(SignedClaim), signature: z.string() }).nullable(),
    }),
  ),
});
export type JobProvenance = z.infer<typeof JobProvenance>;

export const ProvenanceReply = z.strictObject({
  study_id: StudyId,
  total: z.number().int(),
  jobs: z.array(JobProvenance),
  next_offset: z.number().int().nullable(),
});
export type ProvenanceReply = z.infer<typeof ProvenanceReply>;

/** One stream as the coordinator last saw it (transport/health.ts). */
export const StreamHealth = z.strictObject({
  name: z.string(),
  ok: z.boolean(),
  replicas: z.number().int(),
  /** Replicas current with the leader, the leader included (replicas on a single server: 1). */
  current: z.number().int(),
  leader: z.string().nullable(),
  messages: z.number().int().nullable(),
  error: z.string().nullable(),
  /** ms since the epoch when it was last seen change between ok and not. */
  since: z.number(),
});
export type StreamHealth = z.infer<typeof StreamHealth>;

export const BusHealth = z.strictObject({
  connected: z.boolean(),
  /** The server this process is connected to. */
  server: z.string().nullable(),
  /** Servers of the cluster the connection knows. */
  servers: z.array(z.string()),
  streams: z.array(StreamHealth),
  checked_at: z.number(),
});
export type BusHealth = z.infer<typeof BusHealth>;

export const HealthRequest = z.strictObject({});
/** The `health` endpoint: which coordinator answers, and the bus as it sees it. */
export const HealthReply = z.strictObject({
  coordinator: z.strictObject({ holder: z.string(), term: z.number().int(), since: z.number() }),
  bus: BusHealth,
});
export type HealthReply = z.infer<typeof HealthReply>;

/** `commons`: the public-goods studies and their funding; with `funder`, what that key's contributions computed. */
export const CommonsRequest = z.strictObject({
  funder: z
    .string()
    .regex(/^U[A-Z2-7]{55}$/, 'expected a user nkey (U…)')
    .optional(),
  limit: z.number().int().min(1).max(1000).default(100),
});
export type CommonsRequest = z.infer<typeof CommonsRequest>;

const Micro = z.number().int();

/** One public-goods study in the commons (amounts in µSIM). */
export const CommonsStudy = z.strictObject({
  study_id: StudyId,
  name: z.string(),
  title: z.string(),
  description: z.string(),
  state: StudyState,
  submitted_at: z.number(),
  finished_at: z.number().nullable(),
  /** Distinct keys that gave to it directly, and what they gave. */
  funders: z.number().int(),
  contributed: Micro,
  /** What funding rounds matched from the pool. */
  matched: Micro,
  /** Paid to providers for valid executions, and returned to the pool when it ended. */
  spent: Micro,
  returned: Micro,
  /** What its escrow can still commit to new executions. */
  available: Micro,
  epochs: z.strictObject({ total: z.number().int(), done: z.number().int() }),
  /** Why its queued jobs wait, when the coordinator knows. */
  waiting: z.string().nullable(),
});
export type CommonsStudy = z.infer<typeof CommonsStudy>;

/** What one funder's contributions computed: its share of each study it gave to, and of what that study did. */
export const FunderShare = z.strictObject({
  key: z.string(),
  /** What it gave to the matching pool. */
  pool: Micro,
  studies: z.array(
    z.strictObject({
      study_id: StudyId,
      title: z.string(),
      contributed: Micro,
      /** Its part of everything the study raised (contributions and match). */
      share: z.number().min(0).max(1),
      /** That share of the epochs computed and of the SIM spent. */
      epochs: z.number().min(0),
      spent: Micro,
    }),
  ),
  epochs: z.number().min(0),
  spent: Micro,
});
export type FunderShare = z.infer<typeof FunderShare>;

export const CommonsReply = z.strictObject({
  /** The matching pool now, and the keys that gave to it. */
  pool: Micro,
  pool_funders: z.number().int(),
  /** Funding rounds so far, and when the next is due (null: none scheduled). */
  rounds: z.number().int(),
  next_round_at: z.number().nullable(),
  /** Where public goods run: on idle slots inside providers' off-peak windows, or on any idle slot. */
  policy: z.enum(['offpeak', 'idle']),
  studies: z.array(CommonsStudy),
  totals: z.strictObject({
    contributed: Micro,
    matched: Micro,
    spent: Micro,
    epochs_done: z.number().int(),
  }),
  funder: FunderShare.nullable(),
});
export type CommonsReply = z.infer<typeof CommonsReply>;
