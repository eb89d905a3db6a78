import type { Command } from 'commander';
import { parseInput } from '../models/errors.ts';
import { Mechanism, Scenario } from '../models/scenario.ts';
import { runEpoch } from '../sim/epoch.ts';
import { readJsonFile } from '../study/files.ts';
import { metricsTable } from './format.ts';
import { intOption } from './options.ts';

interface Options {
  json?: boolean;
  mechanism?: string;
  seed?: number;
  series?: boolean;
}

export function registerSimRun(sim: Command): void {
  sim
    .command('run')
    .description('run one grid epoch and print its metrics')
    .argument('<scenario>', 'scenario JSON file')
    .option('--json', 'print the full result (metrics, agents, digest) as JSON')
    .option('--mechanism <name>', `override the market mechanism (${Mechanism.options.join(', ')})`)
    .option('--seed <n>', 'override the seed', intOption('--seed', 0, 0xffff_ffff))
    .option('--series', 'include per-interval series in the result')
    .action(async (file: string, opts: Options) => {
      const raw = (await readJsonFile(file, 'scenario')) as Record<string, unknown>;
      if (opts.mechanism !== undefined && raw && typeof raw === 'object') {
        raw.market = { ...(raw.market as object), mechanism: opts.mechanism };
      }
      if (opts.seed !== undefined && raw && typeof raw === 'object') raw.seed = opts.seed;
      if (opts.series && raw && typeof raw === 'object')
        raw.output = { ...(raw.output as object), series: true };
      const scenario = parseInput(Scenario, raw, `invalid scenario ${file}`);
      const result = runEpoch(scenario);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(result)}\n`);
        return;
      }
      process.stdout.write(
        `${scenario.name} · ${scenario.market.mechanism} · seed ${scenario.seed} · ${scenario.community.size} households\n`,
      );
      process.stdout.write(`${metricsTable(result.metrics)}\ndigest ${result.digest}\n`);
    });
}
