import { Command } from 'commander';
import { registerDemo } from './demo.ts';
import { reportError } from './errors.ts';
import { registerSimRun } from './sim-run.ts';
import { registerSimStudy } from './sim-study.ts';

export function buildProgram(): Command {
  const program = new Command('plurigrid')
    .description('Plurigrid Simulation Commons: grid-epoch simulations, studies and the compute marketplace')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');
  const sim = program.command('sim').description('run simulations on this machine').exitOverride();
  registerSimRun(sim);
  registerSimStudy(sim);
  registerDemo(program);
  for (const c of [...program.commands, ...sim.commands]) c.exitOverride();
  return program;
}

/** Runs the CLI and returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync([...argv]);
    return 0;
  } catch (err) {
    return reportError(err);
  }
}
