import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Feeder } from '../../src/models/scenario.ts';
import { apportion } from '../../src/sim/community.ts';
import { FeederModel } from '../../src/sim/feeder.ts';
import { dailyShape } from '../../src/sim/load.ts';
import { cosZenith, declination, haurwitzGhi } from '../../src/sim/solar.ts';
import { gini } from '../../src/sim/stats.ts';

const DEG = Math.PI / 180;

describe('solar geometry and clear sky', () => {
  it('declination is about +23.45° at the June solstice and −23.45° in December', () => {
    expect(declination(172) / DEG).toBeCloseTo(23.45, 1);
    expect(declination(355) / DEG).toBeCloseTo(-23.45, 1);
    expect(Math.abs(declination(81) / DEG)).toBeLessThan(0.5);
  });

  it('the sun is overhead at solar noon on the equator at equinox, and below the horizon at midnight', () => {
    expect(cosZenith(0, 81, 12)).toBeCloseTo(1, 3);
    expect(cosZenith(48, 172, 0)).toBeLessThan(0);
    // At latitude φ at noon on the solstice, zenith = φ − δ.
    expect(Math.acos(cosZenith(48, 172, 12)) / DEG).toBeCloseTo(48 - 23.45, 1);
  });

  it('Haurwitz GHI: 1098·exp(−0.059) ≈ 1035.1 W/m² overhead, zero below the horizon', () => {
    expect(haurwitzGhi(1)).toBeCloseTo(1035.1, 1);
    expect(haurwitzGhi(0.5)).toBeCloseTo(1098 * 0.5 * Math.exp(-0.118), 6);
    expect(haurwitzGhi(0)).toBe(0);
    expect(haurwitzGhi(-0.3)).toBe(0);
  });
});

describe('household load shape', () => {
  it.each([24, 48, 96, 288])('sums to one at %i intervals a day and peaks in the evening', (k) => {
    const s = dailyShape(k);
    expect(s.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const peakHour = (s.indexOf(Math.max(...s)) * 24) / k;
    expect(peakHour).toBeGreaterThanOrEqual(18);
    expect(peakHour).toBeLessThan(21);
    const nightHour = (s.indexOf(Math.min(...s)) * 24) / k;
    expect(nightHour).toBeLessThan(6);
  });
});

describe('apportionment', () => {
  it('splits by largest remainder and always sums to the size', () => {
    expect(apportion([0.4, 0.3, 0.2, 0.1], 100)).toEqual([40, 30, 20, 10]);
    expect(apportion([1, 1, 1], 10)).toEqual([4, 3, 3]);
    expect(apportion([3, 2, 1], 60)).toEqual([30, 20, 10]);
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0.01, max: 10, noNaN: true }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 5000 }),
        (shares, size) => {
          const counts = apportion(shares, size);
          expect(counts.reduce((a, b) => a + b, 0)).toBe(size);
          const total = shares.reduce((a, b) => a + b, 0);
          counts.forEach((c, i) => {
            expect(Math.abs(c - (shares[i]! / total) * size)).toBeLessThan(1 + 1e-9);
          });
        },
      ),
    );
  });
});

describe('LinDistFlow feeder', () => {
  const spec = (over: Partial<ReturnType<typeof Feeder.parse>> = {}) =>
    Feeder.parse({ nodes: 2, segment_km: 0.1, r_ohm_per_km: 1, x_ohm_per_km: 0.5, ...over });

  it('matches a hand computation on a two-node feeder', () => {
    // R = X/2 = 0.1 Ω per segment, V = 400 V. Node 1 draws 10 kW + 2 kvar, node 2 injects 4 kW.
    // Segment 1 carries P = 6 kW, Q = 2 kvar: U1 = 1 − 2(0.1·6000 + 0.05·2000)/400² = 1 − 0.00875.
    // Segment 2 carries P = −4 kW, Q = 0:      U2 = U1 + 2(0.1·4000)/400² = U1 + 0.005.
    const f = new FeederModel(spec());
    f.add(0, 1, 10, 2);
    f.add(0, 2, -4, 0);
    f.solve();
    expect(f.vMin).toBeCloseTo(Math.sqrt(1 - 0.00875), 12);
    expect(f.vMax).toBe(1);
    f.reset();
    f.add(0, 2, -20, 0);
    f.solve();
    // Export raises the voltage along the feeder: U2 = 1 + 2·2·(0.1·20000)/400².
    expect(f.vMax).toBeCloseTo(Math.sqrt(1 + 0.05), 12);
  });

  it('keeps parallel feeders apart', () => {
    const f = new FeederModel(spec({ count: 2 }));
    f.add(1, 2, -20, 0);
    f.add(0, 2, 20, 0);
    f.solve();
    expect(f.vMax).toBeCloseTo(Math.sqrt(1 + 0.05), 12);
    expect(f.vMin).toBeCloseTo(Math.sqrt(1 - 0.05), 12);
  });
});

describe('gini', () => {
  it('is 0 for equal values, (n−1)/n when one holds everything, null for a non-positive mean', () => {
    expect(gini([2, 2, 2])).toBe(0);
    expect(gini([0, 0, 0, 8])).toBeCloseTo(0.75, 12);
    expect(gini([1, 2, 3, 4])).toBeCloseTo(0.25, 12);
    expect(gini([-1, 1])).toBeNull();
    expect(gini([])).toBeNull();
  });
});
