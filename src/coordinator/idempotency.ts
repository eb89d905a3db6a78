import type { KV } from '@nats-io/kv';
import type { SubmitReply } from '../models/api.ts';
import type { Clock } from './clock.ts';
import { ConflictError } from './errors.ts';

/** A claim whose study never appeared within this time (its coordinator died in between) is taken over. */
const CLAIM_TTL_MS = 30_000;

/**
 * Idempotency keys of submits (KV `idempotency`: sha256(key) → the study it started). A repeated key answers with
 * the first submit's reply; a key whose first submit is still under way answers `conflict`.
 */
export class IdempotencyKeys {
  private readonly kv: KV;
  private readonly clock: Clock;
  private readonly replyFor: (studyId: string) => SubmitReply | undefined;

  constructor(kv: KV, clock: Clock, replyFor: (studyId: string) => SubmitReply | undefined) {
    this.kv = kv;
    this.clock = clock;
    this.replyFor = replyFor;
  }

  /** The reply of the submit that holds this key, if its study exists (waiting up to `waitMs` for it to appear). */
  async reply(key: string, waitMs = 0): Promise<SubmitReply | undefined> {
    // A wait in real time (monotonic), whatever the coordinator's clock says.
    const until = performance.now() + waitMs;
    for (;;) {
      const entry = await this.kv.get(key);
      let studyId: string | undefined;
      try {
        studyId = entry?.value.length ? (entry.json() as { study_id?: string }).study_id : undefined;
      } catch {
        studyId = undefined;
      }
      const reply = studyId ? this.replyFor(studyId) : undefined;
      if (reply || performance.now() >= until) return reply;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Claims the key for a new study. Returns the first submit's reply if another holds it and its study exists (or
   * appears within 5 s); takes over a claim older than 30 s; else throws a ConflictError.
   */
  async claim(key: string, studyId: string): Promise<SubmitReply | undefined> {
    const claim = JSON.stringify({ study_id: studyId });
    try {
      await this.kv.create(key, claim);
      return undefined;
    } catch {
      const seen = await this.reply(key, 5000);
      if (seen) return seen;
    }
    const entry = await this.kv.get(key);
    if (entry && this.clock.now() - entry.created.getTime() > CLAIM_TTL_MS) {
      await this.kv.update(key, claim, entry.revision);
      return undefined;
    }
    throw new ConflictError(
      'this idempotency key belongs to a submit that has not finished; retry in a minute',
    );
  }

  async release(key: string): Promise<void> {
    await this.kv.delete(key).catch(() => {});
  }
}
