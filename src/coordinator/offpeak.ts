import { OffPeakWindow } from '../models/worker.ts';

/**
 * Off-peak windows, pure: parsing a provider's `22-06,12-14`, and whether a window is open at an instant on the
 * provider's own clock (its IANA zone, daylight saving included). Placement asks this of thousands of workers per
 * round, all at the same `now`, so each zone's formatter and its UTC offset per minute are cached.
 */

export type OffPeakErrorCode = 'invalid-window' | 'empty-window' | 'unknown-time-zone';

/** A window or time zone that cannot be used; `code` says which problem it is. */
export class OffPeakError extends Error {
  readonly code: OffPeakErrorCode;
  constructor(code: OffPeakErrorCode, message: string) {
    super(message);
    this.name = 'OffPeakError';
    this.code = code;
  }
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const MINUTE_MS = 60_000;
const FORMAT_HINT =
  'expected HH[:MM]-HH[:MM] windows like 22-06 or 22:30-06:15, comma-separated (0-24 for all day)';

// ---- Parsing -------------------------------------------------------------------------------------------------

const WINDOW_RE = /^(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?$/;

/** Hours of one `HH[:MM]` end, or why it is not one. */
function hourOf(h: string, m: string | undefined, part: string): number {
  const hours = Number(h);
  const minutes = m === undefined ? 0 : Number(m);
  if (hours > 24 || (hours === 24 && minutes > 0))
    throw new OffPeakError(
      'invalid-window',
      `"${part}": ${h}${m ? `:${m}` : ''} is past 24:00; ${FORMAT_HINT}`,
    );
  if (minutes >= 60)
    throw new OffPeakError('invalid-window', `"${part}": :${m} is not a minute (00-59); ${FORMAT_HINT}`);
  return hours + minutes / 60;
}

function parseWindow(part: string): OffPeakWindow {
  const m = WINDOW_RE.exec(part);
  if (!m) throw new OffPeakError('invalid-window', `"${part}" is not a window; ${FORMAT_HINT}`);
  const from_hour = hourOf(m[1]!, m[2], part);
  const to_hour = hourOf(m[3]!, m[4], part);
  // 24 and 0 are the same wall-clock instant: 0-24 is all day, 24-0 would be nothing.
  if (from_hour % 24 === to_hour % 24 && !(from_hour === 0 && to_hour === 24))
    throw new OffPeakError('empty-window', `"${part}" starts where it ends; write 0-24 for all day`);
  return OffPeakWindow.parse({ from_hour, to_hour });
}

/** `22-06`, `22-06,12-14`, `22:30-06:15`, `0-24`: windows on the provider's clock, across midnight when to < from. */
export function parseWindows(text: string): OffPeakWindow[] {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.some((p) => p === ''))
    throw new OffPeakError('invalid-window', `"${text}" has an empty window; ${FORMAT_HINT}`);
  return parts.map(parseWindow);
}

const pad = (n: number) => String(n).padStart(2, '0');
const clock = (hours: number) => {
  const minutes = Math.round(hours * 60);
  return `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
};

/** Windows the way parseWindows reads them, `22:00-06:00,12:00-14:00`; `none`, for people, when there are none. */
export function formatWindows(windows: readonly OffPeakWindow[]): string {
  return windows.length === 0
    ? 'none'
    : windows.map((w) => `${clock(w.from_hour)}-${clock(w.to_hour)}`).join(',');
}

// ---- Time zones ----------------------------------------------------------------------------------------------

interface Zone {
  format: Intl.DateTimeFormat;
  /** UTC offset in ms by minute since the epoch (offsets change on whole minutes). */
  offsets: Map<number, number>;
}

/** Enough for a round's `now` and window ends in every zone; cleared when full (a later round has another now). */
const MAX_OFFSETS_PER_ZONE = 4096;
const zones = new Map<string, Zone | null>();

/** The zone's cache entry, or null when Intl does not know it (remembered: a bad advert repeats every beat). */
function zoneOf(tz: string): Zone | null {
  let zone = zones.get(tz);
  if (zone !== undefined) return zone;
  try {
    zone = {
      format: new Intl.DateTimeFormat('en-US', {
        timeZone: tz,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      }),
      offsets: new Map(),
    };
  } catch {
    zone = null;
  }
  // Zone names come from adverts: bound what strangers can make us remember.
  if (zones.size >= 1024) zones.clear();
  zones.set(tz, zone);
  return zone;
}

const unknownZone = (tz: string) =>
  new OffPeakError(
    'unknown-time-zone',
    `unknown time zone "${tz}": expected an IANA name such as Europe/Berlin, America/New_York or UTC`,
  );

/**
 * `tz`, trimmed, if Intl knows it as a zone, else an OffPeakError. Kept as written: Intl's own canonical names are
 * dated (Asia/Kolkata comes back as Asia/Calcutta), and every Intl takes the name either way.
 */
export function checkTimeZone(tz: string): string {
  const name = tz.trim();
  // Intl also takes fixed offsets, but an offset knows no daylight saving: the place's name does.
  if (/^[+-]\d/.test(name))
    throw new OffPeakError(
      'unknown-time-zone',
      `"${tz}" is a fixed UTC offset: give the IANA name of the place (e.g. Europe/Berlin) so daylight saving follows`,
    );
  const zone = name ? zoneOf(name) : null;
  if (!zone) throw unknownZone(tz);
  return name;
}

/** The zone's UTC offset (local − UTC, ms) at the minute holding `at`. */
function offsetAt(zone: Zone, at: number): number {
  const minute = Math.floor(at / MINUTE_MS);
  let offset = zone.offsets.get(minute);
  if (offset !== undefined) return offset;
  const utc = minute * MINUTE_MS;
  const p: Record<string, number> = {};
  for (const { type, value } of zone.format.formatToParts(utc)) p[type] = Number(value);
  const local = Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!);
  offset = local - utc;
  if (zone.offsets.size >= MAX_OFFSETS_PER_ZONE) zone.offsets.clear();
  zone.offsets.set(minute, offset);
  return offset;
}

/** ms since midnight of a wall-clock time counted in ms since the epoch. */
const timeOfDay = (localMs: number) => ((localMs % DAY_MS) + DAY_MS) % DAY_MS;

/** The provider's wall-clock time as fractional hours in [0, 24). */
export function localHours(tz: string, now: number): number {
  const zone = zoneOf(tz);
  if (!zone) throw unknownZone(tz);
  return timeOfDay(now + offsetAt(zone, now)) / HOUR_MS;
}

// ---- Window state --------------------------------------------------------------------------------------------

/** A stretch of the local day, [start, end) in ms since midnight. */
interface Run {
  start: number;
  end: number;
}

/**
 * The windows as sorted, disjoint stretches of one day, touching ones merged (22-24 and 0-06 stay two stretches
 * here; `runEnd` joins them across midnight). Ends are whole ms, so comparisons are exact.
 */
function runsOf(windows: readonly OffPeakWindow[]): Run[] {
  const pieces: Run[] = [];
  for (const w of windows) {
    const to = Math.round(w.to_hour * HOUR_MS);
    const raw = Math.round(w.from_hour * HOUR_MS);
    // Empty, as parseWindows refuses it (an advert may still say so); only 0-24 is all day.
    if (raw % DAY_MS === to % DAY_MS && !(raw === 0 && to === DAY_MS)) continue;
    const from = raw % DAY_MS; // 24:00 is the next midnight
    if (from < to) pieces.push({ start: from, end: to });
    else if (from > to) {
      pieces.push({ start: from, end: DAY_MS });
      if (to > 0) pieces.push({ start: 0, end: to });
    }
  }
  pieces.sort((a, b) => a.start - b.start);
  const runs: Run[] = [];
  for (const p of pieces) {
    const last = runs.at(-1);
    if (last && p.start <= last.end) last.end = Math.max(last.end, p.end);
    else runs.push({ ...p });
  }
  return runs;
}

const allDay = (runs: readonly Run[]) => runs.length === 1 && runs[0]!.start === 0 && runs[0]!.end === DAY_MS;
const inside = (runs: readonly Run[], tod: number) => runs.some((r) => r.start <= tod && tod < r.end);

/** While open at local `localMs`: the local instant its stretch ends, across midnight if it goes on at 00:00. */
function runEnd(runs: readonly Run[], localMs: number): number {
  const tod = timeOfDay(localMs);
  const run = runs.find((r) => r.start <= tod && tod < r.end)!;
  const day = localMs - tod;
  if (run.end === DAY_MS && runs[0]!.start === 0) return day + DAY_MS + runs[0]!.end;
  return day + run.end;
}

/** While closed at local `localMs`: the local instant the last stretch before it ended. */
function lastEnd(runs: readonly Run[], localMs: number): number {
  const tod = timeOfDay(localMs);
  const day = localMs - tod;
  for (let i = runs.length - 1; i >= 0; i--) if (runs[i]!.end <= tod) return day + runs[i]!.end;
  return day - DAY_MS + runs.at(-1)!.end;
}

/** The first minute boundary in (after, upTo] where the offset is no longer `offset` (a daylight-saving change). */
function changeAfter(zone: Zone, after: number, upTo: number, offset: number): number {
  let lo = Math.floor(after / MINUTE_MS); // offset here is `offset`
  let hi = Math.floor(upTo / MINUTE_MS); // and here it is not
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (offsetAt(zone, mid * MINUTE_MS) === offset) lo = mid;
    else hi = mid;
  }
  return hi * MINUTE_MS;
}

/** The last minute boundary in (from, before] where the offset became `offset`, looking back from `before`. */
function changeBefore(zone: Zone, from: number, before: number, offset: number): number {
  let lo = Math.floor(from / MINUTE_MS); // offset here is not `offset`
  let hi = Math.floor(before / MINUTE_MS); // and here it is
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (offsetAt(zone, mid * MINUTE_MS) === offset) hi = mid;
    else lo = mid;
  }
  return hi * MINUTE_MS;
}

/** At most this many clock changes are stepped over looking for a window's end (there is one a night at most). */
const MAX_CHANGES = 4;

/**
 * Real ms from `now` until the window closes: its local end converted back through the zone's offset. A clock change
 * on the way moves that instant (a 22–06 window lasts 7 h the night clocks go forward), and one that jumps the clock
 * out of the window (or over a closed stretch into the next) ends it at the change, or not at all.
 */
function closesIn(zone: Zone, runs: readonly Run[], now: number): number {
  let t = now;
  let end = now;
  for (let i = 0; i < MAX_CHANGES; i++) {
    const offset = offsetAt(zone, t);
    end = runEnd(runs, t + offset) - offset;
    if (offsetAt(zone, end) === offset) return end - now;
    const change = changeAfter(zone, t, end, offset);
    if (!inside(runs, timeOfDay(change + offsetAt(zone, change)))) return change - now;
    t = change;
  }
  return end - now;
}

/** Real ms since the window last closed: the mirror image of closesIn, looking back. */
function closedFor(zone: Zone, runs: readonly Run[], now: number): number {
  let t = now;
  let ended = now;
  for (let i = 0; i < MAX_CHANGES; i++) {
    const offset = offsetAt(zone, t);
    ended = lastEnd(runs, t + offset) - offset;
    // Open just before `ended` only if that moment still had this offset.
    if (offsetAt(zone, ended - 1) === offset) return now - ended;
    const change = changeBefore(zone, ended - 1, t, offset);
    if (inside(runs, timeOfDay(change - 1 + offsetAt(zone, change - 1)))) return now - change;
    t = change - 1;
  }
  return now - ended;
}

export interface WindowState {
  /** `now` is inside one of the windows. */
  open: boolean;
  /** While open: real ms until it closes (null: open all day, it never does). */
  closesInMs: number | null;
  /** While closed: real ms since it last closed (null: there are no windows). */
  closedForMs: number | null;
}

const NEVER: WindowState = { open: false, closesInMs: null, closedForMs: null };
const ALWAYS: WindowState = { open: true, closesInMs: null, closedForMs: null };

/**
 * Whether a provider's off-peak window is open at `now`, on its clock in `tz`. No windows: never open. A zone this
 * machine's Intl does not know (say, newer than its time-zone data) counts as no windows, so one odd advert cannot
 * stop a scheduling round: the worker just gets no public-goods work.
 */
export function windowState(windows: readonly OffPeakWindow[], tz: string, now: number): WindowState {
  const runs = runsOf(windows);
  const zone = runs.length > 0 ? zoneOf(tz) : null;
  if (!zone) return NEVER;
  if (allDay(runs)) return ALWAYS;
  const open = inside(runs, timeOfDay(now + offsetAt(zone, now)));
  return open
    ? { open, closesInMs: closesIn(zone, runs, now), closedForMs: null }
    : { open, closesInMs: null, closedForMs: closedFor(zone, runs, now) };
}
