/**
 * What the journal says about the Simulation Commons, kept as part of the ledger's state (rules.ts folds every
 * applied posting in, so a replay rebuilds it): who gave what to each public good and to the matching pool, what the
 * funding rounds matched, and what each public good spent and returned. Pure: no IO.
 */
import type { Posting } from './posting.ts';

export interface StudyFunding {
  /** What each key gave it, in all (µSIM). */
  contributed: Map<string, number>;
  /** What each key gave it since it was last matched: the next round's input. */
  pending: Map<string, number>;
  /** Matched from the pool by funding rounds. */
  matched: number;
  /** Paid out of its escrow to providers, and refunded from it (to the pool) when it ended. */
  spent: number;
  returned: number;
}

export interface FundingState {
  /** Public goods that were given anything, by study id. */
  studies: Map<string, StudyFunding>;
  /** What each key gave the matching pool. */
  pool: Map<string, number>;
  /** Funding rounds applied so far (round n's op id is `round:<n>`). */
  rounds: number;
}

/** A read-only view of the funding state. */
export interface FundingView {
  readonly studies: ReadonlyMap<
    string,
    {
      readonly contributed: ReadonlyMap<string, number>;
      readonly pending: ReadonlyMap<string, number>;
      readonly matched: number;
      readonly spent: number;
      readonly returned: number;
    }
  >;
  readonly pool: ReadonlyMap<string, number>;
  readonly rounds: number;
}

export function emptyFunding(): FundingState {
  return { studies: new Map(), pool: new Map(), rounds: 0 };
}

const ESCROW = 'escrow:';
/** The study of an `escrow:<study>` account (undefined for any other). */
export const escrowStudy = (account: string) =>
  account.startsWith(ESCROW) ? account.slice(ESCROW.length) : undefined;
const add = (m: Map<string, number>, k: string, n: number) => m.set(k, (m.get(k) ?? 0) + n);

function studyOf(f: FundingState, id: string): StudyFunding {
  let s = f.studies.get(id);
  if (!s) {
    s = { contributed: new Map(), pending: new Map(), matched: 0, spent: 0, returned: 0 };
    f.studies.set(id, s);
  }
  return s;
}

/** Folds an applied posting into the funding state (mutates `f`; the rules checked the posting already). */
export function trackFunding(f: FundingState, p: Posting): void {
  if (p.kind === 'fund') {
    for (const e of p.entries) {
      if (e.amount <= 0) continue;
      const study = escrowStudy(e.account);
      if (p.refs.round !== undefined) {
        // A round: every credit is a match, and the study's contributions so far are matched.
        const s = studyOf(f, study!);
        s.matched += e.amount;
        s.pending.clear();
      } else if (study === undefined) add(f.pool, p.refs.key!, e.amount);
      else {
        const s = studyOf(f, study);
        add(s.contributed, p.refs.key!, e.amount);
        add(s.pending, p.refs.key!, e.amount);
      }
    }
    if (p.refs.round !== undefined) f.rounds = p.refs.round;
    return;
  }
  if (p.kind !== 'pay' && p.kind !== 'refund') return;
  for (const e of p.entries) {
    const study = e.amount < 0 ? escrowStudy(e.account) : undefined;
    const s = study === undefined ? undefined : f.studies.get(study);
    if (!s) continue;
    if (p.kind === 'pay') s.spent -= e.amount;
    else s.returned -= e.amount;
  }
}

export interface FundingSummary {
  /** What funders gave it in all, and how many distinct keys. */
  contributed: number;
  funders: number;
  byKey: ReadonlyMap<string, number>;
  matched: number;
  spent: number;
  returned: number;
  /** Contributions since it was last matched, by key. */
  pending: ReadonlyMap<string, number>;
}

const NONE: FundingSummary = {
  contributed: 0,
  funders: 0,
  byKey: new Map(),
  matched: 0,
  spent: 0,
  returned: 0,
  pending: new Map(),
};

/** A public good's funding as the journal has it (zeros for one nobody gave anything). */
export function fundingOf(s: { readonly funding: FundingView }, studyId: string): FundingSummary {
  const f = s.funding.studies.get(studyId);
  if (!f) return NONE;
  let contributed = 0;
  for (const v of f.contributed.values()) contributed += v;
  return {
    contributed,
    funders: f.contributed.size,
    byKey: f.contributed,
    matched: f.matched,
    spent: f.spent,
    returned: f.returned,
    pending: f.pending,
  };
}

/** What a public good's escrow has received in all: contributions and matches (µSIM). */
export function raisedOf(s: { readonly funding: FundingView }, studyId: string): number {
  const f = fundingOf(s, studyId);
  return f.contributed + f.matched;
}
