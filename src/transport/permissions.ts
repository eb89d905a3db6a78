/**
 * Who may publish and subscribe to what: one NATS user per identity, its rights derived from its role and its own
 * key, next to the subject names they are made of. The server enforces them (a user JWT carries its permissions);
 * nothing here is checked by our code, so a hostile client gets a permissions violation from nats-server itself.
 *
 * | role          | publishes                                                   | subscribes                         |
 * |---------------|-------------------------------------------------------------|------------------------------------|
 * | `coordinator` | everything (it alone reaches `$JS.API`, job/study state, the ledger)                             |
 * | `worker` W    | its own heartbeat, advert, results and output chunks; the API | its own assignments and cancels   |
 * | `client` K    | the API                                                     | its own inbox; public events       |
 * | `dashboard` D | the API's read endpoints                                    | its own inbox; events; heartbeats  |
 * | `enroll`      | the `enroll` endpoint                                       | its own inbox                      |
 *
 * Every user but the coordinator receives replies only on its own inbox prefix `_INBOX.<its key>.`, and answers
 * requests only through the server's response permission (one reply per request it received). So a reply subject
 * tells the coordinator who will read the reply ({@link inboxOwner}): that is how private reads are kept private,
 * without anyone being able to listen on someone else's inbox.
 */
import { subjects } from './subjects.ts';

export const ROLES = ['coordinator', 'worker', 'client', 'dashboard', 'enroll'] as const;
export type Role = (typeof ROLES)[number];

/** The rights of one user, in the shape of a user JWT's `pub`/`sub`/`resp` claims. */
export interface Rights {
  pub: { allow: string[] };
  sub: { allow: string[] };
  /** May answer requests it received: at most `max` replies each, within `ttl` nanoseconds (a Go duration). */
  resp?: { max: number; ttl: number };
}

/** Endpoints that only read (the dashboard's share of the API). */
export const READ_OPS = [
  'status',
  'list',
  'results',
  'workers',
  'provenance',
  'balance',
  'ledger',
  'health',
  'commons',
] as const;

const USER_KEY = /^U[A-Z2-7]{55}$/;

/** Thrown when a role is given a key that is not a public user nkey. */
export class RoleKeyError extends Error {
  constructor(role: string, key: string) {
    super(`a ${role} user needs a public user nkey (U…), got ${JSON.stringify(key.slice(0, 60))}`);
    this.name = 'RoleKeyError';
  }
}

/** The inbox prefix of a user: its requests' replies come to `_INBOX.<key>.…`, where only it may listen. */
export function inboxPrefix(userKey: string): string {
  return `_INBOX.${userKey}`;
}

/**
 * The user who will read a reply sent to `reply`: the key in an `_INBOX.<key>.…` subject, or null (no reply, or an
 * inbox without a key, as on a server without authentication).
 */
export function inboxOwner(reply: string | undefined): string | null {
  if (!reply?.startsWith('_INBOX.')) return null;
  const key = reply.split('.', 3)[1];
  return key && USER_KEY.test(key) ? key : null;
}

/** What a user of `role` with public key `key` may do. */
export function rightsFor(role: Role, key: string): Rights {
  if (!USER_KEY.test(key)) throw new RoleKeyError(role, key);
  const inbox = `${inboxPrefix(key)}.>`;
  const api = subjects.apiAll;
  switch (role) {
    case 'coordinator':
      return { pub: { allow: ['>'] }, sub: { allow: ['>'] } };
    case 'worker':
      return {
        pub: {
          allow: [
            subjects.heartbeat(key),
            subjects.results(key),
            subjects.workerAdvert(key),
            subjects.outputChunks(key),
            // A provider is a client too: it stakes, unstakes and reads its balance with its worker key.
            api,
          ],
        },
        sub: { allow: [subjects.assign(key), subjects.cancel(key), inbox] },
        // Answers each assignment request once (accepted or declined), within a minute.
        resp: { max: 1, ttl: 60 * 1e9 },
      };
    case 'client':
      return {
        pub: { allow: [api] },
        sub: { allow: [inbox, subjects.eventsOf(key), subjects.eventsOf(PUBLIC_OWNER)] },
      };
    case 'dashboard':
      return {
        pub: { allow: READ_OPS.map((op) => subjects.api(op)) },
        sub: { allow: [inbox, subjects.eventsAll, subjects.heartbeatAll] },
      };
    case 'enroll':
      return { pub: { allow: [subjects.api('enroll')] }, sub: { allow: [inbox] } };
  }
}

/** The owner token of events of a study nobody owns (a server without authentication; public-goods studies). */
export const PUBLIC_OWNER = 'public';
