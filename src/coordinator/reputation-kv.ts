import type { KV } from '@nats-io/kv';
import { z } from 'zod';
import { readAll, safeJson } from './kv-read.ts';
import type { Reputation } from './reputation.ts';
import type { ReputationStore } from './standing.ts';

/** A provider's reputation as stored in KV `reputation` under its worker id. */
const StoredReputation = z.strictObject({
  worker_id: z.string(),
  consecutive_valid: z.number().int().min(0),
  valid: z.number().int().min(0),
  invalid: z.number().int().min(0),
  recent_unreplicated: z.array(z.string()),
  updated_at: z.number(),
}) satisfies z.ZodType<Reputation>;

/** Reputations in the `reputation` bucket; a value that does not parse is skipped (trust is earned again). */
export function kvReputations(kv: KV): ReputationStore {
  return {
    async load() {
      const out: Reputation[] = [];
      for (const v of await readAll(kv)) {
        const parsed = StoredReputation.safeParse(safeJson(v.value));
        if (parsed.success) out.push(parsed.data);
      }
      return out;
    },
    async save(reps) {
      await Promise.all(reps.map((r) => kv.put(r.worker_id, JSON.stringify(r))));
    },
  };
}
