/**
 * The ledger's journal in JetStream: the LEDGER stream holds one hash-chained {@link JournalEntry} per message, and a
 * {@link Journal} keeps the state they add up to. Several journals (processes) may append to one stream: each publish
 * expects the stream's last sequence to be the one its state was built from, so a journal that missed another's entry
 * is refused, reads it, and builds its posting again from the state that includes it — the chain never forks.
 *
 * A message that does not apply (malformed, a broken chain, an unbalanced posting, an op id seen before — which only a
 * writer going around the journal can put there) is skipped and reported: it is not part of the chain, and the next
 * entry links to the last one that applied. {@link Journal.verify} re-walks the stream and names every such problem.
 * With an {@link Authority} (the coordinator's ledger key), an entry must also carry its signature over the entry's
 * hash: a client that can publish on the subject still cannot forge a posting that any journal applies.
 */
import { sign, verify } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type PubAck,
} from '@nats-io/jetstream';
import type { KeyPair } from '@nats-io/nkeys';
import { privateKeyOf, publicKeyOf } from '../transport/identity.ts';
import { ensureStream, STREAMS, streamDefinitions } from '../transport/resources.ts';
import { subjects } from '../transport/subjects.ts';
import { type Account, LedgerError, type LedgerErrorCode } from './accounts.ts';
import { chainEntry, JournalEntry, Posting } from './posting.ts';
import { applyEntry, checkPosting, emptyState, type LedgerState, type LedgerView } from './rules.ts';

/** Reads the state and returns the posting to append, or null when there is nothing to do. */
export type Builder = (state: LedgerView) => Posting | null;

export type AppendResult =
  | { status: 'appended'; entry: JournalEntry; streamSeq: number }
  /** Nothing appended: the builder had nothing to do (`op_id` null), or the op id was applied by entry `seq`. */
  | { status: 'skipped'; op_id: string | null; seq: number | null };

/** A stream message that is not part of the chain. */
export interface JournalProblem {
  streamSeq: number;
  code: LedgerErrorCode;
  detail: string;
}

export interface VerifyReport {
  ok: boolean;
  /** Entries in the chain. */
  postings: number;
  /** Stream messages read (postings plus the messages that did not apply). */
  messages: number;
  problems: JournalProblem[];
  /** µSIM by account class; `minted` is −treasury, the supply (equal to the sum of the others). */
  supply: Record<'minted' | 'key' | 'stake' | 'unbonding' | 'escrow' | 'faucet' | 'pool', number>;
  lastHash: string;
}

export interface JournalLog {
  warn(obj: object, msg: string): void;
}

export interface JournalOptions {
  log?: JournalLog;
  /** Entries not signed by this authority are not part of the chain (the coordinator's own key signs its appends). */
  authority?: Authority;
  /**
   * Lost races (another writer appended first) one append retries before it throws a 'conflict' LedgerError
   * (default 100). Several writers are safe but not fair; the ledger expects one main writer (the coordinator).
   */
  maxConflicts?: number;
  /** Throws when this writer may no longer append (a standby coordinator took over). */
  fence?: () => void;
}

/** Below this many messages to read, one direct get each beats setting up a consumer. */
const DIRECT_READ_MAX = 16;
const MAX_PROBLEMS_KEPT = 1000;
const MAX_BACKOFF_MS = 20;
const decoder = new TextDecoder();

function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** Applies one stream message to `state`; returns the entry, or the problem that kept it out of the chain. */
/** Who may write the journal: entries must carry this key's signature over their hash (see JournalEntry.sig). */
export interface Authority {
  key: string;
  /** Signs an entry's hash (the coordinator's side; a reader only verifies). */
  sign?(hash: string): string;
}

function signedByAuthority(entry: JournalEntry, authority: Authority | undefined): boolean {
  if (!authority) return true;
  if (!entry.sig) return false;
  try {
    return verify(
      null,
      Buffer.from(entry.hash),
      publicKeyOf(authority.key),
      Buffer.from(entry.sig, 'base64'),
    );
  } catch {
    return false;
  }
}

/** An authority from the coordinator's ledger key pair: signs with it, and requires its signature. */
export function authorityOf(kp: KeyPair): Authority {
  const key = privateKeyOf(kp);
  return { key: kp.getPublicKey(), sign: (hash) => sign(null, Buffer.from(hash), key).toString('base64') };
}

function ingest(
  state: LedgerState,
  streamSeq: number,
  data: Uint8Array,
  authority?: Authority,
): JournalEntry | JournalProblem {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(data));
  } catch {
    return { streamSeq, code: 'malformed', detail: 'not JSON' };
  }
  const parsed = JournalEntry.safeParse(value);
  if (!parsed.success) {
    return { streamSeq, code: 'malformed', detail: parsed.error.issues[0]?.message ?? 'not a journal entry' };
  }
  if (!signedByAuthority(parsed.data, authority)) {
    return {
      streamSeq,
      code: 'unsigned',
      detail: `entry ${parsed.data.seq} is not signed by the ledger authority`,
    };
  }
  try {
    applyEntry(state, parsed.data);
  } catch (err) {
    if (err instanceof LedgerError) return { streamSeq, code: err.code, detail: err.message };
    throw err;
  }
  return parsed.data;
}

const isProblem = (x: JournalEntry | JournalProblem): x is JournalProblem => 'code' in x;

export class Journal {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #log: JournalLog | undefined;
  readonly #maxConflicts: number;
  readonly #authority: Authority | undefined;
  readonly #fence: (() => void) | undefined;
  readonly #state: LedgerState = emptyState();
  /** The stream sequence the state was built up to (the expectation of the next publish). */
  #streamSeq = 0;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #listeners = new Set<(entry: JournalEntry) => void>();
  /** Messages skipped while reading the stream (the latest {@link MAX_PROBLEMS_KEPT}). */
  readonly problems: JournalProblem[] = [];
  /** Counters for benchmarks and metrics. */
  readonly stats = { appended: 0, conflicts: 0, duplicates: 0, read: 0 };

  private constructor(r: { js: JetStreamClient; jsm: JetStreamManager }, opts: JournalOptions) {
    this.#js = r.js;
    this.#jsm = r.jsm;
    this.#log = opts.log;
    this.#maxConflicts = opts.maxConflicts ?? 100;
    this.#authority = opts.authority;
    this.#fence = opts.fence;
  }

  /** Ensures the LEDGER stream and replays all of it into a fresh state. */
  static async open(
    r: { js: JetStreamClient; jsm: JetStreamManager; replicas?: number },
    opts: JournalOptions = {},
  ): Promise<Journal> {
    await ensureStream(r.jsm, { ...streamDefinitions.ledger, num_replicas: r.replicas ?? 1 });
    const journal = new Journal(r, opts);
    await journal.refresh();
    return journal;
  }

  /** The state as of the last entry read or appended (for reading only: it changes as entries are applied). */
  get state(): LedgerView {
    return this.#state;
  }

  /** The stream sequence the state is built up to. */
  get streamSeq(): number {
    return this.#streamSeq;
  }

  /** Calls `listener` with every entry applied from now on, appended here or read from the stream. */
  onAppend(listener: (entry: JournalEntry) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Reads entries other writers appended since. */
  refresh(): Promise<void> {
    return this.#serial(() => this.#catchUp());
  }

  /**
   * Appends the posting `build` returns (run against the current state; again after catching up when another writer
   * got in first). Appends run one at a time. An op id already applied is skipped, never appended twice; a posting
   * the rules refuse throws its {@link LedgerError} and nothing is published. The state changes only once the stream
   * has acknowledged the entry.
   */
  append(build: Posting | Builder): Promise<AppendResult> {
    return this.#serial(() => this.#append(typeof build === 'function' ? build : () => build));
  }

  /**
   * Re-walks the stream from its first message into a fresh state: every hash recomputes and links, every posting
   * balances and keeps every non-treasury balance ≥ 0, no op id applies twice, and the result equals this journal's
   * state at the same point. Appends carry on meanwhile.
   */
  async verify(): Promise<VerifyReport> {
    const snapshot = await this.#serial(async () => {
      await this.#catchUp();
      const s = this.#state;
      return { upTo: this.#streamSeq, balances: new Map(s.balances), ops: s.applied.size, hash: s.lastHash };
    });
    const fresh = emptyState();
    const problems: JournalProblem[] = [];
    let messages = 0;
    await this.#read(1, snapshot.upTo, (seq, data) => {
      messages++;
      const r = ingest(fresh, seq, data, this.#authority);
      if (isProblem(r)) problems.push(r);
    });
    const supply = { minted: 0, key: 0, stake: 0, unbonding: 0, escrow: 0, faucet: 0, pool: 0 };
    let total = 0;
    for (const [account, amount] of fresh.balances) {
      total += amount;
      if (account === 'treasury') supply.minted = -amount;
      else supply[account.split(':')[0] as Exclude<keyof typeof supply, 'minted'>] += amount;
      if (amount < 0 && account !== 'treasury') {
        problems.push({ streamSeq: 0, code: 'insufficient-funds', detail: `${account} ends at ${amount}` });
      }
    }
    if (total !== 0) problems.push({ streamSeq: 0, code: 'unbalanced', detail: `balances sum to ${total}` });
    const mismatch = (detail: string) => problems.push({ streamSeq: 0, code: 'state-mismatch', detail });
    if (fresh.lastHash !== snapshot.hash)
      mismatch('the replayed chain ends on another hash than the cached one');
    if (fresh.applied.size !== snapshot.ops) mismatch('the replay applied another number of op ids');
    if (!sameBalances(fresh.balances, snapshot.balances))
      mismatch('replayed balances differ from the cached ones');
    return {
      ok: problems.length === 0,
      postings: fresh.lastSeq,
      messages,
      problems,
      supply,
      lastHash: fresh.lastHash,
    };
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #append(build: Builder): Promise<AppendResult> {
    this.#fence?.();
    for (let conflicts = 0; ; conflicts++) {
      const built = build(this.#state);
      if (!built) return { status: 'skipped', op_id: null, seq: null };
      const done = this.#state.applied.get(built.op_id);
      if (done !== undefined) return { status: 'skipped', op_id: built.op_id, seq: done };
      // Checked as a reader will check it, so an entry this journal applies is one every replay applies.
      const parsed = Posting.safeParse(built);
      if (!parsed.success) {
        throw new LedgerError('malformed', `posting ${built.op_id}: ${parsed.error.issues[0]?.message}`);
      }
      const posting = parsed.data;
      checkPosting(this.#state, posting);
      const chained = chainEntry(this.#state.lastSeq, this.#state.lastHash, posting);
      const sig = this.#authority?.sign?.(chained.hash);
      const entry: JournalEntry = sig ? { ...chained, sig } : chained;
      let ack: PubAck;
      try {
        ack = await this.#js.publish(subjects.ledger, JSON.stringify(entry), {
          expect: { lastSequence: this.#streamSeq },
          msgID: posting.op_id,
        });
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
        this.stats.conflicts++;
        await this.#retryAfter(conflicts, err);
        continue;
      }
      if (ack.duplicate) {
        // The op id reached the stream within the duplicate window (another writer, or an unacknowledged try of
        // ours): read it, and the builder will find it applied.
        this.stats.duplicates++;
        await this.#retryAfter(conflicts, undefined);
        continue;
      }
      applyEntry(this.#state, entry);
      this.#streamSeq = ack.seq;
      this.stats.appended++;
      this.#emit(entry);
      return { status: 'appended', entry, streamSeq: ack.seq };
    }
  }

  async #retryAfter(conflicts: number, cause: unknown): Promise<void> {
    if (conflicts >= this.#maxConflicts) {
      throw new LedgerError('conflict', `gave up after ${conflicts} conflicting appends`, { cause });
    }
    // After the first lost race, a random pause that grows with each one spreads colliding writers out and cuts the
    // wasted round trips. It does not make them fair: a writer that just won needs no catch-up and is quicker to the
    // next publish, so under sustained contention one writer can keep losing until it gives up (see maxConflicts).
    if (conflicts > 0) await sleep(Math.random() * Math.min(2 ** conflicts, MAX_BACKOFF_MS));
    await this.#catchUp();
  }

  /**
   * Reads what the stream holds beyond the state. The last message comes with the question (every entry has the one
   * subject), so falling one entry behind — a lost race — costs one round trip.
   */
  async #catchUp(): Promise<void> {
    const last = await this.#jsm.streams.getMessage(STREAMS.ledger, { last_by_subj: subjects.ledger });
    if (!last || last.seq <= this.#streamSeq) return;
    const each = (seq: number, data: Uint8Array) => {
      this.stats.read++;
      this.#streamSeq = seq;
      const r = ingest(this.#state, seq, data, this.#authority);
      if (!isProblem(r)) return this.#emit(r);
      if (this.problems.length >= MAX_PROBLEMS_KEPT) this.problems.shift();
      this.problems.push(r);
      this.#log?.warn(r, 'ledger message skipped: not part of the chain');
    };
    await this.#read(this.#streamSeq + 1, last.seq - 1, each);
    each(last.seq, last.data);
  }

  /** Calls `each` for every message from `from` to `to` in order: direct gets for a few, else an ordered consumer. */
  async #read(from: number, to: number, each: (seq: number, data: Uint8Array) => void): Promise<void> {
    if (to < from) return;
    if (to - from < DIRECT_READ_MAX) {
      const seqs = Array.from({ length: to - from + 1 }, (_, i) => from + i);
      const msgs = await Promise.all(
        seqs.map((seq) => this.#jsm.streams.getMessage(STREAMS.ledger, { seq })),
      );
      for (const m of msgs) if (m) each(m.seq, m.data);
      return;
    }
    const consumer = await this.#js.consumers.get(STREAMS.ledger, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: from,
    });
    const messages = await consumer.consume({ max_messages: 8192 });
    try {
      for await (const m of messages) {
        if (m.seq > to) break;
        each(m.seq, m.data);
        if (m.seq === to || m.info.pending === 0) break;
      }
    } finally {
      await messages.close();
    }
  }

  #emit(entry: JournalEntry): void {
    for (const listener of this.#listeners) {
      try {
        listener(entry);
      } catch (err) {
        this.#log?.warn(
          { err: (err as Error).message, op_id: entry.posting.op_id },
          'ledger listener failed',
        );
      }
    }
  }
}

function sameBalances(a: ReadonlyMap<Account, number>, b: ReadonlyMap<Account, number>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
