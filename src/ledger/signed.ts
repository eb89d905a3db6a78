/**
 * Signed requests: every move of SIM is asked for by the key whose SIM moves, with an ed25519 signature over
 * canonicalJson({action, body, key, nonce, expires_at}). A request is good once: the nonce guard refuses a replay
 * while it could still be valid, and {@link requestOpId} makes it an op id, so the journal refuses it after that too
 * (and after a restart, when the guard has forgotten it).
 */
import { randomBytes, sign, verify } from 'node:crypto';
import { fromSeed, type KeyPair } from '@nats-io/nkeys';
import { z } from 'zod';
import { RequestAuth } from '../models/api.ts';
import { canonicalJson } from '../models/digest.ts';
import { privateKeyOf, publicKeyOf } from '../transport/identity.ts';
import { Nkey } from './accounts.ts';

/** How long a request stays valid by default. */
export const DEFAULT_TTL_MS = 5 * 60_000;
/** A request valid for longer than this from now is refused: it would have to be remembered that long. */
export const MAX_TTL_MS = 10 * 60_000;

/** A request that moves SIM: its body and action, and the signature fields a submit carries as `auth`. */
export const SignedRequest = RequestAuth.extend({
  /** Checked down to its CRC (the auth's pattern is only the shape). */
  key: Nkey,
  /** What is asked for (`transfer`, `escrow`, …): a signature for one action is no good for another. */
  action: z.string().min(1).max(64),
  body: z.json(),
});
export type SignedRequest = z.infer<typeof SignedRequest>;

export type AuthErrorCode =
  | 'malformed'
  | 'bad-signature'
  | 'wrong-action'
  | 'expired'
  | 'not-yet-valid'
  | 'replayed'
  | 'nonce-capacity';

/** A request refused. Match on `code`, never on the message. */
export class AuthError extends Error {
  readonly code: AuthErrorCode;
  constructor(code: AuthErrorCode, message: string) {
    super(message);
    this.name = 'AuthError';
    this.code = code;
  }
}

type Signed = Omit<SignedRequest, 'signature'>;
const signedBytes = (r: Signed): Buffer =>
  Buffer.from(
    canonicalJson({ action: r.action, body: r.body, key: r.key, nonce: r.nonce, expires_at: r.expires_at }),
  );

/** Signs a request by `signer` (a key pair, or its seed) valid for `ttlMs` from `now`. */
export function signRequest(
  signer: KeyPair | string,
  action: string,
  body: unknown,
  now: number,
  ttlMs = DEFAULT_TTL_MS,
): SignedRequest {
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0 || ttlMs > MAX_TTL_MS) {
    throw new RangeError(`ttl must be 1..${MAX_TTL_MS} ms, got ${ttlMs}`);
  }
  const kp = typeof signer === 'string' ? fromSeed(new TextEncoder().encode(signer)) : signer;
  const unsigned: Signed = {
    key: kp.getPublicKey(),
    action,
    body: body as SignedRequest['body'],
    nonce: randomBytes(18).toString('base64url'),
    expires_at: now + ttlMs,
  };
  const signature = sign(null, signedBytes(unsigned), privateKeyOf(kp)).toString('base64');
  return { ...unsigned, signature };
}

/** The op id of the posting a request asks for: the same request never moves SIM twice. */
export const requestOpId = (req: Pick<SignedRequest, 'key' | 'nonce'>): string =>
  `req:${req.key}:${req.nonce}`;

export interface NonceGuardOptions {
  /** Most (key, nonce) pairs remembered at once; past it, requests are refused rather than replays let in. */
  capacity?: number;
}

/** Remembers each (key, nonce) until its request expires (after which the request is refused as expired anyway). */
export class NonceGuard {
  readonly #seen = new Map<string, number>();
  readonly #capacity: number;
  #pruneAt = 1024;

  constructor({ capacity = 200_000 }: NonceGuardOptions = {}) {
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#seen.size;
  }

  /** Records the pair; throws 'replayed' when it is remembered, 'nonce-capacity' when there is no room. */
  claim(key: string, nonce: string, expiresAt: number, now: number): void {
    const id = `${key}:${nonce}`;
    const until = this.#seen.get(id);
    if (until !== undefined && until > now)
      throw new AuthError('replayed', `nonce ${nonce} was used already`);
    // Pruning walks the whole map, so it runs each time the map doubles: amortised O(1) per claim.
    if (this.#seen.size >= this.#pruneAt || this.#seen.size >= this.#capacity) this.prune(now);
    if (this.#seen.size >= this.#capacity) {
      throw new AuthError('nonce-capacity', 'too many requests in flight; try again shortly');
    }
    this.#seen.set(id, expiresAt);
  }

  /** Forgets every pair whose request has expired at `now`. */
  prune(now: number): void {
    for (const [id, until] of this.#seen) if (until <= now) this.#seen.delete(id);
    this.#pruneAt = Math.max(1024, this.#seen.size * 2);
  }
}

/** A request that passed {@link verifyRequest}, its body parsed by the schema given. */
export type VerifiedRequest<T> = Omit<SignedRequest, 'body'> & { body: T };

/**
 * Checks a request for `expectedAction` at `now` and claims its nonce: throws an {@link AuthError} when it is not a
 * request ('malformed'), the signature does not verify ('bad-signature'), it is for another action ('wrong-action'),
 * it has expired ('expired'), it is valid for longer than {@link MAX_TTL_MS} ('not-yet-valid'), its body does not
 * match `bodySchema` ('malformed'), or it was seen before ('replayed'). The nonce is claimed last, so requests that
 * fail never take room in the guard.
 */
export function verifyRequest<S extends z.ZodType = z.ZodType<unknown>>(
  input: unknown,
  expectedAction: string,
  now: number,
  nonces: NonceGuard,
  bodySchema?: S,
): VerifiedRequest<z.output<S>> {
  const parsed = SignedRequest.safeParse(input);
  if (!parsed.success) throw new AuthError('malformed', `not a signed request: ${parsed.error.message}`);
  const req = parsed.data;
  let good = false;
  try {
    good = verify(null, signedBytes(req), publicKeyOf(req.key), Buffer.from(req.signature, 'base64'));
  } catch {
    good = false;
  }
  if (!good) throw new AuthError('bad-signature', `the signature is not by ${req.key}`);
  if (req.action !== expectedAction) {
    throw new AuthError('wrong-action', `signed for ${req.action}, not ${expectedAction}`);
  }
  if (now >= req.expires_at) throw new AuthError('expired', `expired at ${req.expires_at}`);
  if (req.expires_at - now > MAX_TTL_MS) {
    throw new AuthError('not-yet-valid', `valid until ${req.expires_at}, beyond ${MAX_TTL_MS} ms from now`);
  }
  let body: z.output<S> = req.body as z.output<S>;
  if (bodySchema) {
    const b = bodySchema.safeParse(req.body);
    if (!b.success) throw new AuthError('malformed', `bad ${expectedAction} body: ${b.error.message}`);
    body = b.data as z.output<S>;
  }
  nonces.claim(req.key, req.nonce, req.expires_at, now);
  return { ...req, body };
}
