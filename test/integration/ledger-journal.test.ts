import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escrowAccount, keyAccount, sim } from '../../src/ledger/accounts.ts';
import { authorityOf, Journal } from '../../src/ledger/journal.ts';
import { chainEntry, type JournalEntry, type Posting } from '../../src/ledger/posting.ts';
import { balance, escrow, mint, pay, refund, transfer } from '../../src/ledger/rules.ts';
import { connectNats } from '../../src/transport/connect.ts';
import { type EmbeddedNats, startEmbeddedNats } from '../../src/transport/nats-server.ts';
import { ensureResources, type Resources, STREAMS } from '../../src/transport/resources.ts';
import { subjects } from '../../src/transport/subjects.ts';

const [A, B, C, D] = Array.from({ length: 4 }, () => createUser().getPublicKey()) as [
  string,
  string,
  string,
  string,
];
const NOW = Date.UTC(2025, 5, 1);

/** A private nats-server with the plurigrid resources, and connections to it. */
class Server {
  dataDir = '';
  nats!: EmbeddedNats;
  private conns: NatsConnection[] = [];

  async start(): Promise<this> {
    this.dataDir = await mkdtemp(join(tmpdir(), 'plurigrid-ledger-'));
    this.nats = await startEmbeddedNats({ dataDir: this.dataDir, log: () => {} });
    return this;
  }

  /** Resources over a connection of their own, as another process would have. */
  async resources(): Promise<Resources> {
    const nc = await connectNats({ url: this.nats.url, name: `ledger-test-${this.conns.length}` });
    this.conns.push(nc);
    return ensureResources(nc);
  }

  async stop(): Promise<void> {
    await Promise.all(this.conns.map((nc) => nc.close().catch(() => {})));
    await this.nats?.stop();
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
  }
}

const lastSeq = async (r: Resources) => (await r.jsm.streams.info(STREAMS.ledger)).state.last_seq;

/** A well-formed transfer of `amount` from A's key to D's: what a thief would try to slip into the journal. */
function theftOf(opId: string, amount: number): Posting {
  return {
    op_id: opId,
    kind: 'transfer',
    entries: [
      { account: keyAccount(A), amount: -amount },
      { account: keyAccount(D), amount },
    ],
    at: NOW,
    memo: null,
    refs: {},
  };
}

describe('ledger journal on JetStream', () => {
  const server = new Server();
  let r1: Resources;
  let r2: Resources;

  beforeAll(async () => {
    await server.start();
    [r1, r2] = await Promise.all([server.resources(), server.resources()]);
  });
  afterAll(() => server.stop());

  it('keeps its entries in an append-only LEDGER stream', async () => {
    const info = await r1.jsm.streams.info(STREAMS.ledger);
    expect(info.config.subjects).toEqual([subjects.ledger]);
    expect(info.config.deny_delete).toBe(true);
    expect(info.config.deny_purge).toBe(true);
    const j = await Journal.open(r1);
    await j.append(mint(keyAccount(A), sim(1), 'append-only', NOW));
    await expect(r1.jsm.streams.purge(STREAMS.ledger)).rejects.toThrow();
    await expect(r1.jsm.streams.deleteMessage(STREAMS.ledger, 1)).rejects.toThrow();
    expect(await lastSeq(r1)).toBe(1);
  });

  it('appends, and a reopened journal replays the same state', async () => {
    const j = await Journal.open(r1);
    const seen: JournalEntry[] = [];
    j.onAppend((e) => seen.push(e));
    await j.append(mint(keyAccount(A), sim(1000), 'mint:A', NOW));
    await j.append(mint(keyAccount(B), sim(1000), 'mint:B', NOW));
    const moved = await j.append((s) => transfer(s, A, C, sim(2.5), 'reopen:t1', NOW));
    expect(moved.status).toBe('appended');
    expect(seen.map((e) => e.posting.op_id)).toEqual(['mint:A', 'mint:B', 'reopen:t1']);
    expect(balance(j.state, keyAccount(C))).toBe(sim(2.5));

    const again = await Journal.open(r2);
    expect(again.state.lastHash).toBe(j.state.lastHash);
    expect(again.state.lastSeq).toBe(j.state.lastSeq);
    expect([...again.state.balances].sort()).toEqual([...j.state.balances].sort());
    expect(again.streamSeq).toBe(await lastSeq(r1));
  });

  it('applies a retried op id once: on this journal, on a stale one, and after a reopen', async () => {
    const j = await Journal.open(r1);
    const stale = await Journal.open(r2); // opened before the transfer: it has not seen it
    const t = (s: Journal['state']) => transfer(s, A, D, sim(1), 'retry:t1', NOW);
    const first = await j.append(t);
    expect(first.status).toBe('appended');
    const seq = await lastSeq(r1);
    const entrySeq = j.state.applied.get('retry:t1');
    expect(entrySeq).toBe(first.status === 'appended' ? first.entry.seq : -1);
    // A builder finds its op applied and has nothing to do.
    expect(await j.append(t)).toMatchObject({ status: 'skipped' });
    // The stale journal's publish is refused (wrong last sequence, or a duplicate Msg-Id); it reads and skips.
    expect(await stale.append(t)).toMatchObject({ status: 'skipped' });
    expect(stale.state.applied.get('retry:t1')).toBe(entrySeq);
    expect(stale.stats.conflicts + stale.stats.duplicates).toBeGreaterThan(0);
    const reopened = await Journal.open(r2);
    expect(await reopened.append(t)).toMatchObject({ status: 'skipped' });
    // A ready posting (not a builder) whose op id is applied is skipped, naming the entry that applied it.
    const posting = first.status === 'appended' ? first.entry.posting : null;
    expect(await reopened.append(posting!)).toEqual({ status: 'skipped', op_id: 'retry:t1', seq: entrySeq });
    expect(await lastSeq(r1)).toBe(seq);
    expect(balance(reopened.state, keyAccount(D))).toBe(sim(1));
  });

  it('two journals appending at once never fork the chain, and every posting lands exactly once', async () => {
    const [j1, j2] = await Promise.all([Journal.open(r1), Journal.open(r2)]);
    const before = await lastSeq(r1);
    const n = 40;
    const mine = (j: Journal, tag: string, from: string, to: string) =>
      Array.from({ length: n }, (_, i) => j.append((s) => transfer(s, from, to, 1 + i, `${tag}:${i}`, NOW)));
    // Both also try the same op ids: each of those lands once, whichever journal gets there first.
    const shared = (j: Journal) =>
      Array.from({ length: 10 }, (_, i) => j.append((s) => transfer(s, A, B, 7, `shared:${i}`, NOW)));
    const results = await Promise.all([
      ...mine(j1, 'c1', A, C),
      ...mine(j2, 'c2', B, D),
      ...shared(j1),
      ...shared(j2),
    ]);
    const appended = results.filter((x) => x.status === 'appended').length;
    expect(appended).toBe(2 * n + 10);
    expect(
      j1.stats.conflicts + j2.stats.conflicts + j1.stats.duplicates + j2.stats.duplicates,
    ).toBeGreaterThan(0);
    expect(await lastSeq(r1)).toBe(before + 2 * n + 10); // nothing forked off or landed twice

    await Promise.all([j1.refresh(), j2.refresh()]);
    expect(j1.state.lastHash).toBe(j2.state.lastHash);
    const fresh = await Journal.open(r1);
    expect(fresh.state.lastHash).toBe(j1.state.lastHash);
    for (let i = 0; i < n; i++) {
      expect(fresh.state.applied.has(`c1:${i}`)).toBe(true);
      expect(fresh.state.applied.has(`c2:${i}`)).toBe(true);
    }
    expect(fresh.problems).toEqual([]);
    const report = await fresh.verify();
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.postings).toBe(await lastSeq(r1));
  });

  it('re-runs a builder after losing a race, so two journals never pay out more than the escrow', async () => {
    const [j1, j2] = await Promise.all([Journal.open(r1), Journal.open(r2)]);
    await j1.append((s) => escrow(s, 'race', A, 10, NOW));
    await j2.refresh();
    // Four executions each, 3 µSIM each, from a budget of 10; j2 is told only once it loses a race.
    const payAll = (j: Journal, tag: string) =>
      Array.from({ length: 4 }, (_, i) => j.append((s) => pay(s, 'race', C, 3, `race-${tag}${i}`, 1, NOW)));
    await Promise.all([...payAll(j1, 'a'), ...payAll(j2, 'b')]);
    await Promise.all([j1.refresh(), j2.refresh()]);
    expect(balance(j1.state, escrowAccount('race'))).toBe(0);
    await j2.append((s) => refund(s, 'race', A, NOW));
    const paid = [...j2.state.applied.keys()].filter((op) => op.startsWith('pay:race-')).length;
    expect(paid).toBe(4); // 3 + 3 + 3 + 1
    expect((await j1.verify()).ok).toBe(true);
  });

  it('throws a refused posting’s LedgerError and publishes nothing', async () => {
    const j = await Journal.open(r1);
    const seq = await lastSeq(r1);
    await expect(j.append((s) => transfer(s, C, A, sim(1_000_000), 'too-much', NOW))).rejects.toMatchObject({
      name: 'LedgerError',
      code: 'insufficient-funds',
    });
    expect(await lastSeq(r1)).toBe(seq);
  });
});

describe('ledger journal verification', () => {
  const server = new Server();
  let r: Resources;

  beforeAll(async () => {
    await server.start();
    r = await server.resources();
  });
  afterAll(() => server.stop());

  /** Publishes straight onto the subject, as a writer going around the journal would. */
  const forge = async (entry: JournalEntry) => {
    await r.js.publish(subjects.ledger, JSON.stringify(entry));
    return lastSeq(r);
  };

  it('passes on an honest journal, and names every forged message', async () => {
    const j = await Journal.open(r);
    await j.append(mint(keyAccount(A), sim(100), 'm:A', NOW));
    await j.append((s) => transfer(s, A, B, sim(10), 't:1', NOW));
    const honest = await j.verify();
    expect(honest).toMatchObject({ ok: true, postings: 2, messages: 2, problems: [] });
    expect(honest.supply.minted).toBe(sim(100));
    expect(honest.supply.key).toBe(sim(100));

    const s = j.state;
    const good = (p: Posting) => chainEntry(s.lastSeq, s.lastHash, p);
    const theft = theftOf('t:2', sim(90));
    // 1. A bad hash: the posting changed after hashing.
    const tampered = good(theft);
    tampered.posting = { ...theft, entries: theft.entries.map((e) => ({ ...e, amount: e.amount * 2 })) };
    const badHash = await forge(tampered);
    // 2. A well-chained repeat of an op id already applied.
    const replayed = await forge(good({ ...theft, op_id: 't:1' }));
    // 3. A well-chained posting that does not balance.
    const unbalanced = await forge(
      good({ ...theft, op_id: 't:3', entries: [{ account: keyAccount(D), amount: sim(5) }] }),
    );
    // 4. Not a journal entry at all.
    await r.js.publish(subjects.ledger, '{"hello":"world"}');
    const junk = await lastSeq(r);

    const report = await j.verify();
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => [p.streamSeq, p.code])).toEqual([
      [badHash, 'bad-hash'],
      [replayed, 'duplicate-op'],
      [unbalanced, 'unbalanced'],
      [junk, 'malformed'],
    ]);
    expect(report.postings).toBe(2);
    expect(report.messages).toBe(6);

    // The forged messages are not part of the chain: appends carry on from the last honest entry, and a reopened
    // journal reads the same state (and reports what it skipped).
    expect(j.problems.map((p) => p.code)).toEqual(['bad-hash', 'duplicate-op', 'unbalanced', 'malformed']);
    await j.append((st) => transfer(st, B, C, sim(1), 't:4', NOW));
    const reopened = await Journal.open(r);
    expect(reopened.state.lastHash).toBe(j.state.lastHash);
    expect(balance(reopened.state, keyAccount(D))).toBe(0);
    expect(balance(reopened.state, keyAccount(C))).toBe(sim(1));
    expect(reopened.problems.map((p) => p.streamSeq)).toEqual([badHash, replayed, unbalanced, junk]);
  });

  it('with a ledger authority, a well-formed theft published around the journal is not applied: it is unsigned', async () => {
    const authority = authorityOf(createUser());
    const j = await Journal.open(r, { authority });
    const base = j.state.lastSeq;
    await j.append(mint(keyAccount(A), sim(50), 'm:auth', NOW));
    const s = j.state;
    // Perfectly chained and balanced, moving A's SIM to D — but signed by nobody (or by another key).
    const theft = theftOf('t:auth', sim(50));
    const unsigned = await forge(chainEntry(s.lastSeq, s.lastHash, theft));
    const other = authorityOf(createUser());
    const entry = chainEntry(s.lastSeq, s.lastHash, { ...theft, op_id: 't:auth2' });
    const wrongKey = await forge({ ...entry, sig: other.sign!(entry.hash) });
    const reopened = await Journal.open(r, { authority });
    expect(reopened.state.lastSeq).toBe(base + 1);
    expect(balance(reopened.state, keyAccount(D))).toBe(0);
    const tail = reopened.problems.slice(-2).map((p) => [p.streamSeq, p.code]);
    expect(tail).toEqual([
      [unsigned, 'unsigned'],
      [wrongKey, 'unsigned'],
    ]);
    // The authority's own appends go on from the last signed entry.
    await j.append((st) => transfer(st, A, B, sim(1), 't:auth3', NOW));
    expect((await Journal.open(r, { authority })).state.lastHash).toBe(j.state.lastHash);
  });
});
