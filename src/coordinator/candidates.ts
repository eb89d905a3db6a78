import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { type PendingJob, rank, tierBonus } from './placement.ts';
import {
  type Bucket,
  CLASS,
  CLASSES,
  CPUS,
  ESTABLISHED,
  FREE,
  MEMORY,
  PRICE,
  SLOTS,
  STRIDE,
  TRUSTED,
  WINDOW,
  type WorkerIndex,
} from './worker-index.ts';

/**
 * Bounded-candidate selection, as Nomad's scheduler does it: instead of ranking every worker for every execution,
 * walk the feasible workers in random order and rank the first `limit` that fit. The best of d workers drawn
 * uniformly ranks, in expectation, above d/(d+1) of the feasible ones — and the walk costs d, not n.
 *
 * What matters more than price and load is not left to chance: the tiers of `rank` (an established provider to anchor a newcomer, a trusted
 * one for a fresh adaptive job) are searched tier by tier, best first, so a rare established provider is found
 * whenever one fits; workers that failed the job are ranked apart (they are few); and a walk that finds no fitting
 * worker has visited every one, so a job waits only when a full scan would have found nothing either.
 */

/**
 * Feasible workers ranked per execution among n workers: 2·⌈log₂ n⌉ (20 at 1,000, 28 at 10,000, 34 at 100,000).
 * Twice Nomad's limit for service jobs: what a submitter pays depends on the worker chosen, and halving the margin
 * (1/(d+1) of the feasible workers outrank the choice, in expectation) costs a few µs per placement (bench:placement).
 */
export function candidateLimit(n: number): number {
  return 2 * Math.ceil(Math.log2(Math.max(2, n)));
}

/** Uniform draws in [0, 1) from a seeded generator (pure-rand), for reproducible shuffles. */
export function seededDraw(seed: number): () => number {
  const gen = xoroshiro128plus(seed >>> 0);
  return () => uniformFloat64(gen);
}

/** Whether worker i meets the job's own terms: price, memory, CPUs and window left (the index answers the rest). */
const fits = (job: PendingJob, data: Float64Array, i: number) =>
  (job.max_price === null || data[i * STRIDE + PRICE]! <= job.max_price) &&
  data[i * STRIDE + MEMORY]! >= job.limits.memory_mb &&
  data[i * STRIDE + CPUS]! >= job.limits.cpus &&
  data[i * STRIDE + WINDOW]! >= job.window_s;

/** Classes of one bonus, walked as one: equally ranked workers are equally likely to be drawn. */
interface Tier {
  bonus: number;
  classes: number[];
  /** The classes as a bit set, for the shape of a search. */
  mask: number;
}

export class CandidateSearch {
  /** Workers looked at so far. */
  probes = 0;
  /** Job shapes (image, limits, price, classes) that no worker in the index fits: never searched again this round. */
  private readonly dead = new Set<string>();
  /** The tiers to walk, best first, by (needs an established provider, adaptive, capped). */
  private readonly plans = new Map<number, Tier[]>();
  private readonly buckets: Bucket[] = [];
  private readonly index: WorkerIndex;
  private readonly limit: number;
  private readonly draw: () => number;

  constructor(index: WorkerIndex, limit: number, draw: () => number) {
    this.index = index;
    this.limit = limit;
    this.draw = draw;
  }

  private tiers(job: PendingJob, needsEstablished: boolean, capped: boolean): Tier[] {
    const key = (needsEstablished ? 1 : 0) | (job.adaptive ? 2 : 0) | (capped ? 4 : 0);
    let plan = this.plans.get(key);
    if (plan) return plan;
    plan = [];
    for (const c of CLASSES) {
      if (capped && !(c & ESTABLISHED)) continue;
      const bonus = tierBonus(job, (c & ESTABLISHED) !== 0, (c & TRUSTED) !== 0, needsEstablished);
      const tier = plan.find((t) => t.bonus === bonus);
      if (tier) {
        tier.classes.push(c);
        tier.mask |= 1 << c;
      } else plan.push({ bonus, classes: [c], mask: 1 << c });
    }
    plan.sort((a, b) => b.bonus - a.bonus);
    this.plans.set(key, plan);
    return plan;
  }

  /**
   * The best-ranked of up to `limit` feasible workers for the job's next execution (its position in the views), or
   * undefined when none is feasible. `capped`: only established providers may take it; `placed`: the workers this
   * round gave it already (it runs on `job.exclude` too).
   */
  pick(
    job: PendingJob,
    needsEstablished: boolean,
    capped: boolean,
    placed: readonly number[],
  ): number | undefined {
    const { data, workers } = this.index;
    let best = -1;
    let bestScore = Number.NEGATIVE_INFINITY;
    const consider = (i: number, score: number) => {
      if (
        score > bestScore ||
        (score === bestScore && best >= 0 && workers[i]!.worker_id < workers[best]!.worker_id)
      ) {
        best = i;
        bestScore = score;
      }
    };
    for (const tier of this.tiers(job, needsEstablished, capped)) {
      // Nothing in this tier can outrank what was found (a tie could: it might have the smaller id; 1e-9 for rounding).
      if (best >= 0 && bestScore > tier.bonus + this.index.ceiling + 1e-9) break;
      this.buckets.length = 0;
      for (const c of tier.classes) this.index.buckets(job.image, c, this.buckets);
      if (this.buckets.length === 0) continue;
      const shape = () =>
        `${job.image}\u0000${job.limits.memory_mb}\u0000${job.limits.cpus}\u0000${job.max_price}\u0000${tier.mask}`;
      if (this.dead.size > 0 && this.dead.has(shape())) continue;
      let fitting = 0;
      let found = 0;
      this.probes += this.index.walk(this.buckets, this.draw, (i) => {
        if (!fits(job, data, i)) return false;
        fitting++;
        // Not a candidate: a worker the job runs on, or one that failed it (ranked apart, below). The view is read
        // only when there is an id to compare it with: one more fetch from memory.
        if (placed.length > 0 && placed.includes(i)) return false;
        if (job.exclude.length > 0 || job.avoid.length > 0) {
          const id = workers[i]!.worker_id;
          if (job.exclude.includes(id) || job.avoid.includes(id)) return false;
        }
        // rank() without its avoid term, from the index's copy of the fields: the same sum, term by term.
        const slots = data[i * STRIDE + SLOTS]!;
        const load = slots > 0 ? 1 - data[i * STRIDE + FREE]! / slots : 1;
        consider(i, tier.bonus - 10 * data[i * STRIDE + PRICE]! - load);
        return ++found >= this.limit;
      });
      if (fitting === 0) this.dead.add(shape());
    }
    // Workers that failed this job: chosen only when nothing else outranks them, and ranked exactly (they are few).
    for (const id of job.avoid) {
      const i = this.index.find(id);
      this.probes++;
      if (i === undefined || this.index.free(i) < 1 || placed.includes(i) || job.exclude.includes(id))
        continue;
      if (capped && !(data[i * STRIDE + CLASS]! & ESTABLISHED)) continue;
      if (this.index.runs(i, job.image) && fits(job, data, i))
        consider(i, rank(job, workers[i]!, needsEstablished, this.index.free(i)));
    }
    return best >= 0 ? best : undefined;
  }
}
