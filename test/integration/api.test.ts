// The coordinator's API as a client in any language sees it: the NATS micro service over a real nats-server, with the
// harness's coordinator behind it.
import { createHash } from 'node:crypto';
import { Svcm } from '@nats-io/services';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/coordinator/client.ts';
import { ConflictError, NotFoundError } from '../../src/coordinator/errors.ts';
import { serveApi } from '../../src/coordinator/service.ts';
import { InputError } from '../../src/models/errors.ts';
import { subjects } from '../../src/transport/subjects.ts';
import { Harness, tinyStudy } from '../fixtures/harness.ts';

let h: Harness | undefined;
let stopService: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stopService?.();
  await h?.stop();
  h = undefined;
});

async function serve(options: Parameters<typeof Harness.start>[0] = {}) {
  h = await Harness.start(options);
  const service = await serveApi(h.nc, h.coordinator.studies, '0.0.0', pino({ level: 'silent' }));
  stopService = () => service.stop().then(() => {});
  return new ApiClient(h.nc, 10_000);
}

async function refused(p: Promise<unknown>): Promise<InputError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(InputError);
  return e as InputError;
}

async function firstOf<T>(iter: AsyncIterable<T>): Promise<T> {
  for await (const x of iter) return x;
  throw new Error('no service answered');
}

describe('the API service', () => {
  it('answers errors with the micro service error headers, counted in its stats, and a typed payload', async () => {
    const api = await serve();
    const msg = await h!.nc.request(subjects.api('status'), JSON.stringify({ study_id: 'nope' }));
    expect(msg.headers?.get('Nats-Service-Error-Code')).toBe('404');
    expect(msg.headers?.get('Nats-Service-Error')).toBe('no study nope');
    expect(msg.json()).toEqual({ error: { code: 'not_found', message: 'no study nope', issues: [] } });
    await expect(api.status('nope')).rejects.toBeInstanceOf(NotFoundError);
    const bad = await h!.nc.request(subjects.api('submit'), '{"study":');
    expect(bad.headers?.get('Nats-Service-Error-Code')).toBe('400');
    const stats = await firstOf(await new Svcm(h!.nc).client().stats('plurigrid'));
    const errors = (stats.endpoints ?? []).reduce((n, e) => n + e.num_errors, 0);
    expect(errors).toBeGreaterThanOrEqual(3);
  });

  it('publishes each endpoint request and reply schema as JSON Schema in its metadata', async () => {
    await serve();
    const info = await firstOf(await new Svcm(h!.nc).client().info('plurigrid'));
    const submit = info.endpoints.find((e) => e.name === 'submit')!;
    const schema = JSON.parse(submit.metadata!.request_schema!);
    expect(schema.properties).toHaveProperty('study');
    expect(schema.properties).toHaveProperty('idempotency_key');
    const results = info.endpoints.find((e) => e.name === 'results')!;
    expect(JSON.parse(results.metadata!.reply_schema!).properties).toHaveProperty('rows');
  });

  it('refuses every bad input as invalid with a path, never internal', async () => {
    const api = await serve();
    // Nested far too deep (written by hand: JSON.stringify itself would overflow the stack).
    const deep = JSON.stringify(tinyStudy(1)).replace(
      '"days":1',
      `"days":${'['.repeat(50_000)}${']'.repeat(50_000)}`,
    );
    const deepReply = await h!.nc.request(subjects.api('submit'), deep);
    expect(deepReply.json()).toMatchObject({
      error: { code: 'invalid', issues: [expect.stringMatching(/nested deeper than 64 levels/)] },
    });
    // A number JSON cannot hold.
    const raw = JSON.stringify(tinyStudy(1)).replace('"days":1', '"days":1e400');
    const msg = await h!.nc.request(subjects.api('submit'), raw);
    expect(msg.json()).toMatchObject({
      error: {
        code: 'invalid',
        issues: [expect.stringMatching(/time\.days: expected a finite number, got Infinity/)],
      },
    });
    // A sweep that would walk into prototypes: refused, and nothing polluted.
    const polluting = tinyStudy(1);
    polluting.study!.sweep = [{ name: '__proto__.polluted', values: [1] }];
    expect((await refused(api.submit(polluting))).issues[0]).toMatch(
      /^study\.sweep\[0\]\.name: "__proto__\.polluted"/,
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // A single scenario whose name has a space runs as a study with a name derived from it.
    const scenario = { ...(tinyStudy(1).study!.scenario as Record<string, unknown>), name: 'my scenario' };
    expect(await api.submit({ scenario })).toMatchObject({ name: 'my-scenario', epochs: 1 });
  });

  it('refuses a submit over the live limit with conflict, and one whose key is still being used', async () => {
    const api = await serve({ maxLiveEpochs: 3 });
    await api.submit(tinyStudy(2));
    await expect(api.submit(tinyStudy(2))).rejects.toBeInstanceOf(ConflictError);
    // An idempotency key claimed by a submit that has not stored its study yet.
    const key = createHash('sha256').update('k1').digest('hex');
    await h!.resources.kv.idempotency.create(key, JSON.stringify({ study_id: 'sunfinished' }));
    await expect(api.submit({ ...tinyStudy(1), idempotency_key: 'k1' })).rejects.toBeInstanceOf(
      ConflictError,
    );
  }, 20_000);

  it('leaves no jobs object behind when the study record cannot be written, and frees the key', async () => {
    const api = await serve();
    const kv = h!.resources.kv.studies;
    const create = kv.create.bind(kv);
    kv.create = () => Promise.reject(new Error('simulated: maximum payload exceeded'));
    await expect(api.submit({ ...tinyStudy(1), idempotency_key: 'k2' })).rejects.toThrow(/not stored/);
    expect(await h!.resources.jobspecs.list()).toEqual([]);
    kv.create = create;
    expect(await api.submit({ ...tinyStudy(1), idempotency_key: 'k2' })).toMatchObject({ duplicate: false });
  });

  it('lists at most the workers asked for', async () => {
    const api = await serve();
    for (const name of ['a', 'b', 'c']) await h!.worker(name);
    expect((await api.workers(2)).workers).toHaveLength(2);
    expect((await api.workers()).workers).toHaveLength(3);
  });
});
