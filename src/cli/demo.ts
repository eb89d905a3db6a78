import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { runStudyCommand } from './sim-study.ts';

const EXAMPLE = fileURLToPath(new URL('../../examples/mechanism-comparison.json', import.meta.url));

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the example mechanism-comparison study and print the comparison')
    .option('--out <dir>', 'output directory', 'out/mechanism-comparison')
    .action((opts: { out: string }) => runStudyCommand(EXAMPLE, { out: opts.out }));
}
