import { type ServiceMsg, Svcm } from '@nats-io/services';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Bank } from '../ledger/bank.ts';
import {
  BalanceReply,
  BalanceRequest,
  JournalReply,
  JournalRequest,
  PostingReply,
  SignedLedgerRequest,
} from '../ledger/messages.ts';
import {
  CancelRequest,
  CommonsReply,
  CommonsRequest,
  type ErrorReply,
  HealthReply,
  HealthRequest,
  ListReply,
  ListRequest,
  ProvenanceReply,
  ProvenanceRequest,
  ResultsReply,
  ResultsRequest,
  StatusRequest,
  StudyStatus,
  SubmitReply,
  SubmitRequest,
  WorkersReply,
  WorkersRequest,
} from '../models/api.ts';
import { InputError, parseInput } from '../models/errors.ts';
import { parseJsonInput } from '../models/json.ts';
import { inboxOwner } from '../transport/permissions.ts';
import { API_GROUP, API_SERVICE_NAME, type ApiOp } from '../transport/subjects.ts';
import type { Commons } from './commons.ts';
import { type Enrollment, EnrollReply, EnrollRequest } from './enrollment.ts';
import { ApiError, errorCode, SERVICE_ERROR_NUMBERS } from './errors.ts';
import type { StudyApi } from './studies.ts';
import { ANONYMOUS } from './studies.ts';

const decoder = new TextDecoder();

function errorReply(err: unknown): ErrorReply {
  const code = errorCode(err);
  if (err instanceof InputError)
    return {
      error: { code, message: err.message.split('\n')[0]!.replace(/:$/, ''), issues: [...err.issues] },
    };
  const issues = err instanceof ApiError ? [...err.issues] : [];
  return { error: { code, message: (err as Error)?.message ?? String(err), issues } };
}

/** An endpoint's request and reply schemas as JSON Schema, for clients in other languages (`nats micro info`). */
function schemaMetadata(request: z.ZodType, reply: z.ZodType): Record<string, string> {
  const json = (s: z.ZodType, io: 'input' | 'output') =>
    JSON.stringify(z.toJSONSchema(s, { io, unrepresentable: 'any' }));
  return { request_schema: json(request, 'input'), reply_schema: json(reply, 'output') };
}

/**
 * The coordinator's API as a NATS micro service (discoverable with `nats micro ls`). Every request is validated with
 * its zod schema; every failure is answered with the service's own error reply (the `Nats-Service-Error` headers,
 * counted by `$SRV.STATS`, with an HTTP-like code) whose payload is an ErrorReply naming each bad path, so a bad
 * request never costs the coordinator more than a reply.
 */
export interface ApiExtras {
  /** The SIM ledger's endpoints (none: only free studies). */
  bank?: Bank;
  /** Enrollment with one-time tokens (where the operator keys are at hand). */
  enroll?: Enrollment;
  /** The `health` endpoint's answer. */
  health?: () => HealthReply;
  /** The Simulation Commons' endpoints: `fund` (signed) and `commons` (with a ledger). */
  commons?: Commons;
  /**
   * The bus authenticates its users (each replies only on its own `_INBOX.<key>.`): then a reply to any other inbox
   * has no reader the coordinator knows, and gets only what anyone may read. Without authentication nobody can be
   * told apart and nothing is checked.
   */
  authenticated?: boolean;
}

export async function serveApi(
  nc: NatsConnection,
  api: StudyApi,
  version: string,
  log: Logger,
  { bank, enroll, health, commons, authenticated = false }: ApiExtras = {},
) {
  const service = await new Svcm(nc).add({
    name: API_SERVICE_NAME,
    version,
    description: 'Plurigrid coordinator: studies in, results out',
  });
  const group = service.addGroup(API_GROUP);
  const endpoint = <S extends z.ZodType>(
    op: ApiOp,
    schema: S,
    reply: z.ZodType,
    handle: (req: z.output<S>, raw: unknown, requester: string | null) => unknown,
  ) => {
    group.addEndpoint(op, {
      metadata: schemaMetadata(schema, reply),
      handler: (err, msg) => {
        if (err) return;
        // Only ever answer to an inbox. The coordinator may publish anywhere, so a reply subject chosen by a client
        // (`$JS.API.STREAM.DELETE.…`, a worker's results subject) would make it a confused deputy.
        if (!msg.reply?.startsWith('_INBOX.')) {
          log.warn(
            { op, reply: msg.reply?.slice(0, 200) ?? null },
            'request without an inbox to answer ignored',
          );
          return;
        }
        respond(msg, op, schema, handle, log, authenticated).then(
          (failed) => failed && countError(service, op, failed),
          (e) => log.error({ op, err: (e as Error).message }, 'reply not sent'),
        );
      },
    });
  };
  // `who` is the user the reply goes to (its inbox carries its key): private reads answer only their owner.
  endpoint('submit', SubmitRequest, SubmitReply, (r, raw, who) => api.submit(r, raw, who));
  endpoint('status', StatusRequest, StudyStatus, (r, _raw, who) => api.status(r.study_id, who));
  endpoint('list', ListRequest, ListReply, (r, _raw, who) => ({ studies: api.list(r.limit, who) }));
  endpoint('cancel', CancelRequest, StudyStatus, (r) => api.cancel(r.study_id, r.auth));
  endpoint('results', ResultsRequest, ResultsReply, (r, _raw, who) =>
    api.results(r.study_id, r.offset, r.limit, who),
  );
  endpoint('workers', WorkersRequest, WorkersReply, (r) => ({ workers: api.workers(r.limit) }));
  endpoint('provenance', ProvenanceRequest, ProvenanceReply, (r, _raw, who) =>
    api.provenance(r.study_id, r.offset, r.limit, r.signatures, who),
  );
  if (enroll) endpoint('enroll', EnrollRequest, EnrollReply, (r) => enroll.redeem(r));
  if (health) endpoint('health', HealthRequest, HealthReply, () => health());
  if (bank) {
    // Signed requests are checked by the bank itself (their body schema depends on the action).
    endpoint('balance', BalanceRequest, BalanceReply, (r) => bank.balanceOf(r.key));
    endpoint('faucet', SignedLedgerRequest, PostingReply, (_r, raw) => bank.faucet(raw));
    endpoint('transfer', SignedLedgerRequest, PostingReply, (_r, raw) => bank.transfer(raw));
    endpoint('stake', SignedLedgerRequest, PostingReply, (_r, raw) => bank.stake(raw));
    endpoint('unstake', SignedLedgerRequest, PostingReply, (_r, raw) => bank.unstake(raw));
    endpoint('ledger', JournalRequest, JournalReply, (r) => bank.page(r.from, r.limit, r.verify));
  }
  if (commons) {
    endpoint('fund', SignedLedgerRequest, PostingReply, (_r, raw) => commons.fund(raw));
    endpoint('commons', CommonsRequest, CommonsReply, (r) => commons.view(r.limit, r.funder));
  }
  // The endpoints' subscriptions reach the server asynchronously: a round trip makes sure they are in place before
  // anyone is told the coordinator is ready (otherwise a first request can find no responders).
  await nc.flush();
  return service;
}

async function respond<S extends z.ZodType>(
  msg: ServiceMsg,
  op: ApiOp,
  schema: S,
  handle: (req: z.output<S>, raw: unknown, requester: string | null) => unknown,
  log: Logger,
  authenticated: boolean,
): Promise<Error | undefined> {
  try {
    // Depth-checked: a body nested thousands deep is bad input, not a stack overflow somewhere inside.
    const body = msg.data.length > 0 ? parseJsonInput(decoder.decode(msg.data), `invalid ${op} request`) : {};
    const req = parseInput(schema, body, `invalid ${op} request`);
    const who = authenticated ? (inboxOwner(msg.reply) ?? ANONYMOUS) : null;
    msg.respond(JSON.stringify(await handle(req, body, who)));
    return undefined;
  } catch (e) {
    const reply = errorReply(e);
    if (reply.error.code === 'internal') log.error({ op, err: (e as Error)?.message }, 'request failed');
    // A header value is one line: the message's first, without control characters (the body has it all).
    const header = reply.error.message
      .split(/[\r\n]/, 1)[0]!
      // biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
      .replace(/[\u0000-\u001f]/g, ' ')
      .slice(0, 500);
    msg.respondError(SERVICE_ERROR_NUMBERS[reply.error.code], header, JSON.stringify(reply));
    return e instanceof Error ? e : new Error(String(e));
  }
}

/**
 * Counts an error reply in the endpoint's `$SRV.STATS`, as Go's micro does for every `Error` reply. nats.js counts only
 * errors its handler throws synchronously, and ours answer asynchronously, so the count goes to the endpoint's own
 * stats record (the pinned @nats-io/services keeps it on `handlers[].stats`; if that ever changes, nothing is counted
 * and nothing breaks).
 */
function countError(service: unknown, op: string, err: Error): void {
  const handlers = (service as { handlers?: { name?: string; stats?: { countError?(e: Error): void } }[] })
    .handlers;
  handlers?.find((h) => h.name === op)?.stats?.countError?.(err);
}
