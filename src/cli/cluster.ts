import { rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { AuthStore } from '../transport/auth.ts';
import { startCluster } from '../transport/nats-cluster.ts';
import { addConnectionOptions, type ConnectionFlags } from './connection.ts';
import { intOption } from './options.ts';
import { onShutdown } from './shutdown.ts';

/**
 * `plurigrid cluster up --nodes 3`: a JetStream cluster on loopback for development, with the data dir's operator
 * keys (made if missing). Its URLs go to `<data-dir>/nats.url`, where a coordinator, workers and clients started
 * with the same data dir find them; a coordinator on a cluster keeps three copies of everything by default.
 */
export function registerCluster(program: Command): void {
  const cluster = program
    .command('cluster')
    .description('a JetStream cluster of nats-servers on this machine');
  addConnectionOptions(
    cluster
      .command('up')
      .description('start a JetStream cluster on loopback (foreground; Ctrl-C stops it)')
      .option('--nodes <n>', 'servers in the cluster', intOption('--nodes', 1, 9), 3),
  ).action(async (opts: ConnectionFlags & { nodes: number }) => {
    const dataDir = resolve(opts.dataDir);
    const auth = await AuthStore.open(dataDir, { create: true });
    const up = await startCluster({ dataDir, nodes: opts.nodes, config: await auth.serverConfig() });
    const file = join(dataDir, 'nats.url');
    await writeFile(file, `${up.urls}\n`);
    process.stdout.write(
      `cluster ready: ${opts.nodes} nodes at ${up.urls}\n` +
        `  plurigrid coordinator --data-dir ${opts.dataDir} --nats ${up.urls}\n`,
    );
    onShutdown(async () => {
      await rm(file, { force: true });
      await up.stop();
    });
    await new Promise(() => {});
  });
}
