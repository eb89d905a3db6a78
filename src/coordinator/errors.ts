import { LedgerError, type LedgerErrorCode } from '../ledger/accounts.ts';
import { AuthError } from '../ledger/signed.ts';
import type { ErrorCode } from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import { CredentialError } from '../transport/auth.ts';

/** Ledger refusals a client can act on; anything else from the ledger is the coordinator's problem. */
const LEDGER_CODES: Partial<Record<LedgerErrorCode, ErrorCode>> = {
  'insufficient-funds': 'insufficient_funds',
  'invalid-amount': 'invalid',
  'invalid-account': 'invalid',
  'faucet-cap': 'conflict',
  'not-due': 'conflict',
  'study-settled': 'conflict',
};

/**
 * Errors of the coordinator's API, each with a code a client matches on (never the message text). The codes travel
 * in the ErrorReply payload and, as numbers, in the NATS micro service's own error headers (`Nats-Service-Error-Code`),
 * so `$SRV.STATS` counts them and a client in any language can tell them apart.
 */

/** HTTP-like numbers for the service error header (400 bad request, 401, 402, 403, 404, 409, 503, 500). */
export const SERVICE_ERROR_NUMBERS: Record<ErrorCode, number> = {
  invalid: 400,
  unauthorized: 401,
  forbidden: 403,
  insufficient_funds: 402,
  not_found: 404,
  conflict: 409,
  unavailable: 503,
  internal: 500,
};

/** A failure the coordinator reports (or, for `unavailable`, a client's failure to reach it). */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly issues: readonly string[];
  constructor(code: ErrorCode, message: string, issues: readonly string[] = [], options?: ErrorOptions) {
    super(message, options);
    this.name = 'ApiError';
    this.code = code;
    this.issues = issues;
  }
}

export class NotFoundError extends ApiError {
  constructor(message: string) {
    super('not_found', message);
    this.name = 'NotFoundError';
  }
}

/** Someone else's study (its owner alone reads and cancels it). */
export class ForbiddenError extends ApiError {
  constructor(message: string) {
    super('forbidden', message);
    this.name = 'ForbiddenError';
  }
}

/** The request cannot be done in the current state (an idempotency key still held by an unfinished submit). */
export class ConflictError extends ApiError {
  constructor(message: string) {
    super('conflict', message);
    this.name = 'ConflictError';
  }
}

/** No coordinator answered (none running, or not reachable in time). */
export class CoordinatorUnavailableError extends ApiError {
  constructor(message: string, options?: ErrorOptions) {
    super('unavailable', message, [], options);
    this.name = 'CoordinatorUnavailableError';
  }
}

/** The error code of anything thrown while serving a request. */
export function errorCode(err: unknown): ErrorCode {
  if (err instanceof InputError) return 'invalid';
  if (err instanceof AuthError || err instanceof CredentialError) return 'unauthorized';
  if (err instanceof LedgerError) return LEDGER_CODES[err.code] ?? 'internal';
  if (err instanceof ApiError) return err.code;
  return 'internal';
}
