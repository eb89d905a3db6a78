import Table from 'cli-table3';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import type { HealthReply } from '../models/api.ts';
import { addConnectionOptions, type ConnectionFlags, openClient } from './connection.ts';

export function healthText(h: HealthReply, now = Date.now()): string {
  const c = h.coordinator;
  const lines = [
    `coordinator ${c.holder}, term ${c.term}, active for ${Math.round((now - c.since) / 1000)} s`,
    `bus: ${h.bus.connected ? `connected to ${h.bus.server}` : 'disconnected'}; servers ${h.bus.servers.join(', ')}`,
  ];
  const t = new Table({ head: ['stream', 'state', 'leader', 'replicas current', 'messages', 'since'] });
  for (const s of h.bus.streams) {
    t.push([
      s.name,
      s.ok ? 'ok' : `unavailable${s.error ? `: ${s.error}` : ''}`,
      s.leader ?? '-',
      `${s.current}/${s.replicas}`,
      s.messages ?? '-',
      `${Math.round((now - s.since) / 1000)} s`,
    ]);
  }
  return `${lines.join('\n')}\n${t.toString()}\n`;
}

export function registerHealth(program: Command): void {
  addConnectionOptions(
    program
      .command('health')
      .description(
        'which coordinator is active, and its view of the bus: connection, each stream and its replicas',
      )
      .option('--json', 'print the reply as JSON'),
  ).action(async (opts: ConnectionFlags & { json?: boolean }) => {
    const transport = await openClient(opts, 'plurigrid-health');
    try {
      const h = await new ApiClient(transport.nc).health();
      process.stdout.write(opts.json ? `${JSON.stringify(h, null, 2)}\n` : healthText(h));
      // Exit 1 when the coordinator sees a stream it cannot use: scripts and probes can act on it.
      if (!h.bus.connected || h.bus.streams.some((s) => !s.ok)) process.exitCode = 1;
    } finally {
      await transport.close();
    }
  });
}
