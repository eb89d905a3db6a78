import type { KeyPair } from '@nats-io/nkeys';
import { errors, type NatsConnection } from '@nats-io/transport-node';
import type { z } from 'zod';
import { BalanceReply, JournalReply, PostingReply } from '../ledger/messages.ts';
import type { JournalEntry } from '../ledger/posting.ts';
import { signRequest } from '../ledger/signed.ts';
import {
  CommonsReply,
  ErrorReply,
  HealthReply,
  type JobProvenance,
  ListReply,
  ProvenanceReply,
  type ResultRow,
  ResultsReply,
  StudyStatus,
  SubmitReply,
  type SubmitRequest,
  WorkersReply,
} from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import type { Study } from '../models/study.ts';
import { type ApiOp, subjects } from '../transport/subjects.ts';
import { EnrollReply, type EnrollRequest } from './enrollment.ts';
import { ApiError, ConflictError, CoordinatorUnavailableError, NotFoundError } from './errors.ts';

/** Typed requests to the coordinator's micro service. */
export class ApiClient {
  private readonly nc: NatsConnection;
  private readonly timeoutMs: number;

  constructor(nc: NatsConnection, timeoutMs = 30_000) {
    this.nc = nc;
    this.timeoutMs = timeoutMs;
  }

  private async call<S extends z.ZodType>(op: ApiOp, body: unknown, schema: S): Promise<z.output<S>> {
    let reply: unknown;
    try {
      const msg = await this.nc.request(subjects.api(op), JSON.stringify(body), { timeout: this.timeoutMs });
      reply = msg.json();
    } catch (e) {
      if (e instanceof errors.RequestError && e.isNoResponders()) {
        throw new CoordinatorUnavailableError(
          'no coordinator is answering: start one with `plurigrid coordinator`',
          { cause: e },
        );
      }
      if (e instanceof errors.TimeoutError || e instanceof errors.RequestError) {
        throw new CoordinatorUnavailableError(
          `the coordinator did not answer ${op} within ${this.timeoutMs / 1000} s`,
          { cause: e },
        );
      }
      throw e;
    }
    const err = ErrorReply.safeParse(reply);
    if (err.success) {
      const { code, message, issues } = err.data.error;
      if (code === 'invalid') throw new InputError(message.replace(/:$/, ''), issues);
      if (code === 'not_found') throw new NotFoundError(message);
      if (code === 'conflict') throw new ConflictError(message);
      throw new ApiError(code, message, issues);
    }
    return schema.parse(reply);
  }

  submit(req: SubmitRequest) {
    return this.call('submit', req, SubmitReply);
  }
  status(studyId: string) {
    return this.call('status', { study_id: studyId }, StudyStatus);
  }
  list(limit = 100) {
    return this.call('list', { limit }, ListReply);
  }
  /** Cancels a study; one with an owner takes `signer`, the owner's key. */
  cancel(studyId: string, signer?: KeyPair, now = Date.now()) {
    const body = { study_id: studyId };
    if (!signer) return this.call('cancel', body, StudyStatus);
    const { action: _a, body: _b, ...auth } = signRequest(signer, 'cancel', body, now);
    return this.call('cancel', { ...body, auth }, StudyStatus);
  }
  /** Which coordinator answers, and its view of the bus. */
  health() {
    return this.call('health', {}, HealthReply);
  }
  /** Trades a one-time enrollment token for a user JWT of `key`. */
  enroll(req: EnrollRequest) {
    return this.call('enroll', req, EnrollReply);
  }
  workers(limit = 100) {
    return this.call('workers', { limit }, WorkersReply);
  }
  results(studyId: string, offset = 0, limit = 200) {
    return this.call('results', { study_id: studyId, offset, limit }, ResultsReply);
  }
  provenance(studyId: string, offset = 0, limit = 200, signatures = false) {
    return this.call('provenance', { study_id: studyId, offset, limit, signatures }, ProvenanceReply);
  }

  /** Every job's provenance, page by page (with `signatures`, each result's signed batch claims). */
  async allProvenance(studyId: string, signatures = false): Promise<JobProvenance[]> {
    const jobs: JobProvenance[] = [];
    let offset: number | null = 0;
    while (offset !== null) {
      const page: ProvenanceReply = await this.provenance(studyId, offset, 200, signatures);
      jobs.push(...page.jobs);
      offset = page.next_offset;
    }
    return jobs;
  }

  /** A submit whose budget is escrowed from `signer`'s account: signed over the request as sent. */
  submitSigned(req: Omit<SubmitRequest, 'auth'>, signer: KeyPair, now = Date.now()) {
    // Signed over exactly the JSON that is sent (no undefined fields for the two sides to disagree on).
    const body = JSON.parse(JSON.stringify(req)) as Omit<SubmitRequest, 'auth'>;
    const { action: _a, body: _b, ...auth } = signRequest(signer, 'submit', body, now);
    return this.submit({ ...body, auth });
  }

  balance(key: string) {
    return this.call('balance', { key }, BalanceReply);
  }
  /** faucet / transfer / stake / unstake / fund, signed by `signer` (whose account it acts on). */
  ledgerOp(
    action: 'faucet' | 'transfer' | 'stake' | 'unstake' | 'fund',
    body: object,
    signer: KeyPair,
    now = Date.now(),
  ) {
    return this.call(action, signRequest(signer, action, body, now), PostingReply);
  }
  /** The commons: public-goods studies and their funding (with `funder`, what its contributions computed). */
  commons(opts: { funder?: string; limit?: number } = {}) {
    return this.call('commons', opts, CommonsReply);
  }
  ledger(opts: { from?: number; limit?: number; verify?: boolean } = {}) {
    return this.call('ledger', opts, JournalReply);
  }

  /** The whole journal, page by page. */
  async allJournal(): Promise<JournalEntry[]> {
    const entries: JournalEntry[] = [];
    for (;;) {
      const page = await this.ledger({ from: entries.length + 1, limit: 1000 });
      entries.push(...page.entries);
      if (page.entries.length === 0 || entries.length >= page.postings) return entries;
    }
  }

  /** Every accepted epoch of a study, page by page. */
  async allResults(studyId: string): Promise<{ study: Study; rows: ResultRow[] }> {
    const rows: ResultRow[] = [];
    let offset: number | null = 0;
    let study: Study | undefined;
    while (offset !== null) {
      const page: z.output<typeof ResultsReply> = await this.results(studyId, offset);
      study ??= page.study ?? undefined;
      rows.push(...page.rows);
      offset = page.next_offset;
    }
    return { study: study!, rows };
  }
}
