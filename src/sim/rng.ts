import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';

/** Named, independent random streams of one epoch, so adding draws to one part never shifts another. */
export const Stream = {
  households: 1,
  weather: 2,
  load: 3,
  market: 4,
} as const;

/** murmur3's 32-bit finaliser: spreads (seed, stream) over the whole seed space. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

export function deriveSeed(seed: number, stream: number): number {
  return mix32((seed >>> 0) ^ mix32(Math.imul(stream + 1, 0x9e3779b9)));
}

export interface Rng {
  /** Uniform in [0, 1). */
  uniform(): number;
  /** Standard normal. */
  normal(): number;
}

export function createRng(seed: number, stream: number): Rng {
  const gen = xoroshiro128plus(deriveSeed(seed, stream));
  let spare = Number.NaN;
  return {
    uniform: () => uniformFloat64(gen),
    normal() {
      if (!Number.isNaN(spare)) {
        const s = spare;
        spare = Number.NaN;
        return s;
      }
      // Box–Muller; 1 − u keeps the logarithm's argument in (0, 1].
      const r = Math.sqrt(-2 * Math.log(1 - uniformFloat64(gen)));
      const theta = 2 * Math.PI * uniformFloat64(gen);
      spare = r * Math.sin(theta);
      return r * Math.cos(theta);
    },
  };
}

/** Mean-one log-normal factor with log-space spread sigma. */
export function lognormalFactor(rng: Rng, sigma: number): number {
  return sigma === 0 ? 1 : Math.exp(sigma * rng.normal() - (sigma * sigma) / 2);
}
