import type { NatsConnection } from '@nats-io/transport-node';
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

/** A failure the coordinator reported (not found, conflict, internal). */
export class ApiError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
  }
}

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
      const m = (e as Error).message;
      throw new ApiError(
        'unavailable',
        /no responders|503/i.test(m)
          ? 'no coordinator is answering: start one with `plurigrid coordinator`'
          : `coordinator request failed: ${m}`,
      );
    }
    const err = ErrorReply.safeParse(reply);
    if (err.success) {
      const { code, message, issues } = err.data.error;
      if (code === 'invalid') throw new InputError(message.replace(/:$/, ''), issues);
      throw new ApiError(code, message);
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
  workers() {
    return this.call('workers', {}, WorkersReply);
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
      study = page.study;
      rows.push(...page.rows);
      offset = page.next_offset;
    }
    return { study: study!, rows };
  }
}
