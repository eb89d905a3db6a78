import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CandidateSearch, candidateLimit, seededDraw } from '../../src/coordinator/candidates.ts';
import {
  infeasible,
  type PendingJob,
  type Placement,
  placeRound,
  rank,
  type WorkerView,
} from '../../src/coordinator/placement.ts';
import { type Bucket, WorkerIndex } from '../../src/coordinator/worker-index.ts';
import { ResourceLimits } from '../../src/models/job.ts';
import { pendingJob, workerView } from '../fixtures/placement.ts';

const IMAGES = ['sha256:a', 'sha256:b', 'sha256:c'];
const wid = (i: number) => `w${String(i).padStart(3, '0')}`;

/** A varied fleet: Docker and process workers, images, sizes, prices, classes, some draining or suspect. */
const workerArb = (i: number) =>
  fc
    .record({
      docker: fc.boolean(),
      images: fc.subarray(IMAGES),
      slots: fc.integer({ min: 1, max: 4 }),
      used: fc.integer({ min: 0, max: 4 }),
      cpus: fc.constantFrom(1, 2, 4),
      memory_mb: fc.constantFrom(512, 2048, 8192),
      // Mostly cheap; now and then dear enough (in SIM) to outweigh a tier: 10·price against bonuses of 50 and 100.
      price: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constantFrom(6000, 12_000)),
      established: fc.boolean(),
      trusted: fc.boolean(),
      audit: fc.constantFrom(0, 0.1, 1),
      draining: fc.constantFrom(false, false, false, true),
      suspect: fc.constantFrom(false, false, false, true),
    })
    .map(
      (w): WorkerView =>
        workerView(wid(i), {
          executor: w.docker ? 'docker' : 'process',
          images: w.images,
          slots: w.slots,
          slots_free: Math.max(0, w.slots - w.used),
          cpus: w.cpus,
          memory_mb: w.memory_mb,
          // Few distinct prices: ties, broken by id, must come out the same.
          price_per_cpu_s: w.price / 1000,
          established: w.established,
          trusted: w.established && w.trusted,
          audit: w.audit,
          draining: w.draining,
          suspect: w.suspect,
        }),
    );

const fleetArb = (min: number, max: number) =>
  fc.integer({ min, max }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => workerArb(i))));

/** Jobs that want 1–3 executions, some adaptive, some needing an anchor, some paid, some retried. */
const jobsArb = (workers: number) =>
  fc
    .array(
      fc.record({
        image: fc.constantFrom(...IMAGES),
        want: fc.integer({ min: 1, max: 3 }),
        quorum: fc.integer({ min: 1, max: 3 }),
        newcomers: fc.integer({ min: 0, max: 2 }),
        adaptive: fc.boolean(),
        needs: fc.boolean(),
        cpus: fc.constantFrom(1, 2, 4),
        memory_mb: fc.constantFrom(512, 4096),
        max_price: fc.option(fc.integer({ min: 0, max: 20 })),
        exclude: fc.uniqueArray(fc.nat(workers), { maxLength: 2 }),
        avoid: fc.array(fc.nat(workers), { maxLength: 2 }),
        priority: fc.integer({ min: 0, max: 2 }),
        study: fc.constantFrom('s1', 's2'),
      }),
      { maxLength: 40 },
    )
    .map((js) =>
      js.map((j, i) =>
        pendingJob(`j${String(i).padStart(3, '0')}`, {
          study_id: j.study,
          image: j.image,
          want: j.want,
          quorum: j.quorum,
          newcomers: j.newcomers,
          adaptive: j.adaptive,
          needs_established: j.needs,
          limits: ResourceLimits.parse({ cpus: j.cpus, memory_mb: j.memory_mb }),
          max_price: j.max_price === null ? null : j.max_price / 1000,
          work: 10,
          exclude: j.exclude.map(wid),
          avoid: j.avoid.map(wid),
          priority: j.priority,
          enqueued_at: i,
        }),
      ),
    );

/** Checks every placement against the rules a full scan keeps, replaying the round's slot use. */
function checkFeasible(
  jobs: readonly PendingJob[],
  workers: readonly WorkerView[],
  plan: readonly Placement[],
) {
  const free = new Map(workers.map((w) => [w.worker_id, w.slots_free]));
  const byId = new Map(workers.map((w) => [w.worker_id, w]));
  const onJob = new Map<string, string[]>();
  for (const p of plan) {
    const job = jobs.find((j) => j.job_id === p.job_id)!;
    const w = byId.get(p.worker_id)!;
    const placed = onJob.get(job.job_id) ?? [];
    const view = { ...w, slots_free: free.get(w.worker_id)! };
    expect(infeasible({ ...job, exclude: [...job.exclude, ...placed] }, view)).toBeUndefined();
    free.set(w.worker_id, view.slots_free - 1);
    placed.push(w.worker_id);
    onJob.set(job.job_id, placed);
    expect(placed.length).toBeLessThanOrEqual(job.want);
  }
}

describe('bounded-candidate placement', () => {
  it('ranks every worker in a small cluster, and 2⌈log₂ n⌉ feasible ones in a large one', () => {
    expect(candidateLimit(1)).toBe(2);
    expect(candidateLimit(1000)).toBe(20);
    expect(candidateLimit(10_000)).toBe(28);
    expect(candidateLimit(100_000)).toBe(34);
    const fleet = (n: number) => Array.from({ length: n }, (_, i) => workerView(`w${i}`));
    expect(placeRound({ jobs: [pendingJob('j')], workers: fleet(100), now: 0 }).candidates).toBe('all');
    expect(placeRound({ jobs: [pendingJob('j')], workers: fleet(200), now: 0 }).candidates).toBe(16);
  });

  it('places exactly as the full scan when it may rank as many workers as there are (property)', () => {
    // Every rule — tiers, the newcomer cap, avoided workers, images, limits, prices, funds, audits, early stops —
    // then comes out the same: the search differs from the scan only in how many workers it ranks.
    fc.assert(
      fc.property(
        fleetArb(1, 24).chain((ws) => fc.tuple(fc.constant(ws), jobsArb(ws.length), fc.boolean(), fc.nat())),
        ([workers, jobs, anchored, seed]) => {
          const run = (candidates: number | 'all') =>
            placeRound({
              jobs,
              workers,
              now: 0,
              funds: new Map([
                ['s1', 2_000_000],
                ['s2', 50_000],
              ]),
              rand: seededDraw(7),
              short: new Set(),
              anchored,
              candidates,
              shuffle: seededDraw(seed),
            }).placements;
          const scan = run('all');
          expect(run(workers.length)).toEqual(scan);
          checkFeasible(jobs, workers, scan);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps every placement feasible with a few candidates, and replicas on distinct workers (property)', () => {
    fc.assert(
      fc.property(
        fleetArb(20, 80).chain((ws) => fc.tuple(fc.constant(ws), jobsArb(ws.length), fc.nat())),
        ([workers, jobs, seed]) => {
          const plan = placeRound({
            jobs,
            workers,
            now: 0,
            funds: new Map([
              ['s1', 1e9],
              ['s2', 1e9],
            ]),
            rand: seededDraw(1),
            candidates: 2,
            shuffle: seededDraw(seed),
          }).placements;
          checkFeasible(jobs, workers, plan);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('finds a feasible worker whenever one exists, and only a feasible one (property)', () => {
    fc.assert(
      fc.property(
        fleetArb(1, 60).chain((ws) => fc.tuple(fc.constant(ws), jobsArb(ws.length), fc.nat(), fc.boolean())),
        ([workers, jobs, seed, capped]) => {
          const search = new CandidateSearch(new WorkerIndex(workers), 2, seededDraw(seed));
          // Workers the round gave the job already (by position), besides those its record excludes.
          const placed = workers.map((_, i) => i).filter((i) => (i + seed) % 7 === 0);
          for (const job of jobs) {
            const ok = workers.filter(
              (w, i) => !placed.includes(i) && (!capped || w.established) && infeasible(job, w) === undefined,
            );
            const got = search.pick(job, job.needs_established, capped, placed);
            expect(got === undefined).toBe(ok.length === 0);
            if (got !== undefined) expect(ok.map((w) => w.worker_id)).toContain(workers[got]!.worker_id);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never leaves a rare anchor, trusted provider or untried worker to chance', () => {
    const many = Array.from({ length: 2000 }, (_, i) => workerView(`n${i}`, { price_per_cpu_s: 0 }));
    const dear = { price_per_cpu_s: 0.05 };
    const old = workerView('old', { ...dear, established: true });
    const sure = workerView('sure', { ...dear, established: true, trusted: true, audit: 0 });
    for (let seed = 0; seed < 20; seed++) {
      const shuffle = seededDraw(seed);
      const pick = (job: PendingJob, workers: WorkerView[]) =>
        placeRound({ jobs: [job], workers, now: 0, rand: () => 0.5, shuffle }).placements.map(
          (p) => p.worker_id,
        );
      // A newcomer's result is anchored by the one established provider among 2,000 newcomers.
      expect(pick(pendingJob('j', { needs_established: true }), [...many, old])).toEqual(['old']);
      // Its second replica may go to a newcomer, never to the anchor again.
      expect(pick(pendingJob('j', { needs_established: true, want: 2 }), [...many, old])[0]).toBe('old');
      // A fresh adaptive job runs alone on the one trusted provider.
      expect(pick(pendingJob('a', { adaptive: true, want: 2 }), [...many, sure])).toEqual(['sure']);
      // Once anyone is established, a job with its quorum's share of newcomers waits for an established one.
      const capped = pendingJob('c', { quorum: 2, newcomers: 1, exclude: ['n0'] });
      expect(pick(capped, [...many, old])).toEqual(['old']);
      // Workers that failed a job take it only when nothing else can.
      const ids = many.slice(0, 300).map((w) => w.worker_id);
      expect(pick(pendingJob('r', { avoid: ids.slice(1) }), many.slice(0, 300))).toEqual([ids[0]]);
      expect(ids).toContain(pick(pendingJob('r', { avoid: ids }), many.slice(0, 300))[0]);
    }
  });

  it('chooses, in expectation, better than d/(d+1) of the feasible workers (property)', () => {
    // The stated margin: the best of d = 2⌈log₂ n⌉ feasible workers drawn uniformly ranks above all but a 1/(d+1)
    // share of them on average; the full scan ranks above all. Scored here over 200 draws per fleet.
    fc.assert(
      fc.property(
        fc.integer({ min: 200, max: 3000 }),
        fc.array(fc.double({ min: 0, max: 0.05, noNaN: true }), { minLength: 1, maxLength: 50 }),
        fc.integer({ min: 0, max: 3 }),
        (n, prices, busyEvery) => {
          const workers = Array.from({ length: n }, (_, i) =>
            workerView(`w${i}`, {
              slots: 4,
              slots_free: busyEvery > 0 && i % (busyEvery + 1) === 0 ? 2 : 4,
              price_per_cpu_s: prices[i % prices.length]!,
              memory_mb: i % 5 === 0 ? 256 : 4096, // a fifth cannot fit the job
            }),
          );
          const job = pendingJob('j');
          const feasible = workers.filter((w) => infeasible(job, w) === undefined).map((w) => rank(job, w));
          const d = candidateLimit(n);
          let quantile = 0;
          const trials = 200;
          const search = new CandidateSearch(new WorkerIndex(workers), d, seededDraw(n));
          for (let t = 0; t < trials; t++) {
            const got = search.pick(job, false, false, [])!;
            const s = rank(job, workers[got]!);
            quantile += feasible.filter((x) => x > s).length / feasible.length;
          }
          expect(quantile / trials).toBeLessThanOrEqual(1 / (d + 1) + 0.03);
        },
      ),
      { numRuns: 15 },
    );
  });

  it('spreads a round over half the workers as evenly as the full scan, at a price within 10 % of it', () => {
    // 2,000 idle workers of 2 slots, prices spread evenly over 1–2 mSIM; 1,000 jobs: the full scan takes the cheaper
    // half of the workers, one job each (emptier ranks first, then cheaper).
    const workers = Array.from({ length: 2000 }, (_, i) =>
      workerView(`w${i}`, { price_per_cpu_s: 0.001 * (1 + ((i * 7919) % 2000) / 2000) }),
    );
    const jobs = Array.from({ length: 1000 }, (_, i) => pendingJob(`j${i}`, { enqueued_at: i }));
    const price = new Map(workers.map((w) => [w.worker_id, w.price_per_cpu_s]));
    const measure = (plan: Placement[]) => {
      const perWorker = new Map<string, number>();
      for (const p of plan) perWorker.set(p.worker_id, (perWorker.get(p.worker_id) ?? 0) + 1);
      return {
        placed: plan.length,
        meanPrice: plan.reduce((s, p) => s + price.get(p.worker_id)!, 0) / plan.length,
        doubled: plan.length - perWorker.size,
      };
    };
    const scan = measure(placeRound({ jobs, workers, now: 0, candidates: 'all' }).placements);
    expect(scan.doubled).toBe(0);
    for (let seed = 0; seed < 5; seed++) {
      const r = placeRound({ jobs, workers, now: 0, shuffle: seededDraw(seed) });
      expect(r.candidates).toBe(22);
      const got = measure(r.placements);
      expect(got.placed).toBe(scan.placed);
      // Best of 22: all of them busy happens for under (1/2)²² of the placements.
      expect(got.doubled).toBeLessThanOrEqual(scan.placed * 0.01);
      expect(got.meanPrice).toBeLessThanOrEqual(scan.meanPrice * 1.1);
    }
  });

  it('stops a round at its budget and leaves the rest to the next', () => {
    const workers = Array.from({ length: 500 }, (_, i) => workerView(`w${i}`, { slots: 4, slots_free: 4 }));
    let jobs = Array.from({ length: 1500 }, (_, i) => pendingJob(`j${i}`, { want: 2, enqueued_at: i }));
    const free = new Map(workers.map((w) => [w.worker_id, 4]));
    const all: Placement[] = [];
    let rounds = 0;
    for (;;) {
      const views = workers.map((w) => ({ ...w, slots_free: free.get(w.worker_id)! }));
      const r = placeRound({ jobs, workers: views, now: 0, budget: { placements: 400, probes: 1e9 } });
      rounds++;
      expect(r.placements.length).toBeLessThanOrEqual(400);
      expect(r.stopped).toBe(r.placements.length === 400 && all.length + 400 < 2000);
      for (const p of r.placements) free.set(p.worker_id, free.get(p.worker_id)! - 1);
      all.push(...r.placements);
      // What a job got this round is excluded from its next (as pendingJobs does from its executions).
      jobs = jobs
        .map((j) => {
          const got = r.placements.filter((p) => p.job_id === j.job_id).map((p) => p.worker_id);
          return { ...j, want: j.want - got.length, exclude: [...j.exclude, ...got] };
        })
        .filter((j) => j.want > 0);
      if (!r.stopped) break;
    }
    // 2,000 slots for 3,000 wanted executions: filled in five rounds, never two replicas of a job on one worker.
    expect(rounds).toBe(5);
    expect(all).toHaveLength(2000);
    const pairs = new Set(all.map((p) => `${p.job_id} ${p.worker_id}`));
    expect(pairs.size).toBe(all.length);

    // A probe budget bounds a round's work even when the candidates are scarce: at most one search past it.
    const scarce = workers.map((w, i) => ({ ...w, memory_mb: i % 50 === 0 ? 4096 : 128 }));
    const many = Array.from({ length: 100 }, (_, i) => pendingJob(`k${i}`));
    const r = placeRound({ jobs: many, workers: scarce, now: 0, budget: { placements: 1e9, probes: 2000 } });
    expect(r.stopped).toBe(true);
    expect(r.probes).toBeLessThanOrEqual(2000 + scarce.length);
    expect(r.placements.length).toBeGreaterThan(0);
  });

  it('is reproducible: the same draws give the same round', () => {
    const workers = Array.from({ length: 1000 }, (_, i) =>
      workerView(`w${i}`, { price_per_cpu_s: (i % 13) / 1000, slots: 3, slots_free: 1 + (i % 3) }),
    );
    const jobs = Array.from({ length: 800 }, (_, i) => pendingJob(`j${i}`, { want: 2, enqueued_at: i }));
    const once = placeRound({ jobs, workers, now: 42 }).placements;
    expect(placeRound({ jobs, workers, now: 42 }).placements).toEqual(once);
    expect(placeRound({ jobs, workers, now: 0, shuffle: seededDraw(42) }).placements).toEqual(once);
    expect(placeRound({ jobs, workers, now: 43 }).placements).not.toEqual(once);
  });

  it('drops a job shape no worker fits after one walk, for the rest of the round', () => {
    const workers = Array.from({ length: 400 }, (_, i) => workerView(`w${i}`, { memory_mb: 1024 }));
    const big = Array.from({ length: 50 }, (_, i) =>
      pendingJob(`big${i}`, { limits: ResourceLimits.parse({ memory_mb: 8192 }) }),
    );
    const r = placeRound({ jobs: [...big, pendingJob('small', { enqueued_at: 1 })], workers, now: 0 });
    expect(r.placements.map((p) => p.job_id)).toEqual(['small']);
    // One walk of the 400 workers for the first big job; the other 49 cost nothing; the small one a few.
    expect(r.candidates).toBe(candidateLimit(400));
    expect(r.probes).toBeLessThan(400 + 3 * candidateLimit(400));
    // A shape is dropped only when no worker fits it, not when the workers that fit are this job's own.
    const two = workers.map((w, i) => ({ ...w, memory_mb: i < 2 ? 8192 : 1024 }));
    const both = pendingJob('both', { limits: big[0]!.limits, exclude: ['w0', 'w1'] });
    const next = pendingJob('next', { limits: big[0]!.limits, enqueued_at: 1 });
    expect(placeRound({ jobs: [both, next], workers: two, now: 0 }).placements.map((p) => p.job_id)).toEqual([
      'next',
    ]);
  });
});

describe('the worker index', () => {
  const indexOf = (ws: WorkerView[]) => {
    const index = new WorkerIndex(ws);
    const out: Bucket[] = [];
    index.buckets('img', 0, out);
    return { index, bucket: out[0]! };
  };

  it('walks every worker with a free slot once, in an order the draws decide, and drops full ones (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 60 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.nat(),
        (slots, fill, seed) => {
          const ws = slots.map((s, i) => workerView(`w${i}`, { slots: s, slots_free: s }));
          const { index, bucket } = indexOf(ws);
          for (const f of fill) while (index.free(f % ws.length) > 0) index.take(f % ws.length);
          const seen: number[] = [];
          const looked = index.walk([bucket], seededDraw(seed), (i) => {
            seen.push(i);
            return false;
          });
          const open = ws.map((_, i) => i).filter((i) => index.free(i) > 0);
          expect(looked).toBe(ws.length);
          expect(seen.sort((a, b) => a - b)).toEqual(open);
          // The full ones are gone for good.
          expect([...bucket.items].sort((a, b) => a - b)).toEqual(open);
        },
      ),
    );
  });

  it('draws each worker first about equally often', () => {
    const ws = Array.from({ length: 10 }, (_, i) => workerView(`w${i}`));
    const { index, bucket } = indexOf(ws);
    const draw = seededDraw(3);
    const first = new Array<number>(10).fill(0);
    for (let t = 0; t < 10_000; t++) {
      index.walk([bucket], draw, (i) => {
        first[i]!++;
        return true;
      });
    }
    for (const n of first) {
      expect(n).toBeGreaterThan(850);
      expect(n).toBeLessThan(1150);
    }
  });
});
