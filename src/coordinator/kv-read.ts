import { type KV, KvWatchInclude } from '@nats-io/kv';

export interface KvValue {
  key: string;
  value: Uint8Array;
  revision: number;
}

/**
 * Every live value of a bucket in one pass: a watch delivers the last value of each key from one consumer, which is
 * far faster than listing the keys and reading each (a round trip per key). Deleted and purged keys are left out.
 */
export async function readAll(kv: KV): Promise<KvValue[]> {
  const status = await kv.status();
  if (status.values === 0) return [];
  const out: KvValue[] = [];
  const watch = await kv.watch({ include: KvWatchInclude.LastValue });
  // Values can expire (a TTL) between the status and the watch, leaving nothing to deliver: a quiet second ends it.
  let quiet = setTimeout(() => watch.stop(), 1000);
  for await (const e of watch) {
    clearTimeout(quiet);
    if (e.operation === 'PUT') out.push({ key: e.key, value: e.value, revision: e.revision });
    // The initial values end with the entry that has nothing pending after it.
    if (e.isUpdate || e.delta === 0) break;
    quiet = setTimeout(() => watch.stop(), 1000);
  }
  clearTimeout(quiet);
  watch.stop();
  return out;
}

const decoder = new TextDecoder();

/** A stored value's JSON, or undefined when it is not JSON (the caller's schema then refuses it). */
export function safeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
}
