/**
 * Enrollment: a new machine trades a one-time token (printed by `plurigrid enroll-token` on the coordinator's
 * machine) for a user JWT of its role, issued for the public key it sends. Its seed never leaves it: the JWT alone is
 * no use to anyone else. A token is good once (its id is created in KV `enrollments`, which fails the second time)
 * and until it expires; every enrollment is logged.
 */
import { createHash } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import { z } from 'zod';
import { type AuthStore, CredentialError, parseToken } from '../transport/auth.ts';
import { isConflict } from './cas.ts';
import type { Clock } from './clock.ts';
import { ConflictError } from './errors.ts';

export const EnrollRequest = z.strictObject({
  /** The token as printed (`pgenroll1_…`). */
  token: z.string().min(10).max(8192),
  /** The public user key the credentials are for (its seed stays with the enrolling machine). */
  key: z.string().regex(/^U[A-Z2-7]{55}$/, 'expected a public user nkey (U…)'),
});
export type EnrollRequest = z.infer<typeof EnrollRequest>;

export const EnrollReply = z.strictObject({
  role: z.enum(['worker', 'client']),
  key: z.string(),
  /** The user JWT; with the enrolling machine's seed it makes a `.creds` file. */
  jwt: z.string(),
});
export type EnrollReply = z.infer<typeof EnrollReply>;

export class Enrollment {
  private readonly auth: AuthStore;
  private readonly used: KV;
  private readonly clock: Clock;
  private readonly log: Logger;

  constructor(deps: { auth: AuthStore; used: KV; clock: Clock; log: Logger }) {
    this.auth = deps.auth;
    this.used = deps.used;
    this.clock = deps.clock;
    this.log = deps.log;
  }

  async redeem(req: EnrollRequest): Promise<EnrollReply> {
    const token = parseToken(req.token);
    const { id, role } = this.auth.checkToken(token, this.clock.now());
    // Refused before the token is spent: a revoked key must not use up someone's token.
    if ((await this.auth.revocations())[req.key] !== undefined) {
      throw new CredentialError('revoked', `the key ${req.key} is revoked; enroll with a new key`);
    }
    try {
      // The token's id (a JWT jti) in a form KV keys allow.
      const entry = createHash('sha256').update(id).digest('hex');
      await this.used.create(
        entry,
        JSON.stringify({ token_id: id, role, key: req.key, at: this.clock.now() }),
      );
    } catch (e) {
      if (!isConflict(e)) throw e; // the bus, not the token: the enrolling machine may retry
      this.log.warn({ token_id: id, key: req.key, role }, 'enrollment refused: token used already');
      throw new ConflictError('this enrollment token was used already; ask for a new one');
    }
    const jwt = await this.auth.userJwt(role, req.key);
    this.log.info({ token_id: id, key: req.key, role }, 'enrolled');
    return { role, key: req.key, jwt };
  }
}
