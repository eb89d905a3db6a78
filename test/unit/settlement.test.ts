import { createUser } from '@nats-io/nkeys';
import { describe, expect, it } from 'vitest';
import { StudyFunds } from '../../src/coordinator/funds.ts';
import { DEFAULT_RETRY, newJobRecord, report, startExecution } from '../../src/coordinator/job-state.ts';
import { keyAccount, stakeAccount } from '../../src/ledger/accounts.ts';
import { fundingOf } from '../../src/ledger/funding.ts';
import type { Builder, Journal } from '../../src/ledger/journal.ts';
import type { Posting } from '../../src/ledger/posting.ts';
import {
  applyPosting,
  balance,
  contribute,
  emptyState,
  escrow,
  type LedgerState,
  mint,
  settled,
  stake,
} from '../../src/ledger/rules.ts';
import { jobSettlement, Settlement, SLASH_MIN, slashFor } from '../../src/ledger/settlement.ts';
import { Job, ResourceLimits } from '../../src/models/job.ts';
import type { JobRecord } from '../../src/models/job-record.ts';
import { Study } from '../../src/models/study.ts';
import type { StudyRecord } from '../../src/models/study-record.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { baseScenario } from './arbitraries.ts';

const job = Job.parse({
  job_id: 's1-00000',
  study_id: 's1',
  image: 'sha256:img',
  input_digest: 'a'.repeat(64),
  epochs: expandStudy(Study.parse({ name: 's', scenario: {}, runs: 1 }), baseScenario()),
  limits: ResourceLimits.parse({}),
});
const policy = DEFAULT_RETRY;
const paid = () =>
  newJobRecord(job, 0, policy, { quorum: 2, max_results: 4, adaptive: false, max_price: 0.002 });

/** Three executions at 500 µSIM each: a and c agree, b is outvoted. */
function voted([a, b, c] = ['a', 'b', 'c']): { before: JobRecord; after: JobRecord } {
  let r = paid();
  for (const w of [a, b]) r = startExecution(r, w, 0, 1000, { pay: 500 });
  r = report(r, 1, a, { seq: 1, output_digest: 'x' }, 1, policy);
  r = report(r, 2, b, { seq: 2, output_digest: 'y' }, 2, policy);
  const before = startExecution(r, c, 3, 1000, { pay: 500 });
  return { before, after: report(before, 3, c, { seq: 3, output_digest: 'x' }, 4, policy) };
}

describe('settlement', () => {
  it('pays each valid execution what it was placed at and slashes each outvoted one, once per verdict', () => {
    const { before, after } = voted();
    expect(jobSettlement(after, before)).toEqual([
      { kind: 'pay', study_id: 's1', job_id: 's1-00000', attempt: 1, key: 'a', amount: 500 },
      { kind: 'slash', job_id: 's1-00000', attempt: 2, key: 'b', amount: slashFor(500) },
      { kind: 'pay', study_id: 's1', job_id: 's1-00000', attempt: 3, key: 'c', amount: 500 },
    ]);
    // A commit that changes no verdict calls for nothing; the level-triggered pass (no `before`) calls for all again.
    expect(jobSettlement(after, after)).toEqual([]);
    expect(jobSettlement(after)).toHaveLength(3);
    expect(slashFor(0)).toBe(SLASH_MIN);
    expect(slashFor(1_000_000)).toBe(10_000_000);
  });

  it('keeps each study’s committed funds in step with its executions: running, awaiting the vote, valid', () => {
    const funds = new StudyFunds();
    const study = { study_id: 's1', budget: 2000, archived: false } as StudyRecord;
    funds.onCommit({ kind: 'study', id: 's1', before: undefined, after: study });
    expect(funds.of('s1')).toEqual({ budget: 2000, committed: 0, available: 2000 });
    const { before, after } = voted();
    // Replay the job's life as commits: every running or voting execution is committed; b's, once outvoted, is not.
    funds.onCommit({ kind: 'job', id: job.job_id, before: paid(), after: before });
    expect(funds.of('s1')!.committed).toBe(1500);
    funds.onCommit({ kind: 'job', id: job.job_id, before, after });
    expect(funds.of('s1')).toEqual({ budget: 2000, committed: 1000, available: 1000 });
    expect(funds.available().get('s1')).toBe(1000);
    // Loading the same records from scratch gives the same figure.
    const loaded = new StudyFunds();
    loaded.load(study, [after]);
    expect(loaded.of('s1')).toEqual(funds.of('s1'));
    // An archived study is settled: it is no longer tracked.
    funds.onCommit({ kind: 'study', id: 's1', before: study, after: { ...study, archived: true } });
    expect(funds.of('s1')).toBeNull();
  });

  it('gives a public good what its escrow has raised so far, and says it waits for funds', () => {
    let raised = 0;
    const funds = new StudyFunds(() => raised);
    const study = {
      study_id: 's1',
      budget: 0,
      archived: false,
      public_good: { title: 't', description: '' },
    } as StudyRecord;
    funds.onCommit({ kind: 'study', id: 's1', before: undefined, after: study });
    expect(funds.of('s1')).toEqual({ budget: 0, committed: 0, available: 0 });
    raised = 1200;
    const { before } = voted();
    funds.onCommit({ kind: 'job', id: job.job_id, before: paid(), after: before });
    expect(funds.of('s1')).toEqual({ budget: 1200, committed: 1500, available: -300 });
    funds.markShort(['s1']);
    expect(funds.waiting('s1')).toMatch(/contributions or a match/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Settlement's postings, against a journal kept in memory

const [A, B, C, FUNDER, PAYER] = Array.from({ length: 5 }, () => createUser().getPublicKey()) as [
  string,
  string,
  string,
  string,
  string,
];
const T0 = Date.UTC(2026, 10, 22);
const silent = { warn() {}, error() {}, info() {} };

/** A journal in memory: the state, and appends run through the rules (what settlement needs of a journal). */
function memoryJournal(s: LedgerState): Journal {
  const append = async (build: Posting | Builder) => {
    const p = typeof build === 'function' ? build(s) : build;
    if (!p) return { status: 'skipped', op_id: null, seq: null };
    const entry = applyPosting(s, p);
    return { status: 'appended', entry, streamSeq: entry.seq };
  };
  return { state: s, append } as unknown as Journal;
}

/** A ledger where FUNDER and PAYER hold 100 SIM and provider B has 10 SIM at stake. */
function ledger(): LedgerState {
  const s = emptyState();
  for (const k of [FUNDER, PAYER, B]) applyPosting(s, mint(keyAccount(k), 100_000_000, `mint:${k}`, T0));
  applyPosting(s, stake(s, B, 10_000_000, 'stake:b', T0)!);
  return s;
}

const closed = { state: 'done' } as unknown as StudyRecord['summary'];
const study = (over: Partial<StudyRecord>): StudyRecord =>
  ({
    study_id: 's1',
    budget: 0,
    payer: null,
    public_good: null,
    summary: null,
    archived: false,
    ...over,
  }) as StudyRecord;
const publicGood = { title: 'a public good', description: '' };

describe('settlement of a public good', () => {
  it('pays valid executions from its escrow, slashes outvoted ones, and sends the rest to the pool', async () => {
    const s = ledger();
    applyPosting(s, contribute(s, 's1', FUNDER, 2_000, 'gift', T0)!);
    const settlement = new Settlement({ journal: memoryJournal(s), now: () => T0, log: silent });
    const { before, after } = voted([A, B, C]);
    settlement.onJob(before, after);
    // Its record names a payer and a budget: a public good's rest goes to the pool all the same.
    const open = study({ public_good: publicGood, budget: 2_000, payer: FUNDER });
    settlement.onStudy(undefined, open);
    settlement.onStudy(open, { ...open, summary: closed });
    await settlement.idle();
    expect([balance(s, keyAccount(A)), balance(s, keyAccount(C))]).toEqual([500, 500]);
    expect(balance(s, stakeAccount(B))).toBe(10_000_000 - slashFor(500));
    expect(balance(s, 'pool')).toBe(1_000);
    expect(balance(s, keyAccount(FUNDER))).toBe(100_000_000 - 2_000);
    expect(settled(s, 's1')).toBe(true);
    expect(fundingOf(s, 's1')).toMatchObject({ contributed: 2_000, spent: 1_000, returned: 1_000 });
  });

  it('reconcile covers a public good’s verdicts and its refund to the pool once it has closed, and only once', async () => {
    const s = ledger();
    applyPosting(s, contribute(s, 's1', FUNDER, 2_000, 'gift', T0)!);
    const settlement = new Settlement({ journal: memoryJournal(s), now: () => T0, log: silent });
    const { after } = voted([A, B, C]);
    const running = study({ public_good: publicGood });
    expect(await settlement.reconcile([running], async () => [after])).toBe(3);
    expect(settled(s, 's1')).toBe(false);
    expect(await settlement.reconcile([{ ...running, summary: closed }], async () => [after])).toBe(4);
    expect(balance(s, 'pool')).toBe(1_000);
    expect(settled(s, 's1')).toBe(true);
    const seq = s.lastSeq;
    expect(await settlement.reconcile([{ ...running, summary: closed }], async () => [after])).toBe(0);
    expect(s.lastSeq).toBe(seq);
  });

  it('still refunds a paying study to its payer and leaves a free study’s (empty) escrow alone', async () => {
    const s = ledger();
    applyPosting(s, escrow(s, 's1', PAYER, 2_000, T0)!);
    const settlement = new Settlement({ journal: memoryJournal(s), now: () => T0, log: silent });
    const { after } = voted([A, B, C]);
    const free = study({ study_id: 's2', summary: closed });
    await settlement.reconcile([study({ budget: 2_000, payer: PAYER, summary: closed }), free], async (st) =>
      st.study_id === 's1' ? [after] : [],
    );
    expect(balance(s, keyAccount(PAYER))).toBe(100_000_000 - 1_000);
    expect(balance(s, 'pool')).toBe(0);
    expect(settled(s, 's2')).toBe(false);
  });
});
