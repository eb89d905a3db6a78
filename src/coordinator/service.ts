import { Svcm } from '@nats-io/services';
import type { NatsConnection } from '@nats-io/transport-node';
import type { z } from 'zod';
import {
  CancelRequest,
  type ErrorReply,
  ListRequest,
  ResultsRequest,
  StatusRequest,
  SubmitRequest,
} from '../models/api.ts';
import { InputError, parseInput } from '../models/errors.ts';
import { API_GROUP, API_SERVICE_NAME, type ApiOp } from '../transport/subjects.ts';
import { type Coordinator, NotFoundError } from './coordinator.ts';

function errorReply(err: unknown): ErrorReply {
  if (err instanceof InputError)
    return { error: { code: 'invalid', message: err.message.split('\n')[0]!, issues: [...err.issues] } };
  if (err instanceof NotFoundError) return { error: { code: 'not_found', message: err.message, issues: [] } };
  return { error: { code: 'internal', message: (err as Error)?.message ?? String(err), issues: [] } };
}

/**
 * The coordinator's API as a NATS micro service (discoverable with `nats micro ls`): every request is validated
 * with its zod schema, and every failure is answered with a structured ErrorReply instead of silence, so a bad
 * request never costs the coordinator more than a reply.
 */
export async function serveApi(nc: NatsConnection, coordinator: Coordinator, version: string) {
  const service = await new Svcm(nc).add({
    name: API_SERVICE_NAME,
    version,
    description: 'Plurigrid coordinator: studies in, results out',
  });
  const group = service.addGroup(API_GROUP);
  const endpoint = <S extends z.ZodType>(op: ApiOp, schema: S, handle: (req: z.output<S>) => unknown) => {
    group.addEndpoint(op, {
      handler: (err, msg) => {
        if (err) return;
        void (async () => {
          try {
            let body: unknown = {};
            if (msg.data.length > 0) {
              try {
                body = JSON.parse(new TextDecoder().decode(msg.data));
              } catch {
                throw new InputError(`invalid ${op} request`, ['(root): not valid JSON']);
              }
            }
            const req = parseInput(schema, body, `invalid ${op} request`);
            msg.respond(JSON.stringify(await handle(req)));
          } catch (e) {
            msg.respond(JSON.stringify(errorReply(e)));
          }
        })();
      },
    });
  };
  endpoint('submit', SubmitRequest, (r) => coordinator.submit(r));
  endpoint('status', StatusRequest, (r) => coordinator.status(r.study_id));
  endpoint('list', ListRequest, (r) => ({ studies: coordinator.list(r.limit) }));
  endpoint('cancel', CancelRequest, (r) => coordinator.cancelStudy(r.study_id));
  endpoint('results', ResultsRequest, (r) => coordinator.results(r.study_id, r.offset, r.limit));
  endpoint('workers', ListRequest, () => ({ workers: coordinator.workerList() }));
  // The endpoints' subscriptions reach the server asynchronously: a round trip makes sure they are in place before
  // anyone is told the coordinator is ready (otherwise a first request can find no responders).
  await nc.flush();
  return service;
}
