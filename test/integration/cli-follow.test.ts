import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { follow } from '../../src/cli/submit.ts';
import { ApiClient } from '../../src/coordinator/client.ts';
import type { JobEvents, StudyEvent, StudyStatus } from '../../src/models/api.ts';
import { connectNats } from '../../src/transport/connect.ts';
import { type EmbeddedNats, startEmbeddedNats } from '../../src/transport/nats-server.ts';
import { subjects } from '../../src/transport/subjects.ts';

// `follow` against a scripted coordinator: the status it answers and the events it publishes are the test's.

const counts = { total: 4, done: 0, running: 0, queued: 4, failed: 0, cancelled: 0 };
const status = (study_id: string, state: StudyStatus['state']): StudyStatus => ({
  study_id,
  name: 'scripted',
  state,
  submitted_at: 0,
  finished_at: state === 'running' ? null : 1,
  epochs: state === 'done' ? { ...counts, done: 4, queued: 0 } : counts,
  jobs: state === 'done' ? { ...counts, done: 4, queued: 0 } : counts,
  failures: [],
  funds: null,
  waiting: null,
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let nats: EmbeddedNats;
let coordinator: NatsConnection;
let client: NatsConnection;
let studies = 0;

/**
 * A fake coordinator answering `status` for one study with `answer()` (counted), on its own connection; resolves once
 * the server has its subscription (a request sent before would find no responders).
 */
async function scripted(answer: (calls: number) => StudyStatus['state']) {
  const studyId = `s${++studies}`;
  let calls = 0;
  const sub = coordinator.subscribe(subjects.api('status'), {
    callback: (_, msg) => {
      calls++;
      msg.respond(JSON.stringify(status(studyId, answer(calls))));
    },
  });
  const publishJobs = () =>
    coordinator.publish(
      subjects.jobEvents('public', studyId),
      JSON.stringify({
        study_id: studyId,
        events: [
          { job_id: 'j', status: 'assigned', attempt: 1, worker_id: 'w', epochs: 1, reason: null, at: 0 },
        ],
      } satisfies JobEvents),
    );
  const publishStudy = (state: StudyEvent['state']) =>
    coordinator.publish(
      subjects.studyEvents('public', studyId),
      JSON.stringify({ study_id: studyId, state, at: 0 } satisfies StudyEvent),
    );
  await coordinator.flush();
  return { studyId, calls: () => calls, publishJobs, publishStudy, stop: () => sub.unsubscribe() };
}

beforeAll(async () => {
  nats = await startEmbeddedNats({ dataDir: mkdtempSync(join(tmpdir(), 'plurigrid-follow-')) });
  coordinator = await connectNats({ url: nats.url, name: 'scripted-coordinator' });
  client = await connectNats({ url: nats.url, name: 'follower' });
});

afterAll(async () => {
  await client?.close();
  await coordinator?.close();
  await nats?.stop();
});

describe('follow', () => {
  it('refreshes on job events at most every refreshMs, and ends on the study event', async () => {
    let done = false;
    const fake = await scripted(() => (done ? 'done' : 'running'));
    const seen: StudyStatus[] = [];
    const following = follow(client, new ApiClient(client), fake.studyId, 'public', (s) => seen.push(s), {
      refreshMs: 200,
      safetyPollMs: 60_000,
    });
    await sleep(100);
    const started = performance.now();
    while (performance.now() - started < 1000) {
      fake.publishJobs();
      await sleep(10);
    }
    done = true;
    fake.publishStudy('done');
    const ended = performance.now();
    const final = await following;
    fake.stop();
    // Ended by the event, not a poll (the safety poll is a minute away; the margin is for a loaded machine).
    expect(performance.now() - ended).toBeLessThan(5_000);
    expect(final.state).toBe('done');
    expect(seen.at(-1)).toEqual(final);
    // ~100 event batches in 1 s: refreshed, but no more than once per 200 ms (+ the first and the final status).
    expect(fake.calls()).toBeGreaterThanOrEqual(3);
    expect(fake.calls()).toBeLessThanOrEqual(1 + Math.ceil(1000 / 200) + 2);
  });

  it('sees the end through the safety poll when no event arrives', async () => {
    const fake = await scripted((calls) => (calls >= 2 ? 'done' : 'running'));
    const started = performance.now();
    const final = await follow(client, new ApiClient(client), fake.studyId, 'public', () => {}, {
      safetyPollMs: 300,
    });
    fake.stop();
    expect(final.state).toBe('done');
    expect(fake.calls()).toBe(2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('does not miss an end announced while the first status is being answered', async () => {
    // The study finishes between the coordinator reading the status and the follower getting the reply: only a
    // subscription made before the request sees that study event.
    const fake = await scripted((calls) => {
      if (calls === 1) {
        fake.publishStudy('done');
        return 'running';
      }
      return 'done';
    });
    const final = await follow(client, new ApiClient(client), fake.studyId, 'public', () => {}, {
      safetyPollMs: 60_000,
    });
    fake.stop();
    expect(final.state).toBe('done');
    expect(fake.calls()).toBe(2);
  }, 5_000);
});
