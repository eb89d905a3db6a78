import { describe, expect, it } from 'vitest';
import { InputError, parseInput } from '../../src/models/errors.ts';
import { ResourceLimits } from '../../src/models/job.ts';
import { Scenario } from '../../src/models/scenario.ts';
import { baseScenario } from './arbitraries.ts';

function problems(input: unknown): string[] {
  try {
    parseInput(Scenario, input, 'invalid scenario');
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return [...(e as InputError).issues];
  }
  throw new Error('expected the scenario to be rejected');
}

describe('scenario validation', () => {
  it('accepts the base scenario and fills defaults', () => {
    const s = Scenario.parse(baseScenario());
    expect(s.time.interval_minutes).toBe(60);
    expect(s.weather.clearness_mean).toBe(0.75);
    expect(s.community.archetypes[0]!.preferences.price_sensitivity).toBe(0.3);
    expect(s.battery_strategy).toBe('self-consumption');
  });

  it('names a negative PV size by its path and shows the value', () => {
    const input = baseScenario();
    input.community.archetypes[1]!.pv_kwp = -3;
    const [p, ...rest] = problems(input);
    expect(rest).toEqual([]);
    expect(p).toMatch(/^community\.archetypes\[1\]\.pv_kwp: .*0.*, got -3$/);
  });

  it('reports every problem at once, each with its own path', () => {
    const input = baseScenario({ seed: -1, market: { mechanism: 'barter' as never } });
    input.community.size = 0;
    const found = problems(input);
    expect(found.map((p) => p.split(':')[0])).toEqual(
      expect.arrayContaining(['seed', 'community.size', 'market.mechanism']),
    );
  });

  it('rejects a wrong type and an unknown key', () => {
    const input = baseScenario() as Record<string, unknown>;
    input.location = { latitude: '45', day_of_year: 10, altitude: 3 };
    const found = problems(input);
    expect(found.some((p) => p.startsWith('location.latitude:') && p.includes('got "45"'))).toBe(true);
    expect(found).toContain('location.altitude: unknown key');
  });

  it('rejects TOU periods that leave a gap or overlap', () => {
    const gap = baseScenario({
      tariff: {
        import: {
          type: 'tou',
          periods: [
            { from_hour: 0, to_hour: 7, price: 0.2 },
            { from_hour: 8, to_hour: 24, price: 0.3 },
          ],
        },
        feed_in: 0.05,
      },
    });
    expect(problems(gap)).toEqual([
      expect.stringMatching(/^tariff\.import\.periods: periods leave 7\.00h uncovered/),
    ]);
    const overlap = structuredClone(gap);
    if (overlap.tariff.import.type === 'tou') overlap.tariff.import.periods[1]!.from_hour = 6;
    expect(problems(overlap)).toEqual([expect.stringMatching(/overlap at 6\.00h/)]);
  });

  it('accepts TOU periods that wrap midnight', () => {
    const ok = baseScenario({
      tariff: {
        import: {
          type: 'tou',
          periods: [
            { from_hour: 22, to_hour: 6, price: 0.2 },
            { from_hour: 6, to_hour: 22, price: 0.3 },
          ],
        },
        feed_in: 0.05,
      },
    });
    expect(Scenario.safeParse(ok).success).toBe(true);
  });

  it('rejects a feed-in tariff above the import price', () => {
    const input = baseScenario({ tariff: { import: { type: 'flat', price: 0.2 }, feed_in: 0.25 } });
    expect(problems(input)).toEqual([
      expect.stringMatching(/^tariff\.feed_in: expected feed-in ≤ the lowest/),
    ]);
  });

  it('rejects a flexible load that cannot be served in its window', () => {
    const input = baseScenario();
    input.community.archetypes[0]!.flex = {
      energy_kwh: 30,
      power_kw: 7,
      earliest_hour: 9,
      deadline_hour: 12,
    };
    expect(problems(input)).toEqual([
      expect.stringMatching(/^community\.archetypes\[0\]\.flex\.energy_kwh: cannot deliver 30 kWh/),
    ]);
  });

  it('rejects an interval length that does not divide the day', () => {
    const input = baseScenario({ time: { interval_minutes: 7, days: 1 } });
    expect(problems(input)).toEqual([
      expect.stringMatching(/^time\.interval_minutes: expected a divisor of 1440/),
    ]);
  });

  it('shows a number too large for a double as Infinity, not null', () => {
    const input = JSON.parse(JSON.stringify(baseScenario()).replace('"latitude":45', '"latitude":1e400'));
    expect(problems(input)).toEqual(['location.latitude: expected a finite number, got Infinity']);
    const nested = baseScenario() as Record<string, unknown>;
    nested.location = [Number.NaN, -Infinity];
    expect(problems(nested)).toEqual(['location: expected object, got ["NaN","-Infinity"]']);
  });

  it('shows a value nested too deep to print without overflowing the stack', () => {
    let deep: unknown = [];
    for (let i = 0; i < 20_000; i++) deep = [deep];
    expect(problems(baseScenario({ name: deep as string }))).toEqual(['name: expected string, got a list']);
  });
});

describe('resource limits', () => {
  it('refuses a CPU share Docker would round to 0 (unlimited)', () => {
    expect(() => parseInput(ResourceLimits, { cpus: 1e-12 }, 'invalid limits', 'limits')).toThrow(
      /limits\.cpus: expected a number ≥ 0\.01, got 1e-12/,
    );
    // Docker's NanoCpus is Math.round(cpus × 1e9); its smallest accepted value is 1e7 (0.01 CPU).
    const least = ResourceLimits.parse({ cpus: 0.01 }).cpus;
    expect(Math.round(least * 1e9)).toBeGreaterThanOrEqual(1e7);
  });
});
