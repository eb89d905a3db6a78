/**
 * Provider reputation for adaptive replication, as BOINC does it (pure). A provider earns trust with a run of
 * consecutive valid results; once trusted — and only with stake at risk — its jobs run unreplicated with probability
 * 1 − 1/n (n: the run's length), never more often than 1 − `minAudit`; the rest are audited by a replica anyway. One
 * invalid result resets the run and sends the provider's recent unreplicated results back for a second opinion.
 */

export interface Reputation {
  worker_id: string;
  /** Valid results in a row, since the last invalid one. */
  consecutive_valid: number;
  valid: number;
  invalid: number;
  /** Jobs it recently ran unreplicated, newest last: re-verified if it is caught. */
  recent_unreplicated: string[];
  updated_at: number;
}

export interface TrustPolicy {
  /** Consecutive valid results after which a provider is established (and, with stake, trusted). */
  trustAfter: number;
  /** Stake (µSIM) a provider must hold to run unreplicated work. */
  minStake: number;
  /** The least share of a trusted provider's jobs that is still replicated. */
  minAudit: number;
  /** How many recent unreplicated jobs are kept for re-verification. */
  recentKept: number;
}

export const DEFAULT_TRUST: TrustPolicy = {
  trustAfter: 20,
  minStake: 10 * 1_000_000,
  minAudit: 0.05,
  recentKept: 64,
};

export function newReputation(workerId: string, now: number): Reputation {
  return {
    worker_id: workerId,
    consecutive_valid: 0,
    valid: 0,
    invalid: 0,
    recent_unreplicated: [],
    updated_at: now,
  };
}

/** Earned trust by its results: its results may anchor a newcomer's (stake or not). */
export const established = (rep: Reputation | undefined, policy: TrustPolicy): boolean =>
  (rep?.consecutive_valid ?? 0) >= policy.trustAfter;

/** May run unreplicated work: established, with stake at risk (so a fresh key is never trusted). */
export const trusted = (rep: Reputation | undefined, stake: number, policy: TrustPolicy): boolean =>
  established(rep, policy) && stake >= policy.minStake;

/**
 * Outvoted too often to be given work: at least two invalid results, and more than `share` of all its results. An
 * honest provider outvoted now and then (by colluders, or a flaky machine) stays far below it; a key that cheats
 * often enough to matter is cut off, and a fresh key starts again with no trust, replicated against established ones.
 */
export const suspect = (rep: Reputation | undefined, share = 0.1): boolean =>
  rep !== undefined && rep.invalid >= 2 && rep.invalid > share * (rep.valid + rep.invalid);

/** The chance a trusted provider's job is audited by a replica anyway: 1/n, at least minAudit. */
export function auditProbability(rep: Reputation | undefined, policy: TrustPolicy): number {
  const n = rep?.consecutive_valid ?? 0;
  return n <= 1 ? 1 : Math.max(policy.minAudit, 1 / n);
}

/** A verdict on one of its results. Returns the new reputation, and the jobs to re-verify (on an invalid one). */
export function recordVerdict(
  rep: Reputation,
  verdict: 'valid' | 'invalid',
  unreplicated: { job_id: string } | null,
  now: number,
  policy: TrustPolicy,
): { rep: Reputation; reverify: string[] } {
  if (verdict === 'invalid') {
    return {
      rep: {
        ...rep,
        consecutive_valid: 0,
        invalid: rep.invalid + 1,
        recent_unreplicated: [],
        updated_at: now,
      },
      reverify: rep.recent_unreplicated,
    };
  }
  const recent = unreplicated
    ? [...rep.recent_unreplicated, unreplicated.job_id].slice(-policy.recentKept)
    : rep.recent_unreplicated;
  return {
    rep: {
      ...rep,
      consecutive_valid: rep.consecutive_valid + 1,
      valid: rep.valid + 1,
      recent_unreplicated: recent,
      updated_at: now,
    },
    reverify: [],
  };
}
