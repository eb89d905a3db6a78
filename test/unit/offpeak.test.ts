import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  checkTimeZone,
  formatWindows,
  localHours,
  OffPeakError,
  parseWindows,
  windowState,
} from '../../src/coordinator/offpeak.ts';
import type { OffPeakWindow } from '../../src/models/worker.ts';

const H = 3_600_000;
const MIN = 60_000;
const at = (iso: string) => Date.parse(iso);
const w = (from_hour: number, to_hour: number): OffPeakWindow => ({ from_hour, to_hour });
const NIGHT = [w(22, 6)];

/** What parseWindows threw, to check its code and message. */
function parseError(text: string): OffPeakError {
  try {
    parseWindows(text);
  } catch (e) {
    if (e instanceof OffPeakError) return e;
    throw e;
  }
  throw new Error(`"${text}" parsed`);
}

describe('parseWindows', () => {
  it('reads hours, minutes, several windows and all day', () => {
    expect(parseWindows('22-06')).toEqual([w(22, 6)]);
    expect(parseWindows('22-06,12-14')).toEqual([w(22, 6), w(12, 14)]);
    expect(parseWindows(' 22:30-06:15 , 0-1 ')).toEqual([w(22.5, 6.25), w(0, 1)]);
    expect(parseWindows('0-24')).toEqual([w(0, 24)]);
    expect(parseWindows('9-17:30')).toEqual([w(9, 17.5)]);
  });

  it('writes them back in a form it reads', () => {
    const windows = parseWindows('22:30-06:15,0-24,9-17');
    expect(formatWindows(windows)).toBe('22:30-06:15,00:00-24:00,09:00-17:00');
    expect(parseWindows(formatWindows(windows))).toEqual(windows);
    expect(formatWindows([])).toBe('none');
  });

  it('refuses garbage, hours past 24, minutes from 60 and empty windows, naming the part', () => {
    for (const [text, part, code] of [
      ['night', '"night"', 'invalid-window'],
      ['22-06,', '"22-06,"', 'invalid-window'],
      ['', '""', 'invalid-window'],
      ['22-6-1', '"22-6-1"', 'invalid-window'],
      ['-1-5', '"-1-5"', 'invalid-window'],
      ['22-06,25-06', '"25-06"', 'invalid-window'],
      ['24:30-06', '"24:30-06"', 'invalid-window'],
      ['22-06:60', '"22-06:60"', 'invalid-window'],
      ['10-10', '"10-10"', 'empty-window'],
      ['24-0', '"24-0"', 'empty-window'],
    ] as const) {
      const e = parseError(text);
      expect(e.code, text).toBe(code);
      expect(e.message, text).toContain(part);
      expect(e.message, text).toContain('0-24');
    }
    expect(parseError('25-06').message).toContain('past 24:00');
    expect(parseError('22-06:60').message).toContain(':60 is not a minute');
  });
});

describe('time zones', () => {
  it('accepts the IANA names Intl knows, as written', () => {
    expect(checkTimeZone('UTC')).toBe('UTC');
    expect(checkTimeZone(' Europe/Berlin ')).toBe('Europe/Berlin');
    expect(checkTimeZone('Asia/Kolkata')).toBe('Asia/Kolkata'); // not Intl's dated Asia/Calcutta
    expect(checkTimeZone('Asia/Calcutta')).toBe('Asia/Calcutta');
  });

  it('refuses unknown zones and fixed offsets with a typed error', () => {
    for (const tz of ['Mars/Olympus', '', '+05:30', 'Europe/Berlin; rm -rf']) {
      expect(() => checkTimeZone(tz), tz).toThrow(OffPeakError);
      try {
        checkTimeZone(tz);
      } catch (e) {
        expect((e as OffPeakError).code).toBe('unknown-time-zone');
      }
    }
    expect(() => localHours('Mars/Olympus', 0)).toThrow(OffPeakError);
  });

  it('reads the local clock, daylight saving and half hours included', () => {
    expect(localHours('UTC', at('2026-01-15T03:00:00Z'))).toBe(3);
    expect(localHours('America/New_York', at('2026-01-15T03:00:00Z'))).toBe(22); // EST, −5
    expect(localHours('America/New_York', at('2026-07-15T03:00:00Z'))).toBe(23); // EDT, −4
    expect(localHours('Asia/Kolkata', at('2026-01-15T00:00:00Z'))).toBe(5.5);
    expect(localHours('Europe/Berlin', at('2026-03-29T00:59:00Z'))).toBeCloseTo(1 + 59 / 60, 12);
    expect(localHours('Europe/Berlin', at('2026-03-29T01:00:00Z'))).toBe(3); // 02:00 CET → 03:00 CEST
    expect(localHours('Europe/Berlin', at('2026-10-25T01:00:00Z'))).toBe(2); // 03:00 CEST → 02:00 CET
    expect(localHours('UTC', at('2026-01-15T23:59:59.999Z'))).toBeLessThan(24);
  });
});

describe('windowState', () => {
  it('lasts 8 h of a usual night in Berlin, 7 h the night clocks go forward and 9 h the night they go back', () => {
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-06-01T20:00:00Z'))).toEqual({
      open: true,
      closesInMs: 8 * H,
      closedForMs: null,
    });
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-03-28T21:00:00Z')).closesInMs).toBe(7 * H);
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-10-24T20:00:00Z')).closesInMs).toBe(9 * H);
    // After the change: real hours since 06:00 local.
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-03-29T10:00:00Z'))).toEqual({
      open: false,
      closesInMs: null,
      closedForMs: 6 * H, // closed at 04:00 UTC (06:00 CEST)
    });
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-10-25T10:00:00Z')).closedForMs).toBe(5 * H);
    // Looking back across the change: it closed at 06:00 CET (05:00 UTC) that morning, 06:00 CEST (04:00 UTC) in March.
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-10-25T19:00:00Z')).closedForMs).toBe(14 * H);
    expect(windowState(NIGHT, 'Europe/Berlin', at('2026-03-29T19:00:00Z')).closedForMs).toBe(15 * H);
  });

  it('ends a window at the clock change when the change jumps out of it, or over a gap into the next', () => {
    // 00:00–02:30 when 02:00 becomes 03:00: it ends at the jump, 01:00 UTC.
    const early = [w(0, 2.5)];
    expect(windowState(early, 'Europe/Berlin', at('2026-03-28T23:30:00Z')).closesInMs).toBe(1.5 * H);
    expect(windowState(early, 'Europe/Berlin', at('2026-03-29T02:00:00Z')).closedForMs).toBe(1 * H);
    // When 03:00 becomes 02:00 again, it closes at 02:30 CEST, then opens again at 02:00 CET until 02:30 CET.
    expect(windowState(early, 'Europe/Berlin', at('2026-10-24T22:30:00Z')).closesInMs).toBe(2 * H);
    expect(windowState(early, 'Europe/Berlin', at('2026-10-25T00:45:00Z')).closedForMs).toBe(15 * MIN);
    expect(windowState(early, 'Europe/Berlin', at('2026-10-25T01:00:00Z')).closesInMs).toBe(30 * MIN);
    // 02:30–06:00 at 02:45 CEST: the clock falls back to 02:00 CET, outside it, 15 minutes later.
    expect(windowState([w(2.5, 6)], 'Europe/Berlin', at('2026-10-25T00:45:00Z')).closesInMs).toBe(15 * MIN);
    // 00:00–02:15 and 02:45–06:00 when 02:00 becomes 03:00: the closed half hour is skipped, one window until 06:00.
    const split = [w(0, 2.25), w(2.75, 6)];
    expect(windowState(split, 'Europe/Berlin', at('2026-03-28T23:30:00Z')).closesInMs).toBe(4.5 * H);
  });

  it('follows New York and Kolkata clocks', () => {
    expect(windowState(NIGHT, 'America/New_York', at('2026-01-15T03:00:00Z')).closesInMs).toBe(8 * H);
    // 22:00 EST on 7 March; clocks go forward at 02:00 on the 8th: 06:00 EDT is 10:00 UTC.
    expect(windowState(NIGHT, 'America/New_York', at('2026-03-08T03:00:00Z')).closesInMs).toBe(7 * H);
    expect(windowState(NIGHT, 'America/New_York', at('2026-01-15T12:00:00Z')).open).toBe(false);
    const office = parseWindows('09:00-17:30');
    expect(windowState(office, 'Asia/Kolkata', at('2026-01-15T04:00:00Z'))).toEqual({
      open: true,
      closesInMs: 8 * H, // 09:30 to 17:30 IST
      closedForMs: null,
    });
    expect(windowState(office, 'Asia/Kolkata', at('2026-01-15T13:00:00Z')).closedForMs).toBe(1 * H);
    expect(windowState(office, 'Asia/Kolkata', at('2026-01-15T03:29:59Z')).open).toBe(false);
    expect(windowState(office, 'Asia/Kolkata', at('2026-01-15T03:30:00Z')).open).toBe(true);
  });

  it('merges windows that touch or overlap, across midnight too', () => {
    const at22 = at('2026-01-15T22:00:00Z');
    expect(windowState([w(22, 24), w(0, 6)], 'UTC', at22).closesInMs).toBe(8 * H);
    expect(windowState([w(0, 6), w(22, 24)], 'UTC', at22).closesInMs).toBe(8 * H);
    expect(windowState([w(22, 6), w(4, 9)], 'UTC', at22).closesInMs).toBe(11 * H);
    expect(windowState([w(22, 6), w(12, 14)], 'UTC', at('2026-01-15T13:00:00Z')).closesInMs).toBe(1 * H);
    expect(windowState([w(22, 6), w(12, 14)], 'UTC', at('2026-01-15T15:00:00Z')).closedForMs).toBe(1 * H);
    expect(windowState([w(22, 6)], 'UTC', at('2026-01-15T05:59:59.999Z')).closesInMs).toBe(1);
    expect(windowState([w(22, 6)], 'UTC', at('2026-01-15T06:00:00Z')).closedForMs).toBe(0);
    // All day, however it is written: open, and never closing.
    const always = { open: true, closesInMs: null, closedForMs: null };
    expect(windowState([w(0, 24)], 'Europe/Berlin', at22)).toEqual(always);
    expect(windowState([w(0, 12), w(12, 24)], 'UTC', at22)).toEqual(always);
    expect(windowState([w(12, 6), w(5, 13)], 'UTC', at22)).toEqual(always);
  });

  it('is never open without windows, or in a zone it does not know', () => {
    const never = { open: false, closesInMs: null, closedForMs: null };
    expect(windowState([], 'Europe/Berlin', at('2026-01-15T22:00:00Z'))).toEqual(never);
    expect(windowState([w(10, 10)], 'UTC', 0)).toEqual(never);
    expect(windowState([w(0, 24)], 'Mars/Olympus', 0)).toEqual(never);
  });

  it('costs one offset lookup per zone for a round of workers sharing a now', () => {
    const zones = ['Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Sydney', 'UTC'];
    const now = at('2026-05-05T05:05:05Z');
    for (const tz of zones) windowState(NIGHT, tz, now); // warm: now and the windows' ends
    const lookups = vi.spyOn(Intl.DateTimeFormat.prototype, 'formatToParts');
    try {
      for (let i = 0; i < 5000; i++) windowState([w(i % 24, (i + 8) % 24)], zones[i % zones.length]!, now);
      // At most each zone's now plus each of the 24 possible ends: nothing per worker.
      expect(lookups.mock.calls.length).toBeLessThanOrEqual(zones.length * 25);
    } finally {
      lookups.mockRestore();
    }
  });
});

// ---- Against a brute-force reading of the local clock --------------------------------------------------------

const ZONES = [
  'Europe/Berlin',
  'America/New_York',
  'Asia/Kolkata',
  'UTC',
  'Australia/Lord_Howe', // 30-minute daylight saving
  'America/St_Johns', // −03:30 / −02:30
  'Asia/Kathmandu', // +05:45
  'Pacific/Chatham', // +12:45 / +13:45
];
/** 2026's clock changes in those zones (± two days around them is where the bugs live). */
const CHANGES = [
  '2026-03-29T01:00:00Z',
  '2026-10-25T01:00:00Z',
  '2026-03-08T07:00:00Z',
  '2026-11-01T06:00:00Z',
  '2026-04-04T15:00:00Z',
  '2026-10-03T15:30:00Z',
  '2026-03-08T05:30:00Z',
  '2026-11-01T04:30:00Z',
  '2026-04-04T14:00:00Z',
  '2026-09-26T14:00:00Z',
].map(at);

const bruteFormats = new Map<string, Intl.DateTimeFormat>();
/** ms since local midnight at `t`, read straight off Intl. */
function bruteTimeOfDay(tz: string, t: number): number {
  let f = bruteFormats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', {
      timeZone: tz,
      hourCycle: 'h23',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    bruteFormats.set(tz, f);
  }
  const [h, m, s] = f.format(t).split(':').map(Number);
  return ((h! * 60 + m!) * 60 + s!) * 1000 + (((t % 1000) + 1000) % 1000);
}

/** Windows in whole minutes, checked one by one as written (no merging). */
function bruteOpen(windows: readonly OffPeakWindow[], tz: string, t: number): boolean {
  const tod = bruteTimeOfDay(tz, t);
  return windows.some(({ from_hour, to_hour }) => {
    const from = Math.round(from_hour * 60) * MIN;
    const to = Math.round(to_hour * 60) * MIN;
    if (from < to) return from <= tod && tod < to;
    if (from > to) return tod >= from || tod < to;
    return false;
  });
}

const minuteOfDay = (step: number) => fc.integer({ min: 0, max: 1440 / step }).map((n) => n * step);
const windowArb = fc
  .oneof(minuteOfDay(15), minuteOfDay(1))
  .chain((from) =>
    fc.oneof(minuteOfDay(15), minuteOfDay(1)).map((to) => w(Math.min(from, 1439) / 60, to / 60)),
  );
const nowArb = fc.oneof(
  fc.integer({ min: at('2026-01-01T00:00:00Z'), max: at('2027-01-01T00:00:00Z') }),
  fc
    .tuple(fc.constantFrom(...CHANGES), fc.integer({ min: -2 * 24 * H, max: 2 * 24 * H }))
    .map(([c, d]) => c + d),
  // On minute boundaries near a change: window ends and changes coincide.
  fc
    .tuple(fc.constantFrom(...CHANGES), fc.integer({ min: -48 * 60, max: 48 * 60 }))
    .map(([c, m]) => c + m * MIN),
);

describe('windowState, against the local clock read off Intl', () => {
  it('is open exactly when the local hour is in a window; closes and closed-for land on the edges', () => {
    fc.assert(
      fc.property(
        fc.array(windowArb, { maxLength: 3 }),
        fc.constantFrom(...ZONES),
        nowArb,
        (windows, tz, now) => {
          const s = windowState(windows, tz, now);
          const open = (t: number) => bruteOpen(windows, tz, t);
          expect(s.open).toBe(open(now));
          if (s.open) {
            expect(s.closedForMs).toBeNull();
            if (s.closesInMs === null) {
              // Open all day: every minute of a day inside.
              for (let m = 0; m < 1440; m += 7) expect(open(now + m * MIN)).toBe(true);
              return;
            }
            const c = s.closesInMs;
            expect(c).toBeGreaterThan(0);
            expect(c).toBeLessThanOrEqual(48 * H);
            expect(open(now + c)).toBe(false);
            expect(open(now + c - 1)).toBe(true);
            for (let i = 1; i < 8; i++) expect(open(now + Math.floor((c * i) / 8))).toBe(true);
          } else {
            expect(s.closesInMs).toBeNull();
            if (s.closedForMs === null) {
              for (let m = 0; m < 1440; m += 7) expect(open(now + m * MIN)).toBe(false);
              return;
            }
            const c = s.closedForMs;
            expect(c).toBeGreaterThanOrEqual(0);
            expect(c).toBeLessThan(48 * H);
            expect(open(now - c)).toBe(false);
            expect(open(now - c - 1)).toBe(true);
            for (let i = 1; i < 8; i++) expect(open(now - Math.floor((c * i) / 8))).toBe(false);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
