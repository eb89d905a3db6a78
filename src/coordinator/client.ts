import { errors, type NatsConnection } from '@nats-io/transport-node';
import type { z } from 'zod';
import {
  ErrorReply,
  ListReply,
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
  cancel(studyId: string) {
    return this.call('cancel', { study_id: studyId }, StudyStatus);
  }
  workers(limit = 100) {
    return this.call('workers', { limit }, WorkersReply);
  }
  results(studyId: string, offset = 0, limit = 200) {
    return this.call('results', { study_id: studyId, offset, limit }, ResultsReply);
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
