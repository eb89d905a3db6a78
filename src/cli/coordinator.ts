import type { NatsConnection } from '@nats-io/transport-node';
import type { Command } from 'commander';
import Dockerode from 'dockerode';
import { Coordinator } from '../coordinator/coordinator.ts';
import { DEFAULT_RETRY } from '../coordinator/job-state.ts';
import { serveApi } from '../coordinator/service.ts';
import { logConnectionStatus } from '../transport/connect.ts';
import { VERSION } from '../version.ts';
import { GRID_EPOCH_REPO } from '../worker/images.ts';
import { addConnectionOptions, type ConnectionFlags, openServerSide } from './connection.ts';
import { createLogger, logLevelOption } from './log.ts';
import { intOption } from './options.ts';
import { onShutdown } from './shutdown.ts';

interface Options extends ConnectionFlags {
  image?: string;
  maxAttempts: number;
  logLevel?: string;
}

/** The grid-epoch image jobs pin: the local image's ID when Docker has it, else its tag (process workers). */
export async function defaultImage(): Promise<string> {
  const tag = `${GRID_EPOCH_REPO}:${VERSION}`;
  try {
    const info = await new Dockerode().getImage(tag).inspect();
    return info.Id;
  } catch {
    return tag;
  }
}

export interface RunningCoordinator {
  coordinator: Coordinator;
  url: string;
  nc: NatsConnection;
  close(): Promise<void>;
}

export async function startCoordinator(opts: Options): Promise<RunningCoordinator> {
  const log = createLogger('coordinator', opts.logLevel);
  const transport = await openServerSide(opts, 'plurigrid-coordinator');
  const coordinator = new Coordinator(transport.nc, transport.resources, {
    image: opts.image ?? (await defaultImage()),
    retry: { ...DEFAULT_RETRY, maxAttempts: opts.maxAttempts },
    log,
  });
  const status = logConnectionStatus(transport.nc, log);
  await coordinator.start();
  const service = await serveApi(transport.nc, coordinator.studies, VERSION, log);
  log.info({ nats: transport.url, embedded: transport.embedded }, 'coordinator listening');
  return {
    coordinator,
    url: transport.url,
    nc: transport.nc,
    close: async () => {
      await service.stop().catch(() => {});
      await coordinator.stop();
      status.stop();
      await transport.close();
    },
  };
}

export function registerCoordinator(program: Command): void {
  addConnectionOptions(
    program
      .command('coordinator')
      .description('run the coordinator (starts an embedded nats-server unless --nats is given)')
      .option('--image <id>', 'grid-epoch image ID jobs pin (default: the local plurigrid/grid-epoch image)')
      .option('--max-attempts <n>', 'attempts per job before it fails', intOption('--max-attempts', 1, 20), 3)
      .addOption(logLevelOption()),
  ).action(async (opts: Options) => {
    const running = await startCoordinator(opts);
    process.stdout.write(`coordinator ready; NATS at ${running.url}\n`);
    onShutdown(() => running.close());
    await new Promise(() => {});
  });
}
