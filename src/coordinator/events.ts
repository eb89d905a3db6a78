import type { NatsConnection } from '@nats-io/transport-node';
import type { JobEvent, JobEvents, StudyEvent } from '../models/api.ts';
import { PUBLIC_OWNER } from '../transport/permissions.ts';
import { subjects } from '../transport/subjects.ts';
import type { Clock } from './clock.ts';
import type { Commit } from './store.ts';

const EVENTS_PER_MESSAGE = 1000;

/**
 * The live feed, derived from the store's commits (as Nomad derives its events from state changes): a job's status
 * change becomes a JobEvent, batched per study and turn of the event loop into one message; a study's state change
 * becomes a StudyEvent. Publishing is fire-and-forget: the states they announce are stored. Each goes out under its
 * study's owner (`plurigrid.events.<owner>.…`), the only client allowed to listen there.
 */
export class EventPublisher {
  private readonly pending = new Map<string, JobEvent[]>();
  private readonly nc: NatsConnection;
  private readonly clock: Clock;
  private readonly ownerOf: (studyId: string) => string | null | undefined;

  /** `ownerOf`: a study's owner key (null or unknown: its events are public). */
  constructor(nc: NatsConnection, clock: Clock, ownerOf: (studyId: string) => string | null | undefined) {
    this.nc = nc;
    this.clock = clock;
    this.ownerOf = ownerOf;
  }

  private owner(studyId: string): string {
    return this.ownerOf(studyId) ?? PUBLIC_OWNER;
  }

  readonly onCommit = (c: Commit): void => {
    if (c.kind === 'study') {
      if (c.before?.state !== c.after.state)
        this.studyEvent({ study_id: c.id, state: c.after.state, at: this.clock.now() });
      return;
    }
    if (c.before.status === c.after.status && c.before.attempts === c.after.attempts) return;
    const rec = c.after;
    const last = rec.executions.at(-1);
    const ev: JobEvent = {
      job_id: c.id,
      status: rec.status,
      attempt: rec.attempts,
      worker_id: last?.worker_id ?? null,
      epochs: rec.job.epochs.length,
      reason: rec.reason ?? (last?.ended !== 'ok' ? (last?.reason ?? null) : null),
      at: this.clock.now(),
    };
    // Flushed with the writes of the batch that caused them (see `flush` calls), else at the end of this turn.
    if (this.pending.size === 0) setImmediate(() => this.flush());
    const list = this.pending.get(rec.job.study_id);
    if (list) list.push(ev);
    else this.pending.set(rec.job.study_id, [ev]);
  };

  studyEvent(ev: StudyEvent): void {
    this.publish(subjects.studyEvents(this.owner(ev.study_id), ev.study_id), ev);
  }

  flush(): void {
    for (const [studyId, events] of this.pending) {
      // A few hundred bytes an event: slices stay well under the server's 1 MiB message limit.
      const subject = subjects.jobEvents(this.owner(studyId), studyId);
      for (let i = 0; i < events.length; i += EVENTS_PER_MESSAGE) {
        const slice = events.slice(i, i + EVENTS_PER_MESSAGE);
        this.publish(subject, { study_id: studyId, events: slice } satisfies JobEvents);
      }
    }
    this.pending.clear();
  }

  private publish(subject: string, body: unknown): void {
    try {
      this.nc.publish(subject, JSON.stringify(body));
    } catch {
      // The connection is closing: the feed is live only, and what it announces is stored.
    }
  }
}
