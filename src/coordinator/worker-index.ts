import type { WorkerView } from './placement.ts';

/**
 * The workers one placement round may choose from, indexed so that finding candidates for a job is not a scan of
 * every worker: only workers with a free slot (not draining, not suspect), bucketed by provider class — what ranks
 * them apart, and what caps newcomers — and by what they can run: a process worker any image, a Docker worker only
 * the images it holds. A worker is its position in the round's views; the fields a search reads are copied into one
 * flat array, a cache line per worker, since a round builds the index afresh and a large cluster has 100,000 of them.
 * A worker whose slots are all taken leaves a bucket when a walk next meets it there (no positions to keep); no
 * bucket gains a worker within a round, so whatever a round finds impossible stays impossible until the next.
 */

/** Provider classes, as bit flags: 0 is a newcomer, 3 an established and trusted provider. */
export const ESTABLISHED = 1;
export const TRUSTED = 2;
export const CLASSES = [0, ESTABLISHED, TRUSTED, ESTABLISHED | TRUSTED] as const;

/** A worker's fields in `WorkerIndex.data`: `data[i * STRIDE + FREE]` is worker i's free slots. */
export const STRIDE = 8;
export const FREE = 0;
export const SLOTS = 1;
export const PRICE = 2;
export const MEMORY = 3;
export const CPUS = 4;
export const CLASS = 5;
/** Seconds left in the worker's off-peak window (Infinity: not bounded by one). */
export const WINDOW = 6;

export interface Bucket {
  /** Workers, by their position in the views. */
  readonly items: number[];
  /** How many of `items`, from the front, the current walk has visited. */
  seen: number;
}

const newBuckets = (): Bucket[] => CLASSES.map(() => ({ items: [], seen: 0 }));

export class WorkerIndex {
  readonly workers: readonly WorkerView[];
  /** Free slots (taken as the round goes), slots, price, memory, CPUs, class and window left of each worker. */
  readonly data: Float64Array;
  /**
   * The most a worker's price and load can add to its rank (−10·price − load): a tier whose bonus plus this cannot
   * beat the best found so far is not searched. Loads only rise within a round, so the start's maximum bounds it.
   */
  readonly ceiling: number;
  /** Process workers by class, and Docker workers by image and class. */
  private readonly anyImage = newBuckets();
  private readonly byImage = new Map<string, Bucket[]>();
  private ids: Map<string, number> | undefined;

  constructor(workers: readonly WorkerView[]) {
    this.workers = workers;
    const data = new Float64Array(workers.length * STRIDE);
    let ceiling = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < workers.length; i++) {
      const w = workers[i]!;
      if (w.draining || w.suspect || w.slots_free < 1) continue;
      const cls = (w.established ? ESTABLISHED : 0) | (w.trusted ? TRUSTED : 0);
      const at = i * STRIDE;
      data[at + FREE] = w.slots_free;
      data[at + SLOTS] = w.slots;
      data[at + PRICE] = w.price_per_cpu_s;
      data[at + MEMORY] = w.memory_mb;
      data[at + CPUS] = w.cpus;
      data[at + CLASS] = cls;
      data[at + WINDOW] = w.window_left_s ?? Number.POSITIVE_INFINITY;
      if (w.executor === 'docker') {
        for (let k = 0; k < w.images.length; k++) {
          const image = w.images[k]!;
          if (w.images.indexOf(image) < k) continue; // listed twice
          let per = this.byImage.get(image);
          if (!per) {
            per = newBuckets();
            this.byImage.set(image, per);
          }
          per[cls]!.items.push(i);
        }
      } else this.anyImage[cls]!.items.push(i);
      const load = w.slots > 0 ? 1 - w.slots_free / w.slots : 1;
      ceiling = Math.max(ceiling, -10 * w.price_per_cpu_s - load);
    }
    this.data = data;
    this.ceiling = ceiling;
  }

  /** Worker i's free slots (0 for one not in the index). */
  free(i: number): number {
    return this.data[i * STRIDE + FREE]!;
  }

  /** Takes one of worker i's slots. */
  take(i: number): void {
    this.data[i * STRIDE + FREE]!--;
  }

  /** A worker's position by id (the map is made on first use: only retries of failed jobs ask). */
  find(id: string): number | undefined {
    this.ids ??= new Map(this.workers.map((w, i) => [w.worker_id, i]));
    return this.ids.get(id);
  }

  /** Appends to `out` the buckets of class `cls` whose workers can run `image`. */
  buckets(image: string, cls: number, out: Bucket[]): void {
    const any = this.anyImage[cls]!;
    if (any.items.length > 0) out.push(any);
    const docker = this.byImage.get(image)?.[cls];
    if (docker && docker.items.length > 0) out.push(docker);
  }

  /** Whether worker i can run `image` (a process worker runs any). */
  runs(i: number, image: string): boolean {
    const w = this.workers[i]!;
    return w.executor !== 'docker' || w.images.includes(image);
  }

  /**
   * Visits the workers with a free slot in `buckets` in uniformly random order, each once, until `visit` returns
   * true or none is left: a partial Fisher–Yates shuffle inside each bucket, one draw (uniform in [0, 1)) choosing
   * among all the workers not yet visited. A full worker met on the way leaves its bucket (the last takes its
   * place). Returns how many workers it looked at. The buckets stay shuffled, which no later walk depends on.
   */
  walk(buckets: readonly Bucket[], draw: () => number, visit: (i: number) => boolean): number {
    const data = this.data;
    let left = 0;
    for (const b of buckets) {
      b.seen = 0;
      left += b.items.length;
    }
    let looked = 0;
    while (left > 0) {
      let r = Math.min(left - 1, Math.floor(draw() * left));
      let b = buckets[0]!;
      for (const x of buckets) {
        const rest = x.items.length - x.seen;
        if (r < rest) {
          b = x;
          break;
        }
        r -= rest;
      }
      const items = b.items;
      const at = b.seen;
      const w = items[at + r]!;
      items[at + r] = items[at]!;
      left--;
      looked++;
      if (data[w * STRIDE + FREE]! < 1) {
        // Full: out of the bucket. Its place at the front goes to the last worker (itself unvisited, or this one).
        items[at] = items[items.length - 1]!;
        items.pop();
        continue;
      }
      items[at] = w;
      b.seen++;
      if (visit(w)) break;
    }
    return looked;
  }
}
